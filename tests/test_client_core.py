"""The sync and async Triton clients are one core (serving.client_core) with two tiny drivers: the same
failover and per-item cases, run through both against one scripted fake server, send the same requests and
give the same results; closing either leaves no thread or task behind. No tritonserver needed."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

import serving.client as client_mod
import serving.client_core as core
from serving import contract
from serving.client import AsyncTritonEmbedder, TritonEmbedder
from zoo.errors import InputError, ModelUnavailableError
from zoo.spec import EmbedderSpec, Modality

DOWN, UP = "127.0.0.1:1", "127.0.0.1:2"
SPEC = EmbedderSpec(name="org/fake", family="text", modalities=("text",), dim=3, license="mit", source="x",
                    max_batch_size=2)


class FakeServer:
    """Scripted replicas: those in ``down`` refuse the connection; an item ``bad`` is refused by the server
    (zoo's wire error, index within the request); any other item's row is ``[len, first byte, 1]``."""

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.log: list[tuple[str, tuple[bytes, ...]]] = []  # every request: replica, items sent
        self.sent: list[tuple[int, dict]] = []  # every request: its priority level and parameters
        self.closed: list[str] = []

    def infer(self, url: str, model: str, inputs: list, outputs: list, parameters: dict,
              priority: int = 0) -> FakeResult:
        assert model == "org--fake" and parameters["output"] == "dense"
        items = tuple(bytes(x) for x in deserialize_bytes_tensor(inputs[0]._raw_content))
        self.log.append((url, items))
        self.sent.append((priority, parameters))
        if url in self.down:
            raise InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
        if b"bad" in items:
            raise InferenceServerException(f"[request id: 1] [InputError] input {items.index(b'bad')}: refused "
                                           "by the server", status="StatusCode.INVALID_ARGUMENT")
        rows = np.array([[len(x), x[0], 1] for x in items], np.float32)
        return FakeResult({contract.OUTPUT: rows, contract.TOKENS: rows[:, :1].astype(np.int32)})


class FakeResult:
    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors

    def as_numpy(self, name: str) -> np.ndarray:
        return self.tensors[name]


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    """The fake behind both kinds of channel, and the spec look-up answered without a server. Chunks run one
    at a time, so that the order of requests (and so the replica each one goes to) is the same every run."""
    fake = FakeServer({DOWN})

    def channel(asynchronous: bool) -> type:
        class Channel:
            def __init__(self, url: str, **options) -> None:  # options: serving.channels' channel_args
                self.url = url

            def infer(self, model, inputs, outputs=None, parameters=None, priority=0, headers=None, request_id=""):
                return fake.infer(self.url, model, inputs, outputs, parameters, priority)

            def close(self) -> None:
                fake.closed.append(f"sync {self.url}")

        class AioChannel(Channel):
            async def infer(self, model, inputs, outputs=None, parameters=None, priority=0, headers=None,
                            request_id=""):
                await asyncio.sleep(0)
                return fake.infer(self.url, model, inputs, outputs, parameters, priority)

            async def close(self) -> None:
                fake.closed.append(f"async {self.url}")

        return AioChannel if asynchronous else Channel

    monkeypatch.setattr(grpcclient, "InferenceServerClient", channel(False))
    monkeypatch.setattr(aioclient, "InferenceServerClient", channel(True))
    monkeypatch.setattr(core, "fetch_config", lambda client, name, priority=0: (SPEC, "fp", "torch"))
    monkeypatch.setattr(client_mod, "MAX_CONCURRENT_CHUNKS", 1)
    return fake


def both(server: FakeServer, method: str, *args, **kwargs) -> list[tuple]:
    """``method`` called on a fresh sync and a fresh async client: (result or error, requests sent) each."""
    async def call_async(client: AsyncTritonEmbedder):
        try:
            return await getattr(client, method)(*args, **kwargs)
        finally:
            await client.close()

    def call_sync(client: TritonEmbedder):
        try:
            return getattr(client, method)(*args, **kwargs)
        finally:
            client.close()

    outcomes = []
    for cls, call in ((TritonEmbedder, call_sync), (AsyncTritonEmbedder, lambda c: asyncio.run(call_async(c)))):
        server.log = []
        try:
            got = call(cls(SPEC.name, f"{DOWN},{UP}"))
        except Exception as err:  # the error is the outcome compared
            got = err
        outcomes.append((got, server.log))
    return outcomes


def rows(*texts: str) -> np.ndarray:
    return np.array([[len(t), ord(t[0]), 1] for t in texts], np.float32)


def test_per_item_failover_and_a_refused_item_are_the_same_through_both(server):
    texts = ["a", "bb", "bad", "ccc", "dddd"]
    (sync, sync_log), (aio, aio_log) = both(server, "encode_per_item", texts, "text")
    # chunks of 2: the first goes to the replica that is down, then to the other, which is tried first from
    # then on; the chunk with the refused item is sent again without it; only that item keeps an error
    assert sync_log == aio_log == [
        (DOWN, (b"a", b"bb")), (UP, (b"a", b"bb")), (UP, (b"bad", b"ccc")), (UP, (b"ccc",)), (UP, (b"dddd",))]
    for got in (sync, aio):
        assert isinstance(got[2], InputError) and got[2].index == 2 and "refused by the server" in got[2].reason
        np.testing.assert_array_equal(np.stack([got[i] for i in (0, 1, 3, 4)]), rows("a", "bb", "ccc", "dddd"))


def test_encode_raises_the_same_error_with_the_whole_call_index(server):
    (sync, sync_log), (aio, aio_log) = both(server, "encode", ["a", "bb", "ccc", "bad"], "text")
    assert sync_log == aio_log
    for got in (sync, aio):
        assert isinstance(got, InputError) and got.index == 3  # index 1 of the second chunk


def test_encode_rows_in_order_and_every_replica_down(server):
    (sync, _), (aio, _) = both(server, "encode", ["a", "bb", "ccc"], "text", batch_size=1)
    np.testing.assert_array_equal(sync, rows("a", "bb", "ccc"))
    np.testing.assert_array_equal(aio, sync)
    server.down.add(UP)
    (sync, sync_log), (aio, aio_log) = both(server, "encode", ["a"], "text")
    assert sync_log == aio_log == [(DOWN, (b"a",)), (UP, (b"a",))]
    assert all(isinstance(got, ModelUnavailableError) for got in (sync, aio))


def test_the_clients_hold_no_request_logic_of_their_own():
    """What the two classes define besides the core's is their public surface and their driver; a chunk
    loop or a failover written again in one of them would show up here."""
    drivers = {"__init__", "__doc__", "__module__", "__qualname__", "_run", "_wait", "_channel",
               "encode", "encode_per_item", "infer_wire", "close", "tokenize", "detokenize", "encode_chunks",
               "predict", "rank"}
    for cls in (TritonEmbedder, AsyncTritonEmbedder):
        assert cls.__mro__[1] is core._Core
        assert set(vars(cls)) - {"__firstlineno__", "__static_attributes__"} <= drivers, cls


def test_close_leaves_no_thread_or_task(server):
    before = set(threading.enumerate())
    sync = TritonEmbedder(SPEC.name, f"{DOWN},{UP}")
    client_mod.MAX_CONCURRENT_CHUNKS = 8  # (monkeypatched: restored after the test) chunks on a thread pool
    sync.encode(["a", "bb", "ccc", "dddd", "e"], "text", batch_size=1)
    sync.close()
    assert set(threading.enumerate()) == before
    assert server.closed == [f"sync {DOWN}", f"sync {UP}"]

    async def main() -> set:
        aio = AsyncTritonEmbedder(SPEC.name, [DOWN, UP])
        await aio.encode(["a", "bb", "ccc"], "text", batch_size=1)
        _, tokens = await aio.infer_wire([b"a", b"bb"], Modality.TEXT,
                                             aio.options(), tokens=True)
        assert tokens.tolist() == [1, 2]
        await aio.close()
        return asyncio.all_tasks() - {asyncio.current_task()}

    server.closed = []
    assert asyncio.run(main()) == set()
    assert sorted(server.closed) == sorted([f"async {DOWN}", f"async {UP}", f"sync {DOWN}", f"sync {UP}"])
    assert set(threading.enumerate()) == before
