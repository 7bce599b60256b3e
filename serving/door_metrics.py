"""What the OpenAI-compatible door has done, in Prometheus' text format at ``GET /metrics`` on its own port.

Every HTTP exchange is seen by one ASGI middleware (:class:`Observed`), which counts it by route template, method
and status once its answer has gone (429s, 4xx and 5xx included) and times it; the route's handler fills the
exchange's :class:`Exchange` with what only it knows: the served model, items, tokens, and whether the model or
tritonserver caused a failure. Triton's own metrics count a request its model refused item by item (a 400) as a
success (upstream server#7713); here such a request is a failure of that model.

Labels never take a caller's unbounded values: a route is its template (``/v1/models/{model}``, ``unmatched`` for
the rest), a method one of :data:`METHODS` (else ``other``), a model a served one (``unknown`` before it is known).
Each app has its own :class:`~prometheus_client.CollectorRegistry`, so two doors in one process do not clash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.errors import InputError, ModelUnavailableError, OverloadedError, ZooError

from . import contract
from .tracing import incoming_traceparent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .openai_limits import Admission
    from .tracing import Tracing

#: seconds: from a cached short text (a few ms) to a full request of media on a busy CPU (a minute)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN = "unknown"  # the model label before the request's model is known to be served
SCOPE_KEY = "zoo.exchange"  # where the middleware leaves the Exchange in the ASGI scope for the handler


@dataclass
class Exchange:
    """One HTTP request's facts, filled by the middleware (route, status, trace context) and the handler (model,
    items, tokens, priority, failure); read by the metrics and the span when the answer has gone."""

    method: str
    route: str = "unmatched"
    status: int = 500  # until an answer starts: an exception that escaped everything
    model: str = UNKNOWN  # a served model's public name
    items: int = 0
    tokens: int = 0
    priority: str = contract.DEFAULT_PRIORITY
    failure: str | None = None  # set when the model or tritonserver caused the failure: failure_reason()
    traceparent: str | None = None  # W3C trace context to send on to Triton (the door's span, or the caller's)


def failure_reason(err: BaseException) -> str | None:
    """The failure label of an error raised by a model call: ``input_refused`` (the model refused an item: 400),
    ``overloaded`` (Triton's queue was full or timed out: 429), ``unavailable`` (restarting, not ready,
    unreachable: 503), ``internal`` (anything unexpected: 500); None for the caller's own mistake that only the
    server could see (a bad parameter or name: a 4xx, not the model's failure)."""
    if isinstance(err, InputError):
        return "input_refused"
    if isinstance(err, OverloadedError):
        return "overloaded"
    if isinstance(err, ModelUnavailableError):
        return "unavailable"
    if isinstance(err, ZooError) and err.code != "internal":  # a bad parameter or name: the caller's, not the model's
        return None
    return "internal"


def exchange_of(scope: dict[str, Any]) -> Exchange:
    """The exchange :class:`Observed` put in ``scope`` (a fresh one when the app runs without it)."""
    found = scope.get(SCOPE_KEY)
    if found is None:
        found = scope[SCOPE_KEY] = Exchange(method=str(scope.get("method", "GET")))
    return found


class DoorMetrics:
    """The door's Prometheus metrics, in a registry of their own. The in-flight and queued gauges are read from
    ``admission`` at scrape time (nothing to keep in step)."""

    def __init__(self, admission: Admission | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("zoo_door_requests", "HTTP requests answered, by route template, method and "
                                "status (429, 4xx and 5xx included)", ["route", "method", "status"],
                                registry=registry)
        self.latency = Histogram("zoo_door_request_duration_seconds", "Seconds from a request's arrival to the end "
                                 "of its answer, by route template", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.items = Counter("zoo_door_items", "Items embedded, by model", ["model"], registry=registry)
        self.tokens = Counter("zoo_door_tokens", "Text tokens the models read (usage.prompt_tokens), by model",
                              ["model"], registry=registry)
        self.failures = Counter("zoo_door_model_failures", "Requests failed by the model or tritonserver (an item "
                                "refused, overloaded, unavailable, internal), by model and reason",
                                ["model", "reason"], registry=registry)
        in_flight = Gauge("zoo_door_requests_in_flight", "/v1 requests admitted and at work", registry=registry)
        queued = Gauge("zoo_door_requests_queued", "/v1 requests waiting for admission", registry=registry)
        if admission is not None:
            in_flight.set_function(lambda: admission.active)
            queued.set_function(lambda: admission.waiting)

    def observe(self, exchange: Exchange, seconds: float) -> None:
        """Count one answered exchange."""
        self.requests.labels(exchange.route, exchange.method, str(exchange.status)).inc()
        self.latency.labels(exchange.route).observe(seconds)
        if exchange.failure is not None:
            self.failures.labels(exchange.model, exchange.failure).inc()
        elif 200 <= exchange.status < 300 and exchange.items:
            self.items.labels(exchange.model).inc(exchange.items)
            self.tokens.labels(exchange.model).inc(exchange.tokens)

    def exposition(self) -> bytes:
        """The text exposition format (``text/plain; version=0.0.4``)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Observed:
    """ASGI middleware: an :class:`Exchange` per HTTP request, counted in ``metrics`` once its answer has gone,
    and with ``tracing``, a span around it whose context is the one sent on to Triton."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: DoorMetrics,
                 tracing: Tracing | None = None) -> None:
        self.app, self.metrics, self.tracing = app, metrics, tracing

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        exchange = scope[SCOPE_KEY] = Exchange(method=method if method in METHODS else "other")
        start = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            await send(message)

        span = None
        if self.tracing is not None:
            span = self.tracing.begin(scope, exchange)
        else:  # no span of the door's: Triton's trace may still join the caller's
            exchange.traceparent = incoming_traceparent(scope)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path_format", None)  # the template, never the raw path
            if isinstance(path, str):
                exchange.route = path
            self.metrics.observe(exchange, time.perf_counter() - start)
            if span is not None:
                self.tracing.end(span, exchange)  # type: ignore[union-attr]
