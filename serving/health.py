"""``zoo serve``'s own readiness endpoint: ready only when tritonserver and every supervised model are.

``GET /health`` answers ``200 {"status": "ready", "models": {...}}`` or ``503 {"status": "not ready", ...}``
with each model's state (``ready`` / ``restarting`` / ``failed``), the reason of its last restart and how
many there were; ``HEAD /health`` the same status without the body. Point a load balancer or a Kubernetes
readiness probe at it; it binds the same host as the server (127.0.0.1 unless told otherwise).

It runs on the OpenAI door's HTTP stack (:class:`serving.http.HttpServer`: uvicorn with header,
keep-alive and write timeouts and a connection cap), and asks tritonserver over one gRPC channel, made once per
server address and reused, with a short deadline per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .http import HttpLimits, HttpServer
from .supervisor import Supervisor

HEALTH_DEADLINE_S = 2.0  # one ServerReady call (Kubernetes' probe waits 3 s, serving/k8s.py)
HEALTH_MAX_CONNECTIONS = 64  # probes and load balancers, not crowds
Report = Callable[[], "tuple[bool, dict[str, Any]]"]


class TritonProbe:
    """Whether tritonserver at ``url`` says it is ready, over one gRPC client made on first use and reused (the
    synchronous client is thread-safe for unary calls); each call waits ``deadline`` seconds at most."""

    def __init__(self, url: str, deadline: float = HEALTH_DEADLINE_S) -> None:
        self.url, self.deadline = url, deadline
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from .channels import grpc_client

                self._client = grpc_client(self.url)
            return self._client

    def ready(self) -> bool:
        """True only when the server answers ready within the deadline (not answering is "not ready", never an
        error)."""
        try:
            return bool(self._get().is_server_ready(client_timeout=self.deadline))
        except Exception:
            return False

    def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


_probes: dict[str, TritonProbe] = {}
_probes_lock = threading.Lock()


def probe_for(url: str) -> TritonProbe:
    """The one :class:`TritonProbe` of this process for ``url`` (``/health`` and the door's share it)."""
    with _probes_lock:
        probe = _probes.get(url)
        if probe is None:
            probe = _probes[url] = TritonProbe(url)
        return probe


def health_report(supervisor: Supervisor, probe: TritonProbe | None = None) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: the server answers, it says ready, and the supervisor has every model ready. Asks over
    ``probe`` (by default the process's shared one for the server's address: no channel per call)."""
    server = supervisor.server
    alive = server.process is not None and server.process.poll() is None
    triton_ready = alive and (probe or probe_for(server.grpc_url)).ready()
    ready = triton_ready and supervisor.ready()
    return ready, {"status": "ready" if ready else "not ready", "tritonserver": "ready" if triton_ready else
                   ("running" if alive else "stopped"), "models": supervisor.status()}


def health_app(report: Report) -> Any:
    """A Starlette app answering ``GET``/``HEAD /health`` from ``report`` (run in a worker thread, so a slow
    tritonserver never holds the event loop); anything else is 404."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def health(_request: Request) -> JSONResponse:
        ready, body = await asyncio.to_thread(report)
        return JSONResponse(body, status_code=200 if ready else 503)

    async def not_found(_request: Request, _exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("only /health is served here", status_code=404)

    return Starlette(routes=[Route("/health", health, methods=["GET", "HEAD"])],
                     exception_handlers={404: not_found})


class HealthServer:
    """``GET /health`` (and ``HEAD``) from :func:`health_report`, on :class:`HttpServer`. The port is bound
    here: a taken one raises :class:`zoo.ServerError` naming ``--health-port``. ``report`` replaces the
    supervisor's report (tests); ``limits`` the HTTP stack's."""

    def __init__(self, supervisor: Supervisor, host: str = "127.0.0.1", port: int = 8003, *,
                 report: Report | None = None, limits: HttpLimits | None = None) -> None:
        self._probe: TritonProbe | None = None

        def supervised() -> tuple[bool, dict[str, Any]]:
            if self._probe is None:
                self._probe = probe_for(supervisor.server.grpc_url)
            return health_report(supervisor, self._probe)

        self.app = health_app(report or supervised)
        self._http = HttpServer(self.app, host, port, what="zoo's health endpoint", flag="--health-port",
                                limits=limits or HttpLimits(max_connections=HEALTH_MAX_CONNECTIONS), lifespan="off",
                                name="zoo-health")
        self.port = self._http.port
        self.url = f"http://{host}:{self.port}/health"

    def start(self) -> HealthServer:
        """Serve in a daemon thread."""
        self._http.start()
        return self

    def close(self) -> None:
        """Stop serving, release the port and the gRPC channel."""
        self._http.close()
        if self._probe is not None:
            self._probe.close()
