"""OpenAI's embeddings API as `zoo` sees it: request parsing, item conversion, response and error shapes.

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

Media travel inline only: an ``http(s)`` URL is refused (fetching it from the server would let callers
reach hosts they cannot), and nothing a caller sends is ever read as a server path.

What one request may hold is checked before any work is done for it (400 naming the field or ``input[i]``): at
most :data:`MAX_ITEMS` items, a text item of at most ``MAX_TEXT_CHARS`` characters, an interleaved item of at
most ``MAX_PARTS`` parts whose text holds at most ``MAX_TEXT_CHARS`` characters (:mod:`zoo.media.budgets`); the
body itself is decoded by :func:`parse_json`, which stops at the depth, list length and value count no valid
request reaches.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Any

import numpy as np

from zoo import postprocess as pp
from zoo.errors import (
    InputError,
    InvalidArgumentError,
    ModelUnavailableError,
    UnsupportedModalityError,
    choices,
)
from zoo.media.budgets import MAX_PARTS, MAX_TEXT_CHARS
from zoo.spec import Modality

MAX_ITEMS = 2048  # OpenAI's own limit on the items of one request
# The deepest valid body: {"input": [{"content": [{"image_url": {"url": ...}}]}]}, six containers.
MAX_DEPTH = 6
# Every JSON value of the largest valid body (2048 interleaved items of MAX_PARTS image parts, 4 values a part)
# and some: a body of nothing but tiny values ([{}, {}, ...] is 24x its size as Python objects) stops here.
MAX_VALUES = MAX_ITEMS * (4 * MAX_PARTS + 4) + 64
FORMATS = ("float", "base64")
OPENAI_FIELDS = ("model", "input", "dimensions", "encoding_format", "user")
EXTENSION_FIELDS = ("precision", "prompt_name", "output", "max_vectors", "top_k")  # encode()'s output controls
MEDIA_KEYS = {"image": Modality.IMAGE, "audio": Modality.AUDIO, "video": Modality.VIDEO}


class ApiError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    # `type` shadows the builtin on purpose: it is OpenAI's field name
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = "input", code: str | None = "invalid_value") -> ApiError:
    """A 400 naming the parameter at fault."""
    return ApiError(400, message, param=param, code=code)


def server_busy(message: str, retry_after: int = 1) -> ApiError:
    """OpenAI's 429 (``rate_limit_exceeded``, which its SDK retries after ``Retry-After`` seconds)."""
    return ApiError(429, message, type="requests", code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry_after)})


def model_not_found(model: str) -> ApiError:
    """OpenAI's 404 for a model that is not served here."""
    return ApiError(404, f"The model `{model}` does not exist or is not served here; GET /v1/models lists them.",
                    param="model", code="model_not_found")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked ``POST /v1/embeddings`` body; ``items`` are ``(modality, item)`` in input order, each item
    in the form :func:`zoo.inputs.to_wire` takes (text, or data only)."""

    model: str
    items: list[tuple[Modality, Any]]
    dimensions: int | None
    encoding_format: str
    precision: str
    prompt_name: str | None
    output: str | None = None
    max_vectors: int | None = None
    top_k: int | None = None


def _inline(value: Any, where: str, kind: str) -> str:
    """A media value that must be a ``data:`` URI string."""
    if not isinstance(value, str):
        raise bad_request(f"{where}: the {kind} must be a data: URI string, got {type(value).__name__}")
    if value[:8].lower().startswith(("http://", "https://")):
        raise bad_request(f"{where}: URLs are not fetched by this server; send the {kind} inline as a "
                          f"data:{kind}/...;base64,... URI", code="url_not_supported")
    if not value.startswith("data:"):
        raise bad_request(f"{where}: the {kind} must be a data:{kind}/...;base64,... URI")
    return value


def _too_long(where: str, chars: int | str) -> ApiError:
    return bad_request(f"{where}: the text has {chars} characters; at most {MAX_TEXT_CHARS} per item",
                       code="text_too_long")


def _interleaved(parts: Any, where: str) -> list[dict[str, str]]:
    """Chat content parts → the wire's ``{"text"}`` / ``{"image"}`` parts (at most ``MAX_PARTS``, their text
    at most ``MAX_TEXT_CHARS`` characters in all)."""
    if not isinstance(parts, list) or not parts:
        raise bad_request(f"{where}: content must be a non-empty list of content parts")
    if len(parts) > MAX_PARTS:
        raise bad_request(f"{where}: content has {len(parts)} parts; at most {MAX_PARTS} per item",
                          code="too_many_parts")
    out, chars = [], 0
    for j, part in enumerate(parts):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            chars += len(part["text"])
            if chars > MAX_TEXT_CHARS:
                raise _too_long(where, f"more than {MAX_TEXT_CHARS}")
            out.append({"text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            out.append({"image": _inline(url, at, "image")})
        else:
            raise bad_request(f'{at}: a content part must be {{"type": "text", "text": ...}} or '
                              f'{{"type": "image_url", "image_url": {{"url": "data:image/..."}}}}')
    return out


def parse_item(item: Any, index: int) -> tuple[Modality, Any]:
    """One ``input`` element → ``(modality, item)``; a 400 naming ``input[index]`` when it is not one."""
    where = f"input[{index}]"
    if isinstance(item, str):
        if len(item) > MAX_TEXT_CHARS:
            raise _too_long(where, len(item))
        return Modality.TEXT, item
    if isinstance(item, bool) or isinstance(item, (int, float)) or (
            isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)):
        raise bad_request(f"{where}: token-id arrays are not supported; send the text itself",
                          code="tokens_not_supported")
    if isinstance(item, dict) and len(item) == 1:
        (key, value), = item.items()
        if key in MEDIA_KEYS:
            return MEDIA_KEYS[key], _inline(value, where, key)
        if key == "content":
            return Modality.INTERLEAVED, _interleaved(value, where)
    raise bad_request(f'{where}: an item is a string, {{"image": "data:..."}}, {{"audio": "data:..."}}, '
                      f'{{"video": "data:..."}} or {{"content": [content parts]}}; got {_describe(item)}')


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(map(str, value))[:5]}"
    return f"a {type(value).__name__}"


_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_CONSTANTS = (("null", None), ("true", True), ("false", False), ("NaN", float("nan")),
              ("Infinity", float("inf")), ("-Infinity", float("-inf")))


class _BoundedParser:
    """JSON as :func:`json.loads` reads it, with containers walked in Python (strings and numbers by the
    standard library's scanner), so that the walk stops early -- nesting deeper than :data:`MAX_DEPTH`, a list
    longer than :data:`MAX_ITEMS`, more than :data:`MAX_VALUES` values -- and, run in a worker thread, lets the
    event loop have the GIL between values (``json.loads`` holds it for the whole body)."""

    def __init__(self, text: str) -> None:
        self.s, self.values = text, 0

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
            if len(out) >= MAX_ITEMS:
                name = where or "the request body"
                raise bad_request(f"`{name}` has more than {MAX_ITEMS} items; at most {MAX_ITEMS} per request"
                                  if where == "input" else f"`{name}` has more than {MAX_ITEMS} elements",
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


def parse_json(body: bytes) -> Any:
    """A request body as :func:`json.loads` would decode it (the same values, the same error messages), within
    the bounds a valid request needs; a 400 otherwise. CPU work: call it off the event loop."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        parser = _BoundedParser(text)
        value, end = parser.value(parser.ws(0), 0, "")
        end = parser.ws(end)
        if end != len(text):
            parser.fail("Extra data", end)
        return value
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise bad_request(f"the request body is not valid JSON: {err}", param=None) from None


def read_request(body: bytes) -> EmbeddingRequest:
    """:func:`parse_json` then :func:`parse_request`: a body checked, item count and per-item caps included,
    before any work is done for it."""
    return parse_request(parse_json(body))


def parse_request(body: Any) -> EmbeddingRequest:
    """Check a decoded JSON body; raises :class:`ApiError` (400) naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", param=None)
    unknown = sorted(set(body) - set(OPENAI_FIELDS) - set(EXTENSION_FIELDS))
    if unknown:
        raise bad_request(f"unrecognized request argument(s) {unknown}; valid: "
                          f"{choices(OPENAI_FIELDS + EXTENSION_FIELDS)}", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required: a served model's name (GET /v1/models)", param="model")
    raw = body.get("input")
    if raw is None:
        raise bad_request("`input` is required: a string or a list of items")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        raw = [raw]  # one string, or one token array (refused below with its reason)
    if not isinstance(raw, list) or not raw:
        raise bad_request("`input` must be a string or a non-empty list of items")
    if len(raw) > MAX_ITEMS:
        raise bad_request(f"`input` has {len(raw)} items; at most {MAX_ITEMS} per request")
    dims = body.get("dimensions")  # its value, precision's and prompt_name's are checked by the model's options()
    fmt = body.get("encoding_format") or "float"
    if fmt not in FORMATS:
        raise bad_request(f"`encoding_format` must be one of {choices(FORMATS)}, got {fmt!r}",
                          param="encoding_format")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_request("`user` must be a string", param="user")
    precision = body.get("precision") or "float32"
    prompt, output = body.get("prompt_name"), body.get("output")
    for name, value in (("precision", precision), ("prompt_name", prompt), ("output", output)):
        if value is not None and not isinstance(value, str):
            raise bad_request(f"`{name}` must be a string", param=name)
    if output == "sparse" and fmt == "base64":
        raise bad_request("sparse output comes as {indices, values} objects; use encoding_format float",
                          param="encoding_format")
    # max_vectors' and top_k's values are checked by the model's options(), like dimensions
    return EmbeddingRequest(model, [parse_item(x, i) for i, x in enumerate(raw)], dims, fmt, precision, prompt,
                            output, body.get("max_vectors"), body.get("top_k"))


def embedding_value(row: Any, encoding_format: str) -> list | str | dict:
    """One item's result as OpenAI's ``embedding`` field. ``float``: numbers (quantized precisions as their
    integer values, float16/float8 as the floats they hold; a multi-vector item a list of such vectors, a
    sparse row ``{"indices", "values"}``); ``base64``: the raw little-endian bytes in the precision's dtype
    (float32 by default, as OpenAI; int8/uint8 one byte per value; binary packed)."""
    if hasattr(row, "tocsr"):
        row = row.tocsr()
        return {"indices": row.indices.tolist(), "values": row.data.astype(np.float32).tolist()}
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype=row.dtype.newbyteorder("<")).tobytes()).decode()
    if row.dtype.kind == "f" or row.dtype == pp.FLOAT8:
        return row.astype(np.float32).tolist()
    return row.tolist()


def embeddings_response(model: str, rows: list[np.ndarray], encoding_format: str, tokens: int) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse``."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embedding_value(r, encoding_format)}
                 for i, r in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def render_embeddings(model: str, rows: list[np.ndarray], encoding_format: str, tokens: int) -> bytes:
    """:func:`embeddings_response` as the JSON bytes FastAPI's ``JSONResponse`` would send, built item by item
    (each a short call into the encoder) so that, run in a worker thread, a long answer lets the event loop
    have the GIL between items."""
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    items = ",".join(f'{{"object":"embedding","index":{i},"embedding":{dumps(embedding_value(r, encoding_format))}}}'
                     for i, r in enumerate(rows))
    usage = dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return f'{{"object":"list","data":[{items}],"model":{dumps(model)},"usage":{usage}}}'.encode()


def api_error(err: BaseException, positions: list[int] | None = None) -> ApiError:
    """A `zoo` error as the OpenAI error it is; ``positions`` maps an :class:`InputError`'s index within
    one modality's batch back to its place in ``input``."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, InputError):
        index = positions[err.index] if positions is not None and 0 <= err.index < len(positions) else err.index
        return bad_request(f"input[{index}]: {err.reason}")
    if isinstance(err, UnsupportedModalityError):
        return bad_request(str(err))
    if isinstance(err, InvalidArgumentError):  # UnknownPromptError too: a bad field, not a missing resource
        return bad_request(str(err), param=err.param)
    if isinstance(err, ModelUnavailableError):
        return ApiError(503, "the model is restarting or not ready; retry shortly", type="server_error",
                        code="model_not_ready")
    # anything else may carry server details (paths, stack state): the caller gets a fixed message
    return ApiError(500, "the server failed to embed this request", type="server_error", code="internal_error")
