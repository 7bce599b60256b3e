"""OpenTelemetry spans of the OpenAI-compatible door, sent over OTLP/HTTP (``zoo serve --otlp-endpoint URL``).

One server span per HTTP request, a child of the caller's span when the request carries a W3C ``traceparent``
header; the door sends its span's context on to tritonserver as the gRPC header
:data:`serving.contract.TRACE_HEADER`, which Triton's own OpenTelemetry tracing continues (``zoo serve`` turns it
on, to the same endpoint), so Triton's trace of the inference joins the same trace. Without
``--otlp-endpoint`` no span is made, but a valid ``traceparent`` the caller sent is still passed on to Triton.

The spans go through a :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor` of the door's own
:class:`~opentelemetry.sdk.trace.TracerProvider` (not the process-wide one: two doors in one process keep theirs
apart), flushed and shut down when the door closes. The ``trace`` extra provides the SDK and the exporter; without
it ``--otlp-endpoint`` fails at start with one line naming the extra.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .door_metrics import Exchange

SERVICE_NAME = "zoo-door"
EXPORT_TIMEOUT_S = 5.0  # one export may take this long (a collector that is down must not hold the door's shutdown)
# W3C trace-context version 00: version-trace id-parent id-flags; all-zero ids are invalid
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case) in an ASGI ``scope``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def incoming_traceparent(scope: dict[str, Any]) -> str | None:
    """The caller's ``traceparent`` header when it is a valid W3C version-00 one (what Triton is given must not
    be whatever a caller wrote), else None."""
    value = header(scope, b"traceparent")
    if value is None:
        return None
    value = value.strip()
    return value if _TRACEPARENT.fullmatch(value) else None


class Tracing:
    """A span per door request, exported to the OTLP/HTTP ``endpoint`` (e.g. ``http://127.0.0.1:4318/v1/traces``).
    Raises :class:`zoo.errors.MissingExtraError` when the ``trace`` extra is not installed."""

    def __init__(self, endpoint: str, service_name: str = SERVICE_NAME) -> None:
        from zoo.extras import require

        require("trace", "zoo serve --otlp-endpoint")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.endpoint = endpoint
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                            timeout=EXPORT_TIMEOUT_S)))
        self.tracer = self.provider.get_tracer("serving.door")
        self._propagator = TraceContextTextMapPropagator()

    def begin(self, scope: dict[str, Any], exchange: Exchange) -> Any:
        """Start the server span of a request (the caller's ``traceparent`` its parent) and put its own context in
        ``exchange.traceparent``, for Triton."""
        from opentelemetry import trace

        value = header(scope, b"traceparent")
        carrier = {"traceparent": value} if value is not None else {}
        state = header(scope, b"tracestate")
        if state is not None:
            carrier["tracestate"] = state
        parent = self._propagator.extract(carrier)  # an invalid header gives a root span, as the W3C spec asks
        span = self.tracer.start_span(exchange.method, context=parent, kind=trace.SpanKind.SERVER,
                                      attributes={"http.request.method": exchange.method})
        out: dict[str, str] = {}
        self._propagator.inject(out, context=trace.set_span_in_context(span))
        exchange.traceparent = out.get("traceparent")
        return span

    def end(self, span: Any, exchange: Exchange) -> None:
        """Name the span by its route, give it what the request did, and end it."""
        from opentelemetry.trace import Status, StatusCode

        span.update_name(f"{exchange.method} {exchange.route}")
        span.set_attributes({"http.route": exchange.route, "http.response.status_code": exchange.status,
                             "zoo_door.priority": exchange.priority})
        if exchange.model != "unknown":  # the model and tokens as OpenTelemetry's GenAI conventions name them
            span.set_attributes({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": exchange.model,
                                 "gen_ai.usage.input_tokens": exchange.tokens, "zoo_door.items": exchange.items})
        if exchange.failure is not None:
            span.set_attribute("zoo_door.failure", exchange.failure)
        if exchange.status >= 500:  # a server span's 4xx is the caller's: status left unset (semantic conventions)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export every ended span now; True when done within ``timeout_s``."""
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread."""
        self.provider.shutdown()
