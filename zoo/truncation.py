"""Inputs cut to a model's window are reported where the cut happens, as one warning per ``encode()`` call.

A family calls :func:`note` from the code that truncates (a batch at a time); :meth:`zoo.base.Embedder.
embed_decoded` gathers the notes of all its batches and warns once per kind, counted over the whole call.
Outside an ``encode()`` call a note warns at once.
"""

from __future__ import annotations

import warnings
from contextvars import ContextVar, Token

_NOTES: ContextVar[dict[tuple[type[Warning], str], int] | None] = ContextVar("zoo_truncation_notes", default=None)


class TruncationWarning(UserWarning):
    """Some text inputs were longer than the model's max length and were truncated."""


class AudioTruncationWarning(UserWarning):
    """Some audio inputs were longer than the model's window and were truncated."""


def note(category: type[Warning], what: str, count: int) -> None:
    """Record that ``count`` inputs were cut; ``what`` finishes the sentence "N of M ..."."""
    if count <= 0:
        return
    notes = _NOTES.get()
    if notes is None:
        warnings.warn(f"{count} {what}", category, stacklevel=3)
    else:
        notes[(category, what)] = notes.get((category, what), 0) + count


def begin() -> Token:
    """Start gathering notes for one call (pair with :func:`end`)."""
    return _NOTES.set({})


def end(token: Token) -> dict[tuple[type[Warning], str], int]:
    """Stop gathering; returns what was noted since :func:`begin`."""
    notes = _NOTES.get() or {}
    _NOTES.reset(token)
    return notes


class gathered:
    """``with gathered(total):`` gathers the notes of one call's work and, when it ends without an error, warns
    once per kind, counted over the call's ``total`` inputs. The warning points ``depth`` frames above the
    function holding the ``with`` (2: the user's code that called ``encode()``, which called it)."""

    def __init__(self, total: int, depth: int = 2) -> None:
        self.total, self.depth = total, depth

    def __enter__(self) -> gathered:
        self.token = begin()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        notes = end(self.token)
        if kind is None:  # frames: warn, this __exit__, the with's function, then depth more
            warn(notes, self.total, stacklevel=self.depth + 3)


def warn(notes: dict[tuple[type[Warning], str], int], total: int, stacklevel: int = 3) -> None:
    """One warning per kind of cut, counted over the call's ``total`` inputs."""
    for (category, what), count in notes.items():
        warnings.warn(f"{min(count, total)} of {total} {what}", category, stacklevel=stacklevel)
