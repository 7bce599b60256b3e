"""Rerank and score at the OpenAI-compatible door: ``/v1/rerank``, ``/rerank`` (Jina's and Cohere's v1 shape),
``/v2/rerank`` (Cohere's v2) and ``/v1/score`` (vLLM's pairs). The request checks run without a server; admission,
priority and the model's errors through a door over a stub model; the scores against a real `zoo serve` of MiniLM
(a bi-encoder) and a tiny cross-encoder, compared with in-process ``zoo.rerank`` and ``CrossEncoder.rank`` and
driven by the real ``cohere`` SDK; the docs page's rerank examples run as written."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import zoo
from serving.openai_api import ApiError
from serving.openai_rerank import MAX_DOCUMENTS, RerankRequest, RerankV2Request, ScoreRequest, parse
from zoo.defaults import default_model
from zoo.media import budgets
from zoo.spec import Modality

from . import door_stub
from .door_stub import MODEL, scrape, stub_doors, value, wait_for
from .processes import start_serve, stop_group
from .test_door_limits import assert_openai_error, request

KEY = "sk-zoo-rerank"
TEXT = default_model("text")
CROSS = "tiny-cross"  # the tiny cross-encoder's served name (its folder's)
PAGE = Path(__file__).resolve().parent.parent / "docs" / "openai.md"
QUERY = "a small cat"
DOCS = ["a cat sits on the mat", "stock markets fell sharply today", "the kitten is sleeping on a sofa",
        "quantum physics lecture notes", "dogs bark at the postman"]
LONG_TEXT = " ".join(f"word{i} is here" for i in range(400))  # ~2,000 MiniLM tokens: over every window here


def refusal(model, body) -> ApiError:
    """The ApiError a body checked as request ``model`` raises."""
    with pytest.raises(ApiError) as caught:
        parse(model, json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return caught.value


# ---- request checks, no server -------------------------------------------------------------------------------
def test_rerank_bodies_are_checked_before_any_work():
    """Cohere's and Jina's shapes are read (strings or {"text"} objects, whose other fields are kept); the cap,
    an empty list, a bad top_n, a bad document, a text over the door's budget and what is not supported are 400s
    naming the field."""
    base = {"model": TEXT, "query": QUERY}
    req = parse(RerankRequest, json.dumps({**base, "documents": ["a", {"text": "b", "title": "t"}]}).encode())
    assert [req.text(0), req.text(1)] == ["a", "b"] and req.return_documents and req.top_n is None
    assert req.answered(1) == {"text": "b", "title": "t"} and req.answered(0) == {"text": "a"}
    assert not parse(RerankV2Request, json.dumps({**base, "documents": ["a"]}).encode()).return_documents
    assert len(parse(RerankRequest, json.dumps({**base, "documents": ["x"] * MAX_DOCUMENTS}).encode()).documents) \
        == MAX_DOCUMENTS
    for count in (MAX_DOCUMENTS + 1, 3 * MAX_DOCUMENTS):  # stopped by the model's rule, or by the parser itself
        err = refusal(RerankRequest, {**base, "documents": ["x"] * count})
        assert (err.status, err.param) == (400, "documents") and f"at most {MAX_DOCUMENTS}" in err.message, err.message
    cases = [
        ({"documents": []}, "documents", "`documents` must not be empty"),
        ({"documents": "a"}, "documents", "`documents` should be a valid list"),
        ({"documents": ["a", 5]}, "documents", "documents[1]: a document is a string or an object"),
        ({"documents": ["a", {"image": "data:x"}]}, "documents", "`documents[1].text` is required"),
        ({"documents": ["a", {"text": "b", "n": 3}]}, "documents", "`documents[1].n` should be a valid string"),
        ({"documents": ["a", "x" * (budgets.MAX_TEXT_CHARS + 1)]}, "documents", "documents[1]: the text has"),
        ({"documents": ["a"], "query": "x" * (budgets.MAX_TEXT_CHARS + 1)}, "query", "query: the text has"),
        ({"documents": ["a"], "top_n": 0}, "top_n", "`top_n` should be greater than or equal to 1"),
        ({"documents": ["a"], "top_n": -2}, "top_n", "`top_n` should be greater than or equal to 1"),
        ({"documents": ["a"], "top_n": True}, "top_n", "`top_n` should be a valid integer"),
        ({"documents": ["a"], "top_n": "2"}, "top_n", "`top_n` should be a valid integer"),
        ({"documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc", "`max_tokens_per_doc` should be greater"),
        ({"documents": ["a"], "max_chunks_per_doc": 10}, "max_chunks_per_doc", "max_chunks_per_doc is not supported"),
        ({"documents": ["a"], "rank_fields": ["title"]}, "rank_fields", 'rank_fields: only ["text"] is ranked'),
        ({"documents": ["a"], "relevant_spans": True}, "relevant_spans", "unrecognized request argument"),
        ({"documents": ["a"], "priority": 1}, "priority", "`priority` should be 'high', 'normal' or 'low'"),
        ({"documents": ["a"], "truncate": "middle"}, "truncate", "truncate must be"),
        ({"documents": ["a"], "query": None}, "query", "`query` is required"),
    ]
    for extra, param, start in cases:
        err = refusal(RerankRequest, {**base, **extra})
        assert (err.status, err.param, err.code in ("invalid_value", "text_too_long")) == (400, param, True), extra
        assert err.message.startswith(start), (extra, err.message)
    assert refusal(RerankRequest, b'{"model": "m", "query": "q", "documents": [').message.startswith(
        "the request body is not valid JSON")


def test_score_bodies_pair_their_texts():
    """vLLM's text_1/text_2: one text_1 with every text_2, or as many as text_2; the cap counts the pairs."""
    one = parse(ScoreRequest, json.dumps({"model": "m", "text_1": "q", "text_2": ["a", "b"]}).encode())
    assert one.text_1 == ["q"] and one.text_2 == ["a", "b"]
    assert parse(ScoreRequest, json.dumps({"model": "m", "text_1": "q", "text_2": "a"}).encode()).text_2 == ["a"]
    err = refusal(ScoreRequest, {"model": "m", "text_1": ["a", "b"], "text_2": ["c", "d", "e"]})
    assert err.param == "text_1" and err.message.startswith("text_1 has 2 texts and text_2 3")
    err = refusal(ScoreRequest, {"model": "m", "text_1": "q", "text_2": ["a"] * (MAX_DOCUMENTS + 1)})
    assert err.param == "text_2" and f"at most {MAX_DOCUMENTS}" in err.message
    err = refusal(ScoreRequest, {"model": "m", "text_1": "q", "text_2": []})
    assert err.param == "text_2" and err.message == "`text_2` must not be empty"
    err = refusal(ScoreRequest, {"model": "m", "text_1": "q", "text_2": [1]})
    assert err.param == "text_2" and err.message.startswith("`text_2[0]` should be a valid string")


def test_openapi_documents_the_routes():
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    with TestClient(create_app("127.0.0.1:1", api_key=KEY)) as http:
        doc = http.get("/openapi.json").json()
        for path in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score"):  # the key guards them all
            reply = http.post(path, json={"model": TEXT, "query": "q", "documents": ["a"]})
            assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key", path
    schemas = doc["components"]["schemas"]
    for path, model, answer in (("/v1/rerank", "RerankRequest", "RerankResponse"),
                                ("/rerank", "RerankRequest", "RerankResponse"),
                                ("/v2/rerank", "RerankV2Request", "RerankResponse"),
                                ("/v1/score", "ScoreRequest", "ScoreResponse")):
        route = doc["paths"][path]["post"]
        assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{model}")
        assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{answer}")
        assert route["security"] == [{"bearer": []}] and model in schemas, path
    assert "security" not in doc["paths"]["/health"]["get"]
    assert schemas["RerankRequest"]["properties"]["documents"]["maxItems"] == MAX_DOCUMENTS
    assert {"id", "results", "meta", "usage", "model"} <= set(schemas["RerankResponse"]["properties"])


# ---- through a door over a stub model: admission, priority, the model's errors --------------------------------
class RankStub(door_stub.StubEmbedder):
    """The door's stub model with a bi-encoder's spec (dense output, no prompts): every row four ones, so every
    score is their dot product, 4; a token a word."""

    def __init__(self, calls: list, release: threading.Event) -> None:
        super().__init__(calls, release)
        self.spec = SimpleNamespace(name=MODEL, modalities=[Modality.TEXT], outputs=("dense",), output="dense",
                                    prompts={}, default_prompt_name=None)


@pytest.fixture()
def stub(monkeypatch):
    monkeypatch.setattr(door_stub, "StubEmbedder", RankStub)
    doors = stub_doors(monkeypatch)
    yield doors
    doors.release.set()


def rerank_post(port: int, body: dict, path: str = "/v1/rerank", **kw) -> tuple[int, dict, dict]:
    status, headers, raw = request(port, "POST", path, json.dumps(body).encode(), **kw)
    return status, headers, json.loads(raw)


def stub_body(*documents: str, query: str = "q w", **extra) -> dict:
    return {"model": MODEL, "query": query, "documents": list(documents), **extra}


def test_rerank_goes_through_the_doors_admission(stub):
    """A rerank holds a turn like an embeddings request: with one turn and no queue, a second request is refused
    (429 in OpenAI's shape) while the first is at work, and answered once it is done."""
    with stub.door(max_concurrent=1, max_queued=0, queue_wait=0.2) as d, ThreadPoolExecutor(2) as pool:
        working = pool.submit(rerank_post, d.port, stub_body("hold", "b"))
        wait_for(lambda: d.app.state.admission.active == 1 and stub.calls)
        status, headers, reply = rerank_post(d.port, stub_body("c"), "/v2/rerank")
        assert status == 429 and headers["retry-after"].isdigit(), reply
        assert_openai_error(reply, "rate_limit_exceeded")
        status, _, reply = rerank_post(d.port, {"model": MODEL, "text_1": "a", "text_2": ["b"]}, "/v1/score")
        assert status == 429, reply
        stub.release.set()
        status, _, reply = working.result(timeout=10)
        assert status == 200 and [r["index"] for r in reply["results"]] == [0, 1], reply


@pytest.mark.parametrize(("field", "header", "sent"), [(None, None, "normal"), ("high", None, "high"),
                                                       (None, "low", "low"), ("low", "high", "low")])
def test_priority_reaches_the_model(stub, field, header, sent):
    with stub.door() as d:
        extra = {"priority": field} if field else {}
        status, _, reply = rerank_post(d.port, stub_body("a b", "c", **extra),
                                       headers={"X-Priority": header} if header else None)
        assert status == 200, reply
        assert [c.priority for c in stub.calls] == [sent, sent]  # the query's call and the documents'


def test_answers_usage_and_metrics_through_the_stub(stub):
    """Every route answers its API's shape; usage counts the tokens the model reported (a word each here); the
    door's metrics count the route, the items and the tokens."""
    with stub.door() as d:
        status, _, reply = rerank_post(d.port, stub_body("a b c", {"text": "d", "title": "t"}, top_n=1))
        assert status == 200 and set(reply) == {"id", "model", "results", "usage", "meta"}, reply
        assert reply["results"] == [{"index": 0, "relevance_score": 4.0, "document": {"text": "a b c"}}]
        assert reply["usage"] == {"prompt_tokens": 6, "total_tokens": 6, "truncated_inputs": 0}
        assert reply["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1},
                                 "tokens": {"input_tokens": 6}}
        status, _, reply = rerank_post(d.port, stub_body(*["x"] * 101), "/v2/rerank")
        assert status == 200 and "document" not in reply["results"][0] and len(reply["results"]) == 101
        assert reply["meta"]["billed_units"]["search_units"] == 2 and reply["meta"]["api_version"]["version"] == "2"
        status, _, reply = rerank_post(d.port, stub_body("x", return_documents=False), "/rerank")
        assert status == 200 and "document" not in reply["results"][0]
        status, _, reply = rerank_post(d.port, {"model": MODEL, "text_1": ["a", "b c"], "text_2": ["d", "e"]},
                                       "/score")
        assert status == 200 and reply["object"] == "list" and reply["model"] == MODEL, reply
        assert [(x["index"], x["object"]) for x in reply["data"]] == [(0, "score"), (1, "score")]
        assert reply["usage"]["total_tokens"] == 5 and reply["usage"]["completion_tokens"] == 0
        samples = scrape(d.port)
    assert value(samples, "zoo_door_requests_total", route="/v1/rerank", method="POST", status="200") == 1
    assert value(samples, "zoo_door_requests_total", route="/v2/rerank", method="POST", status="200") == 1
    assert value(samples, "zoo_door_items_total", model=MODEL) == 2 + 101 + 1 + 2
    assert value(samples, "zoo_door_tokens_total", model=MODEL) == 6 + 103 + 3 + 5


def test_the_models_errors_name_the_field(stub):
    """An item the model refuses is a 400 naming the document (or the query) in the request; overload is 429,
    an unexpected failure 500 with a fixed message; an unknown model 404; a lone surrogate a 400, not a 500."""
    with stub.door() as d:
        status, _, reply = rerank_post(d.port, stub_body("fine", "refuse"))
        assert status == 400 and reply["error"]["param"] == "documents", reply
        assert reply["error"]["message"] == "documents[1]: the model cannot read this item"
        status, _, reply = rerank_post(d.port, stub_body("fine", query="refuse"))
        assert (status, reply["error"]["param"]) == (400, "query") and reply["error"]["message"].startswith("query:")
        status, _, reply = rerank_post(d.port, {"model": MODEL, "text_1": ["a", "b"], "text_2": ["c", "refuse"]},
                                       "/v1/score")
        assert reply["error"]["message"].startswith("text_2[1]:") and reply["error"]["param"] == "text_2", reply
        status, headers, reply = rerank_post(d.port, stub_body("overload"))
        assert status == 429 and headers["retry-after"] == "3", reply
        status, _, reply = rerank_post(d.port, stub_body("boom"))
        assert status == 500 and "secret" not in str(reply), reply
        assert_openai_error(reply, "internal_error")
        status, _, reply = rerank_post(d.port, {**stub_body("a"), "model": "nope/none"})
        assert status == 404 and assert_openai_error(reply, "model_not_found")["param"] == "model"
        status, _, raw = request(d.port, "POST", "/v1/rerank",
                                 b'{"model": "stub/model", "query": "q", "documents": ["a", "b\\ud800"]}')
        reply = json.loads(raw)
        assert status == 400 and reply["error"]["message"].startswith("documents[1]: the text is not valid"), reply
        status, _, reply = rerank_post(d.port, stub_body("a", max_tokens_per_doc=4))
        assert status == 400 and reply["error"]["param"] == "max_tokens_per_doc", reply
        assert "applies to cross-encoders" in reply["error"]["message"]
        stub.calls.clear()
        status, _, reply = rerank_post(d.port, stub_body(*["x"] * (MAX_DOCUMENTS + 1)))
        assert status == 400 and reply["error"]["param"] == "documents" and not stub.calls  # never sent


# ---- against a real server -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory) -> Path:
    from .tiny_models import make_cross_encoder

    return make_cross_encoder(tmp_path_factory.mktemp("cross") / CROSS)


def served(tmp: Path, *models: str):
    """A `zoo serve` (with the door) of a fresh repository of ``models``, stopped at the end."""
    from serving.export import export

    export(list(models), tmp / "repository")
    s = start_serve("--api-key", KEY, repository=tmp / "repository", wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    yield from served(tmp_path_factory.mktemp("rerank"), TEXT)


@pytest.fixture()
def cross_serve(tmp_path, cross_dir):
    """A server of the tiny cross-encoder alone (its own: a bi-encoder's tests do not wait on it)."""
    yield from served(tmp_path, str(cross_dir))


@pytest.fixture(scope="module")
def local():
    return zoo.create(TEXT, device="cpu")


@pytest.fixture(scope="module")
def cross(cross_dir):
    return zoo.create(str(cross_dir), device="cpu")


def root(serve) -> str:
    return serve.openai.removesuffix("/v1")


def post(serve, path: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) of a POST to the door."""
    request = urllib.request.Request(root(serve) + path, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_same_ranking(results: list[dict], want: list[dict], atol: float = 1e-5) -> None:
    """The door's results (``index``, ``relevance_score``) are the in-process ranking (``corpus_id``, ``score``):
    the same order, the same scores; the scores tell the documents apart, so a wrong order cannot pass."""
    assert [r["index"] for r in results] == [w["corpus_id"] for w in want], (results, want)
    np.testing.assert_allclose([r["relevance_score"] for r in results], [w["score"] for w in want], rtol=0, atol=atol)
    scores = sorted(w["score"] for w in want)
    assert min(np.diff(scores), default=1.0) > 10 * atol, scores


@pytest.mark.server
def test_minilm_rerank_equals_zoo_rerank(serve, local):
    """MiniLM as a bi-encoder: every rerank route gives in-process zoo.rerank's order and scores; top_n and
    return_documents as asked; usage counts the query's and the documents' tokens as the model reads them."""
    want = zoo.rerank(local, QUERY, DOCS)
    tokens = sum(len(t.ids) for t in local.tokenize([QUERY, *DOCS]))
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        status, reply = post(serve, path, {"model": TEXT, "query": QUERY, "documents": DOCS})
        assert status == 200, reply
        assert_same_ranking(reply["results"], want)
        assert reply["model"] == TEXT and reply["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens,
                                                             "truncated_inputs": 0}
        assert ("document" in reply["results"][0]) == (path != "/v2/rerank")
    status, reply = post(serve, "/v1/rerank", {"model": TEXT, "query": QUERY, "documents": DOCS, "top_n": 2,
                                               "return_documents": True})
    assert_same_ranking(reply["results"], want[:2])
    assert [r["document"]["text"] for r in reply["results"]] == [DOCS[w["corpus_id"]] for w in want[:2]]
    status, reply = post(serve, "/v1/score", {"model": TEXT, "text_1": QUERY, "text_2": DOCS})
    assert status == 200 and [d["index"] for d in reply["data"]] == list(range(len(DOCS))), reply
    by_doc = {w["corpus_id"]: w["score"] for w in want}
    np.testing.assert_allclose([d["score"] for d in reply["data"]], [by_doc[i] for i in range(len(DOCS))], atol=1e-5)
    pairs = [(QUERY, DOCS[0]), ("stock prices", DOCS[1]), ("a sleeping kitten", DOCS[3])]
    status, reply = post(serve, "/v1/score", {"model": TEXT, "text_1": [a for a, _ in pairs],
                                              "text_2": [b for _, b in pairs]})
    np.testing.assert_allclose([d["score"] for d in reply["data"]], zoo.ranking.score_pairs(local, pairs), atol=1e-5)


@pytest.mark.server
def test_the_cohere_sdk_reranks_through_the_door(serve, local):
    """The real cohere SDK, v2 and v1 clients pointed at the door, parse its answers; its errors are the SDK's."""
    import cohere

    want = zoo.rerank(local, QUERY, DOCS)
    co = cohere.ClientV2(api_key=KEY, base_url=root(serve))
    got = co.rerank(model=TEXT, query=QUERY, documents=DOCS, top_n=3)
    assert_same_ranking([{"index": r.index, "relevance_score": r.relevance_score} for r in got.results], want[:3])
    assert got.id and got.meta.api_version.version == "2" and got.meta.billed_units.search_units == 1
    with pytest.raises(cohere.NotFoundError) as missing:
        co.rerank(model="nope/none", query=QUERY, documents=DOCS)
    assert missing.value.body["error"]["code"] == "model_not_found"
    with pytest.raises(cohere.BadRequestError) as bad:
        co.rerank(model=TEXT, query=QUERY, documents=DOCS, max_tokens_per_doc=8)  # a bi-encoder's are whole
    assert bad.value.body["error"]["param"] == "max_tokens_per_doc"
    v1 = cohere.Client(api_key=KEY, base_url=root(serve))
    docs = [{"text": d, "source": f"doc{i}"} for i, d in enumerate(DOCS)]
    got = v1.rerank(model=TEXT, query=QUERY, documents=docs, top_n=2, return_documents=True)
    assert_same_ranking([{"index": r.index, "relevance_score": r.relevance_score} for r in got.results], want[:2])
    assert [(r.document.text, r.document.source) for r in got.results] == [
        (DOCS[w["corpus_id"]], f"doc{w['corpus_id']}") for w in want[:2]]
    assert got.meta.api_version.version == "1"


@pytest.mark.server
def test_errors_against_the_server(serve):
    """Unknown models, the cap, empty documents, a bad top_n and a text over the window with truncate none: the
    door's 400/404 in OpenAI's shape; a long document is cut and counted."""
    for path in ("/v1/rerank", "/v2/rerank"):
        status, reply = post(serve, path, {"model": "nope/none", "query": "q", "documents": ["a"]})
        assert status == 404 and assert_openai_error(reply, "model_not_found")["param"] == "model"
    status, reply = post(serve, "/v1/score", {"model": "nope/none", "text_1": "q", "text_2": ["a"]})
    assert status == 404
    for extra, param in (({"documents": ["a"] * (MAX_DOCUMENTS + 1)}, "documents"), ({"documents": []}, "documents"),
                         ({"documents": ["a"], "top_n": 0}, "top_n")):
        status, reply = post(serve, "/v1/rerank", {"model": TEXT, "query": "q", **extra})
        assert status == 400 and assert_openai_error(reply)["param"] == param, reply
    status, reply = post(serve, "/v1/rerank", {"model": TEXT, "query": "q", "documents": ["a", LONG_TEXT],
                                               "truncate": "none"})
    err = assert_openai_error(reply, "context_length_exceeded")
    assert status == 400 and err["param"] == "documents" and "(documents[1])" in err["message"], reply
    status, reply = post(serve, "/v1/rerank", {"model": TEXT, "query": "q", "documents": ["a", LONG_TEXT]})
    assert status == 200 and reply["usage"]["truncated_inputs"] == 1


@pytest.mark.server
def test_cross_encoder_rerank_equals_rank(cross_serve, cross, cross_dir):
    """A served cross-encoder (pairs in, scores out): /v1/rerank is in-process CrossEncoder.rank, /v2/rerank's
    max_tokens_per_doc (the cohere SDK's too) cuts the documents as rank() does, /v1/score is predict(); usage
    counts the pairs' tokens; a pair over the window is cut and counted, or refused with truncate none."""
    from transformers import AutoTokenizer

    want = cross.rank(QUERY, DOCS)
    assert [w["corpus_id"] for w in zoo.rerank(cross, QUERY, DOCS)] == [w["corpus_id"] for w in want]
    status, reply = post(cross_serve, "/v1/rerank", {"model": CROSS, "query": QUERY, "documents": DOCS})
    assert status == 200, reply
    assert_same_ranking(reply["results"], want)
    tokenizer = AutoTokenizer.from_pretrained(str(cross_dir))
    tokens = sum(len(tokenizer(QUERY, d)["input_ids"]) for d in DOCS)
    assert reply["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": 0}
    cut = cross.rank(QUERY, DOCS, max_tokens_per_doc=2)
    assert [w["corpus_id"] for w in cut] != [w["corpus_id"] for w in want]  # the cut matters to this model
    status, reply = post(cross_serve, "/v2/rerank", {"model": CROSS, "query": QUERY, "documents": DOCS,
                                               "max_tokens_per_doc": 2})
    assert status == 200, reply
    assert_same_ranking(reply["results"], cut)
    import cohere

    got = cohere.ClientV2(api_key=KEY, base_url=root(cross_serve)).rerank(
        model=CROSS, query=QUERY, documents=DOCS, max_tokens_per_doc=2, top_n=2)
    assert_same_ranking([{"index": r.index, "relevance_score": r.relevance_score} for r in got.results], cut[:2])
    pairs = [(QUERY, DOCS[0]), ("stock prices", DOCS[1]), ("a sleeping kitten", DOCS[2])]
    status, reply = post(cross_serve, "/v1/score", {"model": CROSS, "text_1": [a for a, _ in pairs],
                                              "text_2": [b for _, b in pairs]})
    assert status == 200, reply
    np.testing.assert_allclose([d["score"] for d in reply["data"]], cross.predict(pairs), rtol=0, atol=1e-5)
    status, reply = post(cross_serve, "/v1/rerank", {"model": CROSS, "query": QUERY, "documents": [DOCS[0], LONG_TEXT]})
    assert status == 200 and reply["usage"]["truncated_inputs"] == 1, reply
    assert_same_ranking(reply["results"], cross.rank(QUERY, [DOCS[0], LONG_TEXT]))
    status, reply = post(cross_serve, "/v1/rerank", {"model": CROSS, "query": QUERY, "documents": [DOCS[0], LONG_TEXT],
                                               "truncate": "none"})
    err = assert_openai_error(reply, "context_length_exceeded")
    assert status == 400 and err["param"] == "documents" and "(documents[1])" in err["message"], reply
    assert 'truncate to "end" to' in err["message"], err  # a pair is never cut at its start
    for item in ("a text alone", json.dumps([QUERY, DOCS[0]])):  # a pair's wire form is no way in either
        status, reply = post(cross_serve, "/v1/embeddings", {"model": CROSS, "input": [item]})
        err = assert_openai_error(reply)
        assert status == 400 and err["param"] == "model" and "/v1/rerank" in err["message"], reply
    with urllib.request.urlopen(urllib.request.Request(cross_serve.openai + "/models", headers={
            "Authorization": f"Bearer {KEY}"}), timeout=30) as listed:
        card = next(m for m in json.loads(listed.read())["data"] if m["id"] == CROSS)
    assert card["outputs"] == ["score"], card


def rerank_section() -> str:
    """The docs page's rerank section: its examples are run here, against this module's server."""
    text = PAGE.read_text()
    start = text.index("\n## Rerank and score")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


@pytest.mark.server
def test_docs_examples_run(serve, local):
    """The page's rerank examples (cohere SDK, curl), run as written against this server (its port and key put
    in): the SDK's ranking is zoo.rerank's, every curl answer a ranking or scores."""
    blocks = re.findall(r"```(python|bash)\n(.*?)```", rerank_section(), re.S)
    assert {kind for kind, _ in blocks} == {"python", "bash"}
    env = {**os.environ, "ZOO_API_KEY": KEY}
    want = zoo.rerank(local, "a cat on a sofa", ["stock prices fell", "a kitten naps on the couch", "a cat"])
    for kind, code in blocks:
        code = code.replace("8080", str(serve.openai_port))
        if kind == "python":
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 0, out.stderr
            ranked = ast.literal_eval(out.stdout.splitlines()[-1])  # its last line: the v2 ranking, 4 decimals
            assert_same_ranking([{"index": i, "relevance_score": s} for i, s in ranked], want, atol=1e-4)
        else:
            out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 0, out.stderr
            replies = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            assert replies and all(r.get("results") or r.get("data") for r in replies), out.stdout
            assert not [r for r in replies if "error" in r], out.stdout
