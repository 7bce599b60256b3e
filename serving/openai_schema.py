"""What the door answers and publishes: the answer bodies as pydantic models (what ``/openapi.json`` documents for
each route; the door renders the embeddings answer itself, :mod:`serving.openai_render`), OpenAI's error shape, and
the OpenAPI document, which adds the request models of :mod:`serving.openai_models` (the door reads its bodies
itself, bounded, so FastAPI does not know them)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


# ---- answers ------------------------------------------------------------------------------------------------
class SparseEmbedding(BaseModel):
    """A ``sparse`` item's embedding: vocabulary ids, ascending, and their weights."""

    indices: list[int]
    values: list[float]


class Embedding(BaseModel):
    """One item's embedding. ``float``: numbers (quantized precisions as their integer values; a multivector item a
    list of vectors; a sparse item ``{indices, values}``); ``base64``: their little-endian float32 bytes; ``bytes``:
    the little-endian bytes of the answer's ``dtype``."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[list[float]] | SparseEmbedding | str | list[str]
    truncated: bool = Field(description="whether the item's text was cut to the model's window")
    spans: list[tuple[int, int]] | None = Field(None, description="late_chunking: each chunk's characters [start, "
                                                 "end) in the text, one an embedding (base64: one string a chunk)")


class Usage(BaseModel):
    """The text tokens the model read (image, audio and video content counts 0)."""

    prompt_tokens: int
    total_tokens: int
    truncated_inputs: int = Field(description="how many items were cut to the model's window")


class EmbeddingResponse(BaseModel):
    """OpenAI's ``CreateEmbeddingResponse``: one embedding an item, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
    dtype: str | None = Field(None, description="encoding_format bytes: the numpy dtype of each embedding's bytes "
                              "(int8, uint8, float16, float8_e4m3fn, float32; binary and ubinary come as int8 and "
                              "uint8 bytes of packed bits, one bit a dimension)")


class ModelCard(BaseModel):
    """OpenAI's model object, and what the served model embeds (left out while it is being restarted)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    ready: bool
    modalities: list[str] | None = None
    dimension: int | None = None
    matryoshka_dims: list[int] | None = None
    outputs: list[str] | None = None
    prompts: list[str] | None = None
    default_prompt_name: str | None = None
    max_batch_size: int | None = None
    max_input_tokens: int | None = Field(None, description="the most tokens a text may hold (prompt and special "
                                         "tokens included)")
    runtime: str | None = Field(None, description="what the model runs on (torch, torch-fp16, onnx, onnx-int8): "
                                "what `auto` chose on the server's device, or the runtime it was served with")
    root: str | None = Field(None, description="an alias (zoo serve --alias): the served model it names")


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class RankedDocument(BaseModel):
    """A ranked document as it was sent: ``text``, and a document object's other fields."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankResult(BaseModel):
    """One ranked document: its place in ``documents`` and its score."""

    index: int = Field(description="the document's place in the request's documents")
    relevance_score: float = Field(description="the model's score: a cross-encoder's (its card's activation), or "
                                   "a bi-encoder's similarity of query and document")
    document: RankedDocument | None = Field(None, description="with return_documents: the document")


class RerankUsage(BaseModel):
    """The tokens the model read: Jina's ``total_tokens``, and OpenAI's names as on /v1/embeddings."""

    prompt_tokens: int
    total_tokens: int
    truncated_inputs: int = Field(description="how many texts (or pairs) were cut to the model's window")


class ApiVersion(BaseModel):
    """Cohere's ``meta.api_version``."""

    version: str


class BilledUnits(BaseModel):
    """Cohere's ``meta.billed_units``: a search unit a query and up to 100 documents."""

    search_units: int


class MetaTokens(BaseModel):
    """Cohere's ``meta.tokens``."""

    input_tokens: int


class RerankMeta(BaseModel):
    """Cohere's ``meta``."""

    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens


class RerankResponse(BaseModel):
    """``POST /v1/rerank``, ``/rerank`` and ``/v2/rerank``: Cohere's answer (``id``, ``results``, ``meta``) and
    Jina's (``model``, ``results``, ``usage``) in one, best first."""

    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    meta: RerankMeta


class ScoreData(BaseModel):
    """One pair's score."""

    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreUsage(BaseModel):
    """vLLM's ``usage`` of ``/score``."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    truncated_inputs: int = Field(description="how many texts (or pairs) were cut to the model's window")


class ScoreResponse(BaseModel):
    """``POST /v1/score``: vLLM's answer, one score a pair in pair order."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


class ErrorDetail(BaseModel):
    """What went wrong: ``param`` names the request field at fault, ``code`` the rule."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, which its SDKs raise as their own error classes."""

    error: ErrorDetail


# ---- the published schema -----------------------------------------------------------------------------------
#: the routes open even with an API key (probes); every other route of the schema needs it
OPEN_PATHS = frozenset({"/health"})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI's ``responses`` for a route's error statuses, each in :class:`ErrorResponse`'s shape."""
    return {status: {"model": ErrorResponse, "description": "an error in OpenAI's shape"} for status in statuses}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the route reads itself (bounded, see
    :func:`serving.openai_api.parse_json`) as ``model``; :func:`request_schemas` supplies its components."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def request_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The components of request models (validation mode), to merge into the OpenAPI document."""
    from pydantic.json_schema import models_json_schema

    _, schema = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    return schema.get("$defs", {})


def openapi_document(app: Any, requests: list[type[BaseModel]], bearer: bool) -> dict[str, Any]:
    """``app``'s OpenAPI document: FastAPI's, plus the ``requests`` models' components (the door reads its bodies
    itself, bounded, so FastAPI does not know them), less the 422 FastAPI lists for routes with parameters (the
    door answers none: its one parameter is a string; TEI's routes declare their own 422); with ``bearer``, every
    route but :data:`OPEN_PATHS` needs the API key."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body
        schemas.pop(name, None)
    defs = request_schemas(*requests)
    assert not set(defs) & set(schemas), f"request and answer models share names: {set(defs) & set(schemas)}"
    schemas.update(defs)
    if bearer:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):  # FastAPI's, not a route's own
                responses.pop("422")
            if bearer and path not in OPEN_PATHS:
                operation["security"] = [{"bearer": []}]
    return doc
