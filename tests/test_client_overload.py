"""Overload and priority in the Triton clients: the core's plans answered by hand (no server) for failover,
backoff and giving up; the drivers' pauses; priority names checked; and one real tritonserver whose queue is
bounded, showing a refused request raise OverloadedError, a retrying client get through, and priorities reach
Triton's scheduler (served in priority order) without reaching the backend's parameters."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

import serving.client as client_mod
import serving.client_core as core
from serving import contract
from serving.client import BULK, AsyncTritonEmbedder, TritonEmbedder, open_backend
from serving.client_core import Call, Sleep, _remote_error, backoff, priority_level
from zoo.errors import InputError, InvalidArgumentError, ModelUnavailableError, OverloadedError
from zoo.spec import EmbedderSpec, Modality

A, B = "127.0.0.1:1", "127.0.0.1:2"
SPEC = EmbedderSpec(name="org/fake", family="text", modalities=("text",), dim=2, license="mit", source="x",
                    max_batch_size=4)
# what tritonserver 2.51 answers, checked against the real server (a queue of max_queue_size 1 with a slow
# request in it; a queue policy's default_timeout_microseconds passed)
QUEUE_FULL = InferenceServerException("[request id: <id_unknown>] Exceeds maximum queue size",
                                      status="StatusCode.UNAVAILABLE")
TIMED_OUT = InferenceServerException("Request timeout expired", status="StatusCode.UNAVAILABLE")
GONE = InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


class Answer:
    """A successful response: the row ``[1, 1]`` for each of its ``n`` items."""

    def __init__(self, n: int) -> None:
        self.rows = np.array([[1.0, 1.0]] * n, np.float32)

    def as_numpy(self, name: str) -> np.ndarray:
        return self.rows if name == contract.OUTPUT else self.rows[:, :1].astype(np.int32)


@pytest.fixture
def offline(monkeypatch):
    """Clients made without a server: channels that are never called, the spec answered in place."""
    class Channel:
        def __init__(self, url: str, **options) -> None:  # options: serving.channels' channel_args
            self.url = url

        def close(self) -> None:
            pass

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Channel)
    monkeypatch.setattr(core, "fetch_config", lambda client, name, priority=0: (SPEC, "fp", "torch"))


def drive(plan, answers: list) -> tuple[list, object]:
    """Run a plan by hand: each Call gets the next of ``answers`` (an int n: a response of n rows), each Sleep
    None. Returns (every item it yielded, its value or the error it raised)."""
    seen, answer = [], None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as done:
            return seen, done.value
        except Exception as err:  # noqa: BLE001 - the outcome under test
            return seen, err
        seen.append(step)
        if isinstance(step, Sleep):
            answer = None
        else:
            nxt = answers.pop(0)
            answer = Answer(nxt) if isinstance(nxt, int) else nxt


def one_chunk(client, items=("a",), **call) -> object:
    (plan,) = client._encode_job(list(items), "text", None, {}, **call).parts
    return plan


def test_what_counts_as_overloaded():
    for err in (QUEUE_FULL, TIMED_OUT, InferenceServerException("too many requests",
                                                                 status="StatusCode.RESOURCE_EXHAUSTED")):
        got = _remote_error(err, 0)
        assert isinstance(got, OverloadedError) and err.message() in str(got), err
    gone = _remote_error(GONE, 0)  # a replica gone stays "unavailable": failover as before, not "overloaded"
    assert isinstance(gone, ModelUnavailableError) and not isinstance(gone, OverloadedError)
    too_big = InferenceServerException("Received message larger than max (5 vs. 4)",
                                       status="StatusCode.RESOURCE_EXHAUSTED")
    assert not isinstance(_remote_error(too_big, 0), ModelUnavailableError)  # no pause makes it smaller
    wire = InferenceServerException("[request id: 3] [InputError] input 0: Exceeds maximum queue size",
                                    status="StatusCode.UNAVAILABLE")
    assert isinstance(_remote_error(wire, 0), InputError)  # zoo's own error keeps its class, whatever its text


def test_overloaded_replica_then_the_next_then_growing_pauses_then_success(offline):
    client = TritonEmbedder(SPEC.name, f"{A},{B}", retries=3)
    seen, value = drive(one_chunk(client), [QUEUE_FULL, QUEUE_FULL, QUEUE_FULL, GONE, QUEUE_FULL, 1])
    calls = [s for s in seen if isinstance(s, Call)]
    sleeps = [s.seconds for s in seen if isinstance(s, Sleep)]
    # each round tries every replica before pausing; in the third, the first refuses and the second answers
    assert [type(s).__name__ for s in seen] == ["Call", "Call", "Sleep", "Call", "Call", "Sleep", "Call", "Call"]
    assert {c.url for c in calls[:2]} == {c.url for c in calls[2:4]} == {A, B}
    assert 0.05 <= sleeps[0] <= 0.1 < sleeps[1] <= 0.2  # 0.1 s doubling, each from the upper half (jitter)
    np.testing.assert_array_equal(value[0], [[1.0, 1.0]])


def test_gives_up_after_retries_with_the_last_refusal(offline):
    client = TritonEmbedder(SPEC.name, A, retries=2)
    seen, err = drive(one_chunk(client), [QUEUE_FULL, GONE, TIMED_OUT])
    assert [type(s).__name__ for s in seen] == ["Call", "Sleep", "Call", "Sleep", "Call"]
    assert isinstance(err, OverloadedError) and "Request timeout expired" in str(err)
    # without retries (the default: interactive callers decide) the refusal is raised at once
    seen, err = drive(one_chunk(TritonEmbedder(SPEC.name, f"{A},{B}")), [QUEUE_FULL, QUEUE_FULL])
    assert [type(s).__name__ for s in seen] == ["Call", "Call"] and isinstance(err, OverloadedError)
    # an error that is no refusal is never retried
    bad = InferenceServerException("[request id: 1] [InputError] input 0: no", status="StatusCode.INVALID_ARGUMENT")
    seen, err = drive(one_chunk(client), [bad])
    assert len(seen) == 1 and isinstance(err, InputError)


def test_backoff_is_capped_and_honours_retry_after():
    assert [backoff(20) <= core.BACKOFF_CAP_S for _ in range(50)] == [True] * 50
    assert backoff(0, OverloadedError("busy", retry_after=3.0)) == 3.0
    assert backoff(0, ModelUnavailableError("gone")) <= core.BACKOFF_FIRST_S


def test_priority_names_levels_and_trace_context(offline):
    assert [priority_level(p) for p in (None, "high", "normal", "low")] == [0, 1, 2, 3]
    with pytest.raises(InvalidArgumentError, match="unknown priority 'urgent'; valid: 'high', 'normal', 'low'"):
        TritonEmbedder(SPEC.name, A, priority="urgent")
    client = TritonEmbedder(SPEC.name, A, priority="low")
    assert drive(one_chunk(client), [1])[0][0].priority == 3  # the client's own
    assert drive(one_chunk(client, priority="high"), [1])[0][0].priority == 1  # the call's
    assert drive(one_chunk(TritonEmbedder(SPEC.name, A)), [1])[0][0].priority == 0  # the model's default
    with pytest.raises(InvalidArgumentError, match="unknown priority 'HIGH'"):
        client.encode(["a"], "text", priority="HIGH")  # refused before anything is sent (no channel to call)
    with pytest.raises(InvalidArgumentError, match="retries"):
        TritonEmbedder(SPEC.name, A, retries=-1)
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    (plan,) = client._wire_job([b"a"], Modality.TEXT, client.options(), None, False, 1, traceparent).parts
    call = drive(plan, [1])[0][0]
    assert call.headers == {contract.TRACE_HEADER: traceparent} and call.request_id == "a" * 32
    assert call.priority == 1 and contract.TRACE_HEADER not in call.params


def test_chunks_bound_items_and_bytes():
    assert core._chunks([], 4) == []
    assert core._chunks([1] * 10, 4) == [(0, 4), (4, 8), (8, 10)]
    # a byte budget: short items share a request, a long one goes alone (even over the budget)
    assert core._chunks([10, 10, 10, 500, 10, 60, 40], 8, 100) == [(0, 3), (3, 4), (4, 6), (6, 7)]


def test_bulk_client_sends_low_small_chunks_one_at_a_time(offline):
    bulk = open_backend(SPEC.name, A, bulk=True)
    assert {k: getattr(bulk, k) for k in BULK} == BULK
    assert BULK["priority"] == "low" and BULK["retries"] > 0 and BULK["concurrency"] == 1
    items = [b"x" * 300] * 10 + [b"y" * 5000] + [b"z" * 10] * 10
    spans = bulk._spans(items, 32)  # a call's batch_size of 32 still goes in small chunks
    assert (10, 11) in spans and all(b - a <= min(BULK["max_chunk"], SPEC.max_batch_size) for a, b in spans)
    assert all(sum(map(len, items[a:b])) <= BULK["max_chunk_bytes"] for a, b in spans if b - a > 1)
    assert [a for a, _ in spans] == sorted({a for a, _ in spans}) and spans[-1][1] == len(items)
    plain = open_backend(SPEC.name, A)
    assert [getattr(plain, k) for k in BULK] == [None, 0, None, None, None]
    assert plain._spans(items, 32) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 21)]  # SPEC's max: 4


def test_both_drivers_pause_as_the_plan_asks(monkeypatch, offline):
    """Two refusals, then an answer: the sync driver sleeps with time.sleep, the async one with asyncio.sleep,
    each for the Sleep's seconds; both send the client's priority."""
    script = {"answers": []}
    sent = []

    class Channel:
        def __init__(self, url: str, **options) -> None:  # options: serving.channels' channel_args
            self.url = url

        def infer(self, model, inputs, outputs=None, parameters=None, priority=0, headers=None, request_id=""):
            sent.append(priority)
            nxt = script["answers"].pop(0)
            if isinstance(nxt, Exception):
                raise nxt
            return Answer(nxt)

        def close(self) -> None:
            pass

    class AioChannel(Channel):
        async def infer(self, *args, **kwargs):
            return Channel.infer(self, *args, **kwargs)

        async def close(self) -> None:
            pass

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Channel)
    monkeypatch.setattr(aioclient, "InferenceServerClient", AioChannel)
    monkeypatch.setattr(core, "backoff", lambda attempt, err=None: 0.01 * (attempt + 1))
    slept = []
    real_sleep, real_async_sleep = time.sleep, asyncio.sleep

    async def async_sleep(seconds, *args):
        slept.append(("async", seconds))
        return await real_async_sleep(seconds, *args)

    monkeypatch.setattr(client_mod.time, "sleep", lambda s: slept.append(("sync", s)) or real_sleep(s))
    monkeypatch.setattr(client_mod.asyncio, "sleep", async_sleep)

    script["answers"] = [QUEUE_FULL, GONE, 1]
    rows = TritonEmbedder(SPEC.name, A, priority="high", retries=2).encode(["a"], "text")
    assert rows.shape == (1, 2) and slept == [("sync", 0.01), ("sync", 0.02)] and sent == [1, 1, 1]

    async def main() -> object:
        client = AsyncTritonEmbedder(SPEC.name, A, priority="low", retries=2)
        try:
            return await client.encode(["a"], "text")
        finally:
            await client.close()

    slept.clear()
    sent.clear()
    script["answers"] = [QUEUE_FULL, QUEUE_FULL, 1]
    assert asyncio.run(main()).shape == (1, 2)
    assert slept == [("async", 0.01), ("async", 0.02)] and sent == [3, 3, 3]


def test_open_model_tells_a_backend_about_bulk(monkeypatch):
    from zoo import backends

    made = []

    class EntryPoint:
        def load(self):
            return lambda name, url, **kw: made.append((name, url, kw))

    monkeypatch.setattr(backends, "installed", lambda: {"fake": EntryPoint()})
    backends.open_model("m", "fake", "u", None)
    backends.open_model("m", "fake", "u", None, bulk=True)
    assert made == [("m", "u", {}), ("m", "u", {"bulk": True})]


def test_open_model_gives_an_in_process_model_its_threads(monkeypatch):
    """``zoo embed``'s actors each compute on their share of the cores: ONNX Runtime's threads too, not every core."""
    import zoo.registry
    from zoo import backends

    asked = []
    monkeypatch.setattr(zoo.registry, "create", lambda name, **kw: asked.append((name, kw)))
    backends.open_model("m", "local", "", None, bulk=True, threads=3)
    assert asked == [("m", {"device": None, "threads": 3})]


# ---- a real tritonserver ----------------------------------------------------------------------------------
SLOW_MODEL = '''"""zoo's backend model, with a pause in each execute so that the queue fills on cue: 2.5 s when a
request holds the item "slow", 0.3 s otherwise (the model's description, asked with an empty item, at once)."""

import json
import time

from serving.triton_model import TritonPythonModel as ZooModel


class TritonPythonModel(ZooModel):
    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        for r in requests:  # what the backend is handed: priority must not be among the parameters
            print("PARAMETERS", sorted(json.loads(r.parameters() or "{}")), flush=True)
        texts = [bytes(x) for r in requests for t in [pb_utils.get_input_tensor_by_name(r, "TEXT")] if t is not None
                 for x in t.as_numpy().reshape(-1)]
        if any(texts):
            time.sleep(2.5 if b"slow" in texts else 0.3)
        return super().execute(requests)
'''


@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_full_queue_refuses_and_priorities_reach_the_scheduler(tmp_path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from serving.export import export
    from serving.server import TritonServer, free_ports
    from tests.tiny_models import make_tiny_text_folder

    (folder,) = export([str(make_tiny_text_folder(tmp_path / "tiny-text", pooling="mean"))], tmp_path / "repo")
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    config.max_batch_size = 1  # one request per execute: the order requests are served in shows
    # priorities as zoo export writes them, but every level's queue bounded at one request (Triton bounds each
    # level's queue on its own: default_queue_policy for those priority_queue_policy does not name)
    config.dynamic_batching.CopyFrom(mc.ModelDynamicBatching(
        priority_levels=len(contract.PRIORITIES), default_priority_level=contract.PRIORITIES[contract.DEFAULT_PRIORITY],
        default_queue_policy=mc.ModelQueuePolicy(max_queue_size=1)))
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    (folder / "1" / "model.py").write_text(SLOW_MODEL)
    server = TritonServer(tmp_path / "repo", ports=free_ports(), log_path=tmp_path / "server.log")
    with server.start(timeout=240):
        client = TritonEmbedder(folder.name, server.grpc_url)
        patient = TritonEmbedder(folder.name, server.grpc_url, priority="low", retries=8)  # made before the queue fills
        alone = client.encode(["what the queue holds"], "text")
        done: list[str] = []

        def send(text: str, priority: str) -> None:
            client.encode([text], "text", priority=priority)
            done.append(text)

        slow = threading.Thread(target=send, args=("slow", "normal"))
        slow.start()
        time.sleep(0.5)  # the slow one is running: the next two wait, each in its level's queue
        waiting = [threading.Thread(target=send, args=(t, p)) for t, p in (("low one", "low"), ("high one", "high"))]
        for t in waiting:
            t.start()
            time.sleep(0.1)
        with pytest.raises(OverloadedError, match="Exceeds maximum queue size"):
            client.encode(["one too many"], "text", priority="low")  # no retries: refused at once
        t = time.monotonic()
        got = patient.encode(["what the queue holds"], "text")  # backs off until the queue has room
        assert time.monotonic() - t > 0.3
        np.testing.assert_allclose(got, alone, atol=1e-6)
        for t in (slow, *waiting):
            t.join(30)
        assert done == ["slow", "high one", "low one"]  # the high request, sent last, was served first

        async def traced() -> tuple:
            aclient = AsyncTritonEmbedder(folder.name, server.grpc_url)
            try:
                return await aclient.infer_wire([b"what the queue holds"], Modality.TEXT, aclient.options(),
                                                tokens=True, priority="high", traceparent="00-" + "1" * 32 + "-"
                                                + "2" * 16 + "-01")
            finally:
                await aclient.close()

        rows, tokens = asyncio.run(traced())
        np.testing.assert_allclose(rows, alone, atol=1e-6)
        assert tokens.shape == (1,) and tokens[0] > 0
        client.close()
        patient.close()
    seen = [line for line in server.log_path.read_text().splitlines() if line.startswith("PARAMETERS")]
    assert seen and not any("priority" in line for line in seen)  # Triton keeps priority to itself
    assert not any(contract.TRACE_HEADER in line for line in seen)  # a header for Triton's tracer, not an option


def test_a_retrying_client_waits_for_the_spec_while_every_queue_is_full(offline, monkeypatch):
    """The spec request queues like any other: a bulk client made while the queues are full asks again after a
    pause (at most ``retries`` times); one that may not retry, or a server that is simply gone, fails at once."""
    from zoo.errors import ServerError

    answers: list = []

    def fetch(client, name, priority=0):
        step = answers.pop(0)
        if isinstance(step, InferenceServerException):  # as fetch_config raises what the server said
            zerr = _remote_error(step, 0)
            raise zerr if isinstance(zerr, OverloadedError) else ServerError(f"cannot get model: {step.message()}")
        return SPEC, "fp", "torch"

    slept: list[float] = []
    monkeypatch.setattr(core, "fetch_config", fetch)
    monkeypatch.setattr(core.time, "sleep", slept.append)
    answers[:] = [QUEUE_FULL, TIMED_OUT, None]
    assert TritonEmbedder("org/fake", A, retries=3).spec == SPEC
    assert len(slept) == 2 and answers == []
    answers[:] = [QUEUE_FULL, None]
    with pytest.raises(OverloadedError, match="Exceeds maximum queue size"):
        TritonEmbedder("org/fake", A)  # retries=0: the caller decides
    slept.clear()
    answers[:] = [GONE, None]
    with pytest.raises(ServerError, match="failed to connect"):
        TritonEmbedder("org/fake", A, retries=3)  # not overloaded: nothing to wait for
    assert slept == []
