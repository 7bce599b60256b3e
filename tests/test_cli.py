"""The zoo command line, run as a user runs it (a subprocess)."""

import json
import subprocess
import sys

import pytest

import zoo


def zoo_cli(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_list_and_info():
    out = zoo_cli("list", "--modality", "text")
    assert out.returncode == 0
    line = next(x for x in out.stdout.splitlines() if x.startswith("sentence-transformers/all-MiniLM-L6-v2"))
    assert "384" in line and "apache-2.0" in line and line.split()[-1] == "yes"
    info = json.loads(zoo_cli("info", "sentence-transformers/all-MiniLM-L6-v2", "--json").stdout)
    assert info["dim"] == 384 and info["available_offline"] is True
    assert info["runtime"] == "torch"  # the suite's $ZOO_RUNTIME (tests/conftest.py)
    assert {"auto", "onnx", "onnx-int8"} <= set(info["runtimes"])


def test_info_says_which_runtime_auto_picks(monkeypatch):
    monkeypatch.delenv("ZOO_RUNTIME")
    info = json.loads(zoo_cli("info", "sentence-transformers/all-MiniLM-L6-v2", "--json", "--device", "cpu").stdout)
    assert info["runtime"] == "onnx (auto on cpu)"
    info = json.loads(zoo_cli("info", "sentence-transformers/all-MiniLM-L6-v2", "--json", "--device", "cuda").stdout)
    assert info["runtime"] == "torch-fp16 (auto on cuda)"
    clap = next(n for n in zoo.list_models() if zoo.get_spec(n).family == "clap")
    assert json.loads(zoo_cli("info", clap, "--json", "--device", "cpu").stdout)["runtime"] == "torch (auto on cpu)"


def test_encode_json():
    out = zoo_cli("encode", "sentence-transformers/all-MiniLM-L6-v2", "--modality", "text", "a cat", "a dog",
                  "--dimensions", "64", "--precision", "int8", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["shape"] == [2, 64] and all(isinstance(v, int) for v in doc["embeddings"][0])


@pytest.mark.parametrize(("args", "match"), [
    (["info", "sentence-transformers/all-MiniLM"], "unknown model"),
    (["encode", "sentence-transformers/all-MiniLM-L6-v2", "x", "--modality", "image"], "does not embed"),
    (["encode", "sentence-transformers/all-MiniLM-L6-v2", "x", "--dimensions", "999"], "outside 1..384"),
])
def test_errors_exit_nonzero_without_traceback(args, match):
    out = zoo_cli(*args)
    assert out.returncode == 2
    assert match in out.stderr and "Traceback" not in out.stderr


def test_encode_default_model_for_images_and_interleaved(tmp_path):
    import numpy as np

    from zoo.data import shapes as S

    rng = np.random.default_rng(0)
    path = tmp_path / "scene.png"
    S.render(S.sample_scene(rng), rng).save(path)
    out = zoo_cli("encode", "default", "--modality", "image", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"] == "zoo/shapes-aligned-minilm"
    out = zoo_cli("encode", "default", "--modality", "interleaved", str(path), "but blue", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["shape"] == [1, 384]


def test_encode_other_output_kinds(tmp_path):
    """`zoo encode --output` on a model with three kinds: multi-vector rows per item, sparse {indices, values},
    as in-process encode() gives them; a control that does not apply is a one-line error."""
    import numpy as np

    import zoo

    from .tiny_models import make_m3

    folder = str(make_m3(tmp_path / "m3"))
    model = zoo.create(folder, device="cpu")
    out = zoo_cli("encode", folder, "a red circle", "two squares", "--output", "multivector", "--max-vectors", "3",
                  "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    want = model.encode(["a red circle", "two squares"], "text", output="multivector", max_vectors=3)
    assert doc["output"] == "multivector" and doc["shape"] == [list(x.shape) for x in want]
    assert all(np.allclose(got, ref, atol=1e-5) for got, ref in zip(doc["embeddings"], want))
    doc = json.loads(zoo_cli("encode", folder, "a red circle", "--output", "sparse", "--top-k", "4", "--json").stdout)
    want = model.encode(["a red circle"], "text", output="sparse", top_k=4)
    assert doc["embeddings"][0]["indices"] == want.indices.tolist()
    assert f"{want.nnz} terms" in zoo_cli("encode", folder, "a red circle", "--output", "sparse", "--top-k", "4").stdout
    out = zoo_cli("encode", folder, "x", "--top-k", "4")
    assert out.returncode == 2 and "top_k applies to sparse" in out.stderr and "Traceback" not in out.stderr
    listed = zoo_cli("list", "--pattern", "BAAI/bge-m3").stdout
    assert "dense,sparse,multivector" in listed
