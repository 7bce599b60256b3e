"""How decoded items are cut into forward passes: longest first, bounded by items and by tokens.

A forward pass pays for ``items × padded length`` tokens (every row is padded to the batch's longest), and its
activations grow with that product: 64 items of a 4k-token model in one pass hold 262,144 tokens. So a batch
holds at most ``batch_size`` items *and* at most ``spec.batch_tokens`` tokens counted that way; an item longer
than the budget runs alone (cutting it further would change its vector).

Counting a text's tokens means tokenizing it, and the forward pass tokenizes it again. Most batches cannot
come near the budget, so each item first gets a cheap upper bound (:func:`text_bound`), and only the items of a
batch whose bound could exceed the budget are counted exactly (:func:`budget_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .spec import Modality

if TYPE_CHECKING:
    from .base import Embedder

#: a batch ends before an item this many times shorter than its longest (and LENGTH_GAP shorter): padding a
#: short text to a long one's length costs more than a second forward pass
LENGTH_SPREAD = 2.0
LENGTH_GAP = 128  # in the units of the sort keys (characters of a text, samples of audio)
#: tokens a text's row may hold besides one per character of the text and its prompt: special tokens
#: ([CLS]/[SEP], BOS/EOS, a pair's separators) and a sentencepiece word prefix ("▁" before the first word)
SPECIAL_TOKENS = 8


def length_batches(lengths: Sequence[int], batch_size: int, spread: float = LENGTH_SPREAD,
                   gap: int = LENGTH_GAP, max_tokens: int | None = None,
                   tokens: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` batches over items sorted longest first: at most ``batch_size`` items, and a batch
    ends before an item ``spread`` times shorter than its first (and ``gap`` shorter at least), so that a
    few long items never make many short ones pad to their length (what a server's mixed batches meet).

    ``max_tokens``: a batch also ends before its items × padded length would pass it, the padded length being
    its most ``tokens`` (each item's, default ``lengths``; longest first, that is its first item's); an item
    over the budget by itself runs alone."""
    tokens = lengths if tokens is None else tokens
    out, start, padded = [], 0, 0
    for i, n in enumerate(lengths):
        first = lengths[start]
        if i > start and (i - start >= batch_size or (first > spread * n and first - n >= gap)
                          or (max_tokens is not None and (i - start + 1) * max(padded, tokens[i]) > max_tokens)):
            out.append((start, i))
            start, padded = i, 0
        padded = max(padded, tokens[i])
    if lengths:
        out.append((start, len(lengths)))
    return out


def text_bound(text: str, cap: int, extra: int = SPECIAL_TOKENS) -> int:
    """An upper bound on the tokens a tokenizer makes of ``text`` (what the text and its prompt read as one
    string), without tokenizing it: for ASCII, one per character plus ``extra``, at most ``cap`` (the most a
    text's row holds after truncation); otherwise ``cap``.

    Why one per ASCII character: every tokenizer here (WordPiece, byte-level BPE, sentencepiece, CLIP's BPE)
    turns a character into at most one token (a token covers at least one byte, and ASCII is one byte a
    character), and Unicode normalization (NFC, NFKC, NFD) leaves ASCII alone. Beyond ASCII no per-character
    bound holds for all of them: byte-level BPE makes up to 4 tokens of one character (its UTF-8 bytes), and
    normalization expands (NFC turns U+FB2C, 3 bytes, into 3 characters of 6 bytes; NFKC turns U+FDFA, 3 bytes,
    into 18 characters), so such a text is bounded only by ``cap`` and counted when that could matter."""
    return min(cap, len(text) + extra) if text.isascii() else cap


def budget_batches(lengths: Sequence[int], batch_size: int, max_tokens: int, bounds: Sequence[int] | None,
                   count: Callable[[list[int]], Sequence[int]]) -> list[tuple[int, int]]:
    """:func:`length_batches` over items sorted longest first, within ``max_tokens`` counted as items × padded
    length. ``bounds``: an upper bound of each item's tokens (None: the items are not counted, batches are
    bounded by items alone); ``count(positions)``: the exact tokens of the items at those positions (None: the
    bounds stand), asked only for the batches that ``batch_size`` alone would make and whose bound passes the
    budget (the others keep their bounds: every batch stays within the budget either way)."""
    if bounds is None:
        return length_batches(lengths, batch_size)
    sizes = list(bounds)
    loose = length_batches(lengths, batch_size)
    over = [k for a, b in loose if b - a > 1 and (b - a) * max(sizes[a:b]) > max_tokens for k in range(a, b)]
    exact = count(over) if over else None
    for k, n in zip(over, exact or ()):
        sizes[k] = min(sizes[k], n)
    return length_batches(lengths, batch_size, max_tokens=max_tokens, tokens=sizes)


def token_sizes(model: Embedder, items: list[Any], modality: Modality, prompt: str | None,
                exact: bool) -> list[int] | None:
    """What :meth:`TokenCounting._token_sizes` says by default, from the model's hooks: a text's bound
    (:func:`text_bound` over the prompt and the text, capped at ``spec.max_length``, the most a row keeps) or
    its count (``_text_tokens``, where the family counts), at least ``min_text_tokens``; a medium's
    ``_media_tokens`` (None for any item: None); an interleaved item's text parts as texts, its prompt as one
    more (with the markup a text adds: the item's own), plus its media (a part whose cost the family does not
    declare: None, the call is not counted, as a budget that counted it 0 could be passed)."""
    if modality is Modality.TEXT:
        sizes = None
        if exact:
            try:
                sizes = model._text_tokens(items, prompt)
            except NotImplementedError:  # a family that cannot count: its bounds stand
                pass
        if sizes is None:
            sizes = [text_bound((prompt or "") + t, model.spec.max_length, model.text_extra_tokens) for t in items]
        return [max(n, model.min_text_tokens) for n in sizes]
    if modality is not Modality.INTERLEAVED:
        sizes = [model._media_tokens(modality.value, x) for x in items]
        return None if any(n is None for n in sizes) else sizes
    owners = [i for i, parts in enumerate(items) for p in parts if p.is_text]
    texts = [p.value for parts in items for p in parts if p.is_text]
    media = [[model._media_tokens(p.kind, p.value) for p in parts if not p.is_text] for parts in items]
    if any(n is None for known in media for n in known):  # a part of unknown cost: the call is not counted
        return None
    counts = [sum(known) for known in media]
    for i, n in zip(owners, model._token_sizes(texts, Modality.TEXT, None, exact) if texts else []):
        counts[i] += n
    extra = model._token_sizes([prompt or ""], Modality.TEXT, None, exact)[0]
    return [n + extra for n in counts]


def media_tokens(model: Embedder, kind: str, value: Any) -> int | None:
    """What :meth:`TokenCounting._media_tokens` says by default: ``image_tokens`` an image, ceil(seconds ×
    ``audio_tokens_per_second``) a waveform, None for what the model does not declare (and for video)."""
    if kind == "image":
        return model.image_tokens
    if kind == "audio" and model.audio_tokens_per_second and model.sample_rate:
        return math.ceil(len(value) / model.sample_rate * model.audio_tokens_per_second)
    return None


class TokenCounting:
    """The hooks token budgets count items with (a base of :class:`zoo.base.Embedder`; families override what
    they know better)."""

    #: token budgets (:meth:`_token_sizes`): tokens a text's row holds besides one per character of it and its
    #: prompt (special tokens; a family that writes texts into a template adds the template's length)
    text_extra_tokens: int = SPECIAL_TOKENS
    min_text_tokens: int = 0  # a text's row is padded to at least this many (open_clip: its context length)
    image_tokens: int | None = None  # tokens one image costs a pass, where fixed (None: images are not counted)
    audio_tokens_per_second: float | None = None  # the same for audio (None: not counted)

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        """Cheap sort keys for length-sorted batching (longest first): characters of a text, samples of
        audio; other items keep their order."""
        return [len(x) if isinstance(x, (str, np.ndarray)) else 0 for x in items]

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        """Tokens the model reads for each text (prompt and special tokens included, after truncation).
        Families that embed text override it."""
        raise NotImplementedError(f"{type(self).__name__} does not count text tokens")

    def _media_tokens(self, kind: str, value: Any) -> int | None:
        """Tokens one decoded medium (``kind`` of :data:`zoo.media.PART_KINDS`) costs a forward pass, or None
        where the family does not know: :attr:`image_tokens` an image, :attr:`audio_tokens_per_second` a
        second of audio; video is not counted unless a family says."""
        return media_tokens(self, kind, value)

    def _token_sizes(self, items: list[Any], modality: Modality, prompt: str | None,
                     exact: bool = False) -> list[int] | None:
        """Tokens each decoded item costs a forward pass (its row's length before padding), for the token
        budget (:attr:`EmbedderSpec.batch_tokens`); None where this modality's items are not counted (batches
        are then bounded by items and the decode budgets of :mod:`zoo.media.budgets` alone).

        ``exact=False``: an upper bound without tokenizing (:func:`zoo.batching.text_bound`); True: texts
        counted by :meth:`_text_tokens`. A text counts with its prompt and special tokens; an image, audio or
        video item what :meth:`_media_tokens` says (None for any: the call is not counted); an interleaved
        item its text parts, its prompt and its media parts (one of unknown cost: None, the call is not counted)."""
        return token_sizes(self, items, modality, prompt, exact)

