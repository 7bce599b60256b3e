"""A wall-clock deadline per item, checked in every decoding loop (see ``MAX_DECODE_SECONDS``)."""

from __future__ import annotations

import time

from ..errors import InputError
from . import budgets as B


class Deadline:
    """When decoding item ``index`` must be done; :meth:`check` raises an :class:`InputError` past it."""

    def __init__(self, index: int, seconds: float | None = None) -> None:
        self.index = index
        self.seconds = B.MAX_DECODE_SECONDS if seconds is None else seconds
        self.end = time.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left (never below a millisecond: FFmpeg reads 0 as "no timeout")."""
        return max(0.001, self.end - time.monotonic())

    def check(self) -> None:
        """Raise once the deadline has passed."""
        if time.monotonic() > self.end:
            raise InputError(self.index, f"decoding took longer than {self.seconds:g} s (the limit per item)")


def deadline_for(index: int, deadline: Deadline | None) -> Deadline:
    """``deadline`` when a caller started one for the whole item (an interleaved part), else a new one."""
    return deadline if deadline is not None else Deadline(index)
