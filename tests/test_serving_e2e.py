"""End to end against a real tritonserver (started by the session fixture on free loopback ports)."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import zoo
from serving import contract
from serving.client import AsyncTritonEmbedder, TritonEmbedder
from serving.server import free_ports
from zoo import postprocess as pp
from zoo.defaults import default_model

from .processes import start_and_wait, stop_group
from .tiny_models import TEXTS, assert_multivector_parity, assert_parity, assert_tells_apart, sample_inputs

pytestmark = pytest.mark.server



@pytest.fixture(scope="module")
def local_models(triton):
    _, models = triton
    return {t: zoo.create(src, device="cpu") for t, src in models.items()}


def test_parity_every_served_model(triton, local_models):
    server, _ = triton
    seen = set()
    for tname, local in local_models.items():
        remote = TritonEmbedder(tname, server.grpc_url)
        assert remote.spec == contract.served_spec(local.spec, tname)  # a folder's path stays on the server
        assert remote.weights_fingerprint == local.weights_fingerprint != ""
        seen.add(local.spec.family)
        for modality, items in sample_inputs(local.spec).items():
            for output in [*local.spec.outputs, *(["fde"] if "multivector" in local.spec.outputs else [])]:
                assert_same(remote.encode(items, modality, output=output), local.encode(items, modality,
                                                                                        output=output), output)
    from zoo.registry import list_families

    assert seen == set(list_families()), f"families not served in this test: {set(list_families()) - seen}"


def assert_same(got, want, output: str, precision: str = "float32") -> None:
    """A served result equals the in-process one, in a way that can fail: the in-process rows tell the inputs
    apart (no two at cos ≥ 0.99, where there are two), dense/fde rows and every multi-vector row at cos ≥ 0.9999
    with raw values within 1e-4 of the largest (same dtype and shape), sparse rows with the same terms and weights
    within 1e-4 relative."""
    if output == "score":  # one number per pair: equal, and the pairs' scores differ
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        assert np.ptp(want) > 1e-3, want
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        return
    if output == "sparse":
        assert got.shape == want.shape and got.dtype == want.dtype
        if want.shape[0] > 1:
            assert_tells_apart(want.toarray())
        assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
        assert np.allclose(got.data, want.data, rtol=1e-4, atol=1e-7)
        return
    if output == "multivector":
        assert isinstance(got, list) and len(got) == len(want)
        assert [(a.dtype, a.shape) for a in got] == [(b.dtype, b.shape) for b in want]
        assert_multivector_parity([pp.dequantize(a, precision) for a in got],
                                  [pp.dequantize(b, precision) for b in want], what=output)
        return
    assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
    assert_parity(pp.dequantize(got, precision), pp.dequantize(want, precision), what=output)


def test_output_kinds_and_their_controls_served(triton, local_models):
    """Multi-vector and sparse output with their controls (precision per vector, max_vectors, top_k), sync and
    async, chunked, and per item with a bad item among good ones."""
    server, models = triton
    by_family = {local_models[t].spec.family: t for t in models}
    colbert, splade = by_family["colbert"], by_family["splade"]
    remote, local = TritonEmbedder(colbert, server.grpc_url), local_models[colbert]
    for controls in ({"precision": "int8"}, {"precision": "binary", "dimensions": 8}, {"max_vectors": 3},
                     {"prompt_name": "query", "precision": "float16"}):
        got = remote.encode(TEXTS, "text", batch_size=4, **controls)
        want = local.encode(TEXTS, "text", **controls)
        assert [len(x) for x in got] == [len(x) for x in want]
        assert all(np.array_equal(a, b) or np.abs(pp.dequantize(a, controls.get("precision", "float32")) -
                                                  pp.dequantize(b, controls.get("precision", "float32"))).max() < 0.02
                   for a, b in zip(got, want)), controls
    assert max(len(x) for x in remote.encode(TEXTS, "text", max_vectors=3)) == 3
    sparse = TritonEmbedder(splade, server.grpc_url)
    want = local_models[splade].encode(TEXTS, "text", top_k=5)
    assert_same(sparse.encode(TEXTS, "text", top_k=5, batch_size=4), want, "sparse")
    assert sparse.encode(TEXTS, "text", top_k=5).getnnz(axis=1).max() == 5
    rows = sparse.encode_per_item(["fine", 7, "also fine"], "text")
    assert isinstance(rows[1], zoo.InputError) and rows[1].index == 1
    assert_same(rows[2], local_models[splade].encode(["also fine"], "text"), "sparse")

    async def run():
        client = AsyncTritonEmbedder(colbert, server.grpc_url)
        try:
            return await client.encode(TEXTS, "text", output="fde", prompt_name="query")
        finally:
            await client.close()

    assert_same(asyncio.run(run()), local.encode(TEXTS, "text", output="fde", prompt_name="query"), "fde")
    with pytest.raises(zoo.InvalidArgumentError, match="top_k applies to sparse"):
        remote.encode(["x"], "text", top_k=3)
    with pytest.raises(zoo.InvalidArgumentError, match="cannot give output 'dense'"):
        remote.encode(["x"], "text", output="dense")


@pytest.mark.parametrize("precision", sorted(pp.PRECISIONS))
def test_parameters_honored(triton, local_models, precision):
    server, _ = triton
    tname = contract.model_name(default_model("text"))
    remote, local = TritonEmbedder(tname, server.grpc_url), local_models[tname]
    got = remote.encode(TEXTS, "text", dimensions=128, precision=precision)
    want = local.encode(TEXTS, "text", dimensions=128, precision=precision)
    assert got.dtype == want.dtype and got.shape == want.shape
    a, b = pp.dequantize(got, precision), pp.dequantize(want, precision)
    # one computation on both sides, so the bars are tight: float32 to 1e-5 (a round trip through float16 is off
    # by ~5e-5), float16 to one unit in the last place; quantized codes equal, but for the rare component that
    # float rounding carries across a step (a result cut without re-normalizing is off in every component)
    if precision in ("float32", "float16"):
        np.testing.assert_allclose(a, b, rtol=1e-3 if precision == "float16" else 0, atol=1e-5)
    else:
        off = a != b
        assert off.mean() <= 0.01, f"{off.sum()} of {off.size} components differ, by up to {np.abs(a - b).max()}"
    raw = remote.encode(TEXTS[:2], "text", normalize=False)
    assert np.allclose(raw, local.encode(TEXTS[:2], "text", normalize=False), rtol=1e-4, atol=1e-4)


def test_prompt_names_served(triton, local_models):
    server, models = triton
    tname = next(t for t, src in models.items() if os.path.isdir(src))
    remote = TritonEmbedder(tname, server.grpc_url)
    assert set(remote.spec.prompts) == {"query", "document"}
    q = remote.encode(["cats"], "text", prompt_name="query")
    assert np.allclose(q, local_models[tname].encode(["query: cats"], "text"), atol=1e-5)
    with pytest.raises(zoo.InvalidArgumentError, match="prompt_name"):
        remote.encode(["cats"], "text", prompt_name="nope")


def test_chunking_keeps_order_and_error_indexes(triton, local_models):
    server, _ = triton
    tname = contract.model_name(default_model("text"))
    remote = TritonEmbedder(tname, server.grpc_url)
    items = [f"sentence number {i}" for i in range(11)]
    assert np.allclose(remote.encode(items, "text", batch_size=2), local_models[tname].encode(items, "text"),
                       atol=1e-5)
    items[7] = b"\xc3\x28"  # invalid UTF-8, in the fourth chunk
    with pytest.raises(zoo.InputError) as err:
        remote.encode(items, "text", batch_size=2)
    assert err.value.index == 7


def test_many_threads_each_get_their_own_result(triton, local_models):
    server, _ = triton
    tname = contract.model_name(default_model("text"))
    remote = TritonEmbedder(tname, server.grpc_url)
    texts = [f"caller {i} asks about topic {i * 7 % 13}" for i in range(48)]
    expected = local_models[tname].encode(texts, "text")
    results, errors = {}, []

    def call(i):
        try:
            for _ in range(3):
                results[i] = remote.encode([texts[i]], "text")
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    stats_before = _stats(server, tname)
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i in range(len(texts)):
        assert np.allclose(results[i][0], expected[i], atol=1e-5), i
    after = _stats(server, tname, at_least=stats_before["inference_count"] + 3 * len(texts))
    requests = after["inference_count"] - stats_before["inference_count"]
    executions = after["execution_count"] - stats_before["execution_count"]
    assert requests == 3 * len(texts)
    assert executions < requests  # the dynamic batcher really grouped requests into shared executions


def _stats(server, tname, at_least: int = 0, within: float = 10.0):
    """The model's counts, read again (up to ``within`` s) until ``at_least`` requests are counted: Triton counts a
    request after its answer is sent, so a read right after the last answer can lag."""
    deadline = time.monotonic() + within
    client = grpcclient.InferenceServerClient(server.grpc_url)
    while True:
        s = client.get_inference_statistics(tname, as_json=True, headers=server.admin_headers)["model_stats"][0]
        counts = {"inference_count": int(s.get("inference_count", 0)),
                  "execution_count": int(s.get("execution_count", 0))}
        if counts["inference_count"] >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_bad_request_among_good_fails_alone(triton, local_models):
    server, _ = triton
    tname = contract.model_name(default_model("text"))
    remote = TritonEmbedder(tname, server.grpc_url)
    good = [f"good request {i}" for i in range(12)]
    outcomes = {}

    def run(key, items, **kw):
        try:
            outcomes[key] = remote.encode(items, "text", **kw)
        except zoo.ZooError as e:
            outcomes[key] = e

    threads = [threading.Thread(target=run, args=(i, [g])) for i, g in enumerate(good)]
    threads.append(threading.Thread(target=run, args=("bad", ["fine", "fine", b"\xff"])))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    for t in threads:
        t.start()
    with pytest.raises(Exception, match="unknown request parameter 'colour'"):
        client.infer(tname, [tensor], parameters={"colour": "blue"})
    for t in threads:
        t.join(120)
    assert isinstance(outcomes["bad"], zoo.InputError) and outcomes["bad"].index == 2
    expected = local_models[tname].encode(good, "text")
    for i in range(len(good)):
        assert np.allclose(outcomes[i][0], expected[i], atol=1e-5)
    assert client.is_model_ready(tname)


def test_async_client(triton, local_models):
    server, _ = triton
    tname = contract.model_name(default_model("text"))

    async def main():
        remote = AsyncTritonEmbedder(tname, server.grpc_url)
        try:
            results = await asyncio.gather(*(remote.encode([t], "text", precision="int8") for t in TEXTS[:4]))
            chunked = await remote.encode(TEXTS, "text", batch_size=2)
            with pytest.raises(zoo.InputError, match="input 1"):
                await remote.encode(["ok", b"\xff"], "text")
        finally:
            await remote.close()
        return results, chunked

    results, chunked = asyncio.run(main())
    local = local_models[tname]
    for t, r in zip(TEXTS[:4], results):
        assert np.array_equal(r, local.encode([t], "text", precision="int8"))
    assert np.allclose(chunked, local.encode(TEXTS, "text"), atol=1e-5)


def test_plain_tritonclient_and_kserve_http(triton, local_models):
    """What docs/serving.md shows: plain tritonclient over gRPC, and KServe v2 JSON over HTTP (curl)."""
    server, _ = triton
    tname = contract.model_name(default_model("text"))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"a cat"], [b"a dog"]], dtype=object))
    result = client.infer(tname, [tensor], parameters={"dimensions": 64, "precision": "float16"})
    assert result.as_numpy("EMBEDDING").shape == (2, 64) and result.as_numpy("EMBEDDING").dtype == np.float16

    body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["a cat"]}],
            "parameters": {"dimensions": 8}}
    request = urllib.request.Request(f"{server.http_url}/v2/models/{tname}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    reply = json.load(urllib.request.urlopen(request, timeout=60))
    out = reply["outputs"][0]
    assert out["name"] == contract.OUTPUT and out["shape"] == [1, 8] and out["datatype"] == "FP32"
    want = local_models[tname].encode(["a cat"], "text", dimensions=8)[0]
    assert np.allclose(out["data"], want, atol=1e-5)


def test_metrics_endpoint(triton):
    server, _ = triton
    text = urllib.request.urlopen(server.metrics_url, timeout=30).read().decode()
    assert "nv_inference_request_success" in text


def test_zoo_serve_command_starts_and_stops_cleanly(tmp_path):
    """`zoo serve` on free ports: prints where it listens, then SIGTERM leaves no process behind."""
    ports = free_ports()
    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "zoo.cli", "export", "--out", str(repo)], check=True, timeout=300)
    proc, lines = start_and_wait(["serve", "--repository", str(repo), "--grpc-port", str(ports.grpc),
                                  "--http-port", str(ports.http), "--metrics-port", str(ports.metrics),
                                  "--health-port", str(free_ports().grpc), "--openai-port", "0"], "ready:")
    try:
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        assert f"127.0.0.1:{ports.grpc}" in lines[-1] and f":{ports.metrics}/metrics" in lines[-1]
        assert grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}").is_server_ready()
    finally:
        assert stop_group(proc) == 0  # SIGTERM is a clean shutdown
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes outlived zoo serve: {leftovers}"


def test_unloadable_model_fails_fast_with_the_reason(tmp_path, monkeypatch):
    """Weights that cannot be reached: the server stops and the error says which model and why."""
    from serving.export import export
    from serving.server import TritonServer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    export(["BAAI/bge-small-en-v1.5"], tmp_path / "repo")
    server = TritonServer(tmp_path / "repo", ports=free_ports(), log_path=tmp_path / "log")
    with pytest.raises(zoo.ServerError) as err:
        server.start(timeout=300)
    msg = str(err.value)
    assert "BAAI--bge-small-en-v1.5: " in msg and "WeightsUnavailableError" in msg and "ZOO_MODELS_DIR" in msg
    assert server.process.poll() is not None


def test_onnx_int8_runtime_served(tmp_path, monkeypatch):
    """A repository exported with --runtime onnx-int8: the stub makes and checks the int8 graph in the cache,
    the client sees the runtime, and served rows equal in-process rows on the same runtime."""
    from serving.export import export
    from serving.server import TritonServer

    from .tiny_models import make_tiny_text_folder

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))  # the server's stub inherits it
    folder = str(make_tiny_text_folder(tmp_path / "tiny-onnx", pooling="mean"))
    export([folder], tmp_path / "repo", runtime="onnx-int8")
    with TritonServer(tmp_path / "repo", ports=free_ports(), log_path=tmp_path / "log").start() as server:
        remote = TritonEmbedder("tiny-onnx", server.grpc_url)
        assert remote.runtime == "onnx-int8"
        served = remote.encode(TEXTS, "text")
        remote.close()
    assert list((tmp_path / "cache").glob("onnx/*/int8.onnx"))
    local = zoo.create(folder, runtime="onnx-int8")
    np.testing.assert_allclose(served, local.encode(TEXTS, "text"), atol=1e-5)
