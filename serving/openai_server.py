"""The OpenAI-compatible door: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health`` over HTTP, and the
rerank and score routes of :mod:`serving.openai_rerank` (Cohere's, Jina's and vLLM's shapes).

It holds no model. Each request is checked here (:mod:`serving.openai_api`, against the pydantic models of
:mod:`serving.openai_models`, which ``GET /openapi.json`` publishes), its items are split by
modality and forwarded to tritonserver over gRPC with the asyncio client (one request per modality, sent
concurrently, so Triton's dynamic batching sees them like any other client's), and the rows come back in
input order with the model's own token counts as ``usage``. ``zoo serve --openai-port`` runs it beside
tritonserver; production settings (bearer key, body limit, CORS) are options with safe defaults.

It takes JSON and media from strangers, so every cost is bounded before it is paid (:mod:`serving.openai_limits`):

- the body is read with a running count (413 past ``max_body_bytes``, never read further; 408 when it does
  not arrive within ``body_timeout``), and all bodies held at once share a byte budget (429 beyond);
- it is parsed off the event loop by a parser that stops at the shape a valid request can have
  (:func:`serving.openai_api.parse_json`; ``json.loads`` would hold the GIL, and so stall every other
  request, for the whole body), then validated there by the request model: the item count and each item's size
  are checked before any work;
- at most ``max_concurrent`` requests are worked on at once and ``max_queued`` wait for a turn (the best
  ``X-Priority`` first); beyond that, after waiting ``queue_wait`` seconds, or when Triton refuses the request for
  overload, 429 in OpenAI's error shape with ``Retry-After``;
- long answers are rendered off the event loop, item by item;
- the HTTP stack (:class:`HttpServer`, shared with zoo's ``/health``) closes connections whose request
  headers are not complete within a header timeout, idle keep-alive connections, connections that do not
  read their answer, and connections past a cap; h11 refuses a header block still incomplete past 16 KiB.

Every exchange is counted at ``GET /metrics`` (:mod:`serving.door_metrics`) and, with ``otlp_endpoint``, traced
(:mod:`serving.tracing`); the request's priority and trace context go on to Triton with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from zoo.errors import ZooError

from .client import triton_name
from .cohere_embed import REQUESTS as COHERE_REQUESTS
from .cohere_embed import add_cohere_routes
from .door_embed import embed_items, served_embedder
from .door_metrics import DoorMetrics, Exchange, Observed, exchange_of
from .http import HttpLimits, HttpServer
from .openai_api import (
    ApiError,
    api_error,
    header_priority,
    model_not_found,  # noqa: F401 (the door's 404, which tests' stub catalogs raise)
    read_request,
    render_embeddings,
    request_priority,
)
from .openai_catalog import Catalog, public_name
from .openai_limits import (
    BODY_TIMEOUT_S,
    BUFFERED_BODIES,
    DEFAULT_MAX_BODY_BYTES,
    MAX_CONCURRENT_REQUESTS,
    MAX_QUEUED_REQUESTS,
    QUEUE_WAIT_S,
    Admission,
    ByteBudget,
    read_body,
)
from .openai_long import REQUESTS, add_routes, embed_chunks
from .openai_models import EmbeddingRequest
from .openai_rerank import REQUESTS as RERANK_REQUESTS
from .openai_rerank import add_rerank_routes
from .openai_schema import EmbeddingResponse, ModelCard, ModelList, error_responses, openapi_document, request_body
from .tei_routes import REQUESTS as TEI_REQUESTS
from .tei_routes import add_tei_routes

log = logging.getLogger(__name__)
HealthReport = Callable[[], "tuple[bool, dict[str, Any]]"]
ErrorShape = Callable[[ApiError], Any]  # an error as another API's body (Cohere's, TEI's): guarded(shape=...)


async def embed(catalog: Catalog, req: EmbeddingRequest, exchange: Exchange | None = None) -> bytes:
    """Answer one checked request: items grouped by modality, one Triton request per group, concurrently
    (:func:`serving.door_embed.embed_items`); the answer's JSON is rendered off the event loop. ``exchange``: the
    request's priority and trace context, sent to Triton with each group; the model, items and tokens are written
    back to it."""
    exchange = exchange if exchange is not None else Exchange(method="POST")
    embedder = await served_embedder(catalog, req.model, exchange)  # 404, 503; a reranker refused
    if req.late_chunking:
        return await embed_chunks(embedder, req, exchange)
    try:  # chunk_tokens and overlap are long="chunk"'s (the model refuses them without it)
        opts = embedder.options(dimensions=req.dimensions, precision=req.precision, prompt_name=req.prompt_name,
                                output=req.output, max_vectors=req.max_vectors, top_k=req.top_k,
                                truncate=req.truncate, long=req.long, chunk_tokens=req.chunk_tokens,
                                overlap=req.overlap)
    except ZooError as err:
        raise api_error(err) from None
    found = await embed_items(embedder, req.model, req.items, opts, exchange)
    return await asyncio.to_thread(render_embeddings, exchange.model, found.rows, req.encoding_format, found.tokens,
                                   opts.output, found.cut, opts.precision)


async def model_entry(catalog: Catalog, name: str, state: str, started: int) -> ModelCard:
    """OpenAI's model object for Triton model ``name``, with its modalities, dimension and options."""
    details: dict[str, Any] = {}
    with contextlib.suppress(ApiError):  # a model being restarted is listed without its details
        embedder = await catalog.get(name)
        spec = embedder.spec
        details = dict(modalities=[m.value for m in spec.modalities], dimension=spec.dim,
                       matryoshka_dims=list(spec.matryoshka_dims), outputs=list(spec.outputs),
                       prompts=sorted(spec.prompts), default_prompt_name=spec.default_prompt_name,
                       max_batch_size=spec.max_batch_size, max_input_tokens=embedder.max_input_tokens,
                       runtime=embedder.runtime)
    return ModelCard(id=public_name(name), object="model", created=started, owned_by="embedding-zoo",
                     ready=state == "READY", **details)


def create_app(grpc_url: str, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               cors_origins: Sequence[str] = (), health: HealthReport | None = None,
               max_concurrent: int = MAX_CONCURRENT_REQUESTS, max_queued: int = MAX_QUEUED_REQUESTS,
               queue_wait: float = QUEUE_WAIT_S, body_timeout: float = BODY_TIMEOUT_S,
               max_buffered_bytes: int | None = None, admin_headers: dict[str, str] | None = None,
               otlp_endpoint: str | None = None, aliases: dict[str, str] | None = None,
               tei_model: str | None = None) -> FastAPI:
    """The FastAPI application of the door, forwarding to tritonserver at ``grpc_url``.

    ``api_key``: when set, every route but ``/health`` and ``/metrics`` (``/v1/*``, and the rerank and score
    routes of :mod:`serving.openai_rerank`) needs ``Authorization: Bearer <key>``. ``health``: a
    ``() -> (ready, body)`` report (the supervisor's); by default Triton's own. ``max_concurrent``, ``max_queued``,
    ``queue_wait``: the admission of those requests (429 beyond);
    ``body_timeout``: seconds a body may take to arrive (408); ``max_buffered_bytes``: bytes of bodies held at
    once (default ``BUFFERED_BODIES`` x ``max_body_bytes``; 429 beyond). ``admin_headers``: what opens
    Triton's model-repository API, which lists the models (:attr:`serving.server.TritonServer.admin_headers`).
    ``otlp_endpoint``: an OTLP/HTTP traces URL to send a span per request to (:mod:`serving.tracing`; needs the
    ``trace`` extra). ``GET /metrics``: Prometheus' text format (:mod:`serving.door_metrics`). ``aliases``:
    ``{NAME: MODEL}``, other names a served model answers to (``zoo serve --alias``), listed by ``/v1/models``.
    ``tei_model``: the model TEI's routes serve (:mod:`serving.tei_routes`; TEI serves one model, so its requests
    name none); by default, per route, the first served model that answers it (dense text for ``/embed``, sparse
    for ``/embed_sparse``, a reranker for ``/rerank``).

    ``GET /openapi.json`` publishes the routes and their request and answer models, open even with ``api_key``:
    it holds no secret and names no served model (the list stays behind the key), as OpenAI publishes its own
    spec; it says which routes need the key. ``/docs`` and ``/redoc`` stay off: they load JavaScript from a CDN."""
    catalog = Catalog(grpc_url, admin_headers, aliases)
    started = int(time.time())
    expected = f"Bearer {api_key}".encode() if api_key else None
    admission = Admission(max_concurrent, max_queued, queue_wait)
    budget = ByteBudget(max_buffered_bytes if max_buffered_bytes is not None else BUFFERED_BODIES * max_body_bytes)
    metrics = DoorMetrics(admission)
    tracing = None
    if otlp_endpoint:
        from .tracing import Tracing

        tracing = Tracing(otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await catalog.close()
        if tracing is not None:  # exports the spans still batched (bounded by the exporter's timeout)
            await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(title="embedding-zoo OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", description="OpenAI's embeddings API, and media and interleaved "
                  "items and encode()'s output controls as extensions of the same body.")

    def openapi() -> dict[str, Any]:  # built on the first GET /openapi.json, then kept
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, [EmbeddingRequest, *REQUESTS, *RERANK_REQUESTS,
                                                        *COHERE_REQUESTS, *TEI_REQUESTS],
                                                  bearer=expected is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.admission, app.state.budget = admission, budget  # for tests and metrics
    app.state.metrics, app.state.tracing = metrics, tracing
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Priority", "traceparent",
                                          "tracestate"])
    app.add_middleware(Observed, metrics=metrics, tracing=tracing)  # added last: outermost, it sees every answer

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or incorrect API key; send `Authorization: Bearer <key>`",
                           code="invalid_api_key")

    def answer_as(err: ApiError, shape: ErrorShape | None) -> JSONResponse:
        body = err.body() if shape is None else shape(err)
        return JSONResponse(body, status_code=err.status, headers=err.headers or None)

    async def guarded(request: Request, work: Callable[[Exchange], Any], *, body_priority: bool = False,
                      shape: ErrorShape | None = None) -> Response:
        """Authorize, wait for a turn (429 when there is none), do ``work``; every failure in OpenAI's shape, or
        in the one ``shape`` renders (another API's error body, for that API's routes). The turn is given by the
        ``X-Priority`` header (the body is read only once admitted); a bad header is a 400 unless
        ``body_priority`` (a ``priority`` field in the body may still override it: ``work`` decides)."""
        exchange = exchange_of(request.scope)
        try:
            authorize(request)
            try:
                exchange.priority = header_priority(request.headers.get("x-priority"))
            except ApiError:
                if not body_priority:
                    raise
            async with admission.slot(exchange.priority):
                result = await work(exchange)
            if isinstance(result, bytes):
                return Response(result, media_type="application/json")
            return JSONResponse(result)
        except ApiError as err:
            if err.failure is not None:
                exchange.failure = err.failure
            return answer_as(err, shape)
        except Exception:  # the caller gets a fixed message; the details stay in this server's log
            log.exception("request failed")
            return answer_as(api_error(RuntimeError()), shape)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:  # unknown route, method
        return answer_as(ApiError(exc.status_code, str(exc.detail), param=None, code=None), None)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=request_body(EmbeddingRequest),
              responses=error_responses(400, 401, 404, 408, 413, 429, 500, 503))
    async def embeddings(request: Request) -> Response:
        """One embedding an item of ``input``, in input order (OpenAI's ``POST /v1/embeddings``)."""
        async def work(exchange: Exchange) -> bytes:
            with budget.lease() as take:  # held to the end: the parsed items take about what the body did
                body = await read_body(request, max_body_bytes, body_timeout, take)
                req = await asyncio.to_thread(read_request, body)  # off the event loop, bounded
                del body
                exchange.priority = request_priority(req.priority, request.headers.get("x-priority"))
                return await embed(catalog, req, exchange)

        return await guarded(request, work, body_priority=True)

    async def read(request: Request, parse: Callable[[bytes], Any]) -> Any:
        """A body read within the door's bounds, then ``parse``d off the event loop (its bytes freed then)."""
        with budget.lease() as take:
            body = await read_body(request, max_body_bytes, body_timeout, take)
            return await asyncio.to_thread(parse, body)

    add_routes(app, catalog, guarded, read)
    add_rerank_routes(app, catalog, guarded, read)  # /v1/rerank, /rerank, /v2/rerank, /v1/score, /score
    add_cohere_routes(app, catalog, guarded, read)  # Cohere's /v2/embed (and /v1/embed)
    add_tei_routes(app, catalog, guarded, read, tei_model)  # TEI's /embed, /embed_sparse, /rerank, /info, ...

    @app.get("/v1/models", response_model=ModelList, responses=error_responses(401, 429, 500, 503))
    async def models(request: Request) -> Response:
        """The served models, each with what it embeds (OpenAI's ``GET /v1/models``)."""
        async def work(_exchange: Exchange) -> dict[str, Any]:
            states = await catalog.repository()
            cards = [await model_entry(catalog, name, state, started) for name, state in sorted(states.items())]
            by_name = {card.id: card for card in cards}
            for alias, target in sorted(catalog.aliases.items()):  # an alias: its model's card under its name
                with contextlib.suppress(ApiError):
                    real = by_name.get(public_name(triton_name(target)))
                    if real is not None:
                        cards.append(real.model_copy(update={"id": alias, "root": real.id}))
            return ModelList(object="list", data=cards).model_dump(exclude_unset=True)

        return await guarded(request, work)

    @app.get("/v1/models/{model:path}", response_model=ModelCard, responses=error_responses(401, 404, 429, 500, 503))
    async def model(request: Request, model: str) -> Response:
        """One served model, by registry or Triton name (404 when it is not served)."""
        async def work(_exchange: Exchange) -> dict[str, Any]:
            name = (await catalog.get(model)).triton_name  # 404 when not served
            card = await model_entry(catalog, name, (await catalog.repository()).get(name, ""), started)
            if model in catalog.aliases:
                card = card.model_copy(update={"id": model, "root": card.id})
            return card.model_dump(exclude_unset=True)

        return await guarded(request, work)

    @app.get("/health", responses={503: {"description": "not ready"}})
    @app.head("/health", include_in_schema=False)  # one operation in the schema (FastAPI would name both alike)
    async def health_endpoint() -> JSONResponse:
        """Ready (200) when every served model is (probes: open even with an API key); 503 otherwise."""
        if health is not None:
            ready, body = await asyncio.to_thread(health)
        else:
            try:
                states = await catalog.repository()
            except ApiError:
                states = None
            ready = bool(states) and all(s == "READY" for s in states.values())
            body = {"status": "ready" if ready else "not ready", "models": states or {}}
        return JSONResponse(body, status_code=200 if ready else 503)

    # Open like /health, even with an API key, as vLLM's and TEI's /metrics are: a scraper is infrastructure that
    # should not hold the key that buys embeddings, and what is here is counts (of requests, items, tokens, by
    # route and served model), no content or secret. A door whose model names must not be seen keeps this port
    # behind its proxy, which is where it is published (docs/openai.md).
    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        """The door's metrics in Prometheus' text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


class OpenAIServer:
    """The door served by :class:`HttpServer` (uvicorn in a daemon thread, its own event loop), beside
    tritonserver. ``limits``: the HTTP stack's (:class:`HttpLimits`); other options go to :func:`create_app`.
    The port is bound here: a taken one raises :class:`zoo.ServerError` naming ``--openai-port``."""

    def __init__(self, grpc_url: str, host: str = "127.0.0.1", port: int = 8080, *, limits: HttpLimits | None = None,
                 **options: Any) -> None:
        self.app = create_app(grpc_url, **options)
        self._http = HttpServer(self.app, host, port, what="the OpenAI-compatible API", flag="--openai-port",
                                limits=limits, name="zoo-openai")
        self.host, self.port = host, self._http.port

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients (``base_url``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> OpenAIServer:
        """Serve, and return once the port is accepting."""
        self._http.start(timeout)
        return self

    def close(self) -> None:
        """Stop accepting, finish what is in flight (a few seconds at most), release the port."""
        self._http.close()
