"""The door's embeddings answers in OpenAI's shape (``CreateEmbeddingResponse``): one item's ``embedding`` value, the
``usage``, and the answer's JSON bytes, written by one renderer for plain embeddings and late chunks alike."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np


def embedding_value(row: Any, encoding_format: str, kind: str) -> list | str | dict:
    """One item's result as OpenAI's ``embedding`` field. ``float``: numbers (quantized precisions as their
    integer values, float16/float8 as the floats they hold; a multi-vector item a list of such vectors, a
    sparse row ``{"indices", "values"}``); ``base64``: those numbers' little-endian float32 bytes (OpenAI's, whatever
    the precision); ``bytes``: the raw little-endian bytes in the precision's dtype (int8/uint8 one byte per value;
    binary packed). The item's output kind
    ``kind`` (the call's output kind) writes it (:meth:`zoo.kinds.OutputKind.to_json`)."""
    from zoo import kinds

    return kinds.get(kind).to_json(row, encoding_format)


def usage(tokens: int, truncated: list[bool]) -> dict[str, int]:
    """A response's ``usage``: the text tokens read, and how many items were cut to the model's window."""
    return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": sum(map(bool, truncated))}


def embeddings_response(model: str, rows: list[np.ndarray], encoding_format: str, tokens: int,
                        kind: str, truncated: list[bool] | None = None) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` for rows of output ``kind``; ``truncated``: which items were cut."""
    cut = truncated if truncated is not None else [False] * len(rows)
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": embedding_value(r, encoding_format, kind),
                      "truncated": bool(c)} for i, (r, c) in enumerate(zip(rows, cut))],
            "model": model, "usage": usage(tokens, cut)}


def render(model: str, values: Iterable[Any], tokens: int, truncated: list[bool],
           spans: list[list[tuple[int, int]]] | None = None, dtype: str | None = None) -> bytes:
    """The answer's JSON bytes, as FastAPI's ``JSONResponse`` would send them: item ``i``'s JSON-ready
    ``embedding`` value from ``values`` (taken one at a time: a generator computes each when its turn comes),
    whether it was ``truncated`` and, for late chunks, its chunks' ``spans``; ``usage`` from ``tokens``; ``dtype``:
    the dtype of ``encoding_format: "bytes"`` values, which the answer names. Built item by
    item (each a short call into the encoder) so that, run in a worker thread, a long answer lets the event loop have
    the GIL between items."""
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

    def item(i: int, value: Any) -> str:
        extra = "" if spans is None else f',"spans":{dumps([[int(s), int(e)] for s, e in spans[i]])}'
        return (f'{{"object":"embedding","index":{i},"embedding":{dumps(value)}{extra},'
                f'"truncated":{dumps(bool(truncated[i]))}}}')

    items = ",".join(item(i, v) for i, v in enumerate(values))
    counted = dumps(usage(tokens, truncated))
    named = "" if dtype is None else f',"dtype":{dumps(dtype)}'
    return f'{{"object":"list","data":[{items}],"model":{dumps(model)},"usage":{counted}{named}}}'.encode()


def bytes_dtype(encoding_format: str, precision: str) -> str | None:
    """The dtype an answer names: that of ``precision``'s arrays under ``encoding_format: "bytes"``; None
    otherwise (``float`` and ``base64`` carry float32)."""
    from zoo import postprocess as pp

    return pp.PRECISIONS[precision].name if encoding_format == "bytes" else None


def render_embeddings(model: str, rows: list[np.ndarray], encoding_format: str, tokens: int, kind: str,
                      truncated: list[bool] | None = None, precision: str = "float32") -> bytes:
    """:func:`embeddings_response` as JSON bytes (:func:`render`); ``precision``: the rows'. CPU work: call it off
    the event loop."""
    cut = truncated if truncated is not None else [False] * len(rows)
    return render(model, (embedding_value(r, encoding_format, kind) for r in rows), tokens, cut,
                  dtype=bytes_dtype(encoding_format, precision))


def render_chunks(model: str, found: list[Any], encoding_format: str, tokens: int,
                  precision: str = "float32") -> bytes:
    """The answer of a late-chunking request (:func:`render`): ``data[i]["embedding"]`` one dense vector (``base64``:
    one string) a chunk of :class:`zoo.long.Chunks` ``found[i]``, ``data[i]["spans"]`` their character spans,
    ``data[i]["truncated"]`` whether its text was cut. CPU work: call it off the event loop."""
    values = ([embedding_value(row, encoding_format, "dense") for row in c.vectors] for c in found)
    return render(model, values, tokens, [bool(c.truncated) for c in found], [list(c.spans) for c in found],
                  dtype=bytes_dtype(encoding_format, precision))
