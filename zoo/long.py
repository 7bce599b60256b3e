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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import truncation
from .errors import InputError, InvalidArgumentError, choices
from .media.text import CutText, is_cut
from .spec import Modality

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
MAX_OVERLAP_SHARE = 2  # overlap is at most half a window: windows never outnumber twice the text's tokens per window
MAX_CHUNKS = 4096  # late chunking: chunks one text may give (raise chunk_tokens for more text)
MAX_TOKEN_IDS = 1 << 16  # ids in one list of detokenize()
MAX_TOKEN_ID = (1 << 31) - 1  # ids travel as 32-bit integers

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


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_chunking(chunk_tokens: Any, spans: Any, overlap: Any, count: int
                   ) -> tuple[int | None, list[list[Span]] | None, int | None]:
    """The checked arguments of late chunking for ``count`` texts: exactly one of ``chunk_tokens`` (a positive
    integer) and ``spans`` (one list per text of ``(start, end)`` integer pairs, ``0 <= start < end``, at most
    :data:`MAX_CHUNKS` a text; whether they fit the text is checked with it), and ``overlap`` (None or >= 0)."""
    if (chunk_tokens is None) == (spans is None):
        raise InvalidArgumentError("pass exactly one of chunk_tokens and spans", "chunk_tokens")
    chunk_tokens, overlap = check_count(chunk_tokens, "chunk_tokens", 1), check_count(overlap, "overlap", 0)
    if spans is None:
        return chunk_tokens, None, overlap
    if isinstance(spans, (str, bytes)) or not isinstance(spans, (list, tuple)) or len(spans) != count:
        raise InvalidArgumentError(f"spans must hold one list of [start, end] pairs per text ({count})", "spans")
    out = []
    for i, per in enumerate(spans):
        if isinstance(per, (str, bytes)) or not isinstance(per, (list, tuple)) or len(per) > MAX_CHUNKS:
            raise InvalidArgumentError(f"spans[{i}] must be a list of at most {MAX_CHUNKS} [start, end] pairs",
                                       "spans")
        for s in per:
            if (not isinstance(s, (list, tuple)) or len(s) != 2 or not all(_is_int(x) for x in s)
                    or not 0 <= s[0] < s[1]):
                raise InvalidArgumentError(f"spans[{i}] holds {s!r}: a span is [start, end] with integers "
                                           "0 <= start < end", "spans")
        out.append([(int(a), int(b)) for a, b in per])
    return chunk_tokens, out, overlap


def check_token_ids(ids: Any, vocab: int | None = None) -> list[list[int]]:
    """Lists of token ids as :meth:`detokenize` takes them: each a list of at most :data:`MAX_TOKEN_IDS`
    integers in ``[0, vocab)`` (``[0, 2**31)`` without ``vocab``); an :class:`InputError` names the bad list."""
    from .front import check_items

    check_items(ids)
    top = MAX_TOKEN_ID + 1 if vocab is None else vocab
    out = []
    for i, row in enumerate(ids):
        if (isinstance(row, (str, bytes)) or not isinstance(row, (list, tuple)) or len(row) > MAX_TOKEN_IDS
                or not all(_is_int(t) and 0 <= t < top for t in row)):
            raise InputError(i, f"token ids must be a list of at most {MAX_TOKEN_IDS} integers in [0, {top})")
        out.append([int(t) for t in row])
    return out


def check_count(value: Any, name: str, least: int) -> int | None:
    """None, or an integer of at least ``least``."""
    if value is None:
        return None
    if not _is_int(value) or value < least:
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
    rows), the character ``spans`` of its ``k`` chunks, whether the text was ``truncated`` (cut at
    :data:`MAX_LONG_CHARS` characters) and the ``tokens`` read (the whole text's, prompt and special tokens
    included: what usage counts)."""

    vectors: Any
    spans: list[Span] = field(default_factory=list)
    truncated: bool = False
    tokens: int = 0


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
    ``truncate="end"``; long modes read up to :data:`MAX_LONG_CHARS`; ``start`` and ``none`` up to a server's
    ``MAX_TEXT_CHARS`` (:func:`fit` cuts it, from the end it needs)."""
    from .media.budgets import MAX_TEXT_CHARS

    if opts is None or (opts.truncate == "end" and not opts.long):
        return model.max_text_chars
    return MAX_LONG_CHARS if opts.long else MAX_TEXT_CHARS


def _over(model: Embedder, texts: list[str], prompt: str | None, limit: int) -> list[int]:
    """Positions of the texts that may hold more than ``limit`` tokens (cheap bound, see
    :func:`zoo.batching.text_bound`): only those are tokenized to tell."""
    from .batching import text_bound

    head = len(prompt or "")
    return [i for i, t in enumerate(texts) if is_cut(t) or text_bound("x" * head + t, 1 << 30,
                                                                      model.text_extra_tokens) > limit]


VIEW_GROUP = 16  # texts tokenized at once with offsets (~300 bytes a character each): bounds what is held


def views(model: Embedder, texts: list[str], prompt: str | None) -> Iterator[Tokens]:
    """Each text's untruncated tokens (:meth:`zoo.tokens.TokenizerTools._token_views`), tokenized
    :data:`VIEW_GROUP` texts at a time, so a call's long texts are never all held tokenized at once."""
    for start in range(0, len(texts), VIEW_GROUP):
        yield from model._token_views(texts[start:start + VIEW_GROUP], prompt)


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
    for i, text, view in zip(check, head, views(model, head, opts.prompt)):
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
    starts = word_starts(view, positions, text)
    drop = max(0, view.count - limit)  # 0: a text cut by characters whose kept tail fits
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
    size = max(1, size)
    overlap = min(overlap, size // MAX_OVERLAP_SHARE)
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


def word_starts(view: Tokens, positions: list[int], text: str) -> list[bool]:
    """Whether each text token (``positions`` in ``view``, a tokenization of ``text``) begins a word: it is the
    first, or whitespace comes right before it or opens it (byte-level BPE tokens carry their leading space)."""
    offsets = [view.offsets[p] for p in positions]
    return [j == 0 or (s > 0 and text[s - 1].isspace()) or text[s:s + 1].isspace()
            for j, (s, _) in enumerate(offsets)]  # type: ignore[misc]


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
    # with chunk_tokens every text is split by it, whatever its length; else only those over the window
    check = list(range(len(texts))) if opts.chunk_tokens else _over(model, texts, opts.prompt, limit)
    for i, view in zip(check, views(model, [texts[i] for i in check], opts.prompt)):
        if view.count <= limit and opts.chunk_tokens is None:
            continue
        room = capacity(view, limit)
        size = min(opts.chunk_tokens or room, room)
        positions = view.text_positions()
        if len(positions) <= size:
            continue
        over = size // OVERLAP_SHARE if opts.overlap is None else opts.overlap
        out[i] = [(texts[i][slice(*_span(view, positions, a, b))], b - a)
                  for a, b in windows(len(positions), size, over, word_starts(view, positions, texts[i]))]
    return out


def chunked_raw(model: Embedder, texts: list[str], opts: EncodeOptions, kind: str, batch_size: int) -> list[Any]:
    """Raw dense outputs of ``long="chunk"``: per text the token-weighted mean of its windows' raw vectors."""
    from . import kinds

    if not kinds.get(kind).poolable:
        raise InvalidArgumentError(f"long='chunk' averages one vector an item; {kind!r} output has no such vector",
                                   "long")
    plan = chunk_windows(model, texts, opts)
    pieces = [w for per in plan for w, _ in per]
    raw = model._embed_raw(pieces, Modality.TEXT, opts, kind, batch_size)
    out, at = [], 0
    for per in plan:
        weights = np.array([n for _, n in per], np.float64)
        rows = np.stack(raw[at:at + len(per)]).astype(np.float64)
        out.append((weights[:, None] * rows).sum(0) / weights.sum())
        at += len(per)
    return [np.asarray(r, np.float32) for r in out]

