"""A family from a separate package: installed from a temporary folder, found through the ``zoo.families``
entry-point group, it loads a folder of its own layout in-process and is served by `zoo serve`, zoo unedited.

The plugin is installed into an environment of its own layered on the project's (a venv whose ``.pth`` adds the
project's site-packages), so the project's environment stays exactly the lock; tritonserver's python stub
finds its packages from the interpreter on PATH, which `zoo serve` sets to the one running it.

The toy family embeds a text as its UTF-8 byte counts times a ``[256, dim]`` matrix saved in the folder
(safetensors); the test computes the same vectors from the file with numpy alone."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from serving.client import TritonEmbedder
from serving.server import free_ports

from .processes import start_and_wait, stop_group

DIM = 12
TEXTS = ["a cat on a sofa", "zoo plugin", "ünïcode ✓"]

PLUGIN = '''
"""A toy zoo family: byte counts through a matrix."""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from zoo.base import Embedder
from zoo.registry import register_checkpoints
from zoo.spec import EmbedderSpec, Modality


class ByteCountEmbedder(Embedder):
    """Counts of each byte value of a UTF-8 text, times the folder's matrix."""

    folder_priority = 5

    def __init__(self, spec, path, device=None):
        super().__init__(spec, device)
        self.matrix = load_file(str(Path(path) / "model.safetensors"))["matrix"]

    @classmethod
    def spec_from_folder(cls, path):
        card = Path(path) / "bytecount.json"
        if not card.is_file():
            return None
        dim = json.loads(card.read_text())["dim"]
        return EmbedderSpec(name=str(path), family="bytecount", modalities=(Modality.TEXT,), dim=dim,
                            license="MIT", source=str(path), description="byte counts through a matrix")

    def forward(self, batch, modality, opts, kind):
        counts = np.stack([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256) for t in batch])
        return (counts.astype(np.float32) @ self.matrix).astype(np.float32)


register_checkpoints("bytecount", {"toy/bytecount-12": {"description": "a registered toy checkpoint"}},
                     modalities=(Modality.TEXT,), dim=12, license="MIT")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict[str, Path]:
    """The toy family installed (pip, offline, no dependencies) into a folder of its own, and a model folder
    in its layout."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    (src / "zoo_bytecount").mkdir(parents=True)
    (src / "zoo_bytecount" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "zoo-bytecount"
        version = "0.1"

        [project.entry-points."zoo.families"]
        bytecount = "zoo_bytecount:ByteCountEmbedder"

        [tool.setuptools]
        packages = ["zoo_bytecount"]
    '''))
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "project.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--no-index", "--no-deps",
                    "--no-build-isolation", "--quiet", "--target", str(site), str(src)], check=True,
                   capture_output=True, timeout=300)
    model = root / "bytecount-model"
    model.mkdir()
    (model / "bytecount.json").write_text(json.dumps({"dim": DIM}))
    save_file({"matrix": np.random.default_rng(7).normal(size=(256, DIM)).astype(np.float32)},
              str(model / "model.safetensors"))
    return {"python": env / "bin" / "python", "model": model}


def expected(model: Path, texts: list[str]) -> np.ndarray:
    """The toy family's vectors, from its file with numpy alone (L2-normalized, as encode() returns)."""
    matrix = load_file(str(model / "model.safetensors"))["matrix"]
    rows = np.stack([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256) @ matrix for t in texts])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def run_python(code: str, python: Path | str = sys.executable) -> str:
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_an_installed_plugin_family_loads_its_folder(plugin):
    code = textwrap.dedent(f'''
        import json, zoo
        from zoo.registry import list_families
        m = zoo.create({str(plugin["model"])!r}, device="cpu")
        print(json.dumps({{"families": list_families(), "family": m.spec.family, "cls": type(m).__name__,
                          "registered": zoo.get_spec("toy/bytecount-12").family,
                          "rows": m.encode({TEXTS!r}, "text").tolist()}}))
    ''')
    got = json.loads(run_python(code, plugin["python"]).splitlines()[-1])
    assert "bytecount" in got["families"] and {"text", "m3", "omni"} <= set(got["families"])
    assert got["family"] == "bytecount" and got["cls"] == "ByteCountEmbedder"
    assert got["registered"] == "bytecount"  # its catalog came with it
    np.testing.assert_allclose(np.array(got["rows"]), expected(plugin["model"], TEXTS), rtol=1e-5, atol=1e-6)


def test_without_the_plugin_the_folder_is_not_claimed(plugin):
    code = f"import zoo\ntry:\n    zoo.get_spec({str(plugin['model'])!r})\nexcept zoo.ZooError as e:\n    print(e)\n"
    out = run_python(code)
    assert "no family can load the folder" in out


@pytest.mark.server
def test_a_plugin_family_is_served(plugin):
    """`zoo serve FOLDER` run by the plugin's environment: Triton's python backend loads the family through the
    same entry point, and the gRPC client gets the toy vectors."""
    ports, health = free_ports(), free_ports().grpc
    proc, lines = start_and_wait(["serve", str(plugin["model"]), "--grpc-port", str(ports.grpc), "--http-port",
                                  str(ports.http), "--metrics-port", str(ports.metrics), "--health-port",
                                  str(health), "--openai-port", "0"], "health:",
                                 python=str(plugin["python"]))
    try:
        assert lines and lines[-1].startswith("health:"), "".join(lines)
        remote = TritonEmbedder(plugin["model"].name, f"127.0.0.1:{ports.grpc}")
        try:
            assert remote.spec.family == "bytecount" and remote.spec.dim == DIM
            got = remote.encode(TEXTS, "text")
        finally:
            remote.close()
        np.testing.assert_allclose(got, expected(plugin["model"], TEXTS), rtol=1e-5, atol=1e-6)
    finally:
        assert stop_group(proc) == 0
