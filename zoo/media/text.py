"""Text items: ``str`` or UTF-8 ``bytes``, cut by characters before any tokenizer sees them.

A tokenizer keeps what it truncates (~300 bytes of memory and ~1 µs of CPU a character), so a model's text is
cut to ``max tokens x TOKENIZE_CHARS_PER_TOKEN`` characters first (:func:`cut_text`). A cut text is a
:class:`CutText`: the model reads its start, its token count is what the model reads, and it counts as
truncated (:func:`zoo.families.common.note_truncated_texts`) whatever the tokenizer says of the rest.
"""

from __future__ import annotations

import codecs
from typing import Any

from ..errors import InputError
from . import budgets as B


class CutText(str):
    """A text cut by characters before tokenizing: it counts as truncated."""

    __slots__ = ()


def is_cut(text: Any) -> bool:
    """Whether ``text`` was cut by :func:`cut_text`."""
    return isinstance(text, CutText)


def marked_like(original: Any, text: str) -> str:
    """``text`` (made from ``original``, e.g. with a prompt in front) keeping ``original``'s cut mark."""
    return CutText(text) if isinstance(original, CutText) else text


def max_chars(max_tokens: int) -> int:
    """Characters kept of a text for a model that reads ``max_tokens`` tokens (never more than a server takes)."""
    return min(B.MAX_TEXT_CHARS, max(1, int(max_tokens)) * B.TOKENIZE_CHARS_PER_TOKEN)


def cut_text(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters (a :class:`CutText` when it was longer; None: no cut)."""
    if limit is None or len(text) <= limit:
        return text
    return CutText(text[:limit])


def decode_text(item: Any, index: int, limit: int | None = None) -> str:
    """A text item as ``str``, cut to ``limit`` characters when given (see :func:`cut_text`)."""
    if isinstance(item, str):
        return _unicode(cut_text(item, limit), index)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return cut_text(_utf8(memoryview(item).cast("B"), index, limit), limit)
    raise InputError(index, f"text input must be str or UTF-8 bytes, got {type(item).__name__}")


def _unicode(text: str, index: int) -> str:
    """``text`` if it is valid Unicode: a lone surrogate (``"\\ud800"``, which JSON can carry) has no UTF-8 form, so
    no tokenizer or wire could take it; refused here, naming where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(index, f"text is not valid Unicode (a lone surrogate at character {err.start})") from None
    return text


_CHUNK = 1 << 20  # bytes checked at a time past the part of a long text that is kept


def _utf8(data: memoryview, index: int, limit: int | None) -> str:
    """UTF-8 ``data`` as ``str``; past ``limit`` characters' worth of bytes (4 a character at most) the rest is
    only checked, a chunk at a time, never held as a string."""
    head = len(data) if limit is None else min(len(data), 4 * limit + 4)
    decoder, start = codecs.getincrementaldecoder("utf-8")(), 0
    try:
        text = decoder.decode(data[:head], final=head == len(data))
        for start in range(head, len(data), _CHUNK):
            decoder.decode(data[start : start + _CHUNK], final=start + _CHUNK >= len(data))
    except UnicodeDecodeError as err:
        at = err.start + (start if start >= head else 0)
        raise InputError(index, f"text is not valid UTF-8 ({err.reason} at byte {at})") from None
    return text
