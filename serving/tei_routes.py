"""Text Embeddings Inference's routes at the door: ``POST /embed``, ``/embed_sparse``, ``/embed_all``, ``/rerank``
(TEI's ``{query, texts}`` body; Jina's and Cohere's ``documents`` body keeps its own answer), ``/tokenize``,
``/decode``, ``GET /info`` and TEI's root route ``POST /``, so that TEI's clients (``huggingface_hub``'s
``InferenceClient`` and what is built on it) work against the door unchanged.

TEI serves one model and its requests name none: the routes serve ``zoo serve --tei-model MODEL`` (a name, a
Triton name or an alias); without it each route serves the first served model (by Triton name) able to answer
it: ``/embed``, ``/tokenize``, ``/decode``, ``/info`` and ``POST /`` the first that embeds text with dense output,
``/embed_sparse`` the first with sparse output, ``/embed_all`` the first with multivector output, ``/rerank`` the
first reranker (else ``/embed``'s model, scored as a bi-encoder as ``/v1/rerank`` scores it).

The bodies are TEI's (:mod:`serving.tei_models`), bounded as ``/v1/embeddings``' are, and so are the answers and the
errors: ``{"error": "...", "error_type": "Validation"}`` with TEI's statuses (422 a request the model cannot take,
400 an empty list, 424 a model that cannot serve the route, 429 overload with ``Retry-After``, 503 not ready). The
model calls are the door's own (:class:`serving.client.AsyncTritonEmbedder`, the scoring of
:mod:`serving.openai_rerank`), so an answer equals in-process ``encode()``'s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

import zoo
from zoo.errors import InputError, ZooError
from zoo.long import Tokens, too_long_counts
from zoo.ranking import is_cross_encoder, ranked
from zoo.spec import Modality

from . import contract
from .door_embed import embed_items
from .door_metrics import Exchange
from .openai_api import ApiError, api_error, header_priority
from .openai_catalog import Catalog, public_name
from .openai_long import Guarded, ReadBody, model_error
from .openai_models import MAX_ITEMS
from .openai_rerank import MAX_DOCUMENTS, RerankRequest, score
from .openai_schema import request_body
from .tei_models import (
    REQUESTS,  # noqa: F401 (what /openapi.json documents; openai_server imports it from here)
    TEIDecodeRequest,
    TEIEmbedAllRequest,
    TEIEmbedRequest,
    TEIEmbedSparseRequest,
    TEIError,
    TEIInfo,
    TEIRank,
    TEIRerankRequest,
    TEISparseValue,
    TEIToken,
    TEITokenizeRequest,
    TextsRequest,
    as_tei,
    checked,
    error_body,
    parse,
    tei_error,
)

#: the dtype a runtime computes in (zoo.runtime.RUNTIMES), for /info's model_dtype
RUNTIME_DTYPES = {"torch": "float32", "torch-fp16": "float16", "onnx": "float32", "onnx-int8": "int8"}


#: the output kind each embedding route of TEI's gives (TEI's API defines them so): the one place the routes name kinds
ROUTE_KINDS = {"embed": "dense", "embed_sparse": "sparse", "embed_all": "multivector"}


def _can(role: str, embedder: Any) -> bool:
    """Whether a served model answers ``role``'s route: embed (dense text), embed_sparse, embed_all (multivector),
    rerank, text (any model that reads text)."""
    spec = embedder.spec
    pairs = contract.reads_pairs(spec.outputs)
    if role == "rerank":
        return pairs
    if role == "text":  # /tokenize, /decode with --tei-model: any model that reads text, as TEI's are
        return Modality.TEXT in spec.modalities
    text = Modality.TEXT in spec.modalities and not pairs
    return text and ROUTE_KINDS[role] in spec.outputs


def _refusal(role: str, name: str, embedder: Any) -> ApiError:
    """TEI's 424 for a model that cannot answer ``role``'s route."""
    if contract.reads_pairs(embedder.spec.outputs):
        return tei_error(424, f"model `{name}` is a reranker: it scores (query, text) pairs and embeds nothing; "
                         "use /rerank", "Backend")
    if Modality.TEXT not in embedder.spec.modalities:
        return tei_error(424, f"model `{name}` reads no text", "Backend")
    what = {"embed": "dense vectors (Model is not an embedding model)",
            "embed_sparse": "sparse vectors (Model is not an embedding model with SPLADE pooling)",
            "embed_all": "token vectors (multivector output)"}[role]
    return tei_error(424, f"model `{name}` gives no {what}; it gives {', '.join(embedder.spec.outputs)}", "Backend")


class Models:
    """Which served model each TEI route serves: ``tei_model`` for all of them, else the first served model (by
    Triton name) able to answer each route, remembered once every model before it has been looked at."""

    def __init__(self, catalog: Catalog, tei_model: str | None) -> None:
        self.catalog, self.tei_model = catalog, tei_model
        self._picked: dict[str, str] = {}

    @property
    def text_role(self) -> str:
        """The role of ``/tokenize`` and ``/decode``: with ``tei_model``, that model whatever it gives (TEI
        tokenizes for rerankers and sparse models too); without, ``/embed``'s model."""
        return "text" if self.tei_model is not None else "embed"

    async def get(self, role: str, exchange: Exchange) -> Any:
        """The model of ``role``'s route (see :func:`_can`); TEI's 424 when none can answer it."""
        embedder = await self._model(role)
        exchange.model = public_name(embedder.triton_name)
        return embedder

    async def _model(self, role: str) -> Any:
        if self.tei_model is not None:
            embedder = await self.catalog.get(self.tei_model)
            if role == "rerank" and Modality.TEXT in embedder.spec.modalities:
                return embedder  # a reranker, or a text model scored as a bi-encoder
            if not _can(role, embedder):
                raise _refusal(role, self.tei_model, embedder)
            return embedder
        if role in self._picked:
            return await self.catalog.get(self._picked[role])
        name, sure = await self._first(role)
        if name is None and role == "rerank":  # no reranker: /embed's model scores as a bi-encoder
            name, sure_too = await self._first("embed")
            sure = sure and sure_too
        if name is None:
            what = {"embed": "embeds text with dense output", "embed_sparse": "gives sparse vectors (a SPLADE or "
                    "BGE-M3 model)", "embed_all": "gives token vectors (multivector output)", "rerank": "reranks",
                    "text": "reads text"}[role]
            if not sure:  # a model that could not be looked at may be the one
                raise tei_error(503, f"no ready served model {what}; retry shortly", "Unhealthy")
            raise tei_error(424, f"no served model {what}", "Backend")
        if sure:
            self._picked[role] = name
        return await self.catalog.get(name)

    async def _first(self, role: str) -> tuple[str | None, bool]:
        """The first served model able to answer ``role``'s route (None: none), and whether every model before it
        could be looked at (one that is not ready may be the first: then nothing is remembered)."""
        sure = True
        for name in sorted(await self.catalog.repository()):
            try:
                embedder = await self.catalog.get(name)
            except ApiError:
                sure = False
                continue
            if _can(role, embedder):
                return name, sure
        return None, sure

    async def root_role(self) -> str:
        """The route TEI's ``POST /`` answers as: ``--tei-model``'s kind (a reranker reranks, a sparse-only
        model embeds sparse), else ``/embed``."""
        if self.tei_model is None:
            return "embed"
        embedder = await self.catalog.get(self.tei_model)
        return next((role for role in ("rerank", "embed", "embed_sparse") if _can(role, embedder)), "embed")


# ---- the answers ----------------------------------------------------------------------------------------------
async def _texts(embedder: Any, req: TextsRequest, exchange: Exchange) -> list[str]:
    """The request's texts; token-id inputs decoded by the model's own tokenizer (its special tokens left out)."""
    ids = [i for i, x in enumerate(req.items) if not isinstance(x, str)]
    texts = [x if isinstance(x, str) else "" for x in req.items]
    if ids:
        try:
            decoded = await embedder.detokenize([req.items[i] for i in ids], priority=exchange.priority,
                                                traceparent=exchange.traceparent)
        except InputError as err:  # an id the model's vocabulary does not hold
            raise tei_error(422, f"inputs[{ids[err.index]}]: {err.reason}", "Validation") from None
        except Exception as err:
            raise model_error(err) from None
        for i, text in zip(ids, decoded):
            texts[i] = text
    return texts


async def _embed(embedder: Any, req: TextsRequest, exchange: Exchange, **controls: Any) -> list[Any]:
    """Per input, the model's result of output ``controls["output"]`` (``controls``: ``options()``' keywords), as
    ``/v1/embeddings`` computes it (:func:`serving.door_embed.embed_items`: an input it refuses is ``inputs[i]``)."""
    try:
        opts = embedder.options(prompt_name=req.prompt_name, truncate=req.cut, **controls)
    except ZooError as err:
        raise api_error(err) from None
    items = [(Modality.TEXT, text) for text in await _texts(embedder, req, exchange)]
    return (await embed_items(embedder, exchange.model, items, opts, exchange, field="inputs")).rows


def _json(value: Any) -> bytes:
    # long answers: rendered off the event loop
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def embed(models: Models, req: TEIEmbedRequest, exchange: Exchange) -> bytes:
    """``/embed``: one dense vector an input."""
    embedder = await models.get("embed", exchange)
    rows = await _embed(embedder, req, exchange, output="dense", normalize=req.normalize, dimensions=req.dimensions)
    return await asyncio.to_thread(_json, [row.tolist() for row in rows])


async def embed_sparse(models: Models, req: TEIEmbedSparseRequest, exchange: Exchange) -> bytes:
    """``/embed_sparse``: per input, its terms ``{index, value}`` by ascending vocabulary id."""
    embedder = await models.get("embed_sparse", exchange)
    rows = await _embed(embedder, req, exchange, output="sparse")

    def terms(row: Any) -> list[dict[str, Any]]:
        row = row.tocsr()
        return [{"index": int(i), "value": float(v)} for i, v in sorted(zip(row.indices, row.data))]

    return await asyncio.to_thread(lambda: _json([terms(row) for row in rows]))


async def embed_all(models: Models, req: TEIEmbedAllRequest, exchange: Exchange) -> bytes:
    """``/embed_all``: per input, its token vectors (the model's multivector output)."""
    embedder = await models.get("embed_all", exchange)
    rows = await _embed(embedder, req, exchange, output="multivector")
    return await asyncio.to_thread(lambda: _json([[v.tolist() for v in row] for row in rows]))


async def rerank(models: Models, req: TEIRerankRequest, exchange: Exchange) -> bytes:
    """``/rerank``: the texts ranked against the query, best first, scored as ``/v1/rerank`` scores them."""
    embedder = await models.get("rerank", exchange)
    if req.raw_scores and is_cross_encoder(embedder) and embedder.spec.options.get("activation") != "identity":
        raise tei_error(422, f"raw_scores: model `{exchange.model}` gives its scores through its activation (the "
                        "sigmoid, as TEI's default); its raw logits are not available", "Validation")
    texts = list(req.texts)
    scoring = RerankRequest.model_construct(model=exchange.model, query=req.query, documents=texts, truncate=req.cut,
                                            output=None, max_tokens_per_doc=None)
    sides = (lambda _i: ("query", "query"), lambda i: ("texts", f"texts[{i}]"),
             lambda i: ("texts", f"the query with texts[{i}]"))
    got, tokens, _ = await score(embedder, scoring, [req.query], texts, exchange, sides)
    exchange.items, exchange.tokens = len(texts), tokens
    ranks = [{"index": r["corpus_id"], **({"text": texts[r["corpus_id"]]} if req.return_text else {}),
              "score": r["score"]} for r in ranked(got)]
    return await asyncio.to_thread(_json, ranks)


def _tei_tokens(found: Tokens, text: str, prompt: str, special: bool) -> list[dict[str, Any]]:
    """One text's tokens as TEI's ``/tokenize`` gives them: ``start``/``stop`` UTF-8 byte offsets into the input
    the model reads (the prompt, then the text), ``text`` those bytes; tokens without offsets (special tokens and
    the prompt's) are ``special`` (left out when not ``special``)."""
    read = prompt + text
    at = [0, *accumulate(len(c.encode("utf-8", "surrogatepass")) for c in read)]  # byte offset of each character
    out = []
    for token_id, token, span in zip(found.ids, found.tokens, found.offsets):
        if span is None:
            if special:
                out.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
            continue
        a, b = len(prompt) + span[0], len(prompt) + span[1]
        out.append({"id": token_id, "text": read[a:b], "special": False, "start": at[a], "stop": at[b]})
    return out


async def tokenize(models: Models, req: TEITokenizeRequest, exchange: Exchange) -> bytes:
    """``/tokenize``: per text, its tokens as the model reads them (its window: a longer text is a 422)."""
    embedder = await models.get(models.text_role, exchange)
    spec = embedder.spec
    name = req.prompt_name if req.prompt_name is not None else spec.default_prompt_name
    prompt = spec.prompts.get(name, "") if name is not None else ""
    if prompt and not req.add_special_tokens:
        raise tei_error(422, "add_special_tokens false with a prompt: the prompt's tokens cannot be told from the "
                        "special tokens here; leave add_special_tokens out, or the prompt", "Validation")
    try:
        found = await embedder.tokenize(req.texts, req.prompt_name, "none", priority=exchange.priority,
                                        traceparent=exchange.traceparent)
    except InputError as err:  # a text over the window (/tokenize cuts nothing)
        counts = too_long_counts(err.reason)
        message = (f"inputs[{err.index}]: {err.reason}" if counts is None else
                   f"inputs[{err.index}] has {counts[0]} tokens; the model reads at most {counts[1]}")
        raise tei_error(422, message, "Validation") from None
    except Exception as err:
        raise model_error(err) from None
    exchange.items, exchange.tokens = len(found), sum(len(t.ids) for t in found)
    return await asyncio.to_thread(lambda: _json([_tei_tokens(t, text, prompt, req.add_special_tokens)
                                                  for t, text in zip(found, req.texts)]))


async def decode(models: Models, req: TEIDecodeRequest, exchange: Exchange) -> bytes:
    """``/decode``: each list of ids as text, the model's special tokens left out."""
    if not req.skip_special_tokens:
        raise tei_error(422, "skip_special_tokens false is not supported: ids decode without the special tokens",
                        "Validation")
    embedder = await models.get(models.text_role, exchange)
    try:
        texts = await embedder.detokenize(req.ids, priority=exchange.priority, traceparent=exchange.traceparent)
    except InputError as err:
        raise tei_error(422, f"ids[{err.index}]: {err.reason}", "Tokenizer") from None
    except Exception as err:
        raise model_error(err) from None
    exchange.items = len(texts)
    return await asyncio.to_thread(_json, texts)


async def info(models: Models, exchange: Exchange, max_concurrent: int | None) -> dict[str, Any]:
    """``GET /info``: TEI's ``Info`` of the model ``POST /`` serves, from its served spec."""
    role = await models.root_role()
    embedder = await models.get(role, exchange)
    spec = embedder.spec
    if role == "rerank":
        model_type: dict[str, Any] = {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    else:
        pooling = spec.options.get("pooling") or ("splade" if spec.outputs[0] == ROUTE_KINDS["embed_sparse"] else None)
        model_type = {"embedding": {"pooling": pooling}}
    runtime = getattr(embedder, "runtime", None)
    return {"model_id": exchange.model, "model_sha": getattr(embedder, "weights_fingerprint", None) or None,
            "model_dtype": RUNTIME_DTYPES.get(runtime, runtime), "served_model_name": exchange.model,
            "model_type": model_type, "max_concurrent_requests": max_concurrent,
            "max_input_length": embedder.max_input_tokens, "max_batch_tokens": spec.batch_tokens,
            "max_batch_requests": spec.max_batch_size,
            "max_client_batch_size": MAX_DOCUMENTS if role == "rerank" else MAX_ITEMS, "auto_truncate": False,
            "tokenization_workers": None, "version": zoo.__version__, "sha": None, "docker_label": None}


# ---- the routes -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextsRerank:
    """TEI's ``/rerank`` for the door's ``/rerank`` route (:mod:`serving.openai_rerank`), which serves Jina's and
    Cohere's body too and hands a ``{query, texts}`` body here (``app.state.tei_rerank``): ``answer`` it (its
    decoded JSON value), render an error in TEI's ``shape``, ``convert`` the door's checks' errors."""

    answer: Callable[[Any, Exchange, str | None], Awaitable[bytes]]
    shape: Callable[[ApiError], dict[str, str]]
    convert: Callable[[ApiError], ApiError]


def add_tei_routes(app: FastAPI, catalog: Catalog, guarded: Guarded, read: ReadBody, tei_model: str | None) -> None:
    """Add TEI's routes to the door ``app``, serving ``tei_model`` (by default each route's first able model):
    through ``guarded`` (key, admission, metrics) with TEI's error shape, their bodies read by ``read`` (bounded)."""
    models = Models(catalog, tei_model)
    admission = getattr(app.state, "admission", None)
    errors = {status: {"model": TEIError, "description": "an error in TEI's shape"}
              for status in (400, 401, 408, 413, 422, 424, 429, 503)}

    async def tei(request: Request, work: Callable[[Exchange], Awaitable[Any]]) -> Response:
        async def converted(exchange: Exchange) -> Any:
            try:
                exchange.priority = header_priority(request.headers.get("x-priority"))
                return await work(exchange)
            except ApiError as err:
                raise as_tei(err) from None

        # a bad X-Priority header is refused by the work, in TEI's shape (422), not by guarded
        return await guarded(request, converted, body_priority=True, shape=error_body)

    def body_route(path: str, model: type, answer: Callable[[Any, Exchange], Awaitable[Any]], response: Any,
                   summary: str) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            async def work(exchange: Exchange) -> Any:
                req = await read(request, lambda body: parse(model, body))
                return await answer(req, exchange)

            return await tei(request, work)

        return app.post(path, response_model=response, openapi_extra=request_body(model), responses=errors,
                        summary=summary, operation_id=f"tei{path.replace('/', '_')}", tags=["TEI"])(handle)

    body_route("/embed", TEIEmbedRequest, lambda req, ex: embed(models, req, ex), list[list[float]],
               "Embed (TEI): one dense vector an input")
    body_route("/embed_sparse", TEIEmbedSparseRequest, lambda req, ex: embed_sparse(models, req, ex),
               list[list[TEISparseValue]], "Sparse embeddings (TEI): each input's terms")
    body_route("/embed_all", TEIEmbedAllRequest, lambda req, ex: embed_all(models, req, ex),
               list[list[list[float]]], "Token embeddings (TEI): each input's token vectors (multivector output)")
    body_route("/tokenize", TEITokenizeRequest, lambda req, ex: tokenize(models, req, ex), list[list[TEIToken]],
               "Tokenize (TEI): each input's tokens as the model reads them")
    body_route("/decode", TEIDecodeRequest, lambda req, ex: decode(models, req, ex), list[str],
               "Decode (TEI): each list of ids as text")

    async def rerank_value(value: Any, exchange: Exchange, header: str | None) -> bytes:
        try:
            exchange.priority = header_priority(header)
            req = await asyncio.to_thread(checked, TEIRerankRequest, value)
            return await rerank(models, req, exchange)
        except ApiError as err:
            raise as_tei(err) from None

    app.state.tei_rerank = TextsRerank(answer=rerank_value, shape=error_body, convert=as_tei)

    @app.post("/", response_model=list[list[float]] | list[TEIRank], responses=errors, tags=["TEI"],
              summary="TEI's root route", operation_id="tei_root")
    async def root(request: Request) -> Response:
        """TEI's ``POST /``: ``/embed`` (``--tei-model`` a reranker: ``/rerank``; a sparse-only model:
        ``/embed_sparse``), the route ``huggingface_hub``'s ``InferenceClient(model=URL)`` posts to."""
        async def work(exchange: Exchange) -> Any:
            role = await models.root_role()
            model, answer = {"rerank": (TEIRerankRequest, rerank), "embed_sparse": (TEIEmbedSparseRequest, embed_sparse)
                             }.get(role, (TEIEmbedRequest, embed))
            req = await read(request, lambda body: parse(model, body))
            return await answer(models, req, exchange)

        return await tei(request, work)

    @app.get("/info", response_model=TEIInfo, responses=errors, tags=["TEI"], summary="Model info (TEI)",
             operation_id="tei_info")
    async def info_route(request: Request) -> Response:
        """TEI's ``Info`` of the served model, from its served spec (``GET /v1/models`` lists every model)."""
        return await tei(request, lambda exchange: info(models, exchange, getattr(admission, "limit", None)))
