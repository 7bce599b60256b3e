"""Runtimes: ONNX Runtime towers exported from the torch modules (float32 and int8), checked against torch
at export and kept in the cache; torch in half precision; the choice carried into Triton's config."""

from __future__ import annotations

import json

import numpy as np
import pytest

import zoo
from tests.tiny_models import TEXTS, assert_parity, make_aligned, make_open_clip, make_tiny_text_folder
from zoo import runtime as rt
from zoo.data import shapes


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh cache folder for the exported files."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return str(make_tiny_text_folder(tmp_path_factory.mktemp("tiny-text"), pooling="mean"))


def test_onnx_text_tower_matches_torch_and_is_exported_once(tiny_text, cache):
    ref = zoo.create(tiny_text).encode(TEXTS, "text", normalize=False)
    model = zoo.create(tiny_text, runtime="onnx")
    assert model.runtime == "onnx"
    got = model.encode(TEXTS, "text", normalize=False)
    assert_parity(got, ref, min_cos=rt.FP32_MIN_COS)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    (onnx_file,) = cache.glob("onnx/*/fp32.onnx")
    check = json.loads((onnx_file.parent / "check.json").read_text())
    assert check["onnx"]["min_cos"] >= rt.FP32_MIN_COS and check["rows"] == 256
    stamp = onnx_file.stat().st_mtime_ns
    again = zoo.create(tiny_text, runtime="onnx")  # from the cache: not exported again
    assert onnx_file.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode(TEXTS, "text", normalize=False), got, atol=1e-6)


def test_int8_text_tower_meets_the_bar_it_records(tiny_text, cache):
    ref = zoo.create(tiny_text).encode(TEXTS, "text")
    model = zoo.create(tiny_text, runtime="onnx-int8")
    check = model._fast["text"].check
    assert check["runtime"] == "onnx-int8" and check["int8"] > 0
    assert check["min_cos"] >= rt.INT8_MIN_COS and check["top10_overlap"] >= rt.INT8_MIN_OVERLAP
    got = model.encode(TEXTS, "text")
    assert _cos(got, ref).min() >= rt.INT8_MIN_COS
    assert not np.allclose(got, ref, atol=1e-6)  # truly int8, not the float32 graph
    import onnx

    (int8_file,) = cache.glob("onnx/*/int8.onnx")
    nodes = onnx.load(str(int8_file)).graph.node
    ops = {n.op_type for n in nodes}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    assert "DequantizeLinear" not in ops  # the embedding tables stay float32: int8 buys them nothing
    smoothing = [n for n in nodes if n.name.endswith("/smooth/mul")]
    assert check["smoothed_inputs"] == len(smoothing) > 0


def test_smoothing_keeps_the_float_graph_and_moves_ranges_into_the_weights(tiny_text, cache):
    """(X / s) @ (s * W) computes X @ W: the smoothed float32 graph gives the export's rows, and the
    activations a smoothed product sees have flatter channel ranges."""
    import onnx

    from zoo import int8

    model = zoo.create(tiny_text, runtime="onnx")
    tower = model._towers()[0]
    (fp32,) = cache.glob("onnx/*/fp32.onnx")
    batches = tower.batches()
    smoothed = fp32.with_name("smoothed-test.onnx")
    n = int8.smooth(fp32, smoothed, batches)
    assert n > 0
    got = rt._run(rt.OrtTower(smoothed, "cpu"), batches)
    want = rt._run(rt.OrtTower(fp32, "cpu"), batches)
    np.testing.assert_allclose(got, want, atol=1e-4)
    graph = onnx.load(str(smoothed)).graph
    name = next(n.input[0] for n in graph.node if n.name.endswith("/smooth/mul"))
    before = int8._input_ranges(fp32, [name], batches[:2])[name]
    after = int8._input_ranges(smoothed, [f"{name}/smooth"], batches[:2])[f"{name}/smooth"]
    assert after.max() / after.min() < before.max() / before.min()


def test_the_ranking_probe_computes_what_the_quantizer_makes(tiny_text, cache):
    """The one-session probe the sensitivity ranking runs: every switch off gives the float graph's rows, and
    one switch on gives the rows of ONNX Runtime's own dynamic int8 of that product alone."""
    import onnxruntime as ort

    from zoo import int8

    zoo.create(tiny_text, runtime="onnx")
    (fp32,) = cache.glob("onnx/*/fp32.onnx")
    batches = zoo.create(tiny_text)._towers()[0].batches()[:4]
    products = int8.weighted_products(fp32)
    probe = fp32.with_name("probe-test.onnx")
    switches = int8._probe_graph(fp32, products, probe)
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    feeds = [{i.name: b[i.name].numpy() for i in session.get_inputs() if i.name not in switches} for b in batches]

    def rows(on: str | None) -> np.ndarray:
        flags = {s: np.array(s == on) for s in switches}
        return np.concatenate([session.run(None, {**x, **flags})[0] for x in feeds])

    floats = rows(None)
    np.testing.assert_allclose(floats, rt._run(rt.OrtTower(fp32, "cpu"), batches), atol=1e-5)
    for product, switch in list(zip(products, switches))[:3]:
        alone = fp32.with_name("alone-test.onnx")
        int8.quantize(fp32, alone, [], only=[product])
        real = rt._run(rt.OrtTower(alone, "cpu"), batches)
        moved = np.linalg.norm(real - floats)
        assert moved > 1e-3  # int8 moved the rows
        # what the probe gets wrong is a sliver of what int8 moves (1e-4 here; 0.4-0.9 with either half of the
        # rounding left out)
        assert np.linalg.norm(rows(switch) - real) / moved < 0.01


def test_minilm_int8_quantizes_all_but_three_products_and_follows_sentence_transformers(minilm_dir, cache):
    """The real MiniLM: smoothed, all but three of its 36 weighted products are int8, and the published bar
    holds on 500 short sentences the check rows do not contain, against sentence-transformers on the same
    weights (the build bar's margin is what keeps it there)."""
    from sentence_transformers import SentenceTransformer

    from zoo import int8
    from zoo.data.sentences import short_sentences

    model = zoo.create(str(minilm_dir), runtime="onnx-int8")
    check = model._fast["text"].check
    assert check["float32_kept"] <= 3 and check["int8"] + check["float32_kept"] == 36, check
    assert check["min_cos"] >= int8.BUILD_MIN_COS and check["top10_overlap"] >= int8.BUILD_MIN_OVERLAP
    texts = short_sentences(500, seed=7)
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    measured = rt.agreement(ref, model.encode(texts, "text"))
    assert measured["min_cos"] >= rt.INT8_MIN_COS and measured["top10_overlap"] >= rt.INT8_MIN_OVERLAP, measured


def test_the_cache_key_holds_the_cpu_features(tiny_text, monkeypatch):
    """A graph made and checked on one CPU is not reused on another: int8 products differ with VNNI."""
    assert set(rt.cpu_isa().split(",")) <= set(rt.ISA_FLAGS) | {""}
    tower = zoo.create(tiny_text)._towers()[0]
    monkeypatch.setattr(rt, "cpu_isa", lambda: "avx2,fma")
    avx2 = rt._key(tower, "w")
    monkeypatch.setattr(rt, "cpu_isa", lambda: "avx2,fma,avx512f,avx512_vnni")
    assert rt._key(tower, "w") != avx2


def test_agreement_measures_cosine_and_neighbour_overlap():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 16))
    same = rt.agreement(rows, rows * 3.0)
    assert same["min_cos"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    shuffled = rt.agreement(rows, rows[rng.permutation(50)])
    assert shuffled["min_cos"] < 0.9 and shuffled["top10_overlap"] < 0.5

    def at(degrees):
        return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees])

    # nearest other row: 0°→10°, 10°→0°, 30°→10°, 90°→30°; after moving 10° to 20°: 0°→20°, 20°→30°, ...
    moved = rt.agreement(at([0, 10, 30, 90]), at([0, 20, 30, 90]), k=1)
    assert moved["top10_overlap"] == 0.75 and moved["min_cos"] == pytest.approx(np.cos(np.radians(10)))


def test_a_failing_export_is_refused_not_used(tiny_text, cache, monkeypatch):
    monkeypatch.setattr(rt, "_run", lambda session, batches: np.random.default_rng(0).normal(size=(256, 32)))
    with pytest.raises(rt.RuntimeCheckError, match="differs from torch"):
        zoo.create(tiny_text, runtime="onnx")
    assert not list(cache.glob("onnx/*/fp32.onnx"))


def test_half_precision_runtime(tiny_text):
    import torch

    ref = zoo.create(tiny_text).encode(TEXTS, "text")
    half = zoo.create(tiny_text, runtime="torch-fp16")
    assert half.runtime == "torch-fp16" and set(half._fast) == {"text"}
    assert {p.dtype for p in half._fast["text"].module.parameters()} == {torch.float16}  # the tower is halved
    got = half.encode(TEXTS, "text")
    # float16's rounding alone: cos 0.9999996 on this model (a tower that is wrong, not merely rounded, is far
    # below 0.99999), and the rows are not float32's to the last digit
    assert got.dtype == np.float32
    assert_parity(got, ref, min_cos=0.99999, rtol=2e-3)
    assert not np.allclose(got, ref, rtol=0, atol=1e-6), "the same rows as float32: nothing ran in half precision"
    with pytest.raises(zoo.InvalidArgumentError, match="already runs on 'torch-fp16'; create it again"):
        half.use_runtime("torch")  # its modules were halved in place


def test_half_precision_that_overflows_to_nan_is_refused(tiny_text, monkeypatch):
    """NaN rows (float16 overflowing) fail the float16 check instead of passing it (a NaN cosine compares
    false with every bar)."""
    halved = rt.HalfTower.__call__
    monkeypatch.setattr(rt.HalfTower, "__call__", lambda self, inputs: halved(self, inputs) * float("nan"))
    with pytest.raises(rt.RuntimeCheckError, match="float16 differs from float32 .least cosine nan"):
        rt._halved(zoo.create(tiny_text, device="cpu")._towers())


def test_unknown_or_unoffered_runtime_is_a_clear_error(tiny_text, tmp_path):
    with pytest.raises(zoo.InvalidArgumentError, match="unknown runtime 'tensorrt'"):
        zoo.create(tiny_text, runtime="tensorrt")
    clip = str(make_open_clip(tmp_path / "clip"))
    with pytest.raises(zoo.InvalidArgumentError, match="runs on 'torch', not 'onnx'"):
        zoo.create(clip, runtime="onnx")


def test_aligned_model_runs_its_image_and_text_towers_on_onnx(tmp_path, cache, monkeypatch):
    folder = str(make_aligned(tmp_path / "aligned"))
    rng = np.random.default_rng(3)
    images = [shapes.render(shapes.sample_scene(rng), rng) for _ in range(5)]
    torch_model, onnx_model = zoo.create(folder), zoo.create(folder, runtime="onnx")
    assert set(onnx_model._fast) == {"image"} and onnx_model.text.runtime == "onnx"
    for items, modality in ((images, "image"), (TEXTS, "text"), ([["a red circle", images[0]], [images[1]]],
                                                                 "interleaved")):
        assert_parity(onnx_model.encode(items, modality), torch_model.encode(items, modality), what=modality)

    # the default (auto) moves both towers to ONNX, and a runtime asked for by name moves both too: the text model
    # inside is made on torch and follows its image tower (it once resolved auto itself, and refused "torch")
    monkeypatch.delenv("ZOO_RUNTIME")
    auto_model = zoo.create(folder)
    assert (auto_model.runtime, auto_model.text.runtime) == ("onnx", "onnx")
    assert (torch_model.runtime, torch_model.text.runtime) == ("torch", "torch")
    monkeypatch.setattr(rt, "accelerate", lambda *a, **k: pytest.fail("runtime='torch' made an ONNX session"))
    asked = zoo.create(folder, runtime="torch")
    assert (asked.runtime, asked.text.runtime) == ("torch", "torch")


def test_export_records_the_runtime_and_shares_cores_among_instances(tiny_text, tmp_path):
    from serving import contract
    from serving.export import build_config, export
    from serving.triton_model import instance_threads

    spec = zoo.get_spec(tiny_text)
    config = build_config(spec, tiny_text, triton_name="t", instances=2, runtime="onnx-int8")
    assert config.parameters[contract.CONFIG_RUNTIME_KEY].string_value == "onnx-int8"
    as_json = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    assert instance_threads(as_json, cores=16) == 8 and instance_threads(as_json, cores=1) == 1
    with pytest.raises(zoo.InvalidArgumentError, match="runs on .torch., not .onnx."):
        build_config(zoo.get_spec(str(make_open_clip(tmp_path / "clip"))), "x", triton_name="c", runtime="onnx")
    # a repository of several families: those without an ONNX path stay on torch
    clip = str(tmp_path / "clip")
    folders = export([tiny_text, clip], tmp_path / "repo", runtime="onnx")
    written = [f.joinpath("config.pbtxt").read_text() for f in folders]
    assert 'string_value: "onnx"' in written[0] and 'string_value: "torch"' in written[1]


# ---- auto: the default ----------------------------------------------------------------------------------------
def test_auto_is_the_default_and_runs_onnx_on_the_cpu_up_to_its_length(tiny_text, cache, monkeypatch):
    """Unasked, a text model runs on ONNX on the CPU; a batch longer than auto's length runs on torch (ONNX's
    unfused attention is slower and bigger there), and both give torch's rows."""
    monkeypatch.delenv("ZOO_RUNTIME")
    monkeypatch.setattr(rt, "AUTO_ONNX_MAX_LENGTH", 12)  # the tiny model reads 64 tokens: room on both sides
    model = zoo.create(tiny_text, device="cpu")
    assert model.runtime == "onnx" and isinstance(model._fast["text"], rt.LengthSplit)
    assert list(cache.glob("onnx/*/fp32.onnx")), "auto ran nothing it exported and checked"
    lengths = []
    session = model._fast["text"].fast
    model._fast["text"].fast = lambda inputs: (lengths.append(inputs["input_ids"].shape[1]), session(inputs))[1]
    torch_model = zoo.create(tiny_text, runtime="torch")
    short, long = ["a cat", "two dogs"], [" ".join(["word"] * 40), " ".join(["other things"] * 30)]
    for texts in (short, long):
        assert_parity(model.encode(texts, "text"), torch_model.encode(texts, "text"), min_cos=rt.FP32_MIN_COS)
    assert len(lengths) == 1 and lengths[0] <= 12, f"the session ran batches of {lengths} tokens"


def test_auto_falls_back_to_torch_with_a_warning_where_onnx_cannot_be_made(tiny_text, cache, monkeypatch, caplog):
    monkeypatch.delenv("ZOO_RUNTIME")

    def refuse(*_args, **_kwargs):
        raise RuntimeError("the exporter refuses this graph\nwith a long story")

    monkeypatch.setattr(rt, "_export", refuse)
    with caplog.at_level("WARNING", logger="zoo.runtime"):
        model = zoo.create(tiny_text)
    assert model.runtime == "torch" and not model.__dict__.get("_fast")
    assert "onnx did not pass here (RuntimeError: the exporter refuses this graph); running on torch" in caplog.text
    np.testing.assert_allclose(model.encode(TEXTS, "text"), zoo.create(tiny_text, runtime="torch").encode(
        TEXTS, "text"), atol=1e-6)
    with pytest.raises(RuntimeError, match="exporter refuses"):  # asked for by name, the failure is the caller's
        zoo.create(tiny_text, runtime="onnx")
    # remembered: the next load goes straight to torch instead of tracing again
    tries = []
    monkeypatch.setattr(rt, "_export", lambda *a, **k: tries.append(1))
    caplog.clear()
    with caplog.at_level("INFO", logger="zoo.runtime"):
        assert zoo.create(tiny_text).runtime == "torch"
    assert not tries and "onnx was refused here before (RuntimeError: the exporter refuses this graph)" in caplog.text


def test_auto_leaves_a_tower_too_big_for_one_onnx_file_on_torch(tiny_text, cache, monkeypatch):
    monkeypatch.delenv("ZOO_RUNTIME")
    monkeypatch.setattr(rt, "AUTO_ONNX_MAX_BYTES", 1024)
    monkeypatch.setattr(rt, "_export", lambda *a, **k: pytest.fail("a tower over the limit was traced"))
    assert zoo.create(tiny_text).runtime == "torch"
    assert rt.auto_runtime(("torch", "onnx"), "mps") == "torch"  # ONNX Runtime would compute on the CPU there


def test_an_onnx_model_can_go_back_to_torch(tiny_text, cache):
    model = zoo.create(tiny_text, runtime="onnx")
    model.use_runtime("torch")
    assert model.runtime == "torch" and not model._fast
    np.testing.assert_allclose(model.encode(TEXTS, "text"), zoo.create(tiny_text, runtime="torch").encode(
        TEXTS, "text"), atol=1e-6)


def test_auto_on_cuda_takes_half_precision_where_it_keeps_the_rows(tiny_text, monkeypatch):
    """auto's CUDA choice, made on the CPU's modules (the choice reads the device's name; the check runs the
    modules where they are): float16 when its rows follow float32's, else float32 again, untouched."""
    import torch

    model = zoo.create(tiny_text, runtime="torch")
    ref = model.encode(TEXTS, "text")
    runtime, fast = rt._auto(model._towers(), model.weights_fingerprint, model.runtimes, "cuda", None)
    assert runtime == "torch-fp16" and {p.dtype for p in model.encoder.parameters()} == {torch.float16}
    model.runtime, model._fast = runtime, fast
    assert_parity(model.encode(TEXTS, "text"), ref, min_cos=rt.FP16_MIN_COS, rtol=2e-3)

    model = zoo.create(tiny_text, runtime="torch")
    monkeypatch.setattr(rt, "FP16_MIN_COS", 1.5)  # no row can pass: the check must refuse and undo the halving
    assert rt._auto(model._towers(), model.weights_fingerprint, model.runtimes, "cuda", None) == ("torch", {})
    assert {p.dtype for p in model.encoder.parameters()} == {torch.float32}
    np.testing.assert_allclose(model.encode(TEXTS, "text"), ref, atol=1e-6)


def test_auto_is_torch_for_families_without_towers_and_the_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_RUNTIME")
    clip = str(make_open_clip(tmp_path / "clip"))
    assert zoo.create(clip).runtime == "torch" and zoo.create(clip, runtime="auto").runtime == "torch"
    monkeypatch.setenv("ZOO_RUNTIME", "onnx")  # a default the family does not offer: torch, not an error
    assert zoo.create(clip).runtime == "torch"
    monkeypatch.setenv("ZOO_RUNTIME", "tensorrt")
    with pytest.raises(zoo.InvalidArgumentError, match="unknown runtime 'tensorrt'"):
        zoo.create(clip)


def test_auto_is_resolved_by_each_served_instance_and_reported_as_what_runs(tiny_text, cache, tmp_path,
                                                                           monkeypatch):
    """The repository says auto, left to the server: the instance resolves it on its device (or takes the
    server's $ZOO_RUNTIME); the model's description, which clients, /v1/models and /info read, says what runs."""
    import sys

    from serving.export import export
    from serving.triton_model import TritonPythonModel
    from tests.test_warm_start import _args, fake_pb_utils

    (folder,) = export([tiny_text], tmp_path / "repo")
    assert 'string_value: "auto"' in folder.joinpath("config.pbtxt").read_text()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    for server_setting, runs in (("torch", "torch"), (None, "onnx")):
        if server_setting is None:
            monkeypatch.delenv("ZOO_RUNTIME")
        else:
            monkeypatch.setenv("ZOO_RUNTIME", server_setting)
        model = TritonPythonModel()
        model.initialize(_args(tiny_text, runtime="auto"))
        assert model.embedder.runtime == runs and json.loads(model.description)["runtime"] == runs


def test_io_binding_gives_what_session_run_gives(tiny_text, cache):
    """zoo.iobinding, the CUDA provider's path, bound to host memory here: the same output as session.run, for
    non-contiguous inputs too; a tower on the CPU provider is not bound."""
    import torch

    from zoo.iobinding import run_bound

    model = zoo.create(tiny_text, runtime="onnx")
    tower = model._fast["text"]
    tower = getattr(tower, "fast", tower)  # LengthSplit keeps the ONNX tower as .fast
    assert isinstance(tower, rt.OrtTower) and not tower.bound
    ids = torch.randint(5, 90, (11, 3)).t()  # a view whose memory is not in row order
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    inputs = {k: v for k, v in inputs.items() if k in tower.input_names}
    assert not inputs["input_ids"].is_contiguous()
    want = tower.session.run(None, {k: v.contiguous().numpy() for k, v in inputs.items()})[0]
    got = run_bound(tower.session, inputs, tower.input_names, "cpu")
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
