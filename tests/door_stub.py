"""A stub model behind the OpenAI-compatible door (no tritonserver), and what the door's overload, metrics and
tracing tests read its answers with: /metrics samples and an OTLP/HTTP trace receiver."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from types import SimpleNamespace

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from serving import openai_server
from serving.server import free_ports
from zoo.errors import InputError, OverloadedError
from zoo.spec import Modality

from .test_door_limits import request

MODEL = "stub/model"  # the registry name the door answers with
TRITON_NAME = "stub--model"  # and Triton's
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class StubEmbedder:
    """What the door uses of AsyncTritonEmbedder. Texts steer it: ``hold`` waits for ``release``, ``refuse`` is
    refused by the model (a 400), ``overload`` is Triton's full queue, ``boom`` an unexpected failure; every call
    is recorded with its priority and trace context."""

    def __init__(self, calls: list, release: threading.Event) -> None:
        self.triton_name = TRITON_NAME
        self.spec = SimpleNamespace(modalities=[Modality.TEXT], outputs=("dense",))
        self.calls, self.release = calls, release

    def options(self, **_: object) -> SimpleNamespace:
        return SimpleNamespace(output="dense", precision="float32")

    async def infer_wire(self, raw: list[bytes], modality: Modality, opts: object, *, tokens: bool = False,
                         truncated: bool = False, priority: str | None = None,
                         traceparent: str | None = None) -> tuple:
        texts = [r.decode() for r in raw]  # a text item travels as its UTF-8 bytes
        self.calls.append(SimpleNamespace(texts=texts, priority=priority, traceparent=traceparent))
        if "hold" in texts:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        if "refuse" in texts:
            raise InputError(texts.index("refuse"), "the model cannot read this item")
        if "overload" in texts:
            raise OverloadedError("Exceeds maximum queue size", retry_after=2.5)
        if "boom" in texts:
            raise RuntimeError("/secret/server/path exploded")
        rows = np.ones((len(texts), 4), np.float32)
        return rows, np.array([len(t.split()) for t in texts])

    async def close(self) -> None:
        pass


class StubCatalog:
    """The door's Catalog with one stub model."""

    def __init__(self, calls: list, release: threading.Event) -> None:
        self.embedder = StubEmbedder(calls, release)

    async def repository(self) -> dict[str, str]:
        return {self.embedder.triton_name: "READY"}

    async def get(self, model: str) -> StubEmbedder:
        if model not in (MODEL, self.embedder.triton_name):
            raise openai_server.model_not_found(model)
        return self.embedder

    async def close(self) -> None:
        pass


def stub_doors(monkeypatch) -> SimpleNamespace:
    """Doors over the stub model (``Catalog`` patched through ``monkeypatch``): ``.door(**options)`` starts one
    (a context manager); ``.calls`` the model calls, ``.release`` lets held calls finish (set when a door closes,
    so nothing is left waiting)."""
    calls: list = []
    release = threading.Event()
    monkeypatch.setattr(openai_server, "Catalog", lambda *_a, **_k: StubCatalog(calls, release))

    @contextlib.contextmanager
    def door(**options):
        server = openai_server.OpenAIServer("127.0.0.1:1", "127.0.0.1", free_ports().http,
                                            health=lambda: (True, {"status": "ready"}), **options).start()
        try:
            yield server
        finally:
            release.set()
            server.close()

    return SimpleNamespace(door=door, calls=calls, release=release)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def body(*texts: str, **extra) -> dict:
    return {"model": MODEL, "input": list(texts), **extra}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the door's /metrics: (name, sorted labels) → value."""
    status, headers, raw = request(port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), (status, headers)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(raw.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Collector:
    """An OTLP/HTTP trace receiver on a free loopback port: the bodies POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    received.append(data)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for data in self.bodies:
            if data.startswith(b"{"):  # tritonserver's exporter sends OTLP/JSON: see json_spans()
                continue
            message = ExportTraceServiceRequest()
            message.ParseFromString(data)
            for resource in message.resource_spans:
                for scope in resource.scope_spans:
                    out.extend(scope.spans)
        return out

    def json_spans(self) -> list[dict]:
        """The spans of the OTLP/JSON bodies (tritonserver's), as dicts (``traceId`` and ``parentSpanId`` hex)."""
        import json

        return [span for data in self.bodies if data.startswith(b"{")
                for resource in json.loads(data)["resourceSpans"] for scope in resource["scopeSpans"]
                for span in scope["spans"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out
