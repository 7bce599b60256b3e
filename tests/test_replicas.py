"""Clients across replicas: two real tritonservers on loopback, requests spread over both, one stopped
mid-run: no request lost, every row equal to in-process."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from serving.client import AsyncTritonEmbedder, TritonEmbedder, replica_urls, triton_name
from serving.export import export
from serving.server import TritonServer, free_ports
from zoo.defaults import default_model
from zoo.errors import ServerError

TEXT = default_model("text")


def _served(server: TritonServer) -> int:
    """Successful requests the server has answered for the text model."""
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        stats = c.get_inference_statistics(triton_name(TEXT), as_json=True, headers=server.admin_headers)["model_stats"]
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)


def _settled(servers: list[TritonServer], total: int, within: float = 10.0) -> list[int]:
    """Each server's count once together they reach `total`: Triton counts a request after its answer is
    sent, so a count read right after the last answer can lag by one."""
    deadline = time.monotonic() + within
    while True:
        counts = [_served(s) for s in servers]
        if sum(counts) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_replica_urls():
    assert replica_urls("127.0.0.1:1, 127.0.0.2:2") == ["127.0.0.1:1", "127.0.0.2:2"]
    assert replica_urls(["127.0.0.1:1", "127.0.0.1:1"]) == ["127.0.0.1:1"]
    assert "127.0.0.1:8001" in replica_urls("localhost:8001")  # a name: every address it resolves to
    assert replica_urls("[::1]:9") == ["[::1]:9"]
    with pytest.raises(ServerError, match="not host:port"):
        replica_urls("127.0.0.1")
    with pytest.raises(ServerError, match="cannot resolve"):
        replica_urls("no-such-host.invalid:1")


def test_what_counts_as_a_replica_gone():
    from tritonclient.utils import InferenceServerException

    from serving.client import _raise_remote
    from zoo.errors import InputError, ModelUnavailableError

    stopping = InferenceServerException("[request id: <id_unknown>] Server is stopping, scheduler for model has "
                                        "stopped accepting new inference requests", status="StatusCode.INTERNAL")
    with pytest.raises(ModelUnavailableError):  # a server shutting down: the next replica gets the request
        _raise_remote(stopping, 0)
    with pytest.raises(ModelUnavailableError):
        _raise_remote(InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE"), 0)
    bad = InferenceServerException("[request id: 7] [InputError] input 1: not an image", status="StatusCode.INTERNAL")
    with pytest.raises(InputError, match="not an image") as err:  # zoo's own error: raised, never retried
        _raise_remote(bad, 10)
    assert err.value.index == 11


@pytest.mark.server
def test_two_replicas_spread_and_survive_a_stop(tmp_path, minilm):
    export([TEXT], tmp_path / "repo")
    first = free_ports()
    second = free_ports()
    while {first.grpc, first.http, first.metrics} & {second.grpc, second.http, second.metrics}:
        second = free_ports()
    a = TritonServer(tmp_path / "repo", ports=first, log_path=tmp_path / "a.log")
    b = TritonServer(tmp_path / "repo", ports=second, log_path=tmp_path / "b.log")
    texts = [f"request {i} sentence {j} about replicas" for i in range(48) for j in range(4)]
    expected = minilm.encode(texts, "text")
    with a.start(timeout=600), b.start(timeout=600):
        threads_before = set(threading.enumerate())
        client = TritonEmbedder(TEXT, f"{a.grpc_url},{b.grpc_url}")
        before = _settled([a, b], 1)  # the client asked the first replica that answered for the spec
        assert sorted(before) == [0, 1]
        warm = [client.encode(texts[4 * i: 4 * i + 4], "text") for i in range(8)]  # one at a time: round robin
        after = _settled([a, b], 1 + 8)
        assert after[0] - before[0] == after[1] - before[1] == 4
        stopped = threading.Event()
        done = []

        def one(i: int) -> np.ndarray:
            rows = client.encode(texts[4 * i: 4 * i + 4], "text")
            done.append(i)
            if len(done) == 6 and not stopped.is_set():
                stopped.set()
                b.stop(timeout=0)  # SIGTERM, then SIGKILL of its group: requests in flight there fail
            return rows

        with ThreadPoolExecutor(4) as pool:
            rows = list(pool.map(one, range(8, 48)))
        assert stopped.is_set() and b.process.poll() is not None
        np.testing.assert_allclose(np.concatenate(warm + rows), expected, atol=1e-4)
        assert _settled([a], 4 + (40 - 6) // 2 + 1)[0] > 4 + (40 - 6) // 2  # after the stop, a took everything

        async def via_async() -> np.ndarray:  # the asyncio client fails over the same way
            aclient = AsyncTritonEmbedder(TEXT, [b.grpc_url, a.grpc_url])
            try:
                return await aclient.encode(texts[:8], "text", batch_size=2)
            finally:
                await aclient.close()

        fresh = TritonEmbedder(TEXT, [b.grpc_url, a.grpc_url])  # and so does a sync one: the same core
        via_sync = fresh.encode(texts[:8], "text", batch_size=2)
        fresh.close()
        np.testing.assert_allclose(asyncio.run(via_async()), expected[:8], atol=1e-4)
        np.testing.assert_allclose(via_sync, expected[:8], atol=1e-4)
        client.close()
        assert not set(threading.enumerate()) - threads_before  # closed clients leave no thread running
    with pytest.raises(ServerError, match="cannot reach"):
        TritonEmbedder(TEXT, f"{a.grpc_url},{b.grpc_url}")
