"""Serving pieces that need no server: contract, export, and the backend's batch handling."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import zoo
from serving import contract
from serving.export import MODEL_PY, export
from serving.triton_model import Request, TritonPythonModel, handle
from zoo import postprocess as pp
from zoo.defaults import default_model_names
from zoo.spec import Modality


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_name_rule_is_reversible(name):
    assert contract.registry_name(contract.model_name(name)) == name
    assert "/" not in contract.model_name(name)


def test_committed_model_repository_is_current(tmp_path):
    """CI fails when model_repository/ is stale: regenerate it with `zoo export --out model_repository`."""
    export(default_model_names(), tmp_path)
    committed = Path(__file__).parent.parent / "model_repository"
    cmp = filecmp.dircmp(tmp_path, committed, ignore=[".gitkeep", "__pycache__"])

    def diffs(c):
        out = c.left_only + c.right_only + c.diff_files
        return out + [d for sub in c.subdirs.values() for d in diffs(sub)]

    assert not diffs(cmp), f"model_repository/ is stale: {diffs(cmp)}; run `zoo export --out model_repository`"


@pytest.mark.parametrize("name", zoo.list_models())
def test_config_comes_from_spec(tmp_path, name):
    spec = zoo.get_spec(name)
    folder = export([name], tmp_path, instances=3)[0]
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.name == contract.model_name(name) and cfg.backend == "python"
    assert cfg.max_batch_size == spec.max_batch_size
    assert cfg.dynamic_batching.max_queue_delay_microseconds == spec.queue_delay_us
    assert cfg.instance_group[0].count == 3
    assert [i.name for i in cfg.input] == [contract.INPUTS[m] for m in spec.modalities]
    assert all(i.data_type == mc.TYPE_STRING and i.optional for i in cfg.input)
    sparse = [contract.INDICES, contract.VALUES] if "sparse" in spec.outputs else []
    text = Modality.TEXT in spec.modalities and not contract.reads_pairs(spec.outputs)  # pairs: no text tasks
    lengths = [contract.LENGTHS] if text or {"multivector", "sparse"} & set(spec.outputs) else []
    tasks = [contract.TOKEN_IDS, contract.TOKEN_OFFSETS, contract.TOKEN_STRINGS, contract.DETOKENIZED,
             contract.SPANS] if text else []
    assert [o.name for o in cfg.output] == [contract.OUTPUT, contract.TOKENS, *lengths, *sparse, contract.SPEC,
                                            contract.TRUNCATED, *tasks]
    declared = {o.name: (mc.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output[2:]}
    assert declared == {n: ("TYPE_FP32" if n == contract.VALUES else "TYPE_INT32", [1]) for n in lengths + sparse} | {
        contract.SPEC: ("TYPE_STRING", [1]), contract.TRUNCATED: ("TYPE_BOOL", [1])} | (
        {contract.TOKEN_IDS: ("TYPE_INT32", [1]), contract.TOKEN_OFFSETS: ("TYPE_INT32", [2]),
         contract.TOKEN_STRINGS: ("TYPE_STRING", [1]), contract.DETOKENIZED: ("TYPE_STRING", [1]),
         contract.SPANS: ("TYPE_INT32", [2])} if text else {})
    assert cfg.output[1].data_type == mc.TYPE_INT32 and list(cfg.output[1].dims) == [1]
    assert json.loads(cfg.parameters[contract.CONFIG_SPEC_KEY].string_value) == spec.to_dict()
    assert (folder / "1" / "model.py").read_text() == MODEL_PY


def test_every_model_gets_the_same_generic_backend(tmp_path):
    """One model.py for every family: byte-identical across models, and it is the serving backend."""
    names = [zoo.list_models(family=f)[0] for f in ("text", "aligned", "open_clip", "clap", "speaker")]
    files = {f.name: (f / "1" / "model.py").read_bytes() for f in export(names, tmp_path)}
    assert len(set(files.values())) == 1, files.keys()
    namespace: dict = {}
    exec(next(iter(files.values())), namespace)
    assert namespace["TritonPythonModel"] is TritonPythonModel


class Counting:
    """Wraps an embedder and counts embed_decoded calls (each is one encode of a group)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_decoded(self, items, modality, opts, **kw):
        self.calls.append(len(items))
        return self.inner.embed_decoded(items, modality, opts, **kw)


def req(texts, **params):
    return Request(inputs={"TEXT": [t if isinstance(t, bytes) else t.encode() for t in texts]},
                   parameters=params)


def test_batch_grouping_one_call_per_group(minilm):
    m = Counting(minilm)
    requests = [req(["a", "b"]), req(["c"]), req(["d"], dimensions=64), req(["e", "f", "g"]),
                req(["h"], dimensions=64)]
    results = handle(m, requests)
    assert sorted(m.calls) == [2, 6]  # two option groups → two encode calls
    for r, res in zip(requests, results):
        texts = [t.decode() for t in r.inputs["TEXT"]]
        expected = minilm.encode(texts, "text", **{k: v for k, v in r.parameters.items()})
        assert np.allclose(res.embedding, expected, atol=1e-5) and res.tokens is None


def test_bad_requests_fail_alone(minilm):
    requests = [req(["good one"]), req(["fine", b"\xff\xfe"]), req(["x"], precision="int4"),
                req(["y"], colour="blue"), Request(inputs={"IMAGE": [b"x"]}, parameters={}),
                req(["also good"], precision="float8")]
    results = handle(minilm, requests)
    assert isinstance(results[1], zoo.InputError) and results[1].index == 1
    assert "precision" in str(results[2]) and "colour" in str(results[3])
    assert isinstance(results[4], zoo.UnsupportedModalityError)
    assert np.allclose(results[0].embedding, minilm.encode(["good one"], "text"), atol=1e-5)
    assert results[5].embedding.dtype == np.uint8  # float8 travels as its bits
    assert np.array_equal(contract.from_wire(results[5].embedding, "float8"),
                          minilm.encode(["also good"], "text", precision="float8"))


def test_tokens_counted_when_asked(minilm, minilm_dir):
    """TOKENS: the tokens the model reads per item, as sentence-transformers feeds them (special tokens
    included, truncated at the model's length), only for requests that ask for it."""
    from sentence_transformers import SentenceTransformer

    texts = ["a cat", "", "word " * 400]
    asked, plain = handle(minilm, [Request({"TEXT": [t.encode() for t in texts]}, {}, tokens=True), req(["a cat"])])
    reference = SentenceTransformer(str(minilm_dir), device="cpu").tokenize(texts)["attention_mask"].sum(1)
    assert asked.tokens.dtype == np.int32 and asked.tokens.shape == (3, 1)
    assert asked.tokens.reshape(-1).tolist() == reference.tolist() == [4, 2, 256]
    assert plain.tokens is None


@pytest.mark.parametrize(("params", "match"), [
    ({"dimensions": "abc"}, "positive integer"), ({"normalize": "maybe"}, "true or false"),
    ({"precision": 8}, "string"), ({"seed": 1}, "unknown request parameter"),
])
def test_parameter_parsing(params, match):
    with pytest.raises(zoo.InvalidArgumentError, match=match):
        contract.parse_parameters(params)


def test_every_precision_has_a_wire_type():
    for precision, dtype in pp.PRECISIONS.items():
        wire = contract.to_wire(pp.quantize(np.ones((1, 16), np.float32) / 4, precision), precision)
        assert wire.dtype.name == {"FP32": "float32", "FP16": "float16", "INT8": "int8",
                                   "UINT8": "uint8"}[contract.WIRE_DATATYPES[precision]]
        assert contract.from_wire(wire, precision).dtype == dtype


def test_interleaved_images_travel_as_data_uris_with_their_mime_type():
    import base64
    import io

    from PIL import Image

    from zoo.spec import Modality

    def encoded(fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), "red").save(buf, format=fmt)
        return buf.getvalue()

    jpeg = encoded("JPEG")
    element = contract.encode_item(Modality.INTERLEAVED, ["a", {"image": jpeg}, np.zeros((4, 4, 3), np.uint8)], 0)
    parts = json.loads(element)
    assert parts[0] == {"text": "a"}
    assert parts[1]["image"] == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()  # the file as it is
    assert parts[2]["image"].startswith("data:image/png;base64,")  # an array travels as lossless PNG
    assert contract.decode_item(Modality.INTERLEAVED, element, 0) == parts


def test_clients_share_the_front_not_the_in_process_base():
    """The Triton clients build on the small validation front that in-process models use too, not on
    `Embedder` (whose loading and embedding methods they would have to stub out)."""
    from serving.client import AsyncTritonEmbedder, TritonEmbedder
    from zoo.base import Embedder
    from zoo.front import EncodeFront

    for cls in (TritonEmbedder, AsyncTritonEmbedder):
        assert issubclass(cls, EncodeFront) and not issubclass(cls, Embedder)
    assert issubclass(Embedder, EncodeFront)


# ---- long texts: the backend and the contract (no server) ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tests.tiny_models import make_tiny_text_folder

    return make_tiny_text_folder(tmp_path_factory.mktemp("served") / "tiny", pooling="mean")


def test_backend_errors_name_the_served_model_not_its_folder(tiny_folder, monkeypatch):
    """A model loaded from a folder answers as the served name: no error carries the server's path, and its
    description carries the backend's own max_input_tokens (the tokenizer's limit, finding 9)."""
    import sys

    from tests.test_warm_start import FakeRequest, _args, answered, fake_pb_utils

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(with_metrics=False))
    model = TritonPythonModel()
    model.initialize(_args(tiny_folder))
    try:
        tokenize = {contract.TASK: contract.TOKENIZE, "prompt_name": "nope"}
        answers = answered(model, [FakeRequest({"TEXT": [b"x"]}, {"prompt_name": "nope"}),
                                 FakeRequest({"TEXT": [b"x"]}, tokenize),
                                 FakeRequest({"TEXT": [b"x"]}, {contract.DESCRIBE: True})])
        for bad in answers[:2]:
            assert "'tiny'" in str(bad.error) and str(tiny_folder) not in str(bad.error), str(bad.error)
        described = json.loads(bytes(answers[2].outputs[contract.SPEC].reshape(-1)[0]))
        assert described["max_input_tokens"] == model.embedder.max_input_tokens > 0
        assert described["spec"]["name"] == "tiny"
    finally:
        model.finalize()


class _DescribingChannel:
    """A gRPC channel stand-in that answers a DESCRIBE request with ``data``."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def get_model_metadata(self, name, as_json=False):
        return {"inputs": [{"name": "TEXT"}]}

    def infer(self, name, inputs, outputs=None, parameters=None, priority=0):
        from types import SimpleNamespace

        answer = np.array([[json.dumps(self.data).encode()]], dtype=object)
        return SimpleNamespace(as_numpy=lambda _name: answer)


def test_clients_read_max_input_tokens_from_the_description(minilm):
    """The clients' max_input_tokens is the backend's (sent in the description), the spec's max_length from an
    older server that does not send it; the config still unpacks as (spec, weights, runtime)."""
    from serving.client_core import fetch_config

    data = {"spec": minilm.spec.to_dict(), "weights": "fp", "runtime": "torch"}
    old = fetch_config(_DescribingChannel(data), "m")
    spec, weights, runtime = old
    assert (weights, runtime, old.max_input_tokens) == ("fp", "torch", None)
    new = fetch_config(_DescribingChannel({**data, "max_input_tokens": 77}), "m")
    assert new.max_input_tokens == 77 and new[0] == spec


def test_an_explicit_embed_task_is_the_default(minilm):
    """zoo_task 'embed', which the contract lists, is accepted and answers as a request naming no task."""
    wire = [b"a cat on a sofa", b"tiny"]
    plain, named = handle(minilm, [Request({"TEXT": wire}, {}), Request({"TEXT": wire}, {contract.TASK: "embed"})])
    np.testing.assert_allclose(named.embedding, plain.embedding, atol=1e-6)


@pytest.mark.parametrize(("value", "pattern"), [
    ('[["05"]]', "a span is"), ("[[[0.9, 5.7]]]", "a span is"), ("[[[true, 5]]]", "a span is"),
    ('[[["0", "5"]]]', "a span is"), ("[[[5, 2]]]", "0 <= start < end"), ("[[[0, 5]], [[0, 1]]]", "for 2 items"),
    ("{", "must be JSON"), ('{"a": 1}', "must be JSON"), ("[" + ",".join(["[[0,5]]"] * 2) + "]", "for 2 items"),
])
def test_chunk_spans_are_parsed_strictly(value, pattern):
    """chunk_spans holds integers only (no strings, floats, bools), checked as in-process (zoo.long.check_chunking)."""
    from serving import contract_long as wl
    from zoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=pattern) as err:
        wl.parse_spans(value, 1)
    assert err.value.param == contract.CHUNK_SPANS


def test_chunk_spans_are_bounded_before_parsing(monkeypatch):
    from serving import contract_long as wl
    from zoo.errors import InvalidArgumentError
    from zoo.long import MAX_CHUNKS

    assert wl.parse_spans("[[[0, 5], [6, 11]]]", 1) == [[(0, 5), (6, 11)]]
    too_many = json.dumps([[[0, 5]] * (MAX_CHUNKS + 1)])
    with pytest.raises(InvalidArgumentError, match=f"at most {MAX_CHUNKS}"):
        wl.parse_spans(too_many, 1)

    def never(*_args, **_kwargs):
        raise AssertionError("parsed a parameter over the bound")

    monkeypatch.setattr(wl.json, "loads", never)
    with pytest.raises(InvalidArgumentError, match="characters; at most"):
        wl.parse_spans("[" * (wl.MAX_SPANS_CHARS + 1), 1)
