"""Long inputs at the door: the model's tokenizer as a service (``POST /v1/tokenize``, ``POST /v1/detokenize``)
and late chunking on ``POST /v1/embeddings`` (``late_chunking: true``).

``/v1/tokenize`` answers, per text, the ids the model reads (prompt and special tokens included, after the cut
``truncate`` asks for) with their token strings and character offsets, the shape of vLLM's and TEI's
``/tokenize`` widened to a list (vLLM's top-level ``count``, ``max_model_len`` and, for one string, ``tokens`` and
``token_strs`` are kept, so its clients read the answer as they read vLLM's). ``/v1/detokenize`` is the way back
(vLLM's ``prompt`` for one list of ids). Both are bounded before any work as ``/v1/embeddings`` is: at most
:data:`MAX_ITEMS` texts or id lists, a text at most ``MAX_TEXT_CHARS`` characters, a list at most
:data:`MAX_TOKEN_IDS` ids, each a non-negative 32-bit integer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError
from pydantic_core import PydanticCustomError

from zoo.errors import InputError, ZooError
from zoo.long import MAX_TOKEN_IDS, check_token_ids

from .door_metrics import Exchange, failure_reason
from .openai_api import ApiError, api_error, bad_request, parse_json, validation_error
from .openai_catalog import Catalog, public_name
from .openai_models import MAX_ITEMS, EmbeddingRequest, Text, Truncate, _Body
from .openai_render import render_chunks
from .openai_schema import error_responses, request_body

log = logging.getLogger(__name__)

Guarded = Callable[..., Awaitable[Response]]  # the door's guarded(request, work): auth, admission, errors
ReadBody = Callable[[Request, Callable[[bytes], Any]], Awaitable[Any]]  # a body read, bounded, then parsed


class TokenizeRequest(_Body):
    """``POST /v1/tokenize``: the texts to tokenize as the model will read them."""

    model: str = Field(min_length=1, description="a served model's id (GET /v1/models)")
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)] = Field(
        description=f"a string, or a list of at most {MAX_ITEMS} strings")
    prompt_name: str | None = Field(None, description="one of the model's prompts, put before each text")
    truncate: Truncate = Field("end", description="end, start or none, as on /v1/embeddings")

    @property
    def texts(self) -> list[str]:
        """The texts, in order."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


def _ids_list(value: Any) -> Any:
    # one list of ids is one item; a bare number, a bool or a list of lists of lists is refused by the types
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [value]
    return value


def _ids_fit(ids: list[list[int]]) -> list[list[int]]:
    # the core's one check of ids (zoo.long.check_token_ids: list lengths and 32-bit ids), before any work
    try:
        return check_token_ids(ids)
    except InputError as err:
        raise PydanticCustomError("invalid_value", "tokens[{i}]: {reason}", {"i": err.index, "reason": err.reason}
                                  ) from None


class DetokenizeRequest(_Body):
    """``POST /v1/detokenize``: token ids back to text."""

    model: str = Field(min_length=1, description="a served model's id (GET /v1/models)")
    tokens: Annotated[list[list[int]], Field(min_length=1, max_length=MAX_ITEMS, description="a list of ids, or "
                      f"at most {MAX_ITEMS} such lists of at most {MAX_TOKEN_IDS} ids"),
                      BeforeValidator(_ids_list, json_schema_input_type=list[int] | list[list[int]]),
                      AfterValidator(_ids_fit)]


class TokenizedText(BaseModel):
    """One text as the model reads it."""

    index: int
    tokens: list[int] = Field(description="the ids, prompt and special tokens included")
    token_strs: list[str] = Field(description="the tokenizer's string of each id")
    offsets: list[tuple[int, int] | None] = Field(description="each id's characters [start, end) in the text; "
                                                  "null for prompt and special tokens")
    truncated: bool = Field(description="whether the text was cut to the window")
    count: int = Field(description="how many ids")


class TokenizeResponse(BaseModel):
    """``POST /v1/tokenize``'s answer: per text, and vLLM's fields (``tokens``/``token_strs`` for one string)."""

    object: Literal["list"] = "list"
    model: str
    max_input_tokens: int | None
    max_model_len: int | None = Field(description="vLLM's name of max_input_tokens")
    count: int = Field(description="ids in all")
    data: list[TokenizedText]
    tokens: list[int] | None = None
    token_strs: list[str] | None = None


class DetokenizedText(BaseModel):
    """One list of ids as text."""

    index: int
    text: str


class DetokenizeResponse(BaseModel):
    """``POST /v1/detokenize``'s answer (and vLLM's ``prompt`` for one list of ids)."""

    object: Literal["list"] = "list"
    model: str
    data: list[DetokenizedText]
    prompt: str | None = None


REQUESTS = (TokenizeRequest, DetokenizeRequest)  # what /openapi.json documents beside EmbeddingRequest


def parse_as(model: type[BaseModel], body: bytes, max_list: int = MAX_ITEMS) -> Any:
    """A raw body checked as request ``model`` (bounded parse, then validation); a 400 naming the field at
    fault. CPU work: call it off the event loop."""
    try:
        return model.model_validate(parse_json(body, max_list))
    except ValidationError as err:
        raise validation_error(err, model) from None


def model_error(err: Exception) -> ApiError:
    """A model call's failure as OpenAI's error, counted as the model's failure in the door's metrics when it is
    one (as on ``/v1/embeddings``); anything unexpected is logged here and answered with a fixed message."""
    if not isinstance(err, ZooError):
        log.exception("a model call failed")
    answer = api_error(err if isinstance(err, ZooError) else RuntimeError())
    answer.failure = failure_reason(err)
    return answer


async def _client(catalog: Catalog, model: str, exchange: Exchange) -> Any:
    embedder = await catalog.get(model)
    exchange.model = public_name(embedder.triton_name)
    return embedder


async def tokenize(catalog: Catalog, req: TokenizeRequest, exchange: Exchange) -> dict[str, Any]:
    """Answer one checked ``/v1/tokenize`` request."""
    embedder = await _client(catalog, req.model, exchange)
    try:
        found = await embedder.tokenize(req.texts, req.prompt_name, req.truncate, priority=exchange.priority,
                                        traceparent=exchange.traceparent)
    except Exception as err:
        raise model_error(err) from None
    data = [{"index": i, "tokens": t.ids, "token_strs": t.tokens, "offsets": [list(o) if o is not None else None
                                                                             for o in t.offsets],
             "truncated": bool(t.truncated), "count": len(t.ids)} for i, t in enumerate(found)]
    exchange.items, exchange.tokens = len(data), sum(d["count"] for d in data)
    limit = embedder.max_input_tokens
    out = {"object": "list", "model": exchange.model, "max_input_tokens": limit, "max_model_len": limit,
           "count": exchange.tokens, "data": data}
    if isinstance(req.input, str):  # one string: vLLM's own fields too
        out.update(tokens=data[0]["tokens"], token_strs=data[0]["token_strs"])
    return out


async def detokenize(catalog: Catalog, req: DetokenizeRequest, exchange: Exchange) -> dict[str, Any]:
    """Answer one checked ``/v1/detokenize`` request."""
    embedder = await _client(catalog, req.model, exchange)
    try:
        texts = await embedder.detokenize(req.tokens, priority=exchange.priority, traceparent=exchange.traceparent)
    except InputError as err:  # an id the model's vocabulary does not hold
        raise bad_request(f"tokens[{err.index}]: {err.reason}", param="tokens") from None
    except Exception as err:
        raise model_error(err) from None
    exchange.items = len(texts)
    out = {"object": "list", "model": exchange.model, "data": [{"index": i, "text": t} for i, t in enumerate(texts)]}
    if len(texts) == 1:
        out["prompt"] = texts[0]
    return out


async def embed_chunks(embedder: Any, req: EmbeddingRequest, exchange: Exchange) -> bytes:
    """``late_chunking: true``: per text, one vector a chunk of ``chunk_tokens`` tokens, each pooled from one
    pass over the whole text, with the chunks' character spans and whether the text was cut (at
    ``zoo.long.MAX_LONG_CHARS`` characters); ``usage`` counts every token each whole text was read from."""
    texts = [text for _, text in req.items]
    try:
        found = await embedder.encode_chunks(texts, chunk_tokens=req.chunk_tokens, overlap=req.overlap,
                                             prompt_name=req.prompt_name, dimensions=req.dimensions,
                                             precision=req.precision, priority=exchange.priority,
                                             traceparent=exchange.traceparent)
    except Exception as err:
        raise model_error(err) from None
    tokens = sum(int(c.tokens) for c in found)
    exchange.items, exchange.tokens = len(found), tokens
    return await asyncio.to_thread(render_chunks, exchange.model, found, req.encoding_format, tokens, req.precision)


def add_routes(app: FastAPI, catalog: Catalog, guarded: Guarded, read: ReadBody) -> None:
    """Add ``/v1/tokenize`` and ``/v1/detokenize`` to the door ``app``: through ``guarded`` (auth, admission,
    metrics, errors in OpenAI's shape) like ``/v1/embeddings``, their bodies read by ``read`` (bounded)."""
    errors = error_responses(400, 401, 404, 408, 413, 429, 500, 503)

    @app.post("/v1/tokenize", response_model=TokenizeResponse, openapi_extra=request_body(TokenizeRequest),
              responses=errors)
    async def tokenize_route(request: Request) -> Response:
        """The ids, token strings and offsets the model reads for each text (vLLM's and TEI's ``/tokenize``)."""
        async def work(exchange: Exchange) -> dict[str, Any]:
            req = await read(request, lambda body: parse_as(TokenizeRequest, body))
            return await tokenize(catalog, req, exchange)

        return await guarded(request, work)

    @app.post("/v1/detokenize", response_model=DetokenizeResponse, openapi_extra=request_body(DetokenizeRequest),
              responses=errors)
    async def detokenize_route(request: Request) -> Response:
        """Token ids back to text (vLLM's ``/detokenize``)."""
        async def work(exchange: Exchange) -> dict[str, Any]:
            req = await read(request, lambda body: parse_as(DetokenizeRequest, body, MAX_TOKEN_IDS))
            return await detokenize(catalog, req, exchange)

        return await guarded(request, work)
