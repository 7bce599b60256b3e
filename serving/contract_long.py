"""The wire forms of the answers to the other tasks than ``embed`` (:data:`serving.contract.TASK`; tensor names
and shapes in :mod:`serving.contract`'s table): each written once here, to the tensors by the backend
(:mod:`serving.triton_tasks`) and back by the clients (:mod:`serving.client_long`)."""

from __future__ import annotations

import json

import numpy as np

from zoo.errors import InputError
from zoo.long import Chunks, Tokens, chunks_from_arrays, chunks_to_arrays

from .contract import (
    LENGTHS,
    NO_OFFSET,
    OUTPUT,
    SPANS,
    TOKEN_IDS,
    TOKEN_OFFSETS,
    TOKEN_STRINGS,
    TRUNCATED,
    from_wire,
    to_wire,
)


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
    """One detokenize element back to its ids; an :class:`InputError` naming ``index`` when it is none."""
    try:
        ids = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InputError(index, "a detokenize element must be UTF-8 JSON: a list of integer token ids")
    return ids


def chunks_to_wire(chunks: list[Chunks], precision: str) -> dict[str, np.ndarray]:
    """A late_chunks request's answer from its :class:`zoo.long.Chunks`, one per item."""
    vectors, lengths, spans = chunks_to_arrays(chunks)
    return {OUTPUT: to_wire(np.asarray(vectors), precision), LENGTHS: np.asarray(lengths, np.int32).reshape(-1, 1),
            SPANS: np.asarray(spans, np.int32).reshape(-1, 2)}


def chunks_from_wire(tensors: dict[str, np.ndarray], precision: str) -> list[Chunks]:
    """Undo :func:`chunks_to_wire`: the :class:`zoo.long.Chunks` of each item."""
    return chunks_from_arrays(from_wire(tensors[OUTPUT], precision), tensors[LENGTHS].reshape(-1),
                              tensors[SPANS].reshape(-1, 2))
