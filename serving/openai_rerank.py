"""Reranking and pair scoring at the door: ``POST /v1/rerank`` and ``/rerank`` (Jina's and Cohere's v1 shape),
``POST /v2/rerank`` (Cohere's v2) and ``POST /v1/score`` / ``/score`` (vLLM's pairs).

One request shape serves Jina's and Cohere's clients: ``model``, ``query``, ``documents`` (strings, or objects
with a ``text`` field whose other string fields come back with the document), ``top_n``, ``return_documents``
(default true on ``/v1/rerank`` and ``/rerank``, as Jina and vLLM answer; false on ``/v2/rerank``, whose Cohere
answer carries none) and ``max_tokens_per_doc`` (Cohere v2: a cross-encoder's documents cut to that many tokens).
The answer holds what each API's clients read: ``results[{index, relevance_score, document?}]`` best first, an
``id``, Cohere's ``meta`` and Jina's ``usage``. ``/v1/score`` takes vLLM's ``text_1`` (one text, or one a pair)
and ``text_2`` and answers ``data[{index, object: "score", score}]`` in pair order.

The scores are the served model's, computed as :mod:`zoo.ranking` computes them in-process, so a served ranking
is ``zoo.rerank``'s: a cross-encoder reads each ``(query, document)`` pair (one text element a pair,
:func:`zoo.ranking.pair_to_wire`, so Triton batches pairs like any texts and the token budget applies); a
bi-encoder embeds the query and the documents under their prompts (:func:`zoo.ranking.bi_sides`) and scores them
as its output kind does (:func:`zoo.ranking.bi_scores`: cosine, MaxSim, dot). The model calls are
``/v1/embeddings``' own (the client's ``infer_wire``), so ``usage`` counts the tokens the model read (its
``TOKENS``) and says how many texts were cut.

Every request is bounded before any work, as ``/v1/embeddings`` is: at most :data:`MAX_DOCUMENTS` documents (or
pairs), each text at most ``MAX_TEXT_CHARS`` characters; the routes share the door's key, admission (priority
from ``X-Priority`` or the ``priority`` field), metrics and error shape.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from zoo.errors import InputError, ZooError
from zoo.media import budgets
from zoo.ranking import bi_scores, bi_sides, is_cross_encoder, pair_chars, pair_to_wire, ranked, refuse_doc_tokens
from zoo.spec import Modality

from .door_metrics import Exchange, failure_reason
from .openai_api import ApiError, api_error, bad_request, parse_json, request_priority, too_long, validation_error
from .openai_catalog import Catalog, public_name
from .openai_long import Guarded, ReadBody, model_error
from .openai_models import MAX_COUNT, PriorityName, Text, Truncate, _Body
from .openai_schema import RerankResponse, ScoreResponse, error_responses, request_body

#: the most documents one rerank request may hold, and pairs one score request (Cohere's own advice is at most
#: 1,000 documents a request); a request over it is a 400 naming it
MAX_DOCUMENTS = 1000
SEARCH_UNIT_DOCUMENTS = 100  # Cohere bills a search unit per query and up to this many documents
DOCUMENT_SHAPES = 'a document is a string or an object {"text": "..."} (its other string fields are kept)'
LISTS = {"documents": "documents", "text_1": "texts", "text_2": "texts"}  # a request's lists: what each holds


def _fits(value: Any, info: ValidationInfo) -> Any:
    # counted before an element is validated: the work a request may ask for is bounded first
    if isinstance(value, list) and len(value) > MAX_DOCUMENTS:
        raise PydanticCustomError("invalid_value", too_many(str(info.field_name), len(value)))
    return value


def too_many(field: str, count: int | None = None) -> str:
    """The refusal of a list over :data:`MAX_DOCUMENTS` (``count``: its length, when known)."""
    held = f"{count}" if count is not None else f"more than {MAX_DOCUMENTS}"
    return f"`{field}` holds {held} {LISTS.get(field, 'elements')}; at most {MAX_DOCUMENTS} per request"


class TextDocument(_Body):
    """A document object: its ``text`` is ranked; its other string fields come back with it (Cohere v1)."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)
    text: Text


def _document_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "object" if isinstance(value, dict) else None


Document = Annotated[Annotated[Text, Tag("text")] | Annotated[TextDocument, Tag("object")],
                     Discriminator(_document_kind, custom_error_type="invalid_item",
                                   custom_error_message=DOCUMENT_SHAPES)]
Documents = Annotated[list[Document], Field(min_length=1, max_length=MAX_DOCUMENTS, fail_fast=True,
                                            description=f"at most {MAX_DOCUMENTS} documents"), BeforeValidator(_fits)]


def _query_fits(text: str) -> str:
    if len(text) > budgets.MAX_TEXT_CHARS:  # as openai_models.Text, with the field named (it is no list's item)
        raise PydanticCustomError("text_too_long", "query: the text has {chars} characters; at most {limit}",
                                  {"chars": len(text), "limit": budgets.MAX_TEXT_CHARS})
    return text


Query = Annotated[str, AfterValidator(_query_fits), Field(description="the query the documents are ranked against")]


def _texts(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # one string: a one-text list


Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_DOCUMENTS, fail_fast=True),
                  BeforeValidator(_fits), BeforeValidator(_texts, json_schema_input_type=Text | list[Text])]


class _Scoring(_Body):
    """What every scoring request shares."""

    model: str = Field(min_length=1, description="a served model's id (GET /v1/models): a cross-encoder, or any "
                       "text embedding model (a bi-encoder)")
    max_tokens_per_doc: int | None = Field(None, ge=1, le=MAX_COUNT, description="cross-encoders: each document "
                                           "is cut to this many tokens before its pair is read (default: none, "
                                           "the pair is cut to the model's window)")
    truncate: Truncate = Field("end", description="a text (or pair) over the model's window: end (cut it), none "
                               "(400 context_length_exceeded); start for bi-encoders")
    output: str | None = Field(None, description="bi-encoders: the output kind to score with (GET /v1/models: "
                               "outputs; default its first)")
    priority: PriorityName | None = Field(None, description="the request's turn at the model when it is busy "
                                          "(default: the X-Priority header's, else normal)")


class _Rerank(_Scoring):
    query: Query
    documents: Documents
    top_n: int | None = Field(None, ge=1, le=MAX_COUNT, description="the most results to return (default: every "
                              "document)")

    def text(self, i: int) -> str:
        """Document ``i``'s text."""
        doc = self.documents[i]
        return doc if isinstance(doc, str) else doc.text

    def answered(self, i: int) -> dict[str, str]:
        """Document ``i`` as an answer returns it: ``{"text"}`` and a document object's other fields."""
        doc = self.documents[i]
        return {"text": doc} if isinstance(doc, str) else {"text": doc.text, **(doc.__pydantic_extra__ or {})}


class RerankRequest(_Rerank):
    """``POST /v1/rerank`` and ``/rerank``: Jina's and Cohere's v1 rerank request."""

    return_documents: bool = Field(True, description="each result carries its document")
    rank_fields: list[str] | None = Field(None, description='Cohere v1: only ["text"] is read')
    max_chunks_per_doc: int | None = Field(None, description="Cohere v1: not supported (a document over the window "
                                           "is cut); leave it out, or use max_tokens_per_doc")

    @model_validator(mode="after")
    def _supported(self) -> RerankRequest:
        if self.rank_fields not in (None, ["text"]):
            raise PydanticCustomError("invalid_value", 'rank_fields: only ["text"] is ranked; put what should be '
                                      "ranked in each document's text", {"param": "rank_fields"})
        if self.max_chunks_per_doc is not None:
            raise PydanticCustomError("invalid_value", "max_chunks_per_doc is not supported: a document over the "
                                      "model's window is cut (truncate), or cut first with max_tokens_per_doc",
                                      {"param": "max_chunks_per_doc"})
        return self


class RerankV2Request(_Rerank):
    """``POST /v2/rerank``: Cohere's v2 rerank request."""

    return_documents: bool = Field(False, description="each result carries its document (not in Cohere's v2)")


class ScoreRequest(_Scoring):
    """``POST /v1/score``: vLLM's pairs: ``text_1[i]`` with ``text_2[i]``, or one ``text_1`` with every
    ``text_2``."""

    text_1: Texts = Field(description="one text, or one a pair (the query side)")
    text_2: Texts = Field(description=f"the other side: at most {MAX_DOCUMENTS} texts")

    @model_validator(mode="after")
    def _paired(self) -> ScoreRequest:
        if len(self.text_1) not in (1, len(self.text_2)):
            raise PydanticCustomError("invalid_value", f"text_1 has {len(self.text_1)} texts and text_2 "
                                      f"{len(self.text_2)}: send one text_1 (scored with each text_2) or as many as "
                                      "text_2", {"param": "text_1"})
        return self


REQUESTS = (RerankRequest, RerankV2Request, ScoreRequest)  # what /openapi.json documents


def parse(model: type[_Scoring], body: bytes) -> Any:
    """A raw body checked as request ``model`` (bounded parse, then validation); a 400 naming the field at fault.
    CPU work: call it off the event loop."""
    return _checked(model, _decoded(body))


def _decoded(body: bytes) -> Any:
    try:
        return parse_json(body, MAX_DOCUMENTS)
    except ApiError as err:  # the parser stopped at a list over the cap: the cap's own words
        if err.param in LISTS and err.message.startswith(f"`{err.param}` has more than"):
            raise bad_request(too_many(err.param), param=err.param) from None
        raise


def _checked(model: type[_Scoring], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise validation_error(err, model) from None


# ---- scoring with a served model ------------------------------------------------------------------------------
Place = Callable[[int], "tuple[str, str]"]  # an item's index in a model call -> (field, where in the request)


def _wire(text: str, place: tuple[str, str]) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\\ud800"): no text a model reads
        raise bad_request(f"{place[1]}: the text is not valid Unicode (a lone surrogate)", param=place[0]) from None


async def _call(embedder: Any, raw: list[bytes], opts: Any, exchange: Exchange, place: Place) -> Any:
    """One model call as ``/v1/embeddings`` makes it: its ``Served`` rows, tokens and cut flags."""
    try:
        return await embedder.infer_wire(raw, Modality.TEXT, opts, tokens=True, truncated=True,
                                         priority=exchange.priority, traceparent=exchange.traceparent)
    except InputError as err:  # the model refused one text: named by its place in the request
        field, where = place(err.index)
        cuts = '"end"' if is_cross_encoder(embedder) else '"end" or "start"'  # a pair is cut at its end only
        answer = too_long(err.index, err.reason, place=where, param=field, cuts=cuts) or bad_request(
            f"{where}: {err.reason}", param=field)
        answer.failure = failure_reason(err)
        raise answer from None
    except Exception as err:
        raise model_error(err) from None


def _counted(*served: Any) -> tuple[int, int]:
    """(tokens read, texts cut) of model calls: each a ``(result, tokens)`` pair with the cut flags as its
    ``truncated`` attribute (:class:`serving.client_core.Served`)."""
    tokens = sum(int(np.asarray(read).sum()) for _, read in served)
    flags = [getattr(s, "truncated", None) for s in served]
    return tokens, sum(int(np.asarray(f).sum()) for f in flags if f is not None)  # arrays: never read as truths


async def score(embedder: Any, req: _Scoring, queries: list[str], documents: list[str], exchange: Exchange,
                sides: tuple[Place, Place, Place]) -> tuple[np.ndarray, int, int]:
    """Scores of ``documents[i]`` against ``queries[i]`` (or the one query): float32 ``[len(documents)]``, with
    the tokens read and how many texts were cut. ``sides``: where a query, a document and a pair sit in the
    request."""
    query_at, document_at, pair_at = sides
    if Modality.TEXT not in embedder.spec.modalities:
        raise bad_request(f"model `{req.model}` reads no text; it embeds "
                          f"{', '.join(m.value for m in embedder.spec.modalities)}", param="model")
    # every text has UTF-8 bytes (a pair's JSON needs them too): a text that has none is refused here, by name
    for texts, place in ((queries, query_at), (documents, document_at)):
        for i, t in enumerate(texts):
            _wire(t, place(i))  # checked, not kept: a pair sends its own cut copy
    try:
        if is_cross_encoder(embedder):  # as zoo.rerank decides: a cross-encoder reads each (query, document) pair
            opts = embedder.options(output=req.output, truncate=req.truncate, max_tokens_per_doc=req.max_tokens_per_doc)
            one, limit = len(queries) == 1, pair_chars(embedder.spec)  # the query is not copied whole per document
            raw = [pair_to_wire(queries[0 if one else i], d, limit) for i, d in enumerate(documents)]
            served = await _call(embedder, raw, opts, exchange, pair_at)
            return np.asarray(served[0], np.float32).reshape(-1), *_counted(served)
        refuse_doc_tokens(embedder, req.max_tokens_per_doc)
        q_wire = [_wire(t, query_at(i)) for i, t in enumerate(queries)]
        d_wire = [_wire(t, document_at(i)) for i, t in enumerate(documents)]
        kind, q_prompt, d_prompt = bi_sides(embedder.spec, req.output)
        q_opts = embedder.options(output=kind, prompt_name=q_prompt, truncate=req.truncate)
        d_opts = embedder.options(output=kind, prompt_name=d_prompt, truncate=req.truncate)
    except ZooError as err:
        raise api_error(err) from None
    q, d = await asyncio.gather(_call(embedder, q_wire, q_opts, exchange, query_at),
                                _call(embedder, d_wire, d_opts, exchange, document_at))
    if len(queries) == 1:
        got = bi_scores(kind, q[0], d[0])[0]
    else:
        got = bi_scores(kind, q[0], d[0], pairwise=True)
    return np.asarray(got, np.float32).reshape(-1), *_counted(q, d)


async def _served(catalog: Catalog, model: str, exchange: Exchange) -> Any:
    embedder = await catalog.get(model)  # 404 when not served, 503 when not ready
    exchange.model = public_name(embedder.triton_name)
    return embedder


def _usage(tokens: int, cut: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": cut}


async def rerank(catalog: Catalog, req: _Rerank, exchange: Exchange, version: str) -> dict[str, Any]:
    """Answer one checked rerank request (Cohere API ``version`` ``"1"`` or ``"2"``)."""
    embedder = await _served(catalog, req.model, exchange)
    texts = [req.text(i) for i in range(len(req.documents))]
    sides = (lambda _i: ("query", "query"), lambda i: ("documents", f"documents[{i}]"),
             lambda i: ("documents", f"documents[{i}]"))
    got, tokens, cut = await score(embedder, req, [req.query], texts, exchange, sides)
    exchange.items, exchange.tokens = len(texts), tokens
    results = [{"index": r["corpus_id"], "relevance_score": r["score"]} for r in ranked(got, None, req.top_n)]
    if req.return_documents:
        for r in results:
            r["document"] = req.answered(r["index"])
    units = -(-len(texts) // SEARCH_UNIT_DOCUMENTS)
    return {"id": str(uuid.uuid4()), "model": exchange.model, "results": results, "usage": _usage(tokens, cut),
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": units},
                     "tokens": {"input_tokens": tokens}}}


async def score_pairs(catalog: Catalog, req: ScoreRequest, exchange: Exchange) -> dict[str, Any]:
    """Answer one checked ``/v1/score`` request."""
    embedder = await _served(catalog, req.model, exchange)
    one = len(req.text_1) == 1
    sides = (lambda i: ("text_1", f"text_1[{i}]"), lambda i: ("text_2", f"text_2[{i}]"),
             lambda i: ("text_2", f"text_1[{0 if one else i}] with text_2[{i}]"))
    got, tokens, cut = await score(embedder, req, list(req.text_1), list(req.text_2), exchange, sides)
    exchange.items, exchange.tokens = len(got), tokens
    return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": exchange.model,
            "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(got)],
            "usage": {**_usage(tokens, cut), "completion_tokens": 0}}


def _json(answer: dict[str, Any]) -> bytes:
    # documents may come back: up to MAX_DOCUMENTS texts, rendered off the event loop
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def add_rerank_routes(app: FastAPI, catalog: Catalog, guarded: Guarded, read: ReadBody) -> None:
    """Add ``/v1/rerank``, ``/rerank``, ``/v2/rerank``, ``/v1/score`` and ``/score`` to the door ``app``, through
    ``guarded`` (key, admission, metrics, errors in OpenAI's shape) like ``/v1/embeddings``, their bodies read by
    ``read`` (bounded)."""
    errors = error_responses(400, 401, 404, 408, 413, 429, 500, 503)

    def route(model: type[_Scoring], answer: Callable[..., Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            async def work(exchange: Exchange) -> bytes:
                req = await read(request, lambda body: parse(model, body))
                exchange.priority = request_priority(req.priority, request.headers.get("x-priority"))
                return await asyncio.to_thread(_json, await answer(req, exchange))

            return await guarded(request, work, body_priority=True)

        return handle

    v1 = route(RerankRequest, lambda req, exchange: rerank(catalog, req, exchange, "1"))

    async def rerank_either(request: Request) -> Response:
        # /rerank is also TEI's: a {query, texts} body (no documents) goes to the handler serving.tei_routes puts on
        # app.state.tei_rerank, which answers and shapes its errors as TEI does; read once, told apart by its shape
        tei = getattr(request.app.state, "tei_rerank", None)
        if tei is None:
            return await v1(request)
        shaped: list[bool] = []  # set once the body is TEI's: its errors then take TEI's shape

        def either(body: bytes) -> tuple[Any, Any]:
            try:
                value = _decoded(body)
            except ApiError as err:
                if err.param == "texts":  # TEI's list over the cap
                    shaped.append(True)
                    raise tei.convert(err) from None
                raise
            if isinstance(value, dict) and "texts" in value and "documents" not in value:
                shaped.append(True)
                return None, value
            return _checked(RerankRequest, value), None

        async def work(exchange: Exchange) -> bytes:
            req, value = await read(request, either)
            if req is None:
                return await tei.answer(value, exchange, request.headers.get("x-priority"))
            exchange.priority = request_priority(req.priority, request.headers.get("x-priority"))
            return await asyncio.to_thread(_json, await rerank(catalog, req, exchange, "1"))

        return await guarded(request, work, body_priority=True,
                             shape=lambda err: tei.shape(err) if shaped else err.body())

    for path, handler in (("/v1/rerank", v1), ("/rerank", rerank_either)):
        app.post(path, response_model=RerankResponse, openapi_extra=request_body(RerankRequest), responses=errors,
                 summary="Rerank documents (Jina, Cohere v1)", description="Documents ranked against the query, "
                 "best first: Jina's and Cohere's v1 rerank (return_documents defaults to true)." + (
                     " A body of TEI's shape ({query, texts}) is answered as TEI's /rerank (TEIRerankRequest)."
                     if path == "/rerank" else ""), operation_id=f"rerank{path.replace('/', '_')}")(handler)
    app.post("/v2/rerank", response_model=RerankResponse, openapi_extra=request_body(RerankV2Request),
             responses=errors, summary="Rerank documents (Cohere v2)", description="Documents ranked against the "
             "query, best first: Cohere's v2 rerank (max_tokens_per_doc).", operation_id="rerank_v2_rerank")(
        route(RerankV2Request, lambda req, exchange: rerank(catalog, req, exchange, "2")))
    score_route = route(ScoreRequest, lambda req, exchange: score_pairs(catalog, req, exchange))
    for path in ("/v1/score", "/score"):
        app.post(path, response_model=ScoreResponse, openapi_extra=request_body(ScoreRequest), responses=errors,
                 summary="Score text pairs (vLLM)", description="One score a pair: text_1[i] with text_2[i], or "
                 "one text_1 with every text_2 (vLLM's /score).", operation_id=f"score{path.replace('/', '_')}")(
            score_route)
