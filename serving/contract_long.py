"""The wire forms of the requests and answers of the other tasks than ``embed`` (:data:`serving.contract.TASK`;
tensor names and shapes in :mod:`serving.contract`'s table): each written once here, by the clients
(:mod:`serving.client_long`) and read by the backend (:mod:`serving.triton_tasks`), or the other way round."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from zoo.errors import InputError, InvalidArgumentError
from zoo.long import (
    MAX_TOKEN_IDS,
    Chunks,
    Tokens,
    check_chunking,
    check_token_ids,
    chunks_from_arrays,
    chunks_to_arrays,
)

from .contract import (
    CHUNK_SPANS,
    LENGTHS,
    NO_OFFSET,
    OUTPUT,
    SPANS,
    TASK,
    TASK_PARAMETERS,
    TOKEN_IDS,
    TOKEN_OFFSETS,
    TOKEN_STRINGS,
    TOKENS,
    TRUNCATED,
    from_wire,
    to_wire,
)

#: the most characters of a CHUNK_SPANS parameter, bounded before it is parsed (~80k spans of 6-digit offsets)
MAX_SPANS_CHARS = 1 << 20
#: the most bytes of one detokenize element: MAX_TOKEN_IDS ids of 10 digits and a separator each, and brackets
MAX_IDS_BYTES = 11 * MAX_TOKEN_IDS + 2


def task_parameters(task: str, **values: Any) -> dict[str, Any]:
    """The request parameters of a ``task`` request: :data:`TASK` and the ``values`` not None (per-item spans as
    the JSON :data:`CHUNK_SPANS`)."""
    params: dict[str, Any] = {TASK: task}
    for key, value in values.items():
        if key not in TASK_PARAMETERS[task]:
            raise InvalidArgumentError(f"{key!r} does not apply to {TASK} {task!r}", key)
        if value is not None:
            params[key] = json.dumps([[list(s) for s in item] for item in value]) if key == CHUNK_SPANS else value
    return params


def parse_spans(value: str, n: int) -> list[list[tuple[int, int]]]:
    """The per-item spans of a :data:`CHUNK_SPANS` parameter for a request of ``n`` items: strict JSON integers (no
    strings, floats or bools), checked by :func:`zoo.long.check_chunking`; its size is bounded before parsing."""
    if len(value) > MAX_SPANS_CHARS:
        raise InvalidArgumentError(f"parameter {CHUNK_SPANS!r} has {len(value)} characters; at most "
                                   f"{MAX_SPANS_CHARS}", CHUNK_SPANS)
    try:
        spans = json.loads(value)
    except json.JSONDecodeError:
        spans = None
    if not isinstance(spans, list):
        raise InvalidArgumentError(f"parameter {CHUNK_SPANS!r} must be JSON: a list per item of [start, end] "
                                   "pairs", CHUNK_SPANS)
    if len(spans) != n:
        raise InvalidArgumentError(f"parameter {CHUNK_SPANS!r} holds spans for {len(spans)} items, the request "
                                   f"{n}", CHUNK_SPANS)
    try:
        return check_chunking(None, spans, None, n)[1]  # type: ignore[return-value]
    except InvalidArgumentError as err:  # named as the wire's parameter
        raise InvalidArgumentError(f"parameter {CHUNK_SPANS!r}: {err}", CHUNK_SPANS) from None


def tokens_to_wire(tokens: list[Tokens]) -> dict[str, np.ndarray]:
    """A tokenize request's answer from its :class:`zoo.long.Tokens`, one per item."""
    ids = [i for t in tokens for i in t.ids]
    offsets = [o if o is not None else (NO_OFFSET, NO_OFFSET) for t in tokens for o in t.offsets]
    return {TOKEN_IDS: np.asarray(ids, np.int32).reshape(-1, 1),
            TOKEN_OFFSETS: np.asarray(offsets, np.int32).reshape(-1, 2),
            TOKEN_STRINGS: np.array([s.encode("utf-8") for t in tokens for s in t.tokens], dtype=object).reshape(-1, 1),
            LENGTHS: np.asarray([len(t.ids) for t in tokens], np.int32).reshape(-1, 1),
            TRUNCATED: np.asarray([t.truncated for t in tokens], bool).reshape(-1, 1)}


def tokens_from_wire(tensors: dict[str, np.ndarray]) -> list[Tokens]:
    """Undo :func:`tokens_to_wire`: the :class:`zoo.long.Tokens` of each item."""
    ids, offsets = tensors[TOKEN_IDS].reshape(-1), tensors[TOKEN_OFFSETS].reshape(-1, 2)
    strings, cut = tensors[TOKEN_STRINGS].reshape(-1), tensors[TRUNCATED].reshape(-1)
    ends = np.cumsum([0, *tensors[LENGTHS].reshape(-1)])
    return [Tokens(ids=[int(i) for i in ids[a:b]], tokens=[bytes(s).decode("utf-8") for s in strings[a:b]],
                   offsets=[None if s == NO_OFFSET else (int(s), int(e)) for s, e in offsets[a:b]],
                   truncated=bool(c)) for a, b, c in zip(ends[:-1], ends[1:], cut)]


def ids_to_wire(ids: list[list[int]]) -> list[bytes]:
    """The elements of a detokenize request: each item's token ids as UTF-8 JSON."""
    return [json.dumps([int(i) for i in item]).encode("utf-8") for item in ids]


def ids_from_wire(raw: bytes, index: int) -> list[int]:
    """One detokenize element back to its ids (:func:`zoo.long.check_token_ids`); an :class:`InputError` naming
    ``index`` when it is none."""
    try:
        ids = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_IDS_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        ids = None
    if not isinstance(ids, list):
        raise InputError(index, "a detokenize element must be UTF-8 JSON: a list of integer token ids")
    try:
        return check_token_ids([ids])[0]
    except InputError as err:
        raise InputError(index, err.reason) from None


def chunks_to_wire(chunks: list[Chunks], precision: str) -> dict[str, np.ndarray]:
    """A late_chunks request's answer from its :class:`zoo.long.Chunks`, one per item: the vectors, chunks per item,
    their spans, whether each text was cut and the tokens it was read from."""
    vectors, lengths, spans = chunks_to_arrays(chunks)
    return {OUTPUT: to_wire(np.asarray(vectors), precision), LENGTHS: np.asarray(lengths, np.int32).reshape(-1, 1),
            SPANS: np.asarray(spans, np.int32).reshape(-1, 2),
            TRUNCATED: np.asarray([c.truncated for c in chunks], bool).reshape(-1, 1),
            TOKENS: np.asarray([c.tokens for c in chunks], np.int32).reshape(-1, 1)}


def chunks_from_wire(tensors: dict[str, np.ndarray | None], precision: str) -> list[Chunks]:
    """Undo :func:`chunks_to_wire`: the :class:`zoo.long.Chunks` of each item (an older server's answer, without
    ``TRUNCATED`` and ``TOKENS``, reads as nothing cut and no tokens counted)."""
    chunks = chunks_from_arrays(from_wire(tensors[OUTPUT], precision), tensors[LENGTHS].reshape(-1),
                                tensors[SPANS].reshape(-1, 2))
    cut, tokens = tensors.get(TRUNCATED), tensors.get(TOKENS)
    for i, c in enumerate(chunks):
        c.truncated = bool(cut.reshape(-1)[i]) if cut is not None else False
        c.tokens = int(tokens.reshape(-1)[i]) if tokens is not None else 0
    return chunks
