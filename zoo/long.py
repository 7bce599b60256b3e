"""Long texts on purpose: truncation the caller controls and sees, the model's tokenizer as a service, chunked
embedding and late chunking.

A model reads at most ``limit`` tokens of a text (its window, prompt and special tokens included). A longer
text is, as the call's ``truncate`` says:

- ``"end"`` (the default): cut at the end, the model reads its first tokens;
- ``"start"``: cut at the start, the model reads its last tokens (the prompt and special tokens stay): the text
  is replaced by its shortest suffix, starting at a token boundary, that fits;
- ``"none"``: refused, an :class:`zoo.errors.InputError` naming the item, its token count and the limit
  (:func:`too_long_message`).

Every call reports which items were cut (:attr:`zoo.base.Encoded.truncated`, the servers' ``TRUNCATED``).

``long="chunk"`` embeds a longer text as windows of ``chunk_tokens`` text tokens (default: as many as fit),
neighbours sharing ``overlap`` tokens, and returns the mean of the windows' raw vectors weighted by their
tokens, post-processed like any row. Late chunking (:func:`late_chunks`, *Late Chunking: Contextual Chunk
Embeddings Using Long-Context Embedding Models*) pools each chunk from the token states of one pass over the
whole text; a text longer than the window is read in overlapping macro-windows, and each chunk is pooled from
the window that holds it with the most context on both sides (a chunk no window holds whole takes each of its
tokens from the window where that token is most central).

All of this works in characters: a chunk or a window is a character span of the text, cut at token
boundaries, and its tokens are found again by their character offsets in whatever tokenization reads them.
Families expose their tokenizer through :meth:`zoo.tokens.TokenizerTools._token_views` (and, for late chunking, the
token states through :meth:`zoo.tokens.TokenizerTools._token_states`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import truncation
from .errors import InputError, InvalidArgumentError, choices
from .media.text import CutText, is_cut

if TYPE_CHECKING:
    from .base import Embedder
    from .front import EncodeOptions

TRUNCATE = ("end", "start", "none")
LONG = ("chunk",)
#: characters of one text the long modes (chunking, late chunking, tokenize) read at most; past it the text is
#: cut at the end and counts as truncated. Tokenizing keeps ~300 bytes a character (offsets included), so this
#: bounds one text at ~80 MB (~60k tokens of English)
MAX_LONG_CHARS = 1 << 18
OVERLAP_SHARE = 4  # default overlap: a quarter of a window (chunked embedding and late chunking's macro-windows)

Span = tuple[int, int]


def check_truncate(value: Any) -> str:
    """``value`` as one of :data:`TRUNCATE` (Cohere's upper-case ``END``/``START``/``NONE`` accepted)."""
    if isinstance(value, str) and value.lower() in TRUNCATE:
        return value.lower()
    raise InvalidArgumentError(f"truncate must be one of {choices(TRUNCATE)}, got {value!r}", "truncate")


def check_long(long: Any, chunk_tokens: Any, overlap: Any) -> tuple[str | None, int | None, int | None]:
    """The checked ``long``, ``chunk_tokens`` and ``overlap`` of a call."""
    if long is not None and long not in LONG:
        raise InvalidArgumentError(f"long must be one of {choices(LONG)} or left out, got {long!r}", "long")
    for name, value in (("chunk_tokens", chunk_tokens), ("overlap", overlap)):
        if value is not None and long is None:
            raise InvalidArgumentError(f"{name} applies with long='chunk' only", name)
    return long, check_count(chunk_tokens, "chunk_tokens", 1), check_count(overlap, "overlap", 0)


def check_count(value: Any, name: str, least: int) -> int | None:
    """None, or an integer of at least ``least``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InvalidArgumentError(f"{name} must be an integer of at least {least}, got {value!r}", name)
    return int(value)


_TOO_LONG = re.compile(r"text has (at least )?(\d+) tokens .* reads at most (\d+)")


def too_long_message(count: int, limit: int, at_least: bool = False) -> str:
    """The error of a text over the window with ``truncate="none"`` (:func:`too_long_counts` reads it back)."""
    return (f"text has {'at least ' if at_least else ''}{count} tokens (prompt and special tokens included); the "
            f"model reads at most {limit}: shorten it, or set truncate to 'end' or 'start'")


def too_long_counts(message: str) -> tuple[int, int] | None:
    """``(count, limit)`` of a :func:`too_long_message` (within a longer message too), else None."""
    found = _TOO_LONG.search(message)
    return (int(found.group(2)), int(found.group(3))) if found else None


@dataclass
class Tokens:
    """One text as its model reads it: ``ids`` (prompt and special tokens included, after truncation), the
    tokenizer's ``tokens``, each token's character span in the input text (None for the prompt's and special
    tokens) and whether the text was cut to fit."""

    ids: list[int]
    tokens: list[str]
    offsets: list[Span | None]
    truncated: bool = False

    @property
    def count(self) -> int:
        """Tokens the model reads."""
        return len(self.ids)

    def text_positions(self) -> list[int]:
        """Positions of the tokens that come from the text (not the prompt's nor special ones)."""
        return [i for i, o in enumerate(self.offsets) if o is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ids, tokens, offsets (``[start, end]`` or null), truncated, count."""
        return {"ids": list(self.ids), "tokens": list(self.tokens),
                "offsets": [None if o is None else [int(o[0]), int(o[1])] for o in self.offsets],
                "truncated": bool(self.truncated), "count": self.count}


@dataclass
class Chunks:
    """Late chunking's result for one text: ``vectors`` ``[k, d]`` (post-processed like ``encode()``'s dense
    rows) and the character ``spans`` of its ``k`` chunks."""

    vectors: Any
    spans: list[Span] = field(default_factory=list)


def chunks_to_arrays(chunks: list[Chunks]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texts' chunks as three arrays: every vector ``[total, d]``, chunks per text ``[n]`` and spans
    ``[total, 2]`` int32 (what the servers send)."""
    vectors = np.concatenate([c.vectors for c in chunks]) if chunks else np.zeros((0, 0), np.float32)
    lengths = np.array([len(c.spans) for c in chunks], np.int32)
    spans = np.array([s for c in chunks for s in c.spans], np.int32).reshape(-1, 2)
    return vectors, lengths, spans


def chunks_from_arrays(vectors: np.ndarray, lengths: Any, spans: Any) -> list[Chunks]:
    """Undo :func:`chunks_to_arrays`."""
    ends = np.cumsum([0] + [int(n) for n in np.asarray(lengths).reshape(-1)])
    spans = np.asarray(spans).reshape(-1, 2)
    return [Chunks(vectors[a:b], [(int(s), int(e)) for s, e in spans[a:b]]) for a, b in zip(ends[:-1], ends[1:])]


# ---- fitting texts to the window ------------------------------------------------------------------------------
@dataclass
class Fitted:
    """Texts fitted to a model's window: the ``texts`` the model reads (a ``truncate="start"`` text replaced by
    the suffix it keeps), whether each was cut, and the errors of texts refused (``truncate="none"``) by their
    position in the list (each error names the item's index the caller gave)."""

    texts: list[str]
    truncated: list[bool]
    errors: dict[int, InputError]


def text_chars(model: Embedder, opts: EncodeOptions | None) -> int | None:
    """Characters of a text decoding keeps (see :mod:`zoo.media.text`): the model's own cut for
    ``truncate="end"``; long modes read up to :data:`MAX_LONG_CHARS`; ``start`` and ``none`` the whole text
    (:func:`fit` cuts it, from the end it needs)."""
    if opts is None or (opts.truncate == "end" and not opts.long):
        return model.max_text_chars
    return MAX_LONG_CHARS if opts.long else None


def _over(model: Embedder, texts: list[str], prompt: str | None, limit: int) -> list[int]:
    """Positions of the texts that may hold more than ``limit`` tokens (cheap bound, see
    :func:`zoo.batching.text_bound`): only those are tokenized to tell."""
    from .batching import text_bound

    head = len(prompt or "")
    return [i for i, t in enumerate(texts) if is_cut(t) or text_bound("x" * head + t, 1 << 30,
                                                                      model.text_extra_tokens) > limit]


def fit(model: Embedder, texts: list[str], opts: EncodeOptions, indices: list[int] | None = None,
        report: bool = True) -> Fitted:
    """Fit decoded ``texts`` to the model's window as ``opts.truncate`` says (module docstring); errors name
    ``indices[k]`` (default ``k``). Long modes (``opts.long``) fit nothing: they read the whole text.
    ``report=False``: with ``truncate="end"`` nothing needs fitting, and the texts are not tokenized to tell
    which were cut (``truncated`` then says only which were cut by characters)."""
    texts = list(texts)
    cut = [False] * len(texts)
    errors: dict[int, InputError] = {}
    if opts.long or (opts.truncate == "end" and not report):
        for i, t in enumerate(texts):
            cut[i] = is_cut(t)
        return Fitted(texts, cut, errors)
    limit = model.text_limit(opts.prompt)
    if limit is None:  # the family cannot tell: "end" only, each text flagged when it filled the window
        if opts.truncate != "end":
            raise InvalidArgumentError(f"model {model.spec.name!r} does not expose its tokenizer; "
                                       f"truncate={opts.truncate!r} needs a model whose family does", "truncate")
        return Fitted(texts, model._filled_window(texts, opts.prompt), errors)
    check = _over(model, texts, opts.prompt, limit)
    if not check:
        return Fitted(texts, cut, errors)
    chars = model.max_text_chars
    head = [t if opts.truncate == "end" or len(t) <= chars else
            CutText(t[:chars] if opts.truncate == "none" else t[-chars:]) for t in (texts[i] for i in check)]
    views = model._token_views(head, opts.prompt)
    for i, text, view in zip(check, head, views):
        over = view.count > limit or is_cut(text)
        cut[i] = over
        if not over or opts.truncate == "end":
            continue
        if opts.truncate == "none":
            at = i if indices is None else indices[i]
            errors[i] = InputError(at, too_long_message(max(view.count, limit + 1), limit, at_least=is_cut(text)))
        else:
            texts[i] = _keep_end(model, str(text), view, limit, opts.prompt)
    if opts.truncate == "start":
        truncation.note(truncation.TruncationWarning, f"inputs exceed {limit} tokens and were cut at the start",
                        sum(cut))
    return Fitted(texts, cut, errors)


def _keep_end(model: Embedder, text: str, view: Tokens, limit: int, prompt: str | None) -> str:
    """The longest suffix of ``text`` starting at a word (see :func:`word_starts`) whose tokenization fits
    ``limit``: a suffix cut inside a word would read as other tokens than the text held there. A text whose
    last word alone is over the window is cut at a token boundary instead."""
    positions = view.text_positions()
    starts = word_starts(view, positions)
    drop = view.count - limit
    while drop < len(positions):
        at = next((j for j in range(drop, len(positions)) if starts[j]), drop)
        kept = text[view.offsets[positions[at]][0]:]  # type: ignore[index]
        if model._token_views([kept], prompt)[0].count <= limit:
            return kept
        drop = at + 1  # the suffix tokenized into more tokens than it held inside the text (rare): one more
    return ""


# ---- chunked embedding -----------------------------------------------------------------------------------------
def windows(n: int, size: int, overlap: int, starts: list[bool] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` windows of at most ``size`` over ``n`` positions, neighbours sharing about ``overlap``.

    ``starts``: whether each position begins a word; a window then ends before a word begins and starts where
    one does, wherever the window holds such a place, so that its text tokenizes on its own into the tokens it
    held inside the whole text (a word cut in two reads as other, more tokens)."""
    size, overlap = max(1, size), min(overlap, max(0, size - 1))
    out, start = [], 0
    while True:
        end = min(start + size, n)
        if end < n and starts is not None:
            end = next((j for j in range(end, start, -1) if starts[j]), end)
        out.append((start, end))
        if end >= n:
            return out
        nxt = max(end - overlap, start + 1)
        if starts is not None:
            nxt = next((j for j in range(nxt, end + 1) if j == end or starts[j]), nxt)
        start = nxt


def word_starts(view: Tokens, positions: list[int]) -> list[bool]:
    """Whether each text token (``positions`` in ``view``) begins a word: something lies between it and the
    token before (whitespace), or it is the first."""
    offsets = [view.offsets[p] for p in positions]
    return [j == 0 or offsets[j][0] > offsets[j - 1][1] for j in range(len(offsets))]  # type: ignore[index]


def _span(view: Tokens, positions: list[int], a: int, b: int) -> Span:
    """Characters from the start of text token ``a`` to the end of token ``b - 1`` (of ``positions``)."""
    return view.offsets[positions[a]][0], view.offsets[positions[b - 1]][1]  # type: ignore[index]


def capacity(view: Tokens, limit: int) -> int:
    """Text tokens one window of the model holds besides the prompt and special tokens (``view``: a text's
    untruncated tokens)."""
    return max(1, limit - (view.count - len(view.text_positions())))


def chunk_windows(model: Embedder, texts: list[str], opts: EncodeOptions) -> list[list[tuple[str, int]]]:
    """Per text, the ``(window text, weight)`` pairs ``long="chunk"`` embeds: the text itself when it fits,
    else windows of ``opts.chunk_tokens`` text tokens (at most what fits) sharing ``opts.overlap``."""
    limit = model.text_limit(opts.prompt)
    if limit is None:
        raise InvalidArgumentError(f"model {model.spec.name!r} does not expose its tokenizer; long='chunk' "
                                   "needs a text model whose family does", "long")
    out: list[list[tuple[str, int]]] = [[(t, 1)] for t in texts]
    check = _over(model, texts, opts.prompt, limit)
    for i, view in zip(check, model._token_views([texts[i] for i in check], opts.prompt) if check else []):
        if view.count <= limit and opts.chunk_tokens is None:
            continue
        room = capacity(view, limit)
        size = min(opts.chunk_tokens or room, room)
        positions = view.text_positions()
        if len(positions) <= size:
            continue
        over = size // OVERLAP_SHARE if opts.overlap is None else opts.overlap
        out[i] = [(texts[i][slice(*_span(view, positions, a, b))], b - a)
                  for a, b in windows(len(positions), size, over, word_starts(view, positions))]
    return out


def chunked_raw(model: Embedder, texts: list[str], opts: EncodeOptions, kind: str, batch_size: int) -> list[Any]:
    """Raw dense outputs of ``long="chunk"``: per text the token-weighted mean of its windows' raw vectors."""
    from . import kinds

    if not kinds.get(kind).poolable:
        raise InvalidArgumentError(f"long='chunk' averages one vector an item; {kind!r} output has no such vector",
                                   "long")
    plan = chunk_windows(model, texts, opts)
    pieces = [w for per in plan for w, _ in per]
    raw = model._embed_raw(pieces, _text_modality(), opts, kind, batch_size)
    out, at = [], 0
    for per in plan:
        weights = np.array([n for _, n in per], np.float64)
        rows = np.stack(raw[at:at + len(per)]).astype(np.float64)
        out.append((weights[:, None] * rows).sum(0) / weights.sum())
        at += len(per)
    return [np.asarray(r, np.float32) for r in out]


def _text_modality() -> Any:
    from .spec import Modality

    return Modality.TEXT


# ---- late chunking ---------------------------------------------------------------------------------------------
def chunk_spans(view: Tokens, text: str, chunk_tokens: int | None, spans: list[Span] | None, index: int) -> list[Span]:
    """The character spans of one text's chunks: consecutive runs of ``chunk_tokens`` text tokens, or the
    caller's ``spans`` (checked)."""
    if spans is None:
        positions = view.text_positions()
        return [_span(view, positions, a, b) for a, b in windows(len(positions), int(chunk_tokens or 1), 0)
                if b > a]
    out = []
    for s in spans:
        if (not isinstance(s, (tuple, list)) or len(s) != 2 or not all(isinstance(x, (int, np.integer)) for x in s)
                or not 0 <= s[0] < s[1] <= len(text)):
            raise InputError(index, f"span {s!r} is not [start, end) with 0 <= start < end <= {len(text)}")
        out.append((int(s[0]), int(s[1])))
    return out


def _inside(offsets: list[Span | None], span: Span, shift: int = 0) -> list[int]:
    """Positions of the tokens (of a window starting at character ``shift``) that overlap ``span``."""
    s, e = span
    return [j for j, o in enumerate(offsets) if o is not None and o[0] + shift < e and o[1] + shift > s]


def _pool(states: np.ndarray, mode: str) -> np.ndarray:
    if mode == "mean":
        return states.mean(0)
    if mode == "max":
        return states.max(0)
    return states[-1]  # last


def late_chunks(model: Embedder, texts: list[str], opts: EncodeOptions, *, chunk_tokens: int | None,
                spans: list[list[Span]] | None, overlap: int | None, batch_size: int) -> list[Chunks]:
    """Late chunking (module docstring) of decoded ``texts``; vectors post-processed by ``opts``."""
    mode = model.late_pooling
    limit = model.text_limit(opts.prompt)
    views = model._token_views(texts, opts.prompt)
    plans = []  # per text: its chunks' spans and the windows (character spans) read for it
    for i, (text, view) in enumerate(zip(texts, views)):
        chunks = chunk_spans(view, text, chunk_tokens, None if spans is None else spans[i], i)
        positions = view.text_positions()
        if not positions:
            raise InputError(i, "text holds no token to chunk")
        if view.count <= limit:
            plans.append((chunks, [(0, len(text))], True))
            continue
        room = capacity(view, limit)
        over = room // OVERLAP_SHARE if overlap is None else min(overlap, room - 1)
        wins = windows(len(positions), room, over, word_starts(view, positions))
        plans.append((chunks, [_span(view, positions, a, b) for a, b in wins], False))
    # one pass over every window of every text, batched
    reads = [(i, w) for i, (_, wins, whole) in enumerate(plans) for w in wins]
    read_texts = [texts[i] if plans[i][2] else texts[i][w[0]:w[1]] for i, w in reads]
    states: list[tuple[np.ndarray, list[Span | None]]] = []
    order = np.argsort([-len(t) for t in read_texts], kind="stable")
    got: list[Any] = [None] * len(read_texts)
    for a in range(0, len(order), batch_size):
        idx = order[a:a + batch_size]
        for k, one in zip(idx, model._token_states([read_texts[k] for k in idx], opts.prompt)):
            got[k] = one
    states = got
    rows, out_spans = [], []
    at = 0
    for i, (chunks, wins, _) in enumerate(plans):
        mine = states[at:at + len(wins)]
        at += len(wins)
        for span in chunks:
            rows.append(_pool(_gather(mine, wins, span, i), mode))
        out_spans.append(chunks)
    vectors = model._finish(rows, _text_modality(), opts, "dense") if rows else np.zeros((0, model.spec.dim))
    result, at = [], 0
    for chunks in out_spans:
        result.append(Chunks(vectors[at:at + len(chunks)], list(chunks)))
        at += len(chunks)
    return result


def _gather(windows_read: list[tuple[np.ndarray, list[Span | None]]], wins: list[Span], span: Span,
            index: int) -> np.ndarray:
    """The token states of chunk ``span``: from the window holding it whole with the most context on both
    sides, else each token from the window where it is most central."""
    s, e = span
    holding = [k for k, (ws, we) in enumerate(wins) if ws <= s and e <= we]
    if holding:
        k = max(holding, key=lambda k: min(s - wins[k][0], wins[k][1] - e))
        hidden, offsets = windows_read[k]
        found = _inside(offsets, span, wins[k][0])
        if found:
            return hidden[found]
    picked: dict[Span, np.ndarray] = {}
    for k, (hidden, offsets) in enumerate(windows_read):
        ws, we = wins[k]
        for j in _inside(offsets, span, ws):
            o = offsets[j]
            tok = (o[0] + ws, o[1] + ws)  # type: ignore[index]
            centre = min(tok[0] - ws, we - tok[1])
            if tok not in picked or centre > picked[tok][0]:
                picked[tok] = (centre, hidden[j])  # type: ignore[assignment]
    if not picked:
        raise InputError(index, f"chunk span [{s}, {e}) holds no token")
    return np.stack([picked[t][1] for t in sorted(picked)])  # type: ignore[index]
