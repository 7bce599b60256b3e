"""OpenAI's embeddings API as `zoo` sees it: request parsing, response and error shapes.

Pure functions, no server: :mod:`serving.openai_server` puts them behind HTTP. What OpenAI defines is
followed exactly (``model``, ``input`` as a string or a list of strings, ``dimensions``, ``encoding_format``
``"float"``/``"base64"``, ``user``; the ``list``/``embedding``/``usage`` response; the
``{"error": {message, type, param, code}}`` error). The extensions ride in the same JSON body, which OpenAI
clients pass through (``extra_body``):

- an ``input`` item may be ``{"image": "data:image/...;base64,..."}``, ``{"audio": "data:audio/...;base64,..."}``
  or an interleaved ``{"content": [{"type": "text", "text": ...}, {"type": "image_url", "image_url":
  {"url": "data:image/..."}}]}`` (the chat content-part shape);
- ``precision``, ``prompt_name``, ``output``, ``max_vectors`` and ``top_k`` work as in ``encode()``. A
  ``multivector`` item's ``embedding`` is a list of vectors (``base64``: the ``[n, d]`` rows' bytes, row after
  row); a ``sparse`` item's is ``{"indices": [...], "values": [...]}`` (``float`` format only).

The bodies are pydantic models (:mod:`serving.openai_models`, also what ``/openapi.json`` publishes); the answers
are rendered by :mod:`serving.openai_render`. Media travel
inline only: an ``http(s)`` URL is refused (fetching it from the server would let callers reach hosts they
cannot), and nothing a caller sends is ever read as a server path.

What one request may hold is checked before any work is done for it (400 naming the field, and ``input[i]`` in
the message): at most :data:`MAX_ITEMS` items, a text item of at most ``MAX_TEXT_CHARS`` characters, an
interleaved item of at most ``MAX_PARTS`` parts whose text holds at most ``MAX_TEXT_CHARS`` characters
(:mod:`zoo.media.budgets`); the body itself is decoded by :func:`parse_json`, which stops at the depth, list
length and value count no valid request reaches, and only then validated by :class:`EmbeddingRequest`.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from json.decoder import scanstring
from typing import Any

from pydantic import BaseModel, ValidationError

from zoo.errors import (
    InputError,
    InvalidArgumentError,
    ModelUnavailableError,
    OverloadedError,
    UnsupportedModalityError,
    choices,
)
from zoo.long import MAX_TOKEN_IDS
from zoo.media.budgets import MAX_PARTS

from . import contract
from .openai_models import ERROR_CODES, MAX_ITEMS, EmbeddingRequest
from .openai_render import embedding_value, embeddings_response, render_embeddings, usage  # noqa: F401 (their old home)
from .openai_schema import ErrorDetail, ErrorResponse

# The deepest valid body: {"input": [{"content": [{"image_url": {"url": ...}}]}]}, six containers.
MAX_DEPTH = 6
# Every JSON value of the largest valid body (2048 interleaved items of MAX_PARTS image parts, 4 values a part)
# and some: a body of nothing but tiny values ([{}, {}, ...] is 24x its size as Python objects) stops here.
MAX_VALUES = MAX_ITEMS * (4 * MAX_PARTS + 4) + 64
TRUNCATE_CUTS = '"end" or "start"'  # the truncate values that take a text over the window (OpenAI's spelling)
SHOWN_CHARS = 40  # of a value a caller sent, at most this much is quoted back in an error


class ApiError(Exception):
    """An error answered in OpenAI's shape with an HTTP status. ``failure``: set when the model or tritonserver
    caused it (a reason of :func:`failure_reason`), which the door's metrics count as the model's failure."""

    # `type` shadows the builtin on purpose: it is OpenAI's field name
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None,
                 failure: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}
        self.failure = failure

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``: :class:`ErrorResponse`."""
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()


def bad_request(message: str, param: str | None = "input", code: str | None = "invalid_value") -> ApiError:
    """A 400 naming the parameter at fault."""
    return ApiError(400, message, param=param, code=code)


def server_busy(message: str, retry_after: int = 1) -> ApiError:
    """OpenAI's 429 (``rate_limit_exceeded``, which its SDK retries after ``Retry-After`` seconds)."""
    return ApiError(429, message, type="requests", code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry_after)})


def retry_after_s(seconds: float | None, default: int = 1) -> int:
    """A ``Retry-After`` value: whole seconds (HTTP takes no fraction), at least 1; ``default`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return default
    return max(1, math.ceil(seconds))


def request_priority(field: str | None, header: str | None) -> str:
    """A request's priority name (:data:`serving.contract.PRIORITIES`): the body's ``priority`` field (checked by
    the request model) wins over the ``X-Priority`` header; neither: :data:`serving.contract.DEFAULT_PRIORITY`. A
    header naming no level is a 400."""
    if field is not None:
        return field
    return header_priority(header)


def header_priority(header: str | None) -> str:
    """The priority an ``X-Priority`` header asks for (its default when absent); 400 when it names no level."""
    if header is None:
        return contract.DEFAULT_PRIORITY
    value = header.strip().lower()  # header values are matched case-blind, as HTTP's own tokens are
    if value not in contract.PRIORITIES:
        raise bad_request(f"the X-Priority header must be one of {choices(contract.PRIORITIES)}, got "
                          f"{_shown(header)}", param="priority")
    return value


def model_not_found(model: str) -> ApiError:
    """OpenAI's 404 for a model that is not served here."""
    return ApiError(404, f"The model `{model}` does not exist or is not served here; GET /v1/models lists them.",
                    param="model", code="model_not_found")


# ---- a request model's complaint as OpenAI's 400 -----------------------------------------------------------
# today's wording for the top-level fields' commonest faults (pydantic's would name neither the fix nor the API)
_FIELD_MESSAGES = {
    ("model", "missing"): "`model` is required: a served model's name (GET /v1/models)",
    ("model", "string_type"): "`model` must be a string: a served model's name (GET /v1/models)",
    ("model", "string_too_short"): "`model` is required: a served model's name (GET /v1/models)",
    ("input", "missing"): "`input` is required: a string or a list of items",
    ("input", "list_type"): "`input` must be a string or a non-empty list of items",
    ("input", "too_short"): "`input` must be a string or a non-empty list of items",
    ("input", "too_long"): "`input` has {actual_length} items; at most {max_length} per request",
}


def _shown(value: Any) -> str:
    """A value a caller sent, as an error quotes it: a few characters at most (an item may be megabytes)."""
    if isinstance(value, dict):
        return f"an object with keys {[str(k)[:SHOWN_CHARS] for k in sorted(map(str, value))[:5]]}"
    if isinstance(value, (list, array)):
        return f"a list of {len(value)} elements"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _place(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the request's own path: ``input[3].content[1].text``. The segment after a list index
    is the tag of the union the element was validated as (its shape), not a field, and is left out: every list of
    a request holds a tagged union (items, content parts)."""
    out, tagged = "", False
    for part in loc:
        if isinstance(part, int):
            out, tagged = f"{out}[{part}]", True
        elif tagged:
            tagged = False
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def validation_error(err: ValidationError, model: type[BaseModel] = EmbeddingRequest) -> ApiError:
    """A request ``model``'s first complaint as OpenAI's 400: ``param`` the top-level field at fault (an
    unrecognized one first), the message naming the place (``input[3]: ...``, ``dimensions should be ...``) and
    the rule; what the caller sent is quoted a few characters at most, and pydantic's links are left out."""
    errors = err.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1)
    if unknown:
        return bad_request(f"unrecognized request argument(s) {unknown}; valid: "
                           f"{choices(model.model_fields)}", param=unknown[0])
    first = errors[0]
    kind, loc, ctx, value = first["type"], first["loc"], first.get("ctx") or {}, first.get("input")
    if not loc:  # the body itself, or a rule across fields (its ctx names the field to blame)
        if kind == "model_type":
            return bad_request("the request body must be a JSON object", param=None)
        return bad_request(first["msg"], param=ctx.get("param"))
    param, place = str(loc[0]), _place(loc)
    if kind in ERROR_CODES:  # our own rules: the message names the rule, the place is the item (or the field)
        last = max((i for i, part in enumerate(loc) if isinstance(part, int)), default=0)
        message = first["msg"] if len(loc) == 1 else f"{_place(loc[:last + 1])}: {first['msg']}"
        if kind == "invalid_item":
            message, kind = f"{message}; got {_shown(value)}", "invalid_value"
        return bad_request(message, param=param, code=kind)
    if value is None and len(loc) == 1 and kind.endswith("_type"):
        kind = "missing"  # a required field sent as null
    template = _FIELD_MESSAGES.get((place, kind))
    if template is not None:
        message = template.format(**ctx)
    elif kind == "missing":
        message = f"`{place}` is required"
    elif kind == "too_short" and ctx.get("min_length") == 1:
        message = f"`{place}` must not be empty"
    elif kind == "model_type":  # pydantic would name the class
        message = f"`{place}` should be an object, got {_shown(value)}"
    elif first["msg"].startswith("Input should"):
        message = f"`{place}` should{first['msg'][len('Input should'):]}, got {_shown(value)}"
    else:
        message = f"`{place}`: {first['msg']}"
    return bad_request(message, param=param)


_WS = re.compile(r"[ \t\n\r]*")
# an array of at most MAX_TOKEN_IDS non-negative integers of at most 10 digits (token ids; int64 holds them), JSON's
# whitespace allowed; an array of more is refused as soon as its MAX_TOKEN_IDS + 1st id is read
_ID = r"(?:0|[1-9][0-9]{0,9})"
_NEXT_ID = rf"[ \t\n\r]*,[ \t\n\r]*{_ID}"
_INT_ARRAY = re.compile(rf"\[[ \t\n\r]*{_ID}(?:{_NEXT_ID}){{0,{MAX_TOKEN_IDS - 1}}}[ \t\n\r]*\]")
_INT_ARRAY_OVER = re.compile(rf"\[[ \t\n\r]*{_ID}(?:{_NEXT_ID}){{{MAX_TOKEN_IDS}}}")
_INTS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_CONSTANTS = (("null", None), ("true", True), ("false", False), ("NaN", float("nan")),
              ("Infinity", float("inf")), ("-Infinity", float("-inf")))


# Why a parser of our own, when pydantic could validate the raw bytes (model_validate_json)? Validation holds the
# GIL for the whole body and builds every value first, and json.loads does too: a 16 MiB body of tiny values would
# stall every other request for most of a second (tests/test_door_limits.py measures it). This walk yields the GIL
# between values in a worker thread and stops at the first value past what a valid request can hold; the model
# then validates a bounded object.
class _BoundedParser:
    """JSON as :func:`json.loads` reads it, with containers walked in Python (strings and numbers by the
    standard library's scanner), so that the walk stops early -- nesting deeper than :data:`MAX_DEPTH`, a list
    longer than :data:`MAX_ITEMS`, more than :data:`MAX_VALUES` values -- and, run in a worker thread, lets the
    event loop have the GIL between values (``json.loads`` holds it for the whole body)."""

    def __init__(self, text: str, max_list: int = MAX_ITEMS, int_arrays: bool = False) -> None:
        self.s, self.values, self.max_list, self.int_arrays = text, 0, max_list, int_arrays

    def ws(self, pos: int) -> int:
        return _WS.match(self.s, pos).end()  # type: ignore[union-attr]

    def fail(self, message: str, pos: int) -> None:
        raise json.JSONDecodeError(message, self.s, pos)

    def value(self, pos: int, depth: int, where: str) -> tuple[Any, int]:
        self.values += 1
        if self.values > MAX_VALUES:
            raise bad_request(f"the request body holds more than {MAX_VALUES} JSON values; a request holds at most "
                              f"{MAX_ITEMS} items of at most {MAX_PARTS} parts", param=None)
        s = self.s
        c = s[pos:pos + 1]
        if c == '"':
            return scanstring(s, pos + 1, True)
        if c == "[" and self.int_arrays:
            # token ids: a request may carry hundreds of thousands; kept as one compact array (8 bytes an id, no
            # object each), counted as one value, and read by the regex engine rather than walked value by value
            ints = _INT_ARRAY.match(s, pos)
            if ints is not None:
                return array("q", map(int, _INTS.findall(ints.group()))), ints.end()
            if _INT_ARRAY_OVER.match(s, pos) is not None:
                raise bad_request(f"`{where or 'the request body'}` holds an array of more than {MAX_TOKEN_IDS} "
                                  "token ids; at most that many an item", param=where.split("[")[0] or None)
        if c in ("{", "[") and c:
            if depth >= MAX_DEPTH:
                raise bad_request("the request body nests too deeply", param=None)
            return (self.obj if c == "{" else self.arr)(pos + 1, depth + 1, where)
        number = _NUMBER.match(s, pos)
        if number is not None:
            integer, frac, exp = number.groups()
            return (float(integer + (frac or "") + (exp or "")) if frac or exp else int(integer)), number.end()
        for name, constant in _CONSTANTS:
            if s.startswith(name, pos):
                return constant, pos + len(name)
        self.fail("Expecting value", pos)
        raise AssertionError  # unreachable: fail() raises

    def obj(self, pos: int, depth: int, where: str) -> tuple[dict[str, Any], int]:
        s, out = self.s, {}
        pos = self.ws(pos)
        if s[pos:pos + 1] == "}":
            return out, pos + 1
        while True:
            if s[pos:pos + 1] != '"':
                self.fail("Expecting property name enclosed in double quotes", pos)
            key, pos = scanstring(s, pos + 1, True)
            pos = self.ws(pos)
            if s[pos:pos + 1] != ":":
                self.fail("Expecting ':' delimiter", pos)
            pos = self.ws(pos + 1)
            child = (f"{where}.{key}" if where else key) if s[pos:pos + 1] in ("{", "[") else where
            out[key], pos = self.value(pos, depth, child)
            pos = self.ws(pos)
            c = s[pos:pos + 1]
            if c == "}":
                return out, pos + 1
            if c != ",":
                self.fail("Expecting ',' delimiter", pos)
            pos = self.ws(pos + 1)

    def arr(self, pos: int, depth: int, where: str) -> tuple[list[Any], int]:
        s, out = self.s, []
        pos = self.ws(pos)
        if s[pos:pos + 1] == "]":
            return out, pos + 1
        while True:
            if len(out) >= self.max_list:
                name, most = where or "the request body", self.max_list
                raise bad_request(f"`{name}` has more than {most} items; at most {most} per request"
                                  if where == "input" else f"`{name}` has more than {most} elements",
                                  param=where.split(".")[0].split("[")[0] or None)
            child = f"{where}[{len(out)}]" if s[pos:pos + 1] in ("{", "[") else where
            item, pos = self.value(pos, depth, child)
            out.append(item)
            pos = self.ws(pos)
            c = s[pos:pos + 1]
            if c == "]":
                return out, pos + 1
            if c != ",":
                self.fail("Expecting ',' delimiter", pos)
            pos = self.ws(pos + 1)


def parse_json(body: bytes, max_list: int = MAX_ITEMS, int_arrays: bool = False) -> Any:
    """A request body as :func:`json.loads` would decode it (the same values, the same error messages), within
    the bounds a valid request needs (``max_list``: the most elements of one list); a 400 otherwise.
    ``int_arrays``: an array of non-negative integers (token ids) comes back as an :class:`array.array` of int64,
    however long (the body's size bounds it). CPU work: call it off the event loop."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        parser = _BoundedParser(text, max_list, int_arrays)
        value, end = parser.value(parser.ws(0), 0, "")
        end = parser.ws(end)
        if end != len(text):
            parser.fail("Extra data", end)
        return value
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise bad_request(f"the request body is not valid JSON: {err}", param=None) from None


def read_request(body: bytes) -> EmbeddingRequest:
    """:func:`parse_json` then :func:`parse_request`: a body checked, item count and per-item caps included,
    before any work is done for it. CPU work: call it off the event loop."""
    return parse_request(parse_json(body, int_arrays=True))


def parse_request(body: Any) -> EmbeddingRequest:
    """Validate a decoded JSON body as :class:`EmbeddingRequest`; raises :class:`ApiError` (400) naming the field
    at fault."""
    try:
        return EmbeddingRequest.model_validate(body, context={})  # the context counts what token ids spell
    except ValidationError as err:
        raise validation_error(err) from None


def too_long(index: int, reason: str, *, place: str | None = None, param: str = "input",
             cuts: str = TRUNCATE_CUTS) -> ApiError | None:
    """OpenAI's 400 for a text over the model's window (``truncate="none"``), worded like OpenAI's own, when
    ``reason`` is the core's message of one (:func:`zoo.long.too_long_counts` reads it); None otherwise. The text
    is ``input[index]`` unless ``place`` names it (another route's field, ``param``); ``cuts``: the truncate modes
    that would take it (a pair is cut at its end only)."""
    from zoo.long import too_long_counts

    counts = too_long_counts(reason)
    if counts is None:
        return None
    count, limit = counts
    return bad_request(f"This model's maximum context length is {limit} tokens, however you requested {count} "
                       f"tokens ({place or f'input[{index}]'}). Please reduce the input, or set truncate to {cuts} to "
                       "cut it to the window.", param=param, code="context_length_exceeded")


def api_error(err: BaseException, positions: list[int] | None = None, *, field: str = "input",
              cuts: str = TRUNCATE_CUTS) -> ApiError:
    """A `zoo` error as the OpenAI error it is; ``positions`` maps an :class:`InputError`'s index within
    one modality's batch back to its place in the request, an item named by the route's ``field``
    (``input[3]``); ``cuts``: the truncate values that would take a text over the window, as the route spells
    them."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, InputError):
        index = positions[err.index] if positions is not None and 0 <= err.index < len(positions) else err.index
        return (too_long(index, err.reason, place=f"{field}[{index}]", param=field, cuts=cuts)
                or bad_request(f"{field}[{index}]: {err.reason}", param=field))
    if isinstance(err, UnsupportedModalityError):
        return bad_request(str(err))
    if isinstance(err, InvalidArgumentError):  # UnknownPromptError too: a bad field, not a missing resource
        return bad_request(str(err), param=err.param)
    if isinstance(err, OverloadedError):  # refused before any work: the caller retries, as after the door's own 429
        retry = retry_after_s(err.retry_after)
        return server_busy(f"the model is busy (its queue is full or the request waited too long); retry in "
                           f"{retry} s", retry)
    if isinstance(err, ModelUnavailableError):
        return ApiError(503, "the model is restarting or not ready; retry shortly", type="server_error",
                        code="model_not_ready")
    # anything else may carry server details (paths, stack state): the caller gets a fixed message
    return ApiError(500, "the server failed to embed this request", type="server_error", code="internal_error")
