"""What a request to the OpenAI-compatible door may cost before it is worked on: its turn (:class:`Admission`),
the bytes of the bodies held at once (:class:`ByteBudget`) and its body's size and arrival time
(:func:`read_body`); each refusal is an :class:`~serving.openai_api.ApiError` in OpenAI's shape."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .openai_api import ApiError, server_busy

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
    once. Lives on one event loop (no locks)."""

    def __init__(self, limit: int, queue: int, wait: float) -> None:
        self.limit, self.queue, self.wait = limit, queue, wait
        self._free = asyncio.Semaphore(limit)
        self.waiting = 0

    def _busy(self) -> ApiError:
        return server_busy(f"the server is busy ({self.limit} requests at work, {self.waiting} waiting); retry "
                           f"in {RETRY_AFTER_S} s", RETRY_AFTER_S)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a turn for the ``async with`` block; 429 when none comes."""
        if self._free.locked():
            if self.waiting >= self.queue:
                raise self._busy()
            self.waiting += 1
            try:
                await asyncio.wait_for(self._free.acquire(), self.wait)
            except asyncio.TimeoutError:
                raise self._busy() from None
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()
        try:
            yield
        finally:
            self._free.release()


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
