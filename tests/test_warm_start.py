"""READY means warm: the backend model answers a warm-up of every modality and output kind at initialize (after any
ONNX export), fails initialize when it cannot, and counts its own failed responses on Triton's metrics port."""

import json
import re
import sys
import threading
import types
import urllib.request

import numpy as np
import pytest

import zoo
from serving import contract
from serving.triton_model import Answer, Metrics, TritonPythonModel, handle
from serving.warmup import WARMUP_MAX_TOKENS, warmup_requests
from zoo import kinds
from zoo.defaults import default_model

from .tiny_models import TINY_MODELS, make_tiny_text_folder

pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_warm_up_reaches_every_modality_and_kind(tmp_path, family):
    """The warm-up requests cover each modality the spec lists with each output kind the model gives, a text
    at the model's full length among them, and every family answers them all."""
    model = zoo.create(str(TINY_MODELS[family](tmp_path / family)), device="cpu")
    spec = model.spec
    requests = warmup_requests(model)
    asked = {(contract.MODALITY_OF_INPUT[next(iter(r.inputs))], r.parameters.get("output")) for _, r in requests}
    assert {(m, k) for m in spec.modalities for k in kinds.available(spec.outputs)} <= asked
    results = handle(model, [r for _, r in requests])
    assert all(isinstance(r, Answer) for r in results), [(w, r) for (w, _), r in zip(requests, results)
                                                         if not isinstance(r, Answer)]
    if zoo.Modality.TEXT in spec.modalities:  # the longest warm-up text fills the model's length (up to a cap)
        longest = max(int(r.tokens.max()) for r in results if r.tokens is not None)
        long = "warm " * 10 * spec.max_length
        item = (long, long) if contract.reads_pairs(spec.outputs) else long  # a cross-encoder reads pairs
        limit = model.count_tokens([item], zoo.Modality.TEXT, None)[0]
        assert longest == limit or longest >= WARMUP_MAX_TOKENS < limit, (longest, limit)


# ---- the backend's entry points, with a stand-in for the python backend's pb_utils ------------------------------
class FakeMetric:
    def __init__(self):
        self.value = 0.0

    def increment(self, by):
        self.value += by

    def set(self, value):
        self.value = value


class FakeFamily:
    COUNTER, GAUGE = "counter", "gauge"
    made: dict = {}

    def __init__(self, name, description, kind):
        self.name, self.kind = name, kind
        FakeFamily.made[name] = self
        self.metrics = {}

    def Metric(self, labels):  # noqa: N802  (pb_utils' name)
        return self.metrics.setdefault(tuple(sorted(labels.items())), FakeMetric())


class FakeSender:
    """The python backend's response sender: keeps what was sent, and with which flags."""

    def __init__(self):
        self.sent, self.done = [], threading.Event()

    def send(self, response=None, flags=0):
        assert not self.done.is_set(), "a response after the final one"
        self.sent.append(response)
        if flags == FINAL:
            self.done.set()


FINAL = 1  # pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class FakeRequest:
    def __init__(self, inputs, params=None, outputs=()):
        self.inputs, self.params, self.outputs = inputs, params or {}, list(outputs)
        self.sender = FakeSender()

    def get_response_sender(self):
        return self.sender

    def parameters(self):
        return json.dumps(self.params)

    def requested_output_names(self):
        return self.outputs


def fake_pb_utils(with_metrics=True):
    pb = types.ModuleType("triton_python_backend_utils")

    class TritonError(Exception):
        INVALID_ARG, NOT_FOUND, UNAVAILABLE, INTERNAL = "invalid_arg", "not_found", "unavailable", "internal"

        def __init__(self, message, code):
            super().__init__(message)
            self.code = code

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.outputs = {t.name: t.array for t in output_tensors or []}
            self.error = error

    class Logger:
        lines: list = []

        @classmethod
        def log_info(cls, message):
            cls.lines.append(message)

    def get_input_tensor_by_name(request, name):
        value = request.inputs.get(name)
        return None if value is None else Tensor(name, np.array([[x] for x in value], dtype=object))

    pb.TritonError, pb.Tensor, pb.InferenceResponse, pb.Logger = TritonError, Tensor, InferenceResponse, Logger
    pb.get_input_tensor_by_name = get_input_tensor_by_name
    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    if with_metrics:
        FakeFamily.made = {}
        pb.MetricFamily = FakeFamily
    return pb


def answered(model, requests, within: float = 60.0):
    """``model.execute(requests)``'s responses: the last one comes through its request's response sender once
    execute has returned (serving.late_send); the others are returned, and their senders get nothing."""
    returned = model.execute(requests)
    assert len(returned) == len(requests) and returned[-1] is None
    assert all(r is not None for r in returned[:-1])
    assert requests[-1].sender.done.wait(within), "the last request got no final response"
    assert len(requests[-1].sender.sent) == 1 and not any(r.sender.sent for r in requests[:-1])
    return returned[:-1] + requests[-1].sender.sent


def _args(folder, runtime="torch"):
    config = {"parameters": {contract.CONFIG_MODEL_KEY: {"string_value": str(folder)},
                             contract.CONFIG_RUNTIME_KEY: {"string_value": runtime}},
              "instance_group": [{"count": 1}]}
    return {"model_config": json.dumps(config), "model_name": "tiny", "model_instance_name": "tiny_0"}


@pytest.fixture
def tiny_text(tmp_path_factory):
    return make_tiny_text_folder(tmp_path_factory.mktemp("warm") / "tiny", pooling="mean")


def test_export_happens_at_initialize_and_never_in_a_request(tiny_text, tmp_path, monkeypatch):
    """ONNX runtime: the export and its check run in initialize, before the warm-up; executing requests then
    exports nothing and answers what the model in-process answers."""
    import zoo.runtime as rt

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    pb = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    calls = []
    real_export, real_accelerate = rt._export, rt.accelerate
    monkeypatch.setattr(rt, "_export", lambda *a, **k: (calls.append("export"), real_export(*a, **k))[1])
    monkeypatch.setattr(rt, "accelerate", lambda *a, **k: (calls.append("accelerate"), real_accelerate(*a, **k))[1])
    model = TritonPythonModel()
    model.initialize(_args(tiny_text, runtime="onnx"))
    assert calls.count("export") == 1 and model.embedder.runtime == "onnx"
    assert pb.Logger.lines and "text/dense" in pb.Logger.lines[-1] and "at full length" in pb.Logger.lines[-1]
    calls.clear()
    texts = [b"a first request", b"then another one"]
    [response] = answered(model, [FakeRequest({"TEXT": texts})])
    assert calls == [], "a request did what initialize should have done"
    np.testing.assert_allclose(response.outputs[contract.OUTPUT],
                               model.embedder.encode([t.decode() for t in texts], "text"), atol=1e-6)


def test_a_model_that_cannot_embed_fails_initialize(tiny_text, monkeypatch):
    """A warm-up request that fails fails initialize, naming what failed: the model never goes READY."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    create = zoo.create

    def broken(*args, **kwargs):
        model = create(*args, **kwargs)
        model.embed_decoded = lambda *a, **k: (_ for _ in ()).throw(MemoryError())
        return model

    monkeypatch.setattr(zoo, "create", broken)
    with pytest.raises(RuntimeError, match=r"warm-up failed for text/dense: MemoryError.*does not go READY"):
        TritonPythonModel().initialize(_args(tiny_text))


def test_failures_are_counted_by_reason(tiny_text, monkeypatch):
    """Each failed response counts under its error code, successful requests and their items apart; the
    warm-up counts nowhere but its own duration."""
    pb = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    model = TritonPythonModel()
    model.initialize(_args(tiny_text))
    failures = FakeFamily.made[Metrics.FAILURES].metrics
    assert {dict(k)["reason"] for k in failures} == set(zoo.errors.CODES)
    assert all(m.value == 0 for m in failures.values())
    assert FakeFamily.made[Metrics.WARMUP].kind == FakeFamily.GAUGE

    def metric(name, **labels):
        return FakeFamily.made[name].metrics[tuple(sorted({"model": "tiny", **labels}.items()))].value

    assert metric(Metrics.WARMUP) > 0 and metric(Metrics.REQUESTS) == 0
    responses = answered(model, [FakeRequest({"TEXT": [b"good", b"also good"]}), FakeRequest({"TEXT": [b"\xff"]}),
                               FakeRequest({"TEXT": [b"x"]}, {"colour": "blue"}),
                               FakeRequest({"TEXT": [b"x"]}, {contract.DESCRIBE: True})])
    assert [r.error is None for r in responses] == [True, False, False, True]
    assert metric(Metrics.FAILURES, reason="invalid_argument") == 2
    assert metric(Metrics.FAILURES, reason="internal") == 0
    assert metric(Metrics.REQUESTS) == 1 and metric(Metrics.ITEMS) == 2  # the description is no embedding request


def test_a_backend_without_custom_metrics_still_serves(tiny_text, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(with_metrics=False))
    model = TritonPythonModel()
    model.initialize(_args(tiny_text))
    [ok, bad] = answered(model, [FakeRequest({"TEXT": [b"fine"]}), FakeRequest({"TEXT": [b"\xff"]})])
    assert ok.error is None and bad.error is not None
    model.finalize()


# ---- against the real server ------------------------------------------------------------------------------------
def _scrape(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=30).read().decode()
    return {m[0]: float(m[1]) for m in re.findall(r"^(zoo_model_\w+\{[^}]*\}) (\S+)$", text, re.M)}


@pytest.mark.server
def test_served_models_warm_up_and_count_their_failures(triton):
    """Every served model logged its warm-up of each modality before READY, and reports its warm-up time; a bad
    item counts as a failure of that model on Triton's metrics port (which counts it as a success)."""
    server, models = triton
    log = server.log_path.read_text(errors="replace")
    for tname, source in models.items():
        line = re.search(rf"zoo warm-up of {re.escape(tname)} \(.*", log)
        assert line, f"no warm-up logged for {tname}"
        for modality in zoo.get_spec(source).modalities:
            assert f"{modality.value}/" in line.group(0), (tname, modality)
    tname = contract.model_name(default_model("text"))
    key = f'{{model="{tname}",reason="invalid_argument"}}'
    before = _scrape(server)
    assert before[f'zoo_model_warmup_seconds{{model="{tname}"}}'] > 0

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=object))
    with pytest.raises(grpcclient.InferenceServerException, match="InputError"):
        client.infer(tname, [tensor])
    tensor.set_data_from_numpy(np.array([[b"a good one"]], dtype=object))
    client.infer(tname, [tensor])
    after = _scrape(server)
    assert after["zoo_model_failures_total" + key] - before.get("zoo_model_failures_total" + key, 0) == 1
    requests = f'zoo_model_requests_total{{model="{tname}"}}'
    assert after[requests] - before[requests] >= 1
