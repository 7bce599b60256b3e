"""What a request to the OpenAI-compatible door may cost before it is worked on: its turn (:class:`Admission`),
the bytes of the bodies held at once (:class:`ByteBudget`) and its body's size and arrival time
(:func:`read_body`); each refusal is an :class:`~serving.openai_api.ApiError` in OpenAI's shape.

Light at import (the standard library only): ``zoo serve``'s parser, built for every ``zoo`` command, reads its
defaults here; what a refusal needs is imported when one is made."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from .openai_api import ApiError

# What a request may cost (create_app's defaults; `zoo serve --max-body-mb` sets the first).
DEFAULT_MAX_BODY_BYTES = 16 << 20  # a request body (413 beyond): 2048 texts of 8 KiB, or 12 MiB of media in base64
MAX_CONCURRENT_REQUESTS = 32  # /v1/* requests worked on at once (reading, parsing, waiting on Triton, rendering)
MAX_QUEUED_REQUESTS = 32  # more wait for a turn (holding no body yet); beyond that 429
QUEUE_WAIT_S = 10.0  # a waiting request gets 429 after this long
BUFFERED_BODIES = 4  # all bodies held at once: at most this many max-size bodies' bytes (429 beyond)
BODY_TIMEOUT_S = 30.0  # the whole body must arrive within this (408 beyond): 16 MiB at >= 0.55 MiB/s
RETRY_AFTER_S = 1  # the Retry-After of a 429


class Admission:
    """At most ``limit`` requests at work, ``queue`` more waiting up to ``wait`` seconds; the rest get 429 at
    once. A freed turn goes to the waiting request of the best priority level (:data:`serving.contract.PRIORITIES`:
    1 first), first come first served within a level. A full queue still takes a request of a better level: the
    last comer of the worst level waiting gives up its place (429), so a burst of bulk work never locks
    interactive requests out. Lives on one event loop (no locks)."""

    def __init__(self, limit: int, queue: int, wait: float) -> None:
        self.limit, self.queue, self.wait = limit, queue, wait
        self.active = 0  # requests holding a turn
        self.waiting = 0  # requests waiting for one
        #: (level, arrival, future): set True with the turn, False when the place is given to a better level
        self._queue: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._arrivals = itertools.count()

    def _busy(self) -> ApiError:
        from .openai_api import server_busy

        return server_busy(f"the server is busy ({self.limit} requests at work, {self.waiting} waiting); retry "
                           f"in {RETRY_AFTER_S} s", RETRY_AFTER_S)

    def _release(self) -> None:
        """Hand the turn to the best waiting request, else free it (a waiter that gave up is skipped)."""
        while self._queue:
            _, _, turn = heapq.heappop(self._queue)
            if not turn.done():
                turn.set_result(True)  # the turn passes on: `active` stays
                return
        self.active -= 1

    def _make_room(self, level: int) -> bool:
        """Free a place in the full queue for a request of ``level``: the latest waiter of the worst level, when
        that level is worse, is told to give up (it answers 429). Whether a place was freed."""
        waiting = [e for e in self._queue if not e[2].done()]
        if not waiting:
            return False
        worst = max(waiting, key=lambda e: (e[0], e[1]))
        if worst[0] <= level:
            return False
        worst[2].set_result(False)
        self._queue.remove(worst)
        heapq.heapify(self._queue)
        return True

    @contextlib.asynccontextmanager
    async def slot(self, priority: str | None = None) -> AsyncIterator[None]:
        """Hold a turn for the ``async with`` block; 429 when none comes. ``priority``: a name of
        :data:`serving.contract.PRIORITIES` (default :data:`~serving.contract.DEFAULT_PRIORITY`), which orders
        the waiting requests."""
        from . import contract

        if self.active < self.limit:  # then no one waits: a freed turn goes to a waiter before it is free
            self.active += 1
        else:
            level = contract.PRIORITIES[priority or contract.DEFAULT_PRIORITY]
            if self.waiting >= self.queue and not self._make_room(level):
                raise self._busy()
            turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            entry = (level, next(self._arrivals), turn)
            heapq.heappush(self._queue, entry)
            self.waiting += 1
            try:  # asyncio.wait leaves `turn` alone: whether it came is read below, race-free on one loop
                await asyncio.wait((turn,), timeout=self.wait)
            except BaseException:  # cancelled (the client went away): a turn that came is passed on
                if turn.done():
                    if turn.result():
                        self._release()
                else:
                    self._queue.remove(entry)
                    heapq.heapify(self._queue)
                turn.cancel()
                raise
            finally:
                self.waiting -= 1
            if turn.done() and not turn.result():  # its place went to a better level
                raise self._busy()
            if not turn.done():
                turn.cancel()
                # out of the heap now (at most `queue` entries): under steady better-priority load a stale
                # entry would never reach the top for _release to skip, and stale ones would pile up
                self._queue.remove(entry)
                heapq.heapify(self._queue)
                raise self._busy()
        try:
            yield
        finally:
            self._release()


class ByteBudget:
    """The bytes of request bodies held at once, across requests (one event loop, no locks)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0

    @contextlib.contextmanager
    def lease(self) -> Any:
        """A ``take(n)`` that reserves ``n`` more bytes (429 past the total), all given back on leaving."""
        taken = [0]

        def take(n: int) -> None:
            if self.used + n > self.total:
                from .openai_api import server_busy

                raise server_busy(f"the server holds too many large request bodies ({self.total} bytes at once); "
                                  f"retry in {RETRY_AFTER_S} s", RETRY_AFTER_S)
            self.used += n
            taken[0] += n

        try:
            yield take
        finally:
            self.used -= taken[0]


async def read_body(request: Request, limit: int, timeout: float, take: Callable[[int], None]) -> bytes:
    """The body, counted as it comes: 413 as soon as it is known to be over ``limit`` bytes (before a byte of it
    is read when Content-Length says so), 408 when it has not all come within ``timeout`` seconds; ``take``
    reserves its bytes in the shared budget."""
    from starlette.requests import ClientDisconnect

    from .openai_api import ApiError

    too_large = ApiError(413, f"the request body is over the limit of {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    known = declared is not None and declared.isdigit()
    if known:
        if int(declared) > limit:  # type: ignore[arg-type]
            raise too_large
        take(int(declared))  # type: ignore[arg-type]
    chunks, size = [], 0
    deadline = time.monotonic() + timeout
    stream = request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), max(deadline - time.monotonic(), 0.001))
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > limit:
                raise too_large
            if not known:
                take(len(chunk))
            chunks.append(chunk)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s", param=None,
                       code="request_timeout") from None
    except ClientDisconnect:
        raise ApiError(400, "the client went away before its body arrived", param=None,
                       code="client_disconnected") from None
    return b"".join(chunks)
