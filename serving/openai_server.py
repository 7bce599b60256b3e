"""The OpenAI-compatible door: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health`` over HTTP.

It holds no model. Each request is checked here (:mod:`serving.openai_api`), its items are split by
modality and forwarded to tritonserver over gRPC with the asyncio client (one request per modality, sent
concurrently, so Triton's dynamic batching sees them like any other client's), and the rows come back in
input order with the model's own token counts as ``usage``. ``zoo serve --openai-port`` runs it beside
tritonserver; production settings (bearer key, body limit, CORS) are options with safe defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from zoo import kinds
from zoo.errors import InvalidArgumentError, ZooError
from zoo.spec import Modality

from . import contract
from .client import AsyncTritonEmbedder, triton_name
from .openai_api import (
    ApiError,
    EmbeddingRequest,
    api_error,
    bad_request,
    embeddings_response,
    model_not_found,
    parse_request,
)
from .server import port_error

DEFAULT_MAX_BODY_BYTES = 64 << 20
log = logging.getLogger(__name__)
HealthReport = Callable[[], "tuple[bool, dict[str, Any]]"]


def public_name(name: str) -> str:
    """The id a served model goes by here: its registry name (a local folder's model: the Triton name)."""
    return contract.registry_name(name)


class Catalog:
    """The served models, found by registry or Triton name; one async gRPC client per model, made on
    first use inside the door's event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._models: dict[str, AsyncTritonEmbedder] = {}
        self._client: Any = None

    async def repository(self) -> dict[str, str]:
        """Triton model name → its state (``READY``, ``UNAVAILABLE``, …)."""
        import tritonclient.grpc.aio as aioclient
        from tritonclient.utils import InferenceServerException

        if self._client is None:
            self._client = aioclient.InferenceServerClient(self.url)
        try:
            index = await self._client.get_model_repository_index(as_json=True)
        except InferenceServerException:
            raise ApiError(503, "tritonserver is not answering; retry shortly", type="server_error",
                           code="server_not_ready") from None
        return {m["name"]: m.get("state", "") for m in index.get("models", [])}

    async def get(self, model: str) -> AsyncTritonEmbedder:
        """The client of a served model; 404 when it is not served, 503 when it cannot be reached now."""
        try:
            name = triton_name(model)
        except InvalidArgumentError:
            raise model_not_found(model) from None
        found = self._models.get(name)
        if found is not None:
            return found
        if name not in await self.repository():
            raise model_not_found(model)
        try:  # reads the spec from the server (a blocking call): off the event loop
            embedder = await asyncio.to_thread(AsyncTritonEmbedder, name, self.url)
        except ZooError:
            raise ApiError(503, f"model `{model}` is not ready; retry shortly", type="server_error",
                           code="model_not_ready") from None
        return self._models.setdefault(name, embedder)

    async def close(self) -> None:
        """Close every gRPC channel."""
        for embedder in self._models.values():
            await embedder.close()
        if self._client is not None:
            await self._client.close()


async def embed(catalog: Catalog, req: EmbeddingRequest) -> dict[str, Any]:
    """Answer one checked request: items grouped by modality, one Triton request per group, concurrently."""
    embedder = await catalog.get(req.model)
    try:
        opts = embedder.options(dimensions=req.dimensions, precision=req.precision, prompt_name=req.prompt_name,
                                output=req.output, max_vectors=req.max_vectors, top_k=req.top_k)
    except ZooError as err:
        raise api_error(err) from None
    groups: dict[Modality, list[int]] = {}
    for i, (modality, _) in enumerate(req.items):
        groups.setdefault(modality, []).append(i)
    for modality, positions in groups.items():
        if modality not in embedder.spec.modalities:
            raise bad_request(f"input[{positions[0]}]: model `{req.model}` does not embed {modality.value}; it "
                              f"embeds {', '.join(m.value for m in embedder.spec.modalities)}")

    def wire() -> dict[Modality, list[bytes]]:  # checks and serializes; never reads a path
        return {m: [contract.encode_item(m, req.items[i][1], i, allow_paths=False) for i in positions]
                for m, positions in groups.items()}

    try:  # decoding images and audio to check them is CPU work: off the event loop; text is cheap
        wired = wire() if list(groups) == [Modality.TEXT] else await asyncio.to_thread(wire)
    except ZooError as err:
        raise api_error(err) from None

    async def one(modality: Modality) -> Any:
        try:
            return await embedder.infer_wire(wired[modality], modality, opts, tokens=True)
        except ZooError as err:
            raise api_error(err, groups[modality]) from None

    answers = await asyncio.gather(*(one(m) for m in groups), return_exceptions=True)
    rows: list[Any] = [None] * len(req.items)
    tokens = 0
    for positions, answer in zip(groups.values(), answers):
        if isinstance(answer, BaseException):
            raise answer
        for position, row in zip(positions, kinds.items_of(answer[0])):
            rows[position] = row
        tokens += int(answer[1].sum())
    return embeddings_response(public_name(embedder.triton_name), rows, req.encoding_format, tokens)


async def model_entry(catalog: Catalog, name: str, state: str, started: int) -> dict[str, Any]:
    """OpenAI's model object for Triton model ``name``, with its modalities, dimension and options."""
    entry: dict[str, Any] = {"id": public_name(name), "object": "model", "created": started,
                             "owned_by": "embedding-zoo", "ready": state == "READY"}
    with contextlib.suppress(ApiError):  # a model being restarted is listed without its details
        spec = (await catalog.get(name)).spec
        entry.update(modalities=[m.value for m in spec.modalities], dimension=spec.dim,
                     matryoshka_dims=list(spec.matryoshka_dims), outputs=list(spec.outputs),
                     prompts=sorted(spec.prompts),
                     default_prompt_name=spec.default_prompt_name, max_batch_size=spec.max_batch_size)
    return entry


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes (before it is read
    when Content-Length says so)."""
    too_large = ApiError(413, f"the request body is over the limit of {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(grpc_url: str, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               cors_origins: Sequence[str] = (), health: HealthReport | None = None) -> FastAPI:
    """The FastAPI application of the door, forwarding to tritonserver at ``grpc_url``.

    ``api_key``: when set, ``/v1/*`` needs ``Authorization: Bearer <key>`` (``/health`` stays open for
    probes). ``health``: a ``() -> (ready, body)`` report (the supervisor's); by default Triton's own."""
    catalog = Catalog(grpc_url)
    started = int(time.time())
    expected = f"Bearer {api_key}".encode() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await catalog.close()

    app = FastAPI(title="embedding-zoo OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def answer(err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or incorrect API key; send `Authorization: Bearer <key>`",
                           code="invalid_api_key")

    async def guarded(work: Callable[[], Any]) -> JSONResponse:
        try:
            return JSONResponse(await work())
        except ApiError as err:
            return answer(err)
        except Exception:  # the caller gets a fixed message; the details stay in this server's log
            log.exception("request failed")
            return answer(api_error(RuntimeError()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:  # unknown route, method
        return answer(ApiError(exc.status_code, str(exc.detail), param=None, code=None))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        async def work() -> dict[str, Any]:
            authorize(request)
            body = await _read_body(request, max_body_bytes)
            try:
                data = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise bad_request(f"the request body is not valid JSON: {err}", param=None) from None
            except RecursionError:  # nesting deeper than the parser's stack
                raise bad_request("the request body nests too deeply", param=None) from None
            return await embed(catalog, parse_request(data))

        return await guarded(work)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        async def work() -> dict[str, Any]:
            authorize(request)
            states = await catalog.repository()
            return {"object": "list", "data": [await model_entry(catalog, name, state, started)
                                               for name, state in sorted(states.items())]}

        return await guarded(work)

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> JSONResponse:
        async def work() -> dict[str, Any]:
            authorize(request)
            name = (await catalog.get(model)).triton_name  # 404 when not served
            return await model_entry(catalog, name, (await catalog.repository()).get(name, ""), started)

        return await guarded(work)

    @app.get("/health")
    async def health_endpoint() -> JSONResponse:
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

    return app


class OpenAIServer:
    """The door served by uvicorn in a daemon thread (its own event loop), beside tritonserver."""

    def __init__(self, grpc_url: str, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
        import uvicorn

        self.app = create_app(grpc_url, **options)
        self.host, self.port = host, port
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                     access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name="zoo-openai", daemon=True)

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients (``base_url``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> OpenAIServer:
        """Serve, and return once the port is listening; raises when it cannot bind."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise port_error(self.host, self.port, "the OpenAI-compatible API", "--openai-port")
            time.sleep(0.02)
        return self

    def close(self) -> None:
        """Stop accepting, finish what is in flight (a few seconds at most), release the port."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
