"""Installation from the lock: the suite's own environment is exactly the lock, and the light core (no extra)
installs from requirements-core.lock, embeds with the real MiniLM, and names the extra a missing part needs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path(os.environ.get("ZOO_LOCK", ROOT / "requirements.lock"))
CORE_LOCK = Path(os.environ.get("ZOO_CORE_LOCK", ROOT / "requirements-core.lock"))
GPU_LOCK = Path(os.environ.get("ZOO_GPU_LOCK", ROOT / "requirements-gpu.lock"))
CLIENTS_LOCK = Path(os.environ.get("ZOO_CLIENTS_LOCK", ROOT / "requirements-clients.lock"))
CLIENTS_VENV = Path(os.environ.get("ZOO_CLIENTS_VENV", ROOT / ".venv-clients"))
UNLOCKED = {"pip", "embedding-zoo"}  # the venv's own installer, and the project itself (installed --no-deps)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``{name: version}`` of a lock file's ``name==version`` lines."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", lock.read_text(), re.M)
    return {canonical(n): v for n, v in found}


# the environment's own site-packages only: setuptools, once imported, puts its vendored packages on sys.path
LISTING = ("import json, sysconfig; from importlib import metadata as m; paths = sorted({sysconfig.get_paths()[k] "
           "for k in ('purelib', 'platlib')}); print(json.dumps({d.metadata['Name']: d.version "
           "for d in m.distributions(path=paths)}))")


def installed(python: str | None = None) -> dict[str, str]:
    """``{name: version}`` of every distribution installed in this interpreter's environment (or ``python``'s)."""
    out = subprocess.run([python or sys.executable, "-c", LISTING], capture_output=True, text=True, check=True).stdout
    return {canonical(n): v for n, v in json.loads(out).items()}


def assert_is_lock(env: dict[str, str], lock: Path) -> None:
    want = pins(lock)
    have = {n: v for n, v in env.items() if n not in UNLOCKED}
    assert have == want, {n: (have.get(n), want.get(n)) for n in sorted(set(have) | set(want))
                          if have.get(n) != want.get(n)}


def test_this_environment_is_exactly_the_lock():
    """Every package the suite runs with is the lock's version, and nothing else is installed (the lock
    scripts/env.sh installed: requirements-gpu.lock where a GPU is seen)."""
    lock = Path(os.environ.get("ZOO_ENV_LOCK", LOCK))
    assert len(pins(lock)) > 100
    assert_is_lock(installed(), lock)


def test_the_clients_environment_is_exactly_its_lock():
    """The client libraries the door is tested with (tests/test_clients.py) run from their own environment, made
    by the README's test command from requirements-clients.lock, which holds what pyproject.toml's `clients` group
    asks for and no model stack."""
    import tomllib

    python = CLIENTS_VENV / "bin" / "python"
    assert python.exists(), f"{CLIENTS_VENV} is missing: scripts/test.sh makes it"
    assert_is_lock(installed(str(python)), CLIENTS_LOCK)
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["clients"]
    locked = pins(CLIENTS_LOCK)
    assert all(canonical(re.split(r"[<>=!~ \[]", w)[0]) in locked for w in wanted), wanted
    assert "torch" not in locked and "embedding-zoo" not in locked


def test_the_core_lock_is_the_full_lock_restricted_to_the_core():
    """requirements-core.lock holds a subset of requirements.lock at the same versions, without any extra."""
    core, full = pins(CORE_LOCK), pins(LOCK)
    assert core and all(full.get(n) == v for n, v in core.items()), {n: (v, full.get(n)) for n, v in core.items()
                                                                       if full.get(n) != v}
    assert not {"gradio", "tritonclient", "nvidia-pytriton", "ray", "qdrant-client", "mteb", "resemblyzer",
                "faiss-cpu", "pytest"} & set(core)


def test_the_gpu_lock_is_the_full_lock_with_onnxruntime_gpu():
    """requirements-gpu.lock (what scripts/env.sh installs where a GPU is seen) is requirements.lock with the
    [gpu] extra's onnxruntime-gpu in place of onnxruntime: both install the module ``onnxruntime``, so the two
    may not meet in one environment, and every other package stays at the version the suite passed with."""
    import tomllib
    from packaging.requirements import Requirement

    gpu, full = pins(GPU_LOCK), pins(LOCK)
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in full
    assert {n: v for n, v in gpu.items() if n != "onnxruntime-gpu"} == {n: v for n, v in full.items()
                                                                          if n != "onnxruntime"}
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    wanted = {canonical(r.name): r for r in map(Requirement, extra)}
    assert set(wanted) == {"onnxruntime-gpu"} and wanted["onnxruntime-gpu"].specifier.contains(gpu["onnxruntime-gpu"])


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["a cat on a sofa", "the stock market fell sharply today"]
CORE_SCRIPT = f"""
import importlib.util, json, sys
import zoo
emb = zoo.create({MINILM!r}, device="cpu").encode({TEXTS!r}, modality="text")
absent = [m for m in ("gradio", "tritonclient", "ray", "qdrant_client", "faiss", "mteb", "resemblyzer")
          if importlib.util.find_spec(m) is not None]
print(json.dumps({{"embedding": emb.tolist(), "present_but_should_not_be": absent}}))
"""


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A virtual environment made from requirements-core.lock by the same script the README's commands use."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    # without byte-compiling every installed module: the test imports a few of them once (a minute saved)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "venv.sh"), str(venv), str(CORE_LOCK)],
                          capture_output=True, text=True, timeout=1200, env={**os.environ, "ZOO_VENV_NO_COMPILE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_core_alone_encodes_minilm_like_sentence_transformers(core_venv):
    """The core (no extra) gives encode() on the real MiniLM; rows equal sentence-transformers' (the reference,
    run here in the full environment) on the same shipped weights."""
    from sentence_transformers import SentenceTransformer

    from zoo.weights import resolve

    assert_is_lock(installed(str(core_venv / "bin" / "python")), CORE_LOCK)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(core_venv / "bin" / "python"), "-c", CORE_SCRIPT], capture_output=True, text=True,
                          timeout=600, env=env, cwd=core_venv.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["present_but_should_not_be"] == []
    import zoo

    ref = SentenceTransformer(str(resolve(zoo.get_spec(MINILM))), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(np.asarray(result["embedding"]), ref, atol=1e-5)


@pytest.mark.parametrize("args,extra", [
    (["serve"], "serve"),
    (["export", "--out", "repo"], "serve"),
    (["demo", "--backend", "local"], "ui"),
    (["embed", "in.jsonl", "--model", MINILM, "--out", "out"], "scale"),
    (["eval", MINILM, "--data", "set"], "eval"),
])
def test_core_alone_names_the_extra_a_command_needs(core_venv, tmp_path, args, extra):
    """Each command of a part the core lacks exits with one line naming its extra, and starts nothing."""
    done = subprocess.run([str(core_venv / "bin" / "zoo"), *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"embedding-zoo[{extra}]" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not any(tmp_path.iterdir())
