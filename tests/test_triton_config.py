"""The generated config.pbtxt under overload: bounded queues with a timeout, priority levels; and that a full
queue and an expired wait really refuse requests in the real tritonserver (with the status and message the
clients map to OverloadedError)."""

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import zoo
from serving import contract
from serving.export import (
    BULK_FACTOR,
    MODEL_PY,
    QUEUE_BATCHES,
    QUEUE_FULL_MESSAGE,
    QUEUE_TIMEOUT_MESSAGE,
    QUEUE_TIMEOUT_MS,
    build_config,
    export,
)
from serving.server import TritonServer, free_ports
from zoo.defaults import default_model

MINILM = default_model("text")
pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")  # LONG is cut on purpose


def parsed(folder: Path) -> mc.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.mark.parametrize("name", zoo.list_models())
def test_queue_is_bounded_with_priority_levels(tmp_path, name):
    """Every model's queue: the contract's priority levels, a queue of a few max batches and a timeout that
    rejects, deeper and longer for the bulk level."""
    spec = zoo.get_spec(name)
    batching = parsed(export([name], tmp_path)[0]).dynamic_batching
    assert batching.max_queue_delay_microseconds == spec.queue_delay_us
    assert batching.priority_levels == len(contract.PRIORITIES) == max(contract.PRIORITIES.values())
    assert batching.default_priority_level == contract.PRIORITIES[contract.DEFAULT_PRIORITY]
    default = batching.default_queue_policy
    assert default.timeout_action == mc.ModelQueuePolicy.REJECT and default.allow_timeout_override
    assert default.max_queue_size == QUEUE_BATCHES * spec.max_batch_size
    assert default.default_timeout_microseconds == QUEUE_TIMEOUT_MS * 1000
    assert set(batching.priority_queue_policy) == {contract.PRIORITIES["low"]}
    bulk = batching.priority_queue_policy[contract.PRIORITIES["low"]]
    assert bulk.max_queue_size == BULK_FACTOR * default.max_queue_size
    assert bulk.default_timeout_microseconds == BULK_FACTOR * default.default_timeout_microseconds
    assert bulk.timeout_action == mc.ModelQueuePolicy.REJECT and bulk.allow_timeout_override


def test_queue_settings_are_taken_and_checked(tmp_path):
    batching = parsed(export([MINILM], tmp_path, max_queue_size=7, queue_timeout_ms=250)[0]).dynamic_batching
    assert batching.default_queue_policy.max_queue_size == 7
    assert batching.default_queue_policy.default_timeout_microseconds == 250_000
    assert batching.priority_queue_policy[contract.PRIORITIES["low"]].max_queue_size == 7 * BULK_FACTOR
    for bad in ({"max_queue_size": 0}, {"queue_timeout_ms": -1}, {"max_queue_size": 2.5}, {"queue_timeout_ms": True}):
        with pytest.raises(zoo.InvalidArgumentError, match=f"{next(iter(bad))} must be a positive integer"):
            export([MINILM], tmp_path / "bad", **bad)


# ---- against the real server -------------------------------------------------------------------------------
LONG = [(f"word{i} " * 300).encode() for i in range(8)]  # 8 texts past MiniLM's 256 tokens: ~0.5 s a request


def _write(repo: Path, name: str, **queue) -> None:
    """MiniLM's folder under another Triton name, with its own queue settings, and a max batch of one request of
    :data:`LONG` (so that requests queue one behind the other: requests arriving together could otherwise all
    join one batch, and none would wait)."""
    spec = dataclasses.replace(zoo.get_spec(MINILM), max_batch_size=len(LONG))
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(
        build_config(spec, MINILM, triton_name=name, **queue)))
    (repo / name / "1" / "model.py").write_text(MODEL_PY)


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """A server with MiniLM twice: a queue of one request, and a wait of at most 200 ms."""
    tmp = tmp_path_factory.mktemp("queue")
    _write(tmp / "repo", "minilm-queue-of-one", max_queue_size=1)
    _write(tmp / "repo", "minilm-short-wait", queue_timeout_ms=200)
    with TritonServer(tmp / "repo", ports=free_ports(), log_path=tmp / "server.log").start(timeout=300) as server:
        yield server


def _burst(server, model: str, n: int, priority: int = 0) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """``n`` concurrent requests of :data:`LONG`: the embeddings of those answered, (status, message) of the rest."""
    done, refused = [], []
    start = threading.Barrier(n)

    def call():
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput(contract.INPUTS[zoo.Modality.TEXT], [len(LONG), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t] for t in LONG], dtype=object))
        start.wait()
        try:
            done.append(client.infer(model, [tensor], priority=priority).as_numpy(contract.OUTPUT))
        except grpcclient.InferenceServerException as err:
            refused.append((err.status(), err.message()))
        finally:
            client.close()

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return done, refused


@pytest.mark.server
def test_full_queue_refuses_at_once(queued, minilm):
    """A queue of one: of 12 concurrent requests, one runs, one waits, the rest are refused with Triton's
    queue-full answer; those answered are right."""
    done, refused = _burst(queued, "minilm-queue-of-one", 12)
    assert refused and done, (len(done), refused)
    assert {status for status, _ in refused} == {"StatusCode.UNAVAILABLE"}
    assert all(message.endswith(QUEUE_FULL_MESSAGE) for _, message in refused), refused
    want = minilm.encode([t.decode() for t in LONG], "text")
    for rows in done:
        np.testing.assert_allclose(rows, want, atol=1e-5)


@pytest.mark.server
def test_expired_wait_is_refused(queued, minilm):
    """A wait of at most 200 ms: requests queued behind a ~0.5 s execution are refused with Triton's timeout
    answer; the one that ran first is right."""
    done, refused = _burst(queued, "minilm-short-wait", 8)
    assert refused and done, (len(done), refused)
    assert set(refused) == {("StatusCode.UNAVAILABLE", QUEUE_TIMEOUT_MESSAGE)}, refused
    want = minilm.encode([t.decode() for t in LONG], "text")
    for rows in done:
        np.testing.assert_allclose(rows, want, atol=1e-5)


@pytest.mark.server
def test_priority_levels_are_served(queued):
    """Each named priority is a level the server takes. Triton 2.51 does not refuse a level past them: it
    serves it at the default level (so a client maps names to levels itself, from contract.PRIORITIES)."""
    for name, level in [*contract.PRIORITIES.items(), ("past the levels", len(contract.PRIORITIES) + 1)]:
        done, refused = _burst(queued, "minilm-short-wait", 1, priority=level)
        assert len(done) == 1 and not refused, (name, refused)
