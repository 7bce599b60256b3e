"""Late chunking (*Late Chunking: Contextual Chunk Embeddings Using Long-Context Embedding Models*): each chunk of a
text pooled from the token states of one forward pass over the whole text, so every chunk vector carries its
context.

A text within the model's window is read in one pass. A longer one is read in macro-windows of as many text tokens
as fit, neighbours sharing ``overlap`` tokens (default a quarter of a window, at most half), each beginning and
ending at a word (:func:`zoo.long.windows`); each chunk is pooled from the window that holds it whole with the most
context on both sides, and a chunk no window holds whole takes each of its tokens from the window where that token
is most central. Chunks and windows are character spans, so a window's own tokenization finds a chunk's tokens by
their offsets.

Memory stays bounded: the windows of all texts run in batches of ``batch_size``, and after each batch only the
states of the chunks' own tokens are kept; a text may give at most :data:`zoo.long.MAX_CHUNKS` chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .long import (
    MAX_CHUNKS,
    MAX_OVERLAP_SHARE,
    OVERLAP_SHARE,
    Chunks,
    Span,
    Tokens,
    _span,
    capacity,
    views,
    windows,
    word_starts,
)
from .media.text import is_cut
from .spec import Modality

if TYPE_CHECKING:
    from .base import Embedder
    from .front import EncodeOptions


def chunk_spans(view: Tokens, text: str, chunk_tokens: int | None, spans: list[Span] | None, index: int) -> list[Span]:
    """The character spans of one text's chunks: consecutive runs of ``chunk_tokens`` text tokens, or the
    caller's ``spans`` (each within the text); at most :data:`MAX_CHUNKS`."""
    if spans is not None:
        bad = next(((s, e) for s, e in spans if e > len(text)), None)
        if bad is not None:
            raise InputError(index, f"span {list(bad)} ends past the text's {len(text)} characters")
        return list(spans)
    positions = view.text_positions()
    size = int(chunk_tokens or 1)
    if -(-len(positions) // size) > MAX_CHUNKS:
        raise InputError(index, f"text would give {-(-len(positions) // size)} chunks of {size} tokens; at most "
                                f"{MAX_CHUNKS}: raise chunk_tokens")
    return [_span(view, positions, a, b) for a, b in windows(len(positions), size, 0) if b > a]


def _pool(states: np.ndarray, mode: str) -> np.ndarray:
    if mode == "mean":
        return states.mean(0)
    if mode == "max":
        return states.max(0)
    return states[-1]  # last


def _holding(wins: list[Span], s: int, e: int) -> int | None:
    """The window that holds ``[s, e)`` whole with the most context on both sides, if one does."""
    holding = [k for k, (ws, we) in enumerate(wins) if ws <= s and e <= we]
    return max(holding, key=lambda k: min(s - wins[k][0], wins[k][1] - e)) if holding else None


def _owner(wins: list[Span], c: int) -> int:
    """The window where character ``c`` is most central."""
    return max((k for k, (ws, we) in enumerate(wins) if ws <= c < we),
               key=lambda k: min(c - wins[k][0], wins[k][1] - c), default=0)


@dataclass
class _Plan:
    """One text's chunks, the windows read for it and, per chunk, the window it is pooled from (None: each token
    from its own window)."""

    chunks: list[Span]
    wins: list[Span]
    whole: bool
    source: list[int | None]
    tokens: int
    cut: bool

    def takers(self, k: int) -> list[int]:
        """The chunks that take states from window ``k``."""
        ws, we = self.wins[k]
        return [c for c, (s, e) in enumerate(self.chunks)
                if self.source[c] == k or (self.source[c] is None and s < we and e > ws)]


def _plan(model: Embedder, text: str, view: Tokens, chunks: list[Span], limit: int, overlap: int | None,
          index: int) -> _Plan:
    positions = view.text_positions()
    if not positions:
        raise InputError(index, "text holds no token to chunk")
    if view.count <= limit:
        return _Plan(chunks, [(0, len(text))], True, [0] * len(chunks), view.count, is_cut(text))
    room = capacity(view, limit)
    over = room // OVERLAP_SHARE if overlap is None else min(overlap, room // MAX_OVERLAP_SHARE)
    wins = [_span(view, positions, a, b) for a, b in windows(len(positions), room, over,
                                                               word_starts(view, positions, text))]
    return _Plan(chunks, wins, False, [_holding(wins, s, e) for s, e in chunks], view.count, is_cut(text))


def late_chunks(model: Embedder, texts: list[str], opts: EncodeOptions, *, chunk_tokens: int | None,
                spans: list[list[Span]] | None, overlap: int | None, batch_size: int) -> list[Chunks]:
    """Late chunking (module docstring) of decoded ``texts``; vectors post-processed by ``opts``."""
    mode = str(model.late_pooling)
    limit = int(model.text_limit(opts.prompt))  # type: ignore[arg-type]
    plans = [_plan(model, text, view, chunk_spans(view, text, chunk_tokens, None if spans is None else spans[i], i),
                   limit, overlap, i)
             for i, (text, view) in enumerate(zip(texts, views(model, texts, opts.prompt)))]
    rows: list[list[list[np.ndarray]]] = [[[] for _ in p.chunks] for p in plans]
    reads = [(i, k) for i, p in enumerate(plans) for k in range(len(p.wins))]
    for a in range(0, len(reads), batch_size):
        part = reads[a:a + batch_size]
        read = [texts[i] if plans[i].whole else texts[i][slice(*plans[i].wins[k])] for i, k in part]
        for (i, k), (hidden, offsets) in zip(part, model._token_states(read, opts.prompt)):
            plan, shift = plans[i], plans[i].wins[k][0]
            known = [j for j, o in enumerate(offsets) if o is not None]
            starts = np.array([offsets[j][0] + shift for j in known], np.int64)  # type: ignore[index]
            ends = np.array([offsets[j][1] + shift for j in known], np.int64)  # type: ignore[index]
            for c in plan.takers(k):
                s, e = plan.chunks[c]
                sel = [known[j] for j in np.flatnonzero((starts < e) & (ends > s))]
                if plan.source[c] is None:
                    sel = [j for j in sel if _owner(plan.wins, offsets[j][0] + shift) == k]  # type: ignore[index]
                if sel:
                    rows[i][c].append(np.asarray(hidden[sel], np.float32).copy())  # the window's states go
    pooled = []
    for i, (plan, per) in enumerate(zip(plans, rows)):
        for (s, e), got in zip(plan.chunks, per):
            if not got:
                raise InputError(i, f"chunk span [{s}, {e}) holds no token")
            pooled.append(_pool(np.concatenate(got), mode))
    vectors: Any = model._finish(pooled, Modality.TEXT, opts, "dense") if pooled else None
    out, at = [], 0
    for plan in plans:
        n = len(plan.chunks)
        got = vectors[at:at + n] if vectors is not None else np.zeros((0, model.spec.dim), np.float32)
        out.append(Chunks(got, list(plan.chunks), truncated=plan.cut, tokens=plan.tokens))
        at += n
    return out
