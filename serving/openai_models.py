"""The OpenAI-compatible door's request bodies as pydantic models: what a request may hold (what it answers:
:mod:`serving.openai_schema`).

:class:`EmbeddingRequest` validates a decoded ``POST /v1/embeddings`` body (:func:`serving.openai_api.parse_request`
turns its complaints into OpenAI's 400), and every model here is what ``/openapi.json`` publishes. A request's rules
that are not types are custom errors whose ``type`` is the OpenAI ``code`` of the 400 (:data:`ERROR_CODES`); their
message names the rule, and the door prefixes the place (``input[3]``, ``input[3].content[1]``).

The request models are strict: a body comes from JSON, so a number is not a string nor ``"8"`` a number.
``input`` may be a string, a list of items or one token array; an item's shape picks its model (:func:`item_kind`)
so that a bad item gets one complaint about the shape it has, not one per shape it could have had.
"""

from __future__ import annotations

from array import array
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationInfo,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs it (not typing's) before Python 3.12

from zoo import kinds
from zoo import postprocess as pp
from zoo.errors import InvalidArgumentError
from zoo.long import TRUNCATE, check_truncate
from zoo.media import budgets
from zoo.spec import Modality

from . import contract
from .openai_schema import (  # noqa: F401 (the answers' models and the schema: their old home, which callers import)
    Embedding,
    EmbeddingResponse,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    SparseEmbedding,
    Usage,
    error_responses,
    openapi_document,
    request_body,
    request_schemas,
)

MAX_ITEMS = 2048  # OpenAI's own limit on the items of one request
#: the custom error types of the request models; each is the OpenAI ``code`` of its 400 (``invalid_item``:
#: ``invalid_value``, with what the item was appended)
ERROR_CODES = frozenset({"invalid_value", "invalid_item", "url_not_supported",
                         "text_too_long", "too_many_parts"})
ITEM_SHAPES = ('an item is a string, a list of cl100k_base token ids, {"image": "data:..."}, {"audio": "data:..."}, '
               '{"video": "data:..."} or {"content": [content parts]}')
ITEM_KEYS = ("image", "audio", "video", "content")  # the one key of an item that is an object
PART_SHAPES = ('a content part must be {"type": "text", "text": ...} or '
               '{"type": "image_url", "image_url": {"url": "data:image/..."}}')


def _inline(kind: str) -> Any:
    """A media value: a ``data:`` URI string. URLs are refused (fetching them from the server would let callers
    reach hosts they cannot), and nothing is ever read as a server path."""

    def check(value: str) -> str:
        if value[:8].lower().startswith(("http://", "https://")):
            raise PydanticCustomError("url_not_supported", "URLs are not fetched by this server; send the {kind} "
                                      "inline as a data:{kind}/...;base64,... URI", {"kind": kind})
        if not value.startswith("data:"):
            raise PydanticCustomError("invalid_value", "the {kind} must be a data:{kind}/...;base64,... URI",
                                      {"kind": kind})
        return value

    return Annotated[str, AfterValidator(check), Field(description=f"a data:{kind}/...;base64,... URI")]


ImageURI, AudioURI, VideoURI = _inline("image"), _inline("audio"), _inline("video")


def _text_fits(text: str) -> str:
    if len(text) > budgets.MAX_TEXT_CHARS:  # read at call time, like the decoders (a test may change it)
        raise PydanticCustomError("text_too_long", "the text has {chars} characters; at most {limit} per item",
                                  {"chars": len(text), "limit": budgets.MAX_TEXT_CHARS})
    return text


Text = Annotated[str, AfterValidator(_text_fits), Field(description="a text item")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ImageItem(_Body):
    """An image item."""

    image: ImageURI

    def wire(self) -> tuple[Modality, Any]:
        """``(modality, item)`` as :func:`zoo.media.to_wire` takes it."""
        return Modality.IMAGE, self.image


class AudioItem(_Body):
    """An audio item."""

    audio: AudioURI

    def wire(self) -> tuple[Modality, Any]:
        """``(modality, item)`` as :func:`zoo.media.to_wire` takes it."""
        return Modality.AUDIO, self.audio


class VideoItem(_Body):
    """A video item."""

    video: VideoURI

    def wire(self) -> tuple[Modality, Any]:
        """``(modality, item)`` as :func:`zoo.media.to_wire` takes it."""
        return Modality.VIDEO, self.video


# Content parts are TypedDicts, not models: an interleaved request may hold 2048 x MAX_PARTS of them, and building
# a model instance for each made validating the largest valid body ~5x slower than the item checks it replaced.
# A chat content part's other keys (cache_control, detail, ...) are ignored and dropped, as chat APIs do.
@with_config(ConfigDict(strict=True, extra="ignore"))
class TextPart(TypedDict):
    """Text in an interleaved item (the chat content-part shape)."""

    type: Literal["text"]
    text: str


@with_config(ConfigDict(strict=True, extra="ignore"))
class ImageURL(TypedDict):
    """Where an image part's image is: inline only."""

    url: ImageURI


def _url_object(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value  # "image_url": "data:..." is taken as well


@with_config(ConfigDict(strict=True, extra="ignore"))
class ImagePart(TypedDict):
    """An image in an interleaved item (the chat content-part shape)."""

    type: Literal["image_url"]
    image_url: Annotated[ImageURL, BeforeValidator(_url_object, json_schema_input_type=ImageURI | ImageURL)]


def _part_kind(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else None


Part = Annotated[Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image_url")],
                 Discriminator(_part_kind, custom_error_type="invalid_value", custom_error_message=PART_SHAPES)]


def _parts_fit(parts: Any) -> Any:
    # counted before a part is validated: the work an item may ask for is bounded first
    if isinstance(parts, list) and len(parts) > budgets.MAX_PARTS:
        raise PydanticCustomError("too_many_parts", "content has {parts} parts; at most {limit} per item",
                                  {"parts": len(parts), "limit": budgets.MAX_PARTS})
    return parts


class InterleavedItem(_Body):
    """An interleaved item: text and images in order, as chat content parts."""

    content: Annotated[list[Part], Field(min_length=1, fail_fast=True, description=f"at most {budgets.MAX_PARTS} "
                       f"parts, their text at most {budgets.MAX_TEXT_CHARS} characters in all"),
                       BeforeValidator(_parts_fit)]

    @model_validator(mode="after")
    def _text_in_all_fits(self) -> InterleavedItem:
        if sum(len(p["text"]) for p in self.content if p["type"] == "text") > budgets.MAX_TEXT_CHARS:
            raise PydanticCustomError("text_too_long", "the text has more than {limit} characters; at most {limit} "
                                      "per item", {"limit": budgets.MAX_TEXT_CHARS})
        return self

    def wire(self) -> tuple[Modality, Any]:
        """``(modality, parts)``: the wire's ``{"text"}`` / ``{"image"}`` parts."""
        return Modality.INTERLEAVED, [{"text": p["text"]} if p["type"] == "text" else {"image": p["image_url"]["url"]}
                                      for p in self.content]


def _from_tokens(value: Any, info: ValidationInfo) -> str:
    # OpenAI's token-id input: cl100k_base ids, decoded to the text they spell (serving.token_input), which the
    # model then reads with its own tokenizer. What they spell is counted before it is decoded: an id may spell 128
    # characters in 6 bytes of body, so the body's size alone does not bound the text
    from zoo.long import MAX_TOKEN_IDS

    from .token_input import ENCODING, decode, spelled_bytes

    if not isinstance(value, (list, array)) or not value:
        raise PydanticCustomError("invalid_value", "a token-id item must be a non-empty list of {encoding} ids",
                                  {"encoding": ENCODING})
    if len(value) > MAX_TOKEN_IDS:
        raise PydanticCustomError("invalid_value", "the token-id array has {n} ids; at most {limit} per item",
                                  {"n": len(value), "limit": MAX_TOKEN_IDS})
    if isinstance(value, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise PydanticCustomError("invalid_value", "a token-id item must be a list of {encoding} ids (integers)",
                                  {"encoding": ENCODING})
    try:
        spelled = spelled_bytes(value)
    except ValueError as err:
        raise PydanticCustomError("invalid_value", "{message}", {"message": str(err)}) from None
    if spelled > MAX_SPELLED_BYTES:
        raise PydanticCustomError("text_too_long", "the token ids spell {n} bytes of text; at most {limit} per item",
                                  {"n": spelled, "limit": MAX_SPELLED_BYTES})
    spent = info.context.setdefault("spelled", 0) + spelled if isinstance(info.context, dict) else spelled
    if spent > MAX_SPELLED_REQUEST:
        raise PydanticCustomError("text_too_long", "the request's token ids spell more than {limit} bytes of text",
                                  {"limit": MAX_SPELLED_REQUEST})
    if isinstance(info.context, dict):
        info.context["spelled"] = spent
    return _text_fits(decode(value))


#: the most bytes of text one token-id item may spell (a text of MAX_TEXT_CHARS characters, 4 bytes each at most)
MAX_SPELLED_BYTES = 4 * budgets.MAX_TEXT_CHARS
#: the most bytes of text a request's token ids may spell in all: what the default 16 MiB body of text holds
MAX_SPELLED_REQUEST = 1 << 24


TokenIds = Annotated[str, PlainValidator(_from_tokens, json_schema_input_type=list[int]),
                     Field(description="cl100k_base token ids (OpenAI's), embedded as the text they spell")]


def item_kind(value: Any) -> str | None:
    """The shape of one ``input`` element, which picks its model: ``text``, ``image``, ``audio``, ``video``,
    ``content`` (interleaved) or ``tokens`` (a token-id array; a bare number is refused as one); None for none."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        key = next(iter(value)) if len(value) == 1 else None
        return key if key in ITEM_KEYS else None
    if isinstance(value, (bool, int, float, array)) or (
            isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)):
        return "tokens"
    return None


Item = Annotated[Annotated[Text, Tag("text")] | Annotated[ImageItem, Tag("image")]
                 | Annotated[AudioItem, Tag("audio")] | Annotated[VideoItem, Tag("video")]
                 | Annotated[InterleavedItem, Tag("content")]
                 | Annotated[TokenIds, Tag("tokens")],
                 Discriminator(item_kind, custom_error_type="invalid_item", custom_error_message=ITEM_SHAPES)]


Items = Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS)]  # as the schema shows them


def _one_item(value: Any) -> Any:
    # OpenAI's shorthands: a string, or one token array, is a one-item input
    if isinstance(value, (str, array)) or (
            isinstance(value, list) and value and all(isinstance(t, int) for t in value)):
        return [value]
    return value


#: a request's priority: a name of contract.PRIORITIES (the level Triton serves it at)
PriorityName = Literal[tuple(contract.PRIORITIES)]  # type: ignore[valid-type]


def _default(default: str) -> Any:
    return BeforeValidator(lambda value: default if value is None or value == "" else value)


def _truncate(value: Any) -> str:
    # the core's one check (zoo.long.check_truncate), its refusal as this field's 400
    try:
        return check_truncate("end" if value is None else value)
    except InvalidArgumentError as err:
        raise PydanticCustomError("invalid_value", "{message}", {"message": str(err)}) from None


#: a text's cut: Cohere's spellings (END, START, NONE) read as OpenAI-style lower case
Truncate = Annotated[Literal[TRUNCATE], BeforeValidator(_truncate)]  # type: ignore[valid-type]
#: the most a count the model checks may be here: beyond, it could not travel as Triton's 64-bit parameter (a clean
#: 400 here, not tritonclient's error); the model names its own, tighter, limit
MAX_COUNT = (1 << 31) - 1
#: the most tokens of a window or a chunk a request may name (no model reads a million-token window)
MAX_CHUNK_TOKENS = 1 << 20


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``: OpenAI's ``CreateEmbeddingRequest``, and `zoo`'s extensions (which OpenAI's SDK
    sends as ``extra_body``): media and interleaved items, and ``encode()``'s output controls."""

    model: str = Field(min_length=1, description="a served model's id (GET /v1/models), or its Triton name")
    input: Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS, fail_fast=True,
                                       description=f"a string, or a list of at most {MAX_ITEMS} items"),
                     BeforeValidator(_one_item, json_schema_input_type=str | Items)]
    # the values of dimensions, precision, prompt_name, output, max_vectors and top_k are the model's to check
    # (its options(), which names what it takes): here only their types, and a bound (MAX_COUNT)
    dimensions: int | None = Field(None, le=MAX_COUNT, description="truncate to this many dimensions "
                                   "(Matryoshka models)")
    encoding_format: Annotated[Literal["float", "base64", "bytes"], _default("float")] = Field(
        "float", description="float: numbers; base64: their little-endian float32 bytes (OpenAI's, whatever the "
        "precision: int8 values as the floats they are); bytes: the precision's own little-endian bytes in base64 "
        "(int8, uint8: a byte a value; binary: packed bits; float16: two bytes), the answer naming the dtype")
    user: str | None = Field(None, description="accepted, not used")
    precision: Annotated[str, _default("float32")] = Field(
        "float32", description=f"one of {', '.join(pp.PRECISIONS)}, as in encode()")
    prompt_name: str | None = Field(None, description="one of the model's prompts (GET /v1/models)")
    output: str | None = Field(None, description="one of the model's output kinds (GET /v1/models: outputs)")
    max_vectors: int | None = Field(None, le=MAX_COUNT, description="multivector: at most this many vectors an item")
    top_k: int | None = Field(None, le=MAX_COUNT, description="sparse: the k heaviest terms an item")
    priority: PriorityName | None = Field(None, description="the request's turn at the model when it is busy: "
                                          f"{', '.join(contract.PRIORITIES)} (high first; default "
                                          f"{contract.DEFAULT_PRIORITY}, or the X-Priority header's)")
    truncate: Truncate = Field("end", description="a text over the model's window: end (keep its first tokens), "
                               "start (its last), none (400 context_length_exceeded); Cohere's END/START/NONE too")
    long: Literal["chunk"] | None = Field(None, description="chunk: a text over the window is embedded as "
                                          "overlapping windows whose vectors are averaged (dense only)")
    chunk_tokens: int | None = Field(None, le=MAX_CHUNK_TOKENS, description="long=chunk: text tokens a window; "
                                     "late_chunking: a chunk")
    overlap: int | None = Field(None, le=MAX_CHUNK_TOKENS, description="tokens two neighbouring windows share")
    late_chunking: bool = Field(False, description="one vector a chunk of chunk_tokens tokens, each pooled from one "
                                "pass over the whole text (text items, dense output)")

    @model_validator(mode="after")
    def _sparse_is_float(self) -> EmbeddingRequest:
        if self.encoding_format != "float" and self.output in kinds.names() and not kinds.get(self.output).base64:
            raise PydanticCustomError("invalid_value", f"{self.output} output does not come as one array per item; "
                                      "use encoding_format float", {"param": "encoding_format"})
        if self.late_chunking:  # the rest (chunk_tokens' and overlap's values) is the model's to check
            if self.chunk_tokens is None:
                raise PydanticCustomError("invalid_value", "late_chunking needs chunk_tokens (tokens a chunk)",
                                          {"param": "chunk_tokens"})
            pooled = self.output is None or self.output in kinds.names() and kinds.get(self.output).poolable
            bad = "long" if self.long is not None else None if pooled else "output"
            if bad is not None:
                raise PydanticCustomError("invalid_value", f"late_chunking gives dense chunk vectors; leave {bad} "
                                          "out", {"param": bad})
            if self.truncate != "end":  # nothing of a text is dropped for a window: data[i].truncated says a cut
                raise PydanticCustomError("invalid_value", "late_chunking reads each whole text (in overlapping "
                                          "windows); leave truncate out", {"param": "truncate"})
            media = next((i for i, x in enumerate(self.input) if not isinstance(x, str)), None)
            if media is not None:
                raise PydanticCustomError("invalid_value", f"input[{media}]: late_chunking takes text items only",
                                          {"param": "input"})
        return self

    @cached_property
    def items(self) -> list[tuple[Modality, Any]]:
        """``(modality, item)`` in input order, each item in the form :func:`zoo.media.to_wire` takes."""
        return [(Modality.TEXT, x) if isinstance(x, str) else x.wire() for x in self.input]
