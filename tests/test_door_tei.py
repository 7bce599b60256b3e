"""Text Embeddings Inference's routes at the door (``/embed``, ``/embed_sparse``, ``/embed_all``, ``/rerank``,
``/tokenize``, ``/decode``, ``/info``, ``POST /``). The bodies and the choice of model are checked without a server;
admission, priority, metrics and the model's errors in TEI's shape through a door over a stub model; every answer
against a real `zoo serve` of three tiny models (dense with prompts, BGE-M3 layout, cross-encoder), compared with
in-process ``encode()``, ``tokenize()`` and ``rank()``, and driven by the real ``huggingface_hub`` and LangChain
clients (in ``$ZOO_CLIENTS_VENV``); the docs page's examples run as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import zoo
from serving.door_metrics import Exchange
from serving.openai_api import ApiError, bad_request, model_not_found, too_long
from serving.openai_models import MAX_ITEMS
from serving.openai_rerank import MAX_DOCUMENTS
from serving.tei_models import (
    TEIDecodeRequest,
    TEIEmbedRequest,
    TEIRerankRequest,
    TEITokenizeRequest,
    as_tei,
    error_body,
    parse,
)
from serving.tei_routes import Models
from zoo.media import budgets
from zoo.spec import Modality

from . import door_stub
from .door_stub import MODEL, scrape, stub_doors, value, wait_for
from .processes import start_serve, stop_group
from .test_door_limits import request

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tei.md"
CLIENTS = Path(os.environ.get("ZOO_CLIENTS_VENV", ROOT / ".venv-clients")) / "bin" / "python"
KEY = "sk-zoo-tei"
DENSE, M3, CROSS = "tei-dense", "tei-m3", "tei-cross"  # the served names (their folders'), in this sorted order
PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["a red circle", "two blue squares on the left", "héllo wörld 🐱", "x"]
QUERY = "a small cat"
DOCS = ["a cat sits on the mat", "stock markets fell sharply today", "the kitten is sleeping on a sofa",
        "quantum physics lecture notes"]
LONG = " ".join(["alpha"] * 100 + ["omega"] * 100)  # over every window here; its start and its end differ


def refusal(model, body) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(model, json.dumps(body).encode())
    return caught.value


def assert_tei_error(reply: dict, error_type: str | None = None) -> str:
    """A body in TEI's error shape; its message."""
    assert set(reply) == {"error", "error_type"} and isinstance(reply["error"], str), reply
    if error_type is not None:
        assert reply["error_type"] == error_type, reply
    return reply["error"]


# ---- the bodies, no server ------------------------------------------------------------------------------------
def test_bodies_are_read_as_tei_reads_them():
    """TEI's fields and defaults: one input or a list, texts or token ids, truncate/truncation_direction as the
    door's cut; an empty list is TEI's 400 Empty; every other fault a 400 naming the field (422 at the route)."""
    req = parse(TEIEmbedRequest, b'{"inputs": "a"}')
    assert (req.items, req.normalize, req.cut, req.prompt_name, req.dimensions) == (["a"], True, "none", None, None)
    assert parse(TEIEmbedRequest, b'{"inputs": [7, 8, 9]}').items == [[7, 8, 9]]
    assert parse(TEIEmbedRequest, b'{"inputs": ["a", [5, 6]], "truncate": true}').items == ["a", [5, 6]]
    for direction, cut in (("left", "start"), ("Left", "start"), ("right", "end"), ("Right", "end")):
        body = {"inputs": "a", "truncate": True, "truncation_direction": direction}
        assert parse(TEIEmbedRequest, json.dumps(body).encode()).cut == cut
    assert parse(TEIEmbedRequest, b'{"inputs": "a", "truncate": null}').cut == "none"
    assert parse(TEITokenizeRequest, b'{"inputs": "a b"}').texts == ["a b"]
    assert parse(TEIDecodeRequest, b'{"ids": [1, 2]}').ids == [[1, 2]]
    assert parse(TEIDecodeRequest, b'{"ids": [[1], [2, 3]]}').ids == [[1], [2, 3]]
    for model, body, field in ((TEIEmbedRequest, {"inputs": []}, "inputs"),
                               (TEIRerankRequest, {"query": "q", "texts": []}, "texts"),
                               (TEIDecodeRequest, {"ids": []}, "ids")):
        err = refusal(model, body)
        assert (err.status, err.type, err.message) == (400, "Empty", f"`{field}` cannot be empty")
    cases = [
        ({"inputs": 5}, "inputs", "`inputs` must be a string, a list of token ids, or a list of those"),
        ({"inputs": [[]]}, "inputs", "inputs[0]: an input is a string or a list of token ids; got a list of 0"),
        ({"inputs": [True]}, "inputs", "inputs[0]: an input is a string or a list of token ids"),
        ({"inputs": [[-1]]}, "inputs", "inputs[0]: token ids must be a list of at most"),
        ({"inputs": ["a"] * (MAX_ITEMS + 1)}, "inputs", f"`inputs` has more than {MAX_ITEMS} elements"),
        ({"inputs": "x" * (budgets.MAX_TEXT_CHARS + 1)}, "inputs", "inputs[0]: the text has"),
        ({"inputs": "a", "dimensions": 0}, "dimensions", "`dimensions` should be greater than or equal to 1"),
        ({"inputs": "a", "normalize": "yes"}, "normalize", "`normalize` should be a valid boolean"),
        ({"inputs": "a", "truncation_direction": "up"}, "truncation_direction", "`truncation_direction` should be"),
    ]
    # fields TEI does not know are ignored, as TEI's own structs ignore them
    assert TEIEmbedRequest.model_validate({"inputs": "a", "model": "m", "x": 1}).items == ["a"]
    for body, param, start in cases:
        err = refusal(TEIEmbedRequest, body)
        assert (err.status, err.param) == (400, param) and err.message.startswith(start), (body, err.message)
    err = refusal(TEIRerankRequest, {"query": "q", "texts": ["a"] * (MAX_DOCUMENTS + 1)})
    assert err.param == "texts" and str(MAX_DOCUMENTS) in err.message


def test_errors_take_teis_statuses_and_shape():
    """The door's shared checks' errors as TEI answers them: 400 -> 422 Validation, a model's failure 500 -> 424
    Backend (still counted as the model's), 429 Overloaded with its Retry-After; a text over the window worded for
    TEI's truncate."""
    err = as_tei(bad_request("`x` is bad", param="x"))
    assert (err.status, error_body(err)) == (422, {"error": "`x` is bad", "error_type": "Validation"})
    failed = ApiError(500, "the server failed", type="server_error", failure="internal")
    assert (as_tei(failed).status, as_tei(failed).failure, error_body(as_tei(failed))["error_type"]) == (
        424, "internal", "Backend")
    busy = as_tei(ApiError(429, "busy", type="requests", headers={"Retry-After": "2"}))
    assert (busy.status, busy.headers, error_body(busy)["error_type"]) == (429, {"Retry-After": "2"}, "Overloaded")
    assert error_body(ApiError(503, "not ready"))["error_type"] == "Unhealthy"
    cut = too_long(1, "the text has 80 tokens with its prompt and special tokens; the model reads at most 64",
                   place="texts[1]", param="texts")
    assert cut is not None
    assert as_tei(cut).message == "texts[1] has 80 tokens; the model reads at most 64: set truncate to true to cut it"


# ---- which model each route serves ----------------------------------------------------------------------------
class FakeCatalog:
    """The door's Catalog over specs by Triton name (``not_ready``: names whose client cannot be made now)."""

    def __init__(self, specs: dict, aliases: dict | None = None, not_ready: set | None = None) -> None:
        self.specs, self.aliases, self.not_ready = specs, aliases or {}, not_ready or set()

    async def repository(self) -> dict:
        return {name: "READY" for name in self.specs}

    async def get(self, model: str):
        name = self.aliases.get(model, model)
        if name in self.not_ready:
            raise ApiError(503, "not ready", type="server_error", code="model_not_ready")
        if name not in self.specs:
            raise model_not_found(model)
        return SimpleNamespace(triton_name=name, spec=self.specs[name])


def spec(*outputs: str, modalities=(Modality.TEXT,)) -> SimpleNamespace:
    return SimpleNamespace(outputs=outputs, modalities=modalities)


def pick(models: Models, role: str):
    async def run():
        exchange = Exchange(method="POST")
        try:
            await models.get(role, exchange)
        except ApiError as err:
            return err
        return exchange.model

    return asyncio.run(run())


def test_each_route_serves_its_first_able_model():
    """Without --tei-model each route takes the first served model (by Triton name) able to answer it, /rerank
    the first reranker else /embed's model; a model not ready is never skipped for good; --tei-model (an alias
    too) serves every route, and a route its model cannot answer is TEI's 424."""
    specs = {"a-image": spec("dense", modalities=(Modality.IMAGE,)), "b-splade": spec("sparse"),
             "c-m3": spec("dense", "sparse", "multivector"), "d-cross": spec("score"), "e-text": spec("dense")}
    models = Models(FakeCatalog(specs), None)
    assert [pick(models, role) for role in ("embed", "embed_sparse", "embed_all", "rerank")] == [
        "c-m3", "b-splade", "c-m3", "d-cross"]
    no_reranker = {k: v for k, v in specs.items() if k != "d-cross"}
    assert pick(Models(FakeCatalog(no_reranker), None), "rerank") == "c-m3"
    none = pick(Models(FakeCatalog({"a-image": specs["a-image"]}), None), "embed")
    assert (none.status, error_body(none)) == (424, {"error": "no served model embeds text with dense output",
                                                     "error_type": "Backend"})
    catalog = FakeCatalog({"a-late": spec("dense"), **no_reranker}, not_ready={"a-late"})
    models = Models(catalog, None)
    assert pick(models, "embed") == "c-m3"  # a-late is not ready now
    catalog.not_ready.clear()
    assert pick(models, "embed") == "a-late"  # and is the first once it is
    waiting = pick(Models(FakeCatalog({"a-late": spec("dense")}, not_ready={"a-late"}), None), "embed")
    assert (waiting.status, error_body(waiting)["error_type"]) == (503, "Unhealthy")
    pinned = Models(FakeCatalog(specs, aliases={"tei": "b-splade"}), "tei")
    assert [pick(pinned, role) for role in ("embed_sparse", "rerank")] == ["b-splade", "b-splade"]
    for role, says in (("embed", "gives no dense vectors"), ("embed_all", "gives no token vectors")):
        err = pick(pinned, role)
        assert err.status == 424 and says in err.message and "tei" in err.message, err.message
    err = pick(Models(FakeCatalog(specs), "d-cross"), "embed")
    assert err.status == 424 and "is a reranker" in err.message and "/rerank" in err.message


# ---- through a door over a stub model -------------------------------------------------------------------------
class TeiStub(door_stub.StubEmbedder):
    """The door's stub model with a dense text model's spec: every row four ones (every score 4), a token a
    word."""

    def __init__(self, calls: list, release) -> None:
        super().__init__(calls, release)
        self.spec = SimpleNamespace(name=MODEL, modalities=[Modality.TEXT], outputs=("dense",), output="dense",
                                    prompts={}, default_prompt_name=None, options={})


@pytest.fixture()
def stub(monkeypatch):
    monkeypatch.setattr(door_stub, "StubEmbedder", TeiStub)
    doors = stub_doors(monkeypatch)
    yield doors
    doors.release.set()


def tei_post(port: int, path: str, body, **kw) -> tuple[int, dict, object]:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, headers, raw = request(port, "POST", path, raw_body, **kw)
    return status, headers, json.loads(raw)


def test_admission_priority_and_metrics(stub):
    """A TEI request holds a turn like any other (429 Overloaded in TEI's shape, with Retry-After, when there is
    none); X-Priority reaches the model (a bad one is a 422); the door's metrics count the route and the model."""
    with stub.door(max_concurrent=1, max_queued=0, queue_wait=0.2) as d, ThreadPoolExecutor(2) as pool:
        working = pool.submit(tei_post, d.port, "/embed", {"inputs": ["hold", "b"]})
        wait_for(lambda: d.app.state.admission.active == 1 and stub.calls)
        status, headers, reply = tei_post(d.port, "/embed", {"inputs": "c"})
        assert status == 429 and headers["retry-after"].isdigit(), reply
        assert_tei_error(reply, "Overloaded")
        stub.release.set()
        status, _, reply = working.result(timeout=10)
        assert status == 200 and reply == [[1.0] * 4, [1.0] * 4], reply
    with stub.door() as d:
        status, _, reply = tei_post(d.port, "/embed", {"inputs": "a b"}, headers={"X-Priority": "high"})
        assert status == 200 and stub.calls[-1].priority == "high"
        status, _, reply = tei_post(d.port, "/", {"inputs": ["a", "b c"]}, headers={"X-Priority": "low"})
        assert status == 200 and len(reply) == 2 and stub.calls[-1].priority == "low"
        status, _, reply = tei_post(d.port, "/embed", {"inputs": "a"}, headers={"X-Priority": "urgent"})
        assert status == 422 and "X-Priority" in assert_tei_error(reply, "Validation")
        samples = scrape(d.port)
    assert value(samples, "zoo_door_requests_total", route="/embed", method="POST", status="200") == 1
    assert value(samples, "zoo_door_requests_total", route="/embed", method="POST", status="422") == 1
    assert value(samples, "zoo_door_tokens_total", model=MODEL) == 2 + 3


def test_the_models_errors_in_teis_shape(stub):
    """The model's refusal of an input is a 422 naming it, overload 429 with the model's Retry-After, an
    unexpected failure 424 with a fixed message; a body's faults are 422, an empty list 400, a route no served
    model answers 424 -- all in TEI's shape."""
    with stub.door() as d:
        status, _, reply = tei_post(d.port, "/embed", {"inputs": ["fine", "refuse"]})
        assert status == 422 and assert_tei_error(reply, "Validation") == "inputs[1]: the model cannot read this item"
        status, headers, reply = tei_post(d.port, "/embed", {"inputs": "overload"})
        assert (status, headers["retry-after"]) == (429, "3") and assert_tei_error(reply, "Overloaded")
        status, _, reply = tei_post(d.port, "/embed", {"inputs": "boom"})
        assert status == 424 and "secret" not in assert_tei_error(reply, "Backend")
        for body, (want, kind) in (({"inputs": []}, (400, "Empty")),
                                   ({"inputs": "a", "normalize": 1}, (422, "Validation")),
                                   (b'{"inputs": ', (422, "Validation"))):
            status, _, reply = tei_post(d.port, "/embed", body)
            assert status == want and assert_tei_error(reply, kind), (body, reply)
        for path, says in (("/embed_sparse", "no served model gives sparse vectors"),
                           ("/embed_all", "no served model gives token vectors")):
            status, _, reply = tei_post(d.port, path, {"inputs": "a"})
            assert status == 424 and assert_tei_error(reply, "Backend").startswith(says), reply
        stub.calls.clear()
        status, _, reply = tei_post(d.port, "/embed", {"inputs": ["a"] * (MAX_ITEMS + 1)})
        assert status == 422 and assert_tei_error(reply) and not stub.calls  # never sent


def test_rerank_serves_both_shapes(stub):
    """/rerank answers TEI's {query, texts} body in TEI's shape (errors too), and Jina's and Cohere's
    {model, query, documents} in theirs."""
    with stub.door() as d:
        status, _, reply = tei_post(d.port, "/rerank", {"query": "q w", "texts": ["a b", "c"], "return_text": True})
        assert status == 200 and reply == [{"index": 0, "text": "a b", "score": 4.0},
                                           {"index": 1, "text": "c", "score": 4.0}], reply
        status, _, reply = tei_post(d.port, "/rerank", {"model": MODEL, "query": "q", "documents": ["a"]})
        assert status == 200 and reply["results"] == [{"index": 0, "relevance_score": 4.0, "document": {"text": "a"}}]
        status, _, reply = tei_post(d.port, "/rerank", {"query": "q", "texts": ["fine", "refuse"]})
        assert status == 422 and assert_tei_error(reply, "Validation").startswith("texts[1]:"), reply
        status, _, reply = tei_post(d.port, "/rerank", {"query": "q", "texts": []})
        assert status == 400 and assert_tei_error(reply, "Empty") == "`texts` cannot be empty"
        for count in (MAX_DOCUMENTS + 1, 3 * MAX_DOCUMENTS):  # the model's rule, or the parser's own
            status, _, reply = tei_post(d.port, "/rerank", {"query": "q", "texts": ["a"] * count})
            assert status == 422 and str(MAX_DOCUMENTS) in assert_tei_error(reply, "Validation"), reply
        status, _, reply = tei_post(d.port, "/rerank", {"query": "q", "texts": ["a"], "documents": ["b"]})
        assert status == 400 and reply["error"]["param"] == "texts", reply  # Jina's body, in OpenAI's shape
        status, _, reply = tei_post(d.port, "/rerank", {"model": MODEL, "query": "q", "documents": []})
        assert status == 400 and reply["error"]["param"] == "documents", reply


def test_openapi_documents_the_routes():
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    with TestClient(create_app("127.0.0.1:1", api_key=KEY)) as http:
        doc = http.get("/openapi.json").json()
        reply = http.post("/embed", json={"inputs": "a"})  # the key guards TEI's routes too
        assert reply.status_code == 401 and assert_tei_error(reply.json(), "Unauthorized")
        assert http.get("/info").status_code == 401
    schemas = doc["components"]["schemas"]
    for path, model in (("/embed", "TEIEmbedRequest"), ("/embed_sparse", "TEIEmbedSparseRequest"),
                        ("/embed_all", "TEIEmbedAllRequest"), ("/tokenize", "TEITokenizeRequest"),
                        ("/decode", "TEIDecodeRequest")):
        route = doc["paths"][path]["post"]
        assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{model}")
        assert route["security"] == [{"bearer": []}] and model in schemas, path
    assert {"/", "/info"} <= set(doc["paths"]) and "TEIRerankRequest" in schemas and "TEIInfo" in schemas
    assert schemas["TEIEmbedRequest"]["properties"]["normalize"]["default"] is True


# ---- against a real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    from .tiny_models import make_cross_encoder, make_m3, make_tiny_text_folder

    tmp = tmp_path_factory.mktemp("tei")
    return {DENSE: make_tiny_text_folder(tmp / DENSE, pooling="mean", prompts=PROMPTS), M3: make_m3(tmp / M3),
            CROSS: make_cross_encoder(tmp / CROSS)}


@pytest.fixture(scope="module")
def serve(folders, tmp_path_factory):
    from serving.export import export

    repository = tmp_path_factory.mktemp("tei-repository")
    export([str(f) for f in folders.values()], repository)
    s = start_serve("--api-key", KEY, repository=repository, wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def local(folders) -> dict:
    return {name: zoo.create(str(folder), device="cpu") for name, folder in folders.items()}


def root(serve) -> str:
    return serve.openai.removesuffix("/v1")


def call(serve, path: str, body: dict | None = None, key: str | None = KEY) -> tuple[int, object]:
    """(status, JSON body) of a request to the door: a POST of ``body``, or a GET."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(root(serve) + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.server
def test_embed_equals_encode(serve, local):
    """/embed (and POST /) is in-process encode() with TEI's controls: normalize, dimensions, prompt_name, token
    ids, truncate and its direction; a text over the window without truncate is a 422 naming it."""
    from .tiny_models import assert_parity

    dense = local[DENSE]
    for path, body in (("/embed", {"inputs": TEXTS}), ("/", {"inputs": TEXTS})):
        status, got = call(serve, path, body)
        assert status == 200, got
        assert_parity(got, dense.encode(TEXTS, "text"), what=path)
    status, got = call(serve, "/embed", {"inputs": TEXTS[1]})
    assert status == 200 and len(got) == 1
    assert_parity(got, dense.encode(TEXTS[1:2], "text"), max_cross=None)
    status, got = call(serve, "/embed", {"inputs": TEXTS, "prompt_name": "query", "dimensions": 16,
                                         "normalize": False})
    assert status == 200 and len(got[0]) == 16, got
    assert_parity(got, dense.encode(TEXTS, "text", prompt_name="query", dimensions=16, normalize=False))
    assert not np.allclose(got, dense.encode(TEXTS, "text", dimensions=16, normalize=False), atol=1e-3)  # the prompt
    ids = dense.tokenize([TEXTS[0]])[0].ids
    status, got = call(serve, "/embed", {"inputs": [ids, TEXTS[1]]})
    assert status == 200, got
    assert_parity(got, dense.encode(TEXTS[:2], "text"))
    status, got = call(serve, "/embed", {"inputs": ["a", LONG]})
    assert status == 422 and "inputs[1] has" in assert_tei_error(got, "Validation"), got
    ends = {}
    for direction, cut in (("Right", "end"), ("left", "start")):
        status, got = call(serve, "/embed", {"inputs": ["a", LONG], "truncate": True,
                                             "truncation_direction": direction})
        assert status == 200, got
        assert_parity(got, dense.encode(["a", LONG], "text", truncate=cut), what=cut)
        ends[cut] = np.asarray(got[1])
    assert not np.allclose(ends["end"], ends["start"], atol=1e-3)  # the direction matters to this text
    status, got = call(serve, "/embed", {"inputs": "a", "prompt_name": "nope"})
    assert status == 422 and "prompt_name" in assert_tei_error(got, "Validation")


@pytest.mark.server
def test_sparse_and_token_vectors_equal_encode(serve, local):
    """/embed_sparse and /embed_all are served by the BGE-M3 model (the first with those outputs) and equal its
    in-process sparse and multivector output."""
    from .tiny_models import assert_multivector_parity

    m3 = local[M3]
    status, got = call(serve, "/embed_sparse", {"inputs": TEXTS[:3]})
    assert status == 200, got
    want = m3.encode(TEXTS[:3], "text", output="sparse")
    for r, terms in enumerate(got):
        row = want[r].tocsr()
        assert [t["index"] for t in terms] == sorted(row.indices.tolist()), r
        expected = dict(zip(row.indices.tolist(), row.data.tolist()))
        np.testing.assert_allclose([t["value"] for t in terms], [expected[t["index"]] for t in terms], rtol=1e-4)
    status, got = call(serve, "/embed_all", {"inputs": TEXTS[:3]})
    assert status == 200, got
    assert_multivector_parity([np.asarray(item) for item in got], m3.encode(TEXTS[:3], "text", output="multivector"))


@pytest.mark.server
def test_rerank_equals_rank(serve, local):
    """TEI's /rerank is the cross-encoder's in-process rank(): the same order and scores, texts when asked; a pair
    over the window is a 422 unless truncate; raw_scores is refused for a sigmoid card; Jina's body still gets
    Jina's answer on the same route."""
    want = local[CROSS].rank(QUERY, DOCS)
    status, got = call(serve, "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
    assert status == 200, got
    assert [r["index"] for r in got] == [w["corpus_id"] for w in want]
    np.testing.assert_allclose([r["score"] for r in got], [w["score"] for w in want], rtol=0, atol=1e-5)
    assert min(np.diff(sorted(w["score"] for w in want))) > 1e-4  # the scores tell the texts apart
    assert all(set(r) == {"index", "text", "score"} and r["text"] == DOCS[r["index"]] for r in got)
    status, got = call(serve, "/rerank", {"query": QUERY, "texts": DOCS})
    assert status == 200 and all(set(r) == {"index", "score"} for r in got)
    status, got = call(serve, "/rerank", {"query": QUERY, "texts": [DOCS[0], LONG]})
    assert status == 422 and "texts[1]" in assert_tei_error(got, "Validation"), got
    status, got = call(serve, "/rerank", {"query": QUERY, "texts": [DOCS[0], LONG], "truncate": True})
    assert status == 200 and [r["index"] for r in got] == [w["corpus_id"] for w in
                                                            local[CROSS].rank(QUERY, [DOCS[0], LONG])]
    status, got = call(serve, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert status == 422 and "raw_scores" in assert_tei_error(got, "Validation")
    status, got = call(serve, "/rerank", {"model": CROSS, "query": QUERY, "documents": DOCS, "top_n": 2})
    assert status == 200 and [r["index"] for r in got["results"]] == [w["corpus_id"] for w in want[:2]], got


@pytest.mark.server
def test_tokenize_and_decode_equal_the_models(serve, local):
    """/tokenize gives the model's ids with TEI's token objects (UTF-8 byte offsets into the prompted input, special
    tokens without); add_special_tokens false leaves the special tokens out; /decode is detokenize()."""
    dense = local[DENSE]
    texts = ["héllo wörld 🐱", "a cat"]
    status, got = call(serve, "/tokenize", {"inputs": texts})
    assert status == 200, got
    want = dense.tokenize(texts)
    for text, tokens, mine in zip(texts, got, want):
        assert [t["id"] for t in tokens] == mine.ids
        for t in tokens:
            assert set(t) == {"id", "text", "special", "start", "stop"}
            if t["special"]:
                assert t["start"] is None and t["stop"] is None
            else:
                assert text.encode()[t["start"]:t["stop"]].decode() == t["text"], t
        assert [t["special"] for t in tokens] == [o is None for o in mine.offsets]
    assert any(t["stop"] - t["start"] > len(t["text"]) for t in got[0] if not t["special"])  # bytes, not chars
    status, got = call(serve, "/tokenize", {"inputs": texts[0], "prompt_name": "query"})
    mine = dense.tokenize(texts[0:1], prompt_name="query")[0]
    assert status == 200 and [t["id"] for t in got[0]] == mine.ids, got
    read = (PROMPTS["query"] + texts[0]).encode()
    first = next(t for t in got[0] if not t["special"])
    assert first["start"] == len(PROMPTS["query"].encode()) and read[first["start"]:first["stop"]].decode() == "héllo"
    status, got = call(serve, "/tokenize", {"inputs": texts, "add_special_tokens": False})
    assert status == 200 and [[t["id"] for t in tokens] for tokens in got] == [
        [i for i, o in zip(m.ids, m.offsets) if o is not None] for m in want]
    status, got = call(serve, "/tokenize", {"inputs": "a", "prompt_name": "query", "add_special_tokens": False})
    assert status == 422 and "add_special_tokens" in assert_tei_error(got, "Validation")
    status, got = call(serve, "/tokenize", {"inputs": ["a", LONG]})
    message = assert_tei_error(got, "Validation")
    assert status == 422 and re.fullmatch(r"inputs\[1\] has \d+ tokens; the model reads at most 64", message), got
    ids = [m.ids for m in want]
    status, got = call(serve, "/decode", {"ids": ids})
    assert status == 200 and got == dense.detokenize(ids), got
    status, got = call(serve, "/decode", {"ids": ids[1]})
    assert status == 200 and got == dense.detokenize(ids[1:]), got
    status, got = call(serve, "/decode", {"ids": ids, "skip_special_tokens": False})
    assert status == 422 and "skip_special_tokens" in assert_tei_error(got, "Validation")
    status, got = call(serve, "/decode", {"ids": [[10 ** 9]]})
    assert status == 422 and assert_tei_error(got).startswith("ids[0]: token ids must be")


@pytest.mark.server
def test_info_describes_the_served_model(serve):
    """/info is TEI's Info of the /embed model, filled from what GET /v1/models knows of it."""
    status, card = call(serve, f"/v1/models/{DENSE}")
    assert status == 200, card
    status, info = call(serve, "/info")
    assert status == 200, info
    assert {k: info[k] for k in ("model_id", "served_model_name", "model_type", "max_input_length",
                                 "max_batch_requests", "max_client_batch_size", "auto_truncate", "version",
                                 "model_dtype", "max_concurrent_requests")} == {
        "model_id": DENSE, "served_model_name": DENSE, "model_type": {"embedding": {"pooling": "mean"}},
        "max_input_length": card["max_input_tokens"], "max_batch_requests": card["max_batch_size"],
        "max_client_batch_size": MAX_ITEMS, "auto_truncate": False, "version": zoo.__version__,
        "model_dtype": "float32", "max_concurrent_requests": 32}
    assert re.fullmatch(r"[0-9a-f]+", info["model_sha"]) and info["max_batch_tokens"] > 0, info
    status, reply = call(serve, "/info", key=None)
    assert status == 401 and assert_tei_error(reply, "Unauthorized")
    status, reply = call(serve, "/embed", {"inputs": "a"}, key="wrong")
    assert status == 401 and assert_tei_error(reply, "Unauthorized")


CLIENT_SCRIPT = """
import json, os, sys
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from langchain_huggingface import HuggingFaceEndpointEmbeddings

url, key, texts = os.environ["TEI_URL"], os.environ["ZOO_API_KEY"], json.loads(os.environ["TEI_TEXTS"])
client = InferenceClient(model=url, token=key)
out = {"plain": client.feature_extraction(texts).tolist(),
       "one": client.feature_extraction(texts[0]).tolist(),
       "controls": client.feature_extraction(texts, normalize=False, prompt_name="query", truncate=True,
                                             truncation_direction="left").tolist()}
try:
    client.feature_extraction(texts, prompt_name="nope")
except HfHubHTTPError as err:
    out["error"] = [err.response.status_code, err.response.json()]
embeddings = HuggingFaceEndpointEmbeddings(model="embedding-zoo")
embeddings.client = InferenceClient(model=url, token=key)
embeddings.async_client = AsyncInferenceClient(model=url, token=key)
out["langchain"] = embeddings.embed_documents(texts)
out["langchain_query"] = embeddings.embed_query(texts[0])
print(json.dumps(out))
"""


def clients_python() -> Path:
    if not CLIENTS.exists():
        pytest.fail(f"no clients venv at {CLIENTS} (scripts/test.sh makes it; ZOO_CLIENTS_VENV names another)")
    return CLIENTS


def clients_env() -> dict[str, str]:
    # huggingface_hub's offline mode refuses every request, a loopback door's too: the clients run without it (they
    # reach nothing but the door, whose URL they are given)
    return {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}


@pytest.mark.server
def test_huggingface_hub_and_langchain_clients(serve, local):
    """huggingface_hub's InferenceClient(model=<door URL>).feature_extraction and LangChain's
    HuggingFaceEndpointEmbeddings (given that client) embed as in-process encode() does; the client raises the
    door's TEI error with its message."""
    from .tiny_models import assert_parity

    python = clients_python()
    env = {**clients_env(), "TEI_URL": root(serve), "ZOO_API_KEY": KEY, "TEI_TEXTS": json.dumps(TEXTS)}
    out = subprocess.run([str(python), "-c", CLIENT_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    dense = local[DENSE]
    want = dense.encode(TEXTS, "text")
    for name in ("plain", "langchain"):
        assert_parity(got[name], want, what=name)
    assert_parity([got["one"][0], got["langchain_query"]], want[[0, 0]], max_cross=None)
    assert_parity(got["controls"], dense.encode(TEXTS, "text", normalize=False, prompt_name="query",
                                                truncate="start"), what="controls")
    status, body = got["error"]
    assert status == 422 and "prompt_name" in assert_tei_error(body, "Validation")


@pytest.mark.server
def test_page_examples_run(serve, local):
    """docs/tei.md's curl and Python examples, run as written against this server (its port and key put in; the
    Python ones in the clients' venv, where huggingface_hub and LangChain are)."""
    blocks = re.findall(r"```(python|bash)\n(.*?)```", PAGE.read_text(), re.S)
    assert [kind for kind, _ in blocks] == ["bash", "python", "python"]
    env = {**clients_env(), "ZOO_API_KEY": KEY}
    port = str(serve.openai_port)
    outputs = []
    for kind, code in blocks:
        code = code.replace("8080", port)
        command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [str(clients_python()), "-c", code]
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, (code, out.stderr[-4000:])
        outputs.append(out.stdout)
    embedded, ranked, tokens, info = [json.loads(line) for line in outputs[0].splitlines() if line.strip()]
    from .tiny_models import assert_parity

    assert_parity(embedded, local[DENSE].encode(["a cat on a sofa", "stock markets fell"], "text"))
    assert [r["text"] for r in ranked] == [
        ["a kitten sleeps", "quantum physics"][w["corpus_id"]]
        for w in local[CROSS].rank("a small cat", ["a kitten sleeps", "quantum physics"])]
    assert [t["id"] for t in tokens[0]] == local[DENSE].tokenize(["héllo world"])[0].ids
    assert info["model_id"] == DENSE
    dimension = local[DENSE].spec.dim
    assert outputs[1].strip() == f"(2, {dimension})" and outputs[2].strip() == str(dimension), outputs
