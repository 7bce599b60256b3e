"""`zoo serve` as a newcomer meets it: a taken port is one line and leaves nothing running; a clean exit leaves
no temporary file; what a killed server left in /dev/shm is removed by the next one; audio of a few samples
is embedded, in-process and served."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from serving import contract
from serving.client import TritonEmbedder
from serving.processes import process_alive, remove_orphaned_shm
from serving.server import free_ports
from zoo.postprocess import normalize
from zoo.spec import Modality

from .processes import REPO, start_and_wait, stop_group, taken_port


def _serve_args(ports, health: int, *extra: str) -> list[str]:
    return ["serve", "--repository", REPO, "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
            "--metrics-port", str(ports.metrics), "--health-port", str(health), "--openai-port", "0", *extra]


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


@pytest.mark.parametrize("taken", ["--health-port", "--grpc-port"])
def test_a_taken_port_is_one_line_and_leaves_nothing_running(taken):
    """A port in use: one line naming the port and the flag that changes it, a non-zero exit, no traceback, and
    no process left (tritonserver is never started)."""
    ports, health = free_ports(), free_ports().grpc
    with taken_port() as port:
        if taken == "--health-port":
            health = port
        else:
            ports = type(ports)(port, ports.http, ports.metrics)
        proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *_serve_args(ports, health)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert f"port {port}" in lines[0] and taken in lines[0] and "Traceback" not in err + out, err
    assert _group_gone(proc.pid), "processes of zoo serve outlived it"


@pytest.mark.parametrize(("extra", "says"), [
    (["--alias", "text-embedding-3-small"], "--alias takes NAME=MODEL"),
    (["--alias", "small=not/served"], "--alias small=not/served: not/served is not served here"),
    (["--alias", "sentence-transformers/all-MiniLM-L6-v2=zoo/shapes-aligned-minilm"], "a served model's own name"),
    (["--tei-model", "not/served"], "--tei-model not/served is not served here"),
])
def test_a_bad_alias_is_one_line_before_anything_starts(extra, says):
    """`--alias NAME=MODEL` names a served model under a name of no served model, `--tei-model` a served model:
    otherwise one line, a non-zero exit, and no process left."""
    ports, health = free_ports(), free_ports().grpc
    args = [arg if arg != "0" else str(free_ports().http) for arg in _serve_args(ports, health)]  # the door is on
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and says in lines[0], err
    assert "Traceback" not in err + out and _group_gone(proc.pid)


def test_clean_exit_leaves_no_temporary_file_and_orphaned_regions_are_removed(tmp_path):
    """A `zoo serve` with TMPDIR and the zoo cache pointed at empty folders: its log lands in the cache's logs/,
    SIGTERM leaves TMPDIR empty, and on start it removed a region whose owner process is gone (as after a
    SIGKILL) while keeping one whose owner lives."""
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not process_alive(dead.pid)
    orphan = Path("/dev/shm") / f"zoo{dead.pid}_0badc0de_triton_python_backend_shm_region_1"
    living = Path("/dev/shm") / f"zoo{os.getpid()}_0badc0de_triton_python_backend_shm_region_1"
    orphan.write_bytes(b"x")
    living.write_bytes(b"x")
    ports, health = free_ports(), free_ports().grpc
    try:
        proc, lines = start_and_wait(_serve_args(ports, health), "health:",
                                     env={"TMPDIR": str(tmp), "ZOO_CACHE_DIR": str(cache)})
        try:
            assert lines and lines[-1].startswith("health:"), "".join(lines)
            assert not orphan.exists() and living.exists()
            logs = list((cache / "logs").glob("tritonserver-*.log"))
            assert len(logs) == 1 and logs[0].stat().st_size > 0
            assert any(str(logs[0]) in line for line in lines), "".join(lines)
        finally:
            assert stop_group(proc) == 0
        time.sleep(0.5)
        assert _group_gone(proc.pid)
        assert sorted(p.name for p in tmp.iterdir()) == []
    finally:
        orphan.unlink(missing_ok=True)
        living.unlink(missing_ok=True)


def test_orphaned_regions_of_other_users_and_live_owners_stay(tmp_path):
    """Only regions named like a server's (``zoo<pid>_<8 hex>_``) whose owner is gone are removed."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = [f"zoo{dead.pid}_12345678_a", f"zoo{os.getpid()}_12345678_a", f"zoo{dead.pid}_nothex!!_a"]
    paths = [Path("/dev/shm") / n for n in names]
    for path in paths:
        path.write_bytes(b"x")
    try:
        removed = remove_orphaned_shm()
        assert paths[0] in removed and not paths[0].exists()
        assert paths[1].exists() and paths[2].exists()
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


SHORT = (1, 50, 199)  # fewer samples than one STFT frame's centre padding (n_fft/2 = 200) of the aligned tower


def _audio_models(models: dict[str, str]) -> list[tuple[str, str]]:
    return [(t, n) for t, n in models.items() if Modality.AUDIO in zoo.get_spec(n).modalities]


def test_a_few_samples_of_audio_embed_in_process_and_served(triton):
    """1, 50 and 199 samples: every served audio model answers each with the row it gives in-process."""
    server, models = triton
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n).astype(np.float32), 16000) for n in SHORT]
    audio = _audio_models(models)
    assert any(contract.model_name(zoo.defaults.default_model("audio")) == t for t, _ in audio)
    for tname, name in audio:
        local = zoo.create(name, device="cpu").encode(clips, modality="audio", normalize=True)
        remote = TritonEmbedder(tname, server.grpc_url).encode(clips, modality="audio", normalize=True)
        assert local.shape == remote.shape == (len(SHORT), zoo.get_spec(name).dim), tname
        assert np.isfinite(local).all(), tname
        np.testing.assert_allclose(remote, local, atol=1e-5, err_msg=tname)
        if name == zoo.defaults.default_model("audio"):  # the model whose STFT failed: it hears the clips apart
            assert (normalize(local) @ normalize(local).T)[~np.eye(len(SHORT), dtype=bool)].max() < 0.9999


def test_a_door_off_loopback_without_a_key_refuses_to_start():
    """`--host 0.0.0.0` with no API key: one line saying why, nothing started or bound."""
    ports, health = free_ports(), free_ports().grpc
    env = {k: v for k, v in os.environ.items() if k != "ZOO_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *_serve_args(ports, health)[:-2], "--openai-port",
                           str(free_ports().grpc), "--host", "0.0.0.0"], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "without an API key" in lines[0] and "--api-key" in lines[0], done.stderr


def test_without_the_sparse_extra_the_other_defaults_are_served(monkeypatch, capsys):
    """`zoo serve` / `zoo export` with no model named: a default model whose weights ship in a package of an extra
    that is not installed (SPLADE-tiny: `sparse`) is left out with a line naming the extra; the others are kept."""
    import importlib.util

    from serving.cli import _installed_defaults
    from zoo.defaults import SPARSE_TEXT_MODEL, default_model_names

    assert _installed_defaults() == default_model_names() and SPARSE_TEXT_MODEL in default_model_names()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cognition" else real(name, *a))
    assert _installed_defaults() == [n for n in default_model_names() if n != SPARSE_TEXT_MODEL]
    said = capsys.readouterr().out
    assert f"leaving out the default model {SPARSE_TEXT_MODEL}" in said and "embedding-zoo[sparse]" in said
