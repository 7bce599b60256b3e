"""Cohere's embed API at the door: ``POST /v2/embed`` (``cohere.ClientV2``, Haystack's Cohere embedders) and
``POST /v1/embed`` (``cohere.Client``, which LangChain's ``CohereEmbeddings`` uses).

A request holds exactly one of ``texts``, ``images`` (``data:`` URIs: a URL is refused, as on ``/v1/embeddings``)
and, on v2, ``inputs``: Cohere's mixed content, ``[{"content": [{"type": "text", "text": ...}, {"type":
"image_url", "image_url": {"url": "data:..."}}]}]``, embedded as interleaved items by a model that embeds them, and
an input of one part as that text or image by a model that does not. The other fields:

- ``input_type`` picks the model's prompt (:data:`INPUT_PROMPTS`): ``search_query`` its ``query`` prompt,
  ``search_document`` its ``document`` prompt, ``classification`` and ``clustering`` the prompt of that name;
  where the model has no such prompt (and for ``image``), its default, as ``/v1/embeddings`` without
  ``prompt_name``;
- ``embedding_types``: any of ``float``, ``int8``, ``uint8``, ``binary``, ``ubinary`` and ``base64`` (the float
  vector's little-endian float32 bytes) in one call, default ``["float"]``. The model embeds once, at float32;
  each type is then quantized here by :func:`zoo.postprocess.quantize`, which is what ``encode(precision=...)``
  does to the same float vector, so every type equals in-process ``encode()`` at that precision;
- ``output_dimension`` (v2): the vector's first dimensions (Matryoshka), as ``dimensions`` on ``/v1/embeddings``;
- ``truncate``: ``END`` (default), ``START``, ``NONE`` (a text over the model's window is a 400);
- ``max_tokens`` (v2): a text is cut to the model's window only, so a value below it is refused;
- ``priority`` (v2): ``high``, ``normal`` or ``low`` as on every route, or Cohere's number, lower first: 0 (its
  default) keeps the ``X-Priority`` header's turn, a higher number is ``low``.

The answer is Cohere's: ``{"id", "embeddings": {"float": [[...]], "int8": [[...]], ...}, "texts", "meta":
{"api_version", "billed_units": {"input_tokens", "images"}, "tokens"}, "response_type": "embeddings_by_type"}``
(v1 without ``embedding_types``: ``embeddings_floats``, a list of float vectors); errors are Cohere's ``{"id",
"message"}`` with the door's status codes. The body is read and checked before any work as ``/v1/embeddings``'
is (at most :data:`serving.openai_models.MAX_ITEMS` inputs: Cohere takes 96 a call; ``cohere.Client``, v1,
sends batches of 96, ``ClientV2`` what it is given), and the model calls are ``/v1/embeddings``' own
(:mod:`serving.door_embed`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any, Literal, Union

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, PlainValidator, Tag, model_validator
from pydantic_core import PydanticCustomError

from zoo import kinds
from zoo import postprocess as pp
from zoo.errors import ZooError
from zoo.spec import Modality

from . import contract
from .door_embed import embed_items, served_embedder
from .door_metrics import Exchange
from .openai_api import ApiError, api_error, bad_request, header_priority
from .openai_catalog import Catalog
from .openai_long import Guarded, ReadBody, parse_as
from .openai_models import MAX_COUNT, MAX_ITEMS, ImageURI, InterleavedItem, PriorityName, Text, Truncate, _Body

#: Cohere's input_type → the prompt it asks for, used where the model has a prompt of that name
INPUT_PROMPTS: dict[str, str | None] = {"search_query": kinds.QUERY, "search_document": kinds.DOCUMENT,
                                        "classification": "classification", "clustering": "clustering",
                                        "image": None}
#: Cohere's embedding type → the precision it is quantized at (base64: the float32 vector's bytes)
EMBEDDING_TYPES: dict[str, str] = {"float": "float32", "int8": "int8", "uint8": "uint8", "binary": "binary",
                                   "ubinary": "ubinary", "base64": "float32"}
SOURCES = ("texts", "images", "inputs")  # what a request embeds: exactly one of them
CUTS = '"END" or "START"'  # the truncate values that take a text over the window, as Cohere spells them
DENSE = "dense"  # Cohere's answer holds one vector an input
LOW = "low"  # the turn of a request whose Cohere priority is above 0

InputType = Literal[tuple(INPUT_PROMPTS)]  # type: ignore[valid-type]
EmbeddingType = Literal[tuple(EMBEDDING_TYPES)]  # type: ignore[valid-type]


def _priority(value: Any) -> str | int:
    # the door's names (as every route takes them) or Cohere's number, with one complaint for both
    if isinstance(value, str) and value in contract.PRIORITIES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    raise PydanticCustomError("invalid_value", "priority must be one of {names}, or Cohere's number from 0 (lower "
                              "first), got {value}", {"names": ", ".join(contract.PRIORITIES),
                                                      "value": repr(value)[:40]})


Priority = Annotated[str | int, PlainValidator(_priority, json_schema_input_type=PriorityName | int)]


def _input_kind(value: Any) -> str | None:
    return "content" if isinstance(value, dict) else None


# an input is an interleaved item, tagged as /v1/embeddings' items are: a bad one gets one complaint naming its
# place (inputs[3].content[1])
CohereInput = Annotated[Union[Annotated[InterleavedItem, Tag("content")]],  # noqa: UP007 (one choice: no `|`)
                        Discriminator(_input_kind, custom_error_type="invalid_item",
                                      custom_error_message='an input is {"content": [content parts]}')]


def _listed(item: Any, what: str) -> Any:
    return Annotated[list[item], Field(min_length=1, max_length=MAX_ITEMS, fail_fast=True,
                                       description=f"at most {MAX_ITEMS} {what}")]


class CohereEmbedV1Request(_Body):
    """``POST /v1/embed``: Cohere's v1 embed request (``cohere.Client``, LangChain's ``CohereEmbeddings``)."""

    model: str = Field(min_length=1, description="a served model's id (GET /v1/models)")
    texts: _listed(Text, "texts") | None = None  # type: ignore[valid-type]
    images: _listed(ImageURI, "images as data: URIs") | None = None  # type: ignore[valid-type]
    input_type: InputType | None = Field(None, description="search_query, search_document, classification, "
                                         "clustering: the model's prompt of that use where it has one; image")
    embedding_types: Annotated[list[EmbeddingType], Field(min_length=1)] | None = Field(  # type: ignore[valid-type]
        None, description="any of float, int8, uint8, binary, ubinary, base64 (default float)")
    truncate: Truncate = Field("end", description="END (default), START, or NONE (a text over the window is a 400)")

    @model_validator(mode="after")
    def _one_source(self) -> CohereEmbedV1Request:
        given = [name for name in SOURCES if getattr(self, name, None) is not None]
        if len(given) != 1:
            allowed = " or ".join(f"`{n}`" for n in SOURCES if n in type(self).model_fields)
            said = f"got {' and '.join(f'`{n}`' for n in given)}" if given else "got none"
            raise PydanticCustomError("invalid_value", f"send exactly one of {allowed}; {said}",
                                      {"param": given[-1] if given else "texts"})
        return self

    @property
    def source(self) -> str:
        """The field holding what to embed: ``texts``, ``images`` or ``inputs``."""
        return next(name for name in SOURCES if getattr(self, name, None) is not None)


class CohereEmbedRequest(CohereEmbedV1Request):
    """``POST /v2/embed``: Cohere's v2 embed request (``cohere.ClientV2``, Haystack's Cohere embedders)."""

    inputs: _listed(CohereInput, "inputs of text and image parts") | None = None  # type: ignore[valid-type]
    output_dimension: int | None = Field(None, ge=1, le=MAX_COUNT, description="the vector's first dimensions "
                                         "(Matryoshka models)")
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT, description="at least the model's window (a text is "
                                   "cut to the window only)")
    priority: Priority | None = Field(
        None, description="the request's turn: high, normal or low as on every route, or Cohere's number (lower "
        "first): 0, its default, the X-Priority header's turn, above 0 low")


# ---- answers (what /openapi.json documents; the answer is rendered as JSON here) ---------------------------
class CohereEmbeddings(BaseModel):
    """One list per requested type, one embedding an input, in order."""

    model_config = ConfigDict(populate_by_name=True)
    float_: list[list[float]] | None = Field(None, alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = Field(None, description="packed bits, -128..127")
    ubinary: list[list[int]] | None = Field(None, description="packed bits, 0..255")
    base64: list[str] | None = Field(None, description="the float vector's little-endian float32 bytes")


class CohereBilledUnits(BaseModel):
    """What the request cost: the text tokens the model read and the images it embedded."""

    input_tokens: int
    images: int


class CohereMeta(BaseModel):
    """Cohere's ``meta``."""

    api_version: dict[str, str]
    billed_units: CohereBilledUnits
    tokens: dict[str, int]


class CohereEmbedResponse(BaseModel):
    """Cohere's embed answer (v2; v1 when embedding_types are given)."""

    id: str
    embeddings: CohereEmbeddings
    texts: list[str]
    meta: CohereMeta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


class CohereEmbedFloatsResponse(BaseModel):
    """Cohere's v1 embed answer without embedding_types: float vectors."""

    id: str
    embeddings: list[list[float]]
    texts: list[str]
    meta: CohereMeta
    response_type: Literal["embeddings_floats"] = "embeddings_floats"


class CohereError(BaseModel):
    """An error in Cohere's shape."""

    id: str
    message: str


REQUESTS: tuple[type, ...] = (CohereEmbedV1Request, CohereEmbedRequest)  # what /openapi.json documents


# ---- one request --------------------------------------------------------------------------------------------
def cohere_error(err: ApiError) -> dict[str, str]:
    """``err`` as Cohere's error body (its status and headers stay the door's)."""
    return {"id": str(uuid.uuid4()), "message": err.message}


def prompt_for(input_type: str | None, prompts: Any) -> str | None:
    """The prompt name ``input_type`` asks for among the model's ``prompts``: that use's prompt where the model has
    it (:func:`zoo.kinds.side_prompt` for the query and document sides); None (the model's default) otherwise."""
    if input_type in ("search_query", "search_document"):
        return kinds.side_prompt(prompts, input_type == "search_query")
    name = INPUT_PROMPTS.get(input_type) if input_type is not None else None
    return name if name is not None and name in prompts else None


def turn(priority: str | int | None, header: str | None) -> str:
    """The request's priority name: a name as it is; Cohere's number above 0 ``low``; 0 or none, the header's."""
    if isinstance(priority, str):
        return priority
    return LOW if priority else header_priority(header)


def _refused(err: ZooError) -> ApiError:
    # the model's refusal of an option, in Cohere's names (output_dimension, embedding type)
    answer = api_error(err)
    message = answer.message.replace("dimensions=", "output_dimension=").replace("precision '", "embedding type '")
    return bad_request(message, param={"dimensions": "output_dimension", "precision": "embedding_types",
                                       "prompt_name": "input_type"}.get(answer.param or "", answer.param))


def items_of(req: CohereEmbedV1Request, spec: Any) -> list[tuple[Modality, Any]]:
    """The request's inputs as ``(modality, item)``: an input of several parts is interleaved, which the model must
    embed; one of a single part is that text or image when the model does not embed interleaved items."""
    if req.texts is not None:
        return [(Modality.TEXT, t) for t in req.texts]
    if req.images is not None:
        return [(Modality.IMAGE, uri) for uri in req.images]
    out = []
    for i, item in enumerate(req.inputs):  # type: ignore[attr-defined]
        modality, parts = item.wire()
        if Modality.INTERLEAVED not in spec.modalities:
            if len(parts) != 1:
                raise bad_request(f"inputs[{i}]: model `{req.model}` does not embed interleaved content; send one "
                                  "part an input (a text or an image), or use a model that embeds interleaved items",
                                  param="inputs")
            modality, parts = next((Modality(k), v) for k, v in parts[0].items())
        out.append((modality, parts))
    return out


def _images(items: list[tuple[Modality, Any]]) -> int:
    return sum(1 if m == Modality.IMAGE else sum("image" in p for p in item) if m == Modality.INTERLEAVED else 0
               for m, item in items)


def render(req: CohereEmbedV1Request, rows: list[np.ndarray], types: list[str], tokens: int, images: int,
           version: str) -> bytes:
    """The answer's JSON bytes: each of ``types`` from the float ``rows`` (quantized by
    :func:`zoo.postprocess.quantize`, written by the dense kind's :meth:`to_json`). CPU work: call it off the
    event loop."""
    dense = kinds.get(DENSE)
    floats = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    by_type: dict[str, list[Any]] = {}
    for kind in types:
        if kind in ("float", "base64"):
            by_type[kind] = [dense.to_json(r, kind) for r in floats]
        else:
            by_type[kind] = [dense.to_json(r) for r in pp.quantize(floats, EMBEDDING_TYPES[kind])]
    meta = {"api_version": {"version": version}, "billed_units": {"input_tokens": tokens, "images": images},
            "tokens": {"input_tokens": tokens}}
    floats_only = version == "1" and req.embedding_types is None
    answer = {"id": str(uuid.uuid4()), "embeddings": by_type["float"] if floats_only else by_type,
              "texts": list(req.texts or ()), "meta": meta,
              "response_type": "embeddings_floats" if floats_only else "embeddings_by_type"}
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def embed(catalog: Catalog, req: CohereEmbedV1Request, exchange: Exchange, version: str) -> bytes:
    """Answer one checked embed request (Cohere API ``version`` ``"1"`` or ``"2"``)."""
    embedder = await served_embedder(catalog, req.model, exchange)
    spec = embedder.spec
    if DENSE not in kinds.available(spec.outputs):
        raise bad_request(f"model `{req.model}` gives {', '.join(spec.outputs)} output, not one vector an input as "
                          "Cohere's embed answers; use /v1/embeddings", param="model")
    types = list(dict.fromkeys(req.embedding_types or ["float"]))
    dimensions = getattr(req, "output_dimension", None)
    try:  # the model's own checks: each type's precision with the dimension (binary packs 8 a byte), the prompt
        opts = embedder.options(dimensions=dimensions, prompt_name=prompt_for(req.input_type, spec.prompts),
                                output=DENSE, truncate=req.truncate)
        for kind in types:
            embedder.options(dimensions=dimensions, precision=EMBEDDING_TYPES[kind], output=DENSE)
    except ZooError as err:
        raise _refused(err) from None
    max_tokens = getattr(req, "max_tokens", None)
    if max_tokens is not None and max_tokens < embedder.max_input_tokens:
        raise bad_request(f"max_tokens={max_tokens} is below the model's window of {embedder.max_input_tokens} "
                          "tokens: a text is cut to the window only (truncate); leave max_tokens out or set it to "
                          f"at least {embedder.max_input_tokens}", param="max_tokens")
    items = items_of(req, spec)
    found = await embed_items(embedder, req.model, items, opts, exchange, field=req.source, cuts=CUTS)
    return await asyncio.to_thread(render, req, found.rows, types, found.tokens, _images(items), version)


def add_cohere_routes(app: FastAPI, catalog: Catalog, guarded: Guarded, read: ReadBody) -> None:
    """Add Cohere's embed routes to the door ``app``: ``/v2/embed`` and ``/v1/embed``, through ``guarded`` (key,
    admission, metrics; errors in Cohere's shape), their bodies read by ``read`` (bounded)."""
    errors = {status: {"model": CohereError, "description": "an error in Cohere's shape"}
              for status in (400, 401, 404, 408, 413, 429, 500, 503)}

    def route(model: type[CohereEmbedV1Request], version: str) -> Any:
        async def handle(request: Request) -> Response:
            async def work(exchange: Exchange) -> bytes:
                req = await read(request, lambda body: parse_as(model, body))
                exchange.priority = turn(getattr(req, "priority", None), request.headers.get("x-priority"))
                return await embed(catalog, req, exchange, version)

            return await guarded(request, work, body_priority=True, shape=cohere_error)

        return handle

    from .openai_schema import request_body

    app.post("/v2/embed", response_model=CohereEmbedResponse, openapi_extra=request_body(CohereEmbedRequest),
             responses=errors, summary="Embed (Cohere v2)", description="Texts, images or mixed inputs embedded as "
             "each requested type (Cohere's v2 embed).", operation_id="cohere_v2_embed")(
        route(CohereEmbedRequest, "2"))
    app.post("/v1/embed", response_model=CohereEmbedResponse | CohereEmbedFloatsResponse,
             openapi_extra=request_body(CohereEmbedV1Request), responses=errors, summary="Embed (Cohere v1)",
             description="Texts or images embedded as float vectors, or as each requested type (Cohere's v1 embed).",
             operation_id="cohere_v1_embed")(route(CohereEmbedV1Request, "1"))
