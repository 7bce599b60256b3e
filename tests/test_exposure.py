"""What an exposed `zoo serve` must not allow, and what its operator's own tools must not destroy."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import zoo
from serving.export import export
from tests.tiny_models import TINY_MODELS


@pytest.fixture()
def tiny_folder(tmp_path):
    return TINY_MODELS["text"](tmp_path / "models" / "tiny-text")


def test_export_refuses_to_write_over_the_models_own_weights(tiny_folder):
    """`zoo export DIR/NAME --out DIR` would replace the model's folder by its export: refused, weights kept."""
    before = sorted(p.name for p in tiny_folder.iterdir())
    with pytest.raises(zoo.InvalidArgumentError, match="its own weights"):
        export([str(tiny_folder)], tiny_folder.parent)
    with pytest.raises(zoo.InvalidArgumentError, match="its own weights"):
        export([str(tiny_folder)], tiny_folder)  # into the weights folder itself
    assert sorted(p.name for p in tiny_folder.iterdir()) == before


def test_export_replaces_only_what_it_wrote(tiny_folder, tmp_path):
    """A second export replaces the first; a folder of the same name that export did not write is refused."""
    repo = tmp_path / "repo"
    first = export([str(tiny_folder)], repo)[0]
    (first / "1" / "__pycache__").mkdir()  # what the python backend leaves beside model.py
    assert export([str(tiny_folder)], repo)[0] == first and (first / "config.pbtxt").is_file()
    shutil.rmtree(first)
    first.mkdir()
    (first / "notes.txt").write_text("mine")
    with pytest.raises(zoo.InvalidArgumentError, match="not a model folder"):
        export([str(tiny_folder)], repo)
    assert (first / "notes.txt").read_text() == "mine"


# ---- Triton's admin APIs need the server's secret ------------------------------------------------------------
EVIL_MODEL_PY = '''
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("code ran")
    def execute(self, requests):
        return []
'''
EVIL_CONFIG = ('{"name": "%s", "backend": "python", "max_batch_size": 0, "input": [{"name": "X", '
               '"data_type": "TYPE_FP32", "dims": [1]}], "output": [{"name": "Y", "data_type": "TYPE_FP32", '
               '"dims": [1]}]}')


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A tritonserver serving one tiny text model, started as `zoo serve` starts it (admin APIs restricted)."""
    from serving.server import TritonServer, free_ports

    tmp = tmp_path_factory.mktemp("guarded")
    folder = TINY_MODELS["text"](tmp / "tiny-text")
    export([str(folder)], tmp / "repo")
    with TritonServer(tmp / "repo", ports=free_ports(), log_path=tmp / "server.log").start(timeout=300) as server:
        yield server, folder, tmp


def test_loading_a_model_with_uploaded_code_is_refused_over_http_and_grpc(guarded):
    """The recipe: POST .../load with a python-backend config and a base64 model.py. Without the secret it is
    refused over HTTP and gRPC, and the uploaded code never runs."""
    import base64
    import json
    import urllib.error
    import urllib.request

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, _, tmp = guarded
    marker = tmp / "pwned"
    code = EVIL_MODEL_PY.format(marker=str(marker)).encode()
    body = json.dumps({"parameters": {"config": EVIL_CONFIG % "evil", "file:1/model.py":
                                      base64.b64encode(code).decode()}}).encode()
    request = urllib.request.Request(f"{server.http_url}/v2/repository/models/evil/load", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code in (401, 403), refused.value.code
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException):
        client.load_model("evil2", config=EVIL_CONFIG % "evil2", files={"file:1/model.py": code})
    wrong = {"triton-grpc-protocol-zoo-admin-key": "not-the-secret"}
    with pytest.raises(InferenceServerException):
        client.load_model("evil3", config=EVIL_CONFIG % "evil3", files={"file:1/model.py": code}, headers=wrong)
    time.sleep(1)
    assert not marker.exists(), "uploaded model code ran"
    assert not client.is_model_ready("evil2") and not client.is_model_ready("evil3")


def test_admin_apis_need_the_secret_and_inference_stays_open(guarded):
    """Unload, the repository index, configs and statistics: refused without the secret (the model keeps
    serving), answered with it; inference and the spec (asked of the model itself) need nothing."""
    import urllib.error
    import urllib.request

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from serving.client import TritonEmbedder

    server, folder, _ = guarded
    name = folder.name
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for call in (lambda **kw: client.unload_model(name, **kw),
                 lambda **kw: client.get_model_repository_index(**kw),
                 lambda **kw: client.get_model_config(name, **kw),
                 lambda **kw: client.get_inference_statistics(name, **kw),
                 lambda **kw: client.get_system_shared_memory_status(**kw),
                 lambda **kw: client.get_log_settings(**kw),
                 lambda **kw: client.get_trace_settings(**kw)):
        with pytest.raises(InferenceServerException):
            call()
    for path in (f"/v2/models/{name}/config", "/v2/repository/index", f"/v2/models/{name}/stats"):
        method = "POST" if "repository" in path else "GET"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(server.http_url + path, method=method), timeout=30)
        opened = urllib.request.Request(server.http_url + path, method=method, headers=server.admin_http_headers)
        with urllib.request.urlopen(opened, timeout=30) as reply:
            assert reply.status == 200
    assert client.is_model_ready(name)
    remote = TritonEmbedder(name, server.grpc_url)
    assert remote.spec.name == remote.spec.source == name  # the folder's path stays on the server
    assert str(folder.parent) not in json.dumps(remote.spec.to_dict())
    want = zoo.create(str(folder), device="cpu").encode(["a red circle", "x"], "text")
    np.testing.assert_allclose(remote.encode(["a red circle", "x"], "text"), want, atol=1e-5)
    index = client.get_model_repository_index(as_json=True, headers=server.admin_headers)
    assert [m["name"] for m in index["models"]] == [name]


def test_the_supervisor_still_reloads_a_killed_stub(guarded):
    """The supervisor sends the secret: a SIGKILLed stub's model is unloaded and loaded again."""
    import os
    import signal

    import numpy as np

    from serving.client import TritonEmbedder
    from serving.supervisor import Supervisor

    server, folder, _ = guarded
    supervisor = Supervisor(server, interval=0.2).start()
    try:
        assert supervisor.ready()
        victim = [s.pid for s in server.stubs()]
        os.kill(victim[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        # a restart counts once the model is loaded again: wait for the count, then for ready (a fast restart may
        # never be seen not ready)
        while time.monotonic() < deadline and not supervisor.status()[folder.name]["restarts"]:
            time.sleep(0.1)
        while time.monotonic() < deadline and not supervisor.ready():
            time.sleep(0.2)
        assert supervisor.ready(), supervisor.status()
        assert supervisor.status()[folder.name]["restarts"] == 1
        assert victim[0] not in [s.pid for s in server.stubs()]
        want = zoo.create(str(folder), device="cpu").encode(["a red circle"], "text")
        np.testing.assert_allclose(TritonEmbedder(folder.name, server.grpc_url).encode(["a red circle"], "text"),
                                   want, atol=1e-5)
    finally:
        supervisor.close()


# ---- local files ----------------------------------------------------------------------------------------------
def test_backend_folder_is_private_and_compared_by_content(tmp_path, monkeypatch):
    """The python backend is assembled in the zoo cache: a planted file of the same size is replaced (content is
    compared, not size), and a folder other users may write is refused."""
    import os

    from serving import server as S

    root = S._wheel_root()
    assert root is not None
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    dest = S._wheel_backends(root)
    assert dest.is_relative_to(tmp_path / "cache") and not (dest.stat().st_mode & 0o077)
    utils = dest / "python" / "triton_python_backend_utils.py"
    original = utils.read_bytes()
    utils.write_bytes(b"#" * len(original))  # same size, other content: what a planted file looks like
    S._wheel_backends(root)
    assert utils.read_bytes() == original
    os.chmod(dest, 0o777)
    with pytest.raises(zoo.ServerError, match="not be writable by others"):
        S._wheel_backends(root)
