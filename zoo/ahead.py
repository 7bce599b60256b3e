"""The next batch's inputs prepared on a thread while the current batch runs: tokenization off the critical path.

On a GPU the model's work is the device's and the CPU mostly waits for it, so :meth:`zoo.base.Embedder.
_embed_raw` asks the family (:meth:`~zoo.base.Embedder.prepare_ahead`) to start preparing batch ``i + 1``
before it runs batch ``i``; the family's forward then takes what was prepared (:func:`take`) instead of
tokenizing in line. Prepared inputs are keyed by what they were made from (the prompt and the texts), so a
forward that asks for anything else prepares it itself, and they live in the one ``encode()`` call that
asked for them (a context variable: calls from other threads never see them). The thread only tokenizes into
host memory; the copy to the device stays on the calling thread, which owns the CUDA stream. What a
prepared batch noted of its truncation is noted again when the batch is taken, in the caller's gathering
(see :mod:`zoo.truncation`), so one warning per call still counts every cut text once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from . import truncation

_CALL: ContextVar[Ahead | None] = ContextVar("zoo_ahead", default=None)


class Ahead:
    """One call's prepared inputs, by key, and the one thread that prepares them."""

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.ready: dict[Hashable, Future] = {}

    def submit(self, key: Hashable, prepare: Callable[[], Any]) -> None:
        """Start ``prepare()`` under ``key``. Only the newest earlier batch is kept besides: one a forward did
        not take (it read its batch otherwise) is dropped, so a call holds two prepared batches at most."""
        if key in self.ready:
            return
        for stale in list(self.ready)[:-1]:
            self.ready.pop(stale).cancel()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-ahead")
        self.ready[key] = self.pool.submit(_noted, prepare)

    def close(self) -> None:
        """End the call: drop what was not taken and let the thread go."""
        self.ready.clear()  # a batch an error left unrun is not waited for
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _noted(prepare: Callable[[], Any]) -> tuple[Any, dict]:
    """``prepare()`` and the truncation notes it made (on this thread, they have no call to go to yet)."""
    token = truncation.begin()
    try:
        return prepare(), truncation.end(token)
    except BaseException:
        truncation.end(token)
        raise


@contextmanager
def call() -> Iterator[Ahead]:
    """The scope of one ``encode()`` call's prepared inputs."""
    ahead = Ahead()
    token = _CALL.set(ahead)
    try:
        yield ahead
    finally:
        _CALL.reset(token)
        ahead.close()


def with_next(batches: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Each batch with the one after it (None after the last); the next is read before the current is given."""
    it = iter(batches)
    current = next(it, None)
    while current is not None:
        upcoming = next(it, None)
        yield current, upcoming
        current = upcoming


def submit(key: Hashable, prepare: Callable[[], Any]) -> bool:
    """Start ``prepare()`` on the current call's thread under ``key``; False outside a call (nothing started)."""
    ahead = _CALL.get()
    if ahead is None:
        return False
    ahead.submit(key, prepare)
    return True


def take(key: Hashable) -> Any | None:
    """What was prepared under ``key`` in this call (waiting for it if still running; its error is raised
    here), or None when nothing was. Its truncation notes go to the caller's gathering."""
    ahead = _CALL.get()
    future = ahead.ready.pop(key, None) if ahead is not None else None
    if future is None:
        return None
    result, notes = future.result()
    for (category, what), count in notes.items():
        truncation.note(category, what, count)
    return result
