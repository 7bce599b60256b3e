"""Text Embeddings Inference's bodies for :mod:`serving.tei_routes`: the requests and answers as pydantic models
(what ``/openapi.json`` publishes) and the errors, with TEI's field names, defaults and statuses. The requests are
bounded as ``/v1/embeddings``' bodies are: at most ``MAX_ITEMS`` inputs (``MAX_DOCUMENTS`` texts to rerank), a
text at most ``MAX_TEXT_CHARS`` characters, a list of token ids at most ``MAX_TOKEN_IDS`` ids.

An input is a string or a list of the model's token ids (TEI's ``InputType``); ``inputs`` one input or a list of
them. ``truncate`` (default false: a text over the model's window is refused) and ``truncation_direction``
(``Right`` cuts the end, ``Left`` the start; either case) are read as the door's ``truncate`` (:attr:`cut`).
"""

from __future__ import annotations

import re
from array import array
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import PydanticCustomError

from zoo.errors import InputError
from zoo.long import MAX_TOKEN_IDS, check_token_ids

from .openai_api import ApiError, parse_json, validation_error
from .openai_models import MAX_COUNT, MAX_ITEMS, Text, _Body
from .openai_rerank import MAX_DOCUMENTS, Query

#: the lists a body may hold, and the error TEI answers for an empty one (400, ``Empty``)
EMPTY_LISTS = ("inputs", "texts", "ids")
INPUT_SHAPES = "an input is a string or a list of token ids"


def _ids_fit(ids: list[int]) -> list[int]:
    # the core's one check of ids (zoo.long.check_token_ids): the list's length and 32-bit ids
    try:
        return check_token_ids([ids])[0]
    except InputError as err:
        raise PydanticCustomError("invalid_value", "{reason}", {"reason": err.reason}) from None


def _is_ids(value: Any) -> bool:
    return isinstance(value, array) and bool(value) or isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _listed(value: Any) -> Any:
    # a body's id arrays come compact (parse_json's int_arrays), at most MAX_TOKEN_IDS ids each
    return value.tolist() if isinstance(value, array) else value


def _input_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "ids" if _is_ids(value) else None


TokenIds = Annotated[list[int], BeforeValidator(_listed), AfterValidator(_ids_fit),
                     Field(description=f"the model's token ids, at most {MAX_TOKEN_IDS}")]
Input = Annotated[Annotated[Text, Tag("text")] | Annotated[TokenIds, Tag("ids")],
                  Discriminator(_input_kind, custom_error_type="invalid_item", custom_error_message=INPUT_SHAPES)]


def _one_input(value: Any) -> Any:
    if isinstance(value, str) or _is_ids(value):
        return [value]  # one input: a batch of one
    if not isinstance(value, list):
        raise PydanticCustomError("invalid_value", "`inputs` must be a string, a list of token ids, or a list of "
                                  "those")
    if len(value) > MAX_ITEMS:  # counted before an input is validated
        raise PydanticCustomError("invalid_value", "`inputs` holds {count} inputs; at most {limit} per request",
                                  {"count": len(value), "limit": MAX_ITEMS})
    return value


Inputs = Annotated[list[Input], Field(min_length=1, max_length=MAX_ITEMS, fail_fast=True),
                   BeforeValidator(_one_input, json_schema_input_type=Input | list[Input])]
Direction = Literal["Right", "Left", "right", "left"]
TRUNCATE_DOC = "cut a text over the model's window (default false: such a text is refused with a 422)"
DIRECTION_DOC = "with truncate: Right keeps a text's first tokens, Left its last"
PROMPT_DOC = "one of the model's prompts, put before each text (GET /v1/models: prompts)"


class _TEIBody(_Body):
    # TEI ignores fields it does not know (its request structs do not deny them): its clients may send more
    model_config = ConfigDict(strict=True, extra="ignore")


def cut_of(truncate: bool | None, direction: str) -> str:
    """TEI's ``truncate`` and ``truncation_direction`` as the door's ``truncate``: none, end or start."""
    return "none" if not truncate else "start" if direction.lower() == "left" else "end"


class TextsRequest(_TEIBody):
    """What TEI's embedding bodies share."""

    inputs: Inputs = Field(description=f"a string or a list of token ids, or a list of at most {MAX_ITEMS} of them")
    truncate: bool | None = Field(False, description=TRUNCATE_DOC)
    truncation_direction: Direction = Field("Right", description=DIRECTION_DOC)
    prompt_name: str | None = Field(None, description=PROMPT_DOC)

    @cached_property
    def items(self) -> list[str | list[int]]:
        """The inputs, in order: texts and lists of ids."""
        return list(self.inputs)

    @property
    def cut(self) -> str:
        """The door's ``truncate``: none, end or start."""
        return cut_of(self.truncate, self.truncation_direction)


class TEIEmbedRequest(TextsRequest):
    """``POST /embed``: TEI's ``EmbedRequest``."""

    normalize: bool = Field(True, description="L2-normalize each vector (after dimensions)")
    dimensions: int | None = Field(None, ge=1, le=MAX_COUNT, description="keep the first dimensions (Matryoshka)")


class TEIEmbedSparseRequest(TextsRequest):
    """``POST /embed_sparse``: TEI's ``EmbedSparseRequest``."""


class TEIEmbedAllRequest(TextsRequest):
    """``POST /embed_all``: TEI's ``EmbedAllRequest``."""


class TEIRerankRequest(_TEIBody):
    """``POST /rerank`` with TEI's body: ``texts`` ranked against ``query``."""

    query: Query
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_DOCUMENTS, fail_fast=True)] = Field(
        description=f"at most {MAX_DOCUMENTS} texts")
    truncate: bool | None = Field(False, description=TRUNCATE_DOC)
    truncation_direction: Direction = Field("Right", description=DIRECTION_DOC)
    raw_scores: bool = Field(False, description="the reranker's logits; only where its scores are its logits")
    return_text: bool = Field(False, description="each result carries its text")

    @property
    def cut(self) -> str:
        """The door's ``truncate``: none, end or start."""
        return cut_of(self.truncate, self.truncation_direction)


def _one_text(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # one text: a batch of one


class TEITokenizeRequest(_TEIBody):
    """``POST /tokenize``: TEI's ``TokenizeRequest``."""

    inputs: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS),
                      BeforeValidator(_one_text, json_schema_input_type=Text | list[Text])] = Field(
        description=f"a string, or a list of at most {MAX_ITEMS} strings")
    add_special_tokens: bool = Field(True, description="false: the model's special tokens are left out")
    prompt_name: str | None = Field(None, description=PROMPT_DOC)

    @property
    def texts(self) -> list[str]:
        """The texts, in order."""
        return list(self.inputs)


def _ids_lists(value: Any) -> Any:
    value = _listed(value)
    return [value] if _is_ids(value) else value  # one list of ids: a batch of one


class TEIDecodeRequest(_TEIBody):
    """``POST /decode``: TEI's ``DecodeRequest``."""

    ids: Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_ITEMS),
                   BeforeValidator(_ids_lists, json_schema_input_type=TokenIds | list[TokenIds])] = Field(
        description=f"a list of ids, or at most {MAX_ITEMS} such lists")
    skip_special_tokens: bool = Field(True, description="the special tokens are left out (false is not supported)")


REQUESTS = (TEIEmbedRequest, TEIEmbedSparseRequest, TEIEmbedAllRequest, TEIRerankRequest, TEITokenizeRequest,
            TEIDecodeRequest)


def checked(model: type[BaseModel], value: Any) -> Any:
    """A decoded body checked as request ``model``: an empty list is TEI's 400 (``Empty``), any other fault a 400
    naming the field (:func:`serving.openai_api.validation_error`). CPU work: call it off the event loop."""
    if isinstance(value, dict):
        empty = next((f for f in EMPTY_LISTS if f in model.model_fields and value.get(f) == []), None)
        if empty is not None:
            raise tei_error(400, f"`{empty}` cannot be empty", "Empty")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise validation_error(err, model) from None


def parse(model: type[BaseModel], body: bytes) -> Any:
    """A raw body checked as request ``model``: a bounded parse (lists of token ids read compactly, up to
    ``MAX_TOKEN_IDS`` ids each), then :func:`checked`. CPU work: call it off the event loop."""
    return checked(model, parse_json(body, MAX_ITEMS, int_arrays=True))


# ---- errors ---------------------------------------------------------------------------------------------------
#: TEI's error types; the door's own errors take the one of their status (:data:`STATUS_TYPES`)
TEI_TYPES = frozenset({"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"})
STATUS_TYPES = {400: "Validation", 401: "Unauthorized", 404: "Backend", 408: "Validation", 413: "Validation",
                422: "Validation", 424: "Backend", 429: "Overloaded", 500: "Backend", 503: "Unhealthy"}
TEI_STATUS = {400: 422, 404: 424, 500: 424}  # the door's status of an error -> TEI's for it
_TOO_LONG = re.compile(r"maximum context length is (\d+) tokens, however you requested (\d+) tokens \((.+?)\)\.")


def tei_error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> ApiError:
    """An error answered in TEI's shape (``error_type`` one of :data:`TEI_TYPES`)."""
    return ApiError(status, message, type=error_type, param=None, code=None, headers=headers)


def as_tei(err: ApiError) -> ApiError:
    """An error of the door's shared checks (OpenAI's statuses) as TEI answers it: a request the model cannot take
    422 Validation, a failed model 424 Backend; a text over the window worded for TEI's ``truncate``."""
    if err.type in TEI_TYPES:
        return err
    status = TEI_STATUS.get(err.status, err.status)
    message = err.message
    found = _TOO_LONG.search(message) if err.code == "context_length_exceeded" else None
    if found is not None:
        limit, count, place = found.groups()
        message = f"{place} has {count} tokens; the model reads at most {limit}: set truncate to true to cut it"
    answer = tei_error(status, message, STATUS_TYPES.get(status, "Backend"), err.headers)
    answer.failure = err.failure
    return answer


def error_body(err: ApiError) -> dict[str, str]:
    """TEI's error body: ``{"error", "error_type"}`` (:class:`TEIError`)."""
    kind = err.type if err.type in TEI_TYPES else STATUS_TYPES.get(err.status, "Backend")
    return {"error": err.message, "error_type": kind}


# ---- answers (what /openapi.json documents) -------------------------------------------------------------------
class TEIError(BaseModel):
    """TEI's error: ``error_type`` Validation (422), Empty (400), Backend (424), Overloaded (429), Unhealthy (503)
    or Tokenizer (422)."""

    error: str
    error_type: str


class TEISparseValue(BaseModel):
    """One term of a sparse vector."""

    index: int
    value: float


class TEIRank(BaseModel):
    """One ranked text, best first."""

    index: int
    text: str | None = None
    score: float


class TEIToken(BaseModel):
    """One token: ``start``/``stop`` its UTF-8 bytes in the prompted input (null for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TEIInfo(BaseModel):
    """TEI's ``Info``, filled from the served spec (null where the door does not know)."""

    model_id: str
    model_sha: str | None
    model_dtype: str | None
    served_model_name: str
    model_type: dict[str, Any]
    max_concurrent_requests: int | None
    max_input_length: int | None
    max_batch_tokens: int | None
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int | None
    version: str
    sha: str | None
    docker_label: str | None
