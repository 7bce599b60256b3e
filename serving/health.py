"""``zoo serve``'s own readiness endpoint: ready only when tritonserver and every supervised model are.

``GET /health`` answers ``200 {"status": "ready", "models": {...}}`` or ``503 {"status": "not ready", ...}``
with each model's state (``ready`` / ``restarting`` / ``failed``), the reason of its last restart and how
many there were. Point a load balancer or a Kubernetes readiness probe at it; it binds the same host as
the server (127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .server import port_error
from .supervisor import Supervisor


def health_report(supervisor: Supervisor) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: the server answers, it says ready, and the supervisor has every model ready."""
    server = supervisor.server
    alive = server.process is not None and server.process.poll() is None
    triton_ready = False
    if alive:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            triton_ready = client.is_server_ready(client_timeout=2)
        except Exception:  # not answering is "not ready", never an error page
            triton_ready = False
        finally:
            client.close()
    ready = triton_ready and supervisor.ready()
    return ready, {"status": "ready" if ready else "not ready", "tritonserver": "ready" if triton_ready else
                   ("running" if alive else "stopped"), "models": supervisor.status()}


class HealthServer:
    """A small HTTP server answering ``GET /health`` (and ``HEAD``) from :func:`health_report`."""

    def __init__(self, supervisor: Supervisor, host: str = "127.0.0.1", port: int = 8003) -> None:
        report = health_report

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                if self.path.split("?")[0] != "/health":
                    self.send_error(404, "only /health is served here")
                    return
                ready, body = report(supervisor)
                data = json.dumps(body).encode()
                self.send_response(200 if ready else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # the name http.server dispatches to
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, *args: Any) -> None:  # probes every few seconds would flood the log
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:  # one line for the operator, never a traceback
            raise port_error(host, port, "zoo's health endpoint", "--health-port", err) from None
        self.url = f"http://{host}:{self.httpd.server_address[1]}/health"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="zoo-health", daemon=True)

    def start(self) -> HealthServer:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
