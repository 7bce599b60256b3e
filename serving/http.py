"""The HTTP stack of zoo's servers (the OpenAI-compatible door, ``/health``): uvicorn in a thread, on a socket
bound when the server object is made, with the protections uvicorn lacks: a header timeout, a connection cap,
a write timeout, and an answer sent before the request's body was read followed by a lingering close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from .server import port_error

# The HTTP stack's limits (HttpLimits' defaults, the door's and /health's).
HEADER_TIMEOUT_S = 10.0  # request line + headers complete within this of connecting or of the previous answer
KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
WRITE_TIMEOUT_S = 30.0  # a client that reads none of its answer for this long is disconnected
DRAIN_S = 5.0  # answered before its body was read (413, 401, ...): what still comes is discarded this long at most
MAX_CONNECTIONS = 512  # open connections; one more is closed at once (uvicorn answers 503 at the cap)
MAX_HEADER_BYTES = 16 << 10  # request line + headers still incomplete past this: 400 (h11's limit)
GRACEFUL_SHUTDOWN_S = 5.0  # close() lets requests in flight finish this long

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may hold of an :class:`HttpServer` (the door's and ``/health``'s HTTP stack)."""

    header_timeout: float = HEADER_TIMEOUT_S
    keep_alive: float = KEEP_ALIVE_S
    write_timeout: float = WRITE_TIMEOUT_S
    drain: float = DRAIN_S
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES
    graceful_shutdown: float = GRACEFUL_SHUTDOWN_S


def guarded_protocol(limits: HttpLimits) -> type:
    """uvicorn's h11 protocol with what it lacks for strangers: a header timeout (uvicorn has none: a client
    sending its headers a byte at a time would hold the connection forever), a cap on open connections (checked
    when one is accepted, so file descriptors stay bounded), a write timeout, and a bounded drain of a body
    that was answered before it was read (uvicorn reads and discards it for as long as it comes)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class LingeringTransport:
        """The transport as uvicorn sees it: its ``close()`` while the client is still sending a body nobody
        will read (an answer with ``Connection: close`` given early, a 413) sends the answer and a FIN, and
        reads and discards what still comes until the client closes or ``drain`` seconds pass. Closing at once
        would make the kernel reset the connection, which can destroy the answer before the client reads it."""

        def __init__(self, transport: Any, protocol: GuardedH11Protocol) -> None:
            self._raw, self._protocol = transport, protocol

        def __getattr__(self, name: str) -> Any:
            return getattr(self._raw, name)

        def is_closing(self) -> bool:
            return self._protocol._lingering or self._raw.is_closing()

        def close(self) -> None:
            protocol = self._protocol
            if protocol._lingering or self._raw.is_closing():
                return
            if protocol.conn.their_state is h11.SEND_BODY and self._raw.can_write_eof():
                protocol._lingering = True
                self._raw.resume_reading()
                self._raw.write_eof()  # after the answer still buffered
                protocol._drain_timer = protocol.loop.call_later(limits.drain, self._raw.close)
            else:
                self._raw.close()

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _drain_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _draining = False  # answered early on a kept-alive connection: the rest of the body is discarded
        _lingering = False  # answered early and closing: the rest is discarded until the client closes
        _raw: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            self._raw = transport
            super().connection_made(LingeringTransport(transport, self))
            if len(self.connections) > limits.max_connections:
                transport.abort()
                return
            self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self._header_timer, self._drain_timer, self._write_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._drain_timer = self._write_timer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # the rest of a body nobody reads
            super().data_received(data)
            if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
                self._header_timer.cancel()  # the request line and headers are in
                self._header_timer = None
            if self._draining and self.conn.their_state is not h11.SEND_BODY:
                # the body answered early has ended in time: the connection is kept alive as usual (closing it
                # here would race a client that reuses it at once)
                self._draining = False
                if self._drain_timer is not None:
                    self._drain_timer.cancel()
                    self._drain_timer = None
                if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                        self.timeout_keep_alive_handler)
                    if self._header_timer is None:
                        self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY:
                # answered before the body was read: discard what still comes for a while (closing at once
                # would reset the connection and could lose the answer), then close unless it has ended
                self._draining = True
                self._drain_timer = self.loop.call_later(limits.drain, self._close)
            elif self.conn.their_state is h11.IDLE and self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.write_timeout, self._reset)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE:  # no whole request line and headers yet
                self._close()

        def _reset(self) -> None:
            """Drop the connection and what the kernel still holds for it (a plain close would go on sending the
            buffered answer to the client that does not read it)."""
            self._write_timer = None
            sock = self._raw.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._raw.abort()

        def _close(self) -> None:
            """Close now (a timeout: no lingering)."""
            if not self._raw.is_closing():
                with contextlib.suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
                self._raw.close()

    return GuardedH11Protocol


def _listen(host: str, port: int, what: str, flag: str) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or the one-line error naming ``flag``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
    except OSError as err:
        raise port_error(host, port, what, flag, err) from None
    sock = socket.socket(family, kind, proto)  # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only then
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:  # one line for the operator, never a traceback
        sock.close()
        raise port_error(host, port, what, flag, err) from None
    return sock


class HttpServer:
    """An ASGI app served by uvicorn in a daemon thread (its own event loop) with :class:`HttpLimits`: uvicorn's
    keep-alive timeout, concurrency limit, header size limit and graceful shutdown, and the header timeout,
    connection cap, write timeout and bounded drain of :func:`guarded_protocol`. The port is bound when this is
    made, so a taken port is a :class:`zoo.ServerError` naming ``flag`` at once."""

    def __init__(self, app: Any, host: str, port: int, *, what: str, flag: str, limits: HttpLimits | None = None,
                 lifespan: str = "on", name: str = "zoo-http") -> None:
        import uvicorn

        self.limits = limits = limits or HttpLimits()
        self.what, self.flag = what, flag
        self._sock = _listen(host, port, what, flag)
        self.host, self.port = host, self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, http=guarded_protocol(limits), ws="none", lifespan=lifespan, log_level="warning", access_log=False,
            timeout_keep_alive=limits.keep_alive, limit_concurrency=limits.max_connections,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_graceful_shutdown=limits.graceful_shutdown,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name=name,
                                        daemon=True)

    def start(self, timeout: float = 30.0) -> HttpServer:
        """Serve, and return once the server is accepting."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise port_error(self.host, self.port, self.what, self.flag)
            time.sleep(0.01)
        return self

    def close(self) -> None:
        """Stop accepting, let what is in flight finish (``graceful_shutdown`` seconds at most), release the
        port."""
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=self.limits.graceful_shutdown + 5)
        self._sock.close()
