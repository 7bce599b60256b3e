"""A real `zoo serve` with the door's admission flags and `--otlp-endpoint`: the flags bound the door, /metrics
counts what the real models did (an item the model refuses is the model's failure, not a success, unlike Triton's
own metrics), a request's priority reaches Triton, and the door's spans join the caller's trace.

One server (the committed repository), started once for the module; the admission tests hold its one turn with a
body that has not all arrived, so nothing here depends on how fast the models are."""

from __future__ import annotations

import base64
import json
import os
import time
from unittest import mock

import pytest

from zoo.defaults import default_model

from .door_stub import PARENT_ID, TRACE_ID, TRACEPARENT, Collector, attributes, scrape, value
from .hostile import lying_flac
from .processes import start_serve, stop_group
from .test_door_limits import connect, head, post, read_answer, request

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]
TEXT = default_model("text")
ALIGNED = default_model("image")  # embeds audio too: the lying FLAC passes the door's check, not the model's
QUEUE_MS = 300


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def serve(collector):
    with mock.patch.dict(os.environ, {"OTEL_BSP_SCHEDULE_DELAY": "100"}):  # spans leave within 0.1 s
        s = start_serve("--max-concurrent-requests", "1", "--max-queued-requests", "1", "--max-queue-ms",
                        str(QUEUE_MS), "--otlp-endpoint", collector.url, wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


def gauges(port: int, in_flight: int, queued: int, timeout: float = 10) -> None:
    """Wait until /metrics shows ``in_flight`` requests at work and ``queued`` waiting."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        seen = (value(samples, "zoo_door_requests_in_flight"), value(samples, "zoo_door_requests_queued"))
        if seen == (in_flight, queued):
            return
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)


def test_the_flags_bound_the_door(serve):
    """--max-concurrent-requests 1: a request whose body is still coming holds the one turn; --max-queued-requests
    1: a second waits and gets 429 after --max-queue-ms (not the default 10 s); a third gets 429 at once."""
    holder = connect(serve.openai_port)
    payload = json.dumps({"model": TEXT, "input": "held"}).encode()
    holder.sendall(head("/v1/embeddings", len(payload)) + payload[:5])
    gauges(serve.openai_port, in_flight=1, queued=0)  # admitted, reading its body
    waiter = connect(serve.openai_port)
    waiter.sendall(head("/v1/embeddings", len(payload)) + payload)
    start = time.monotonic()
    gauges(serve.openai_port, in_flight=1, queued=1)
    status, headers, reply = post(serve.openai_port, {"model": TEXT, "input": "third"})
    assert status == 429 and time.monotonic() - start < QUEUE_MS / 1000, reply
    assert headers["retry-after"] == "1" and reply["error"]["code"] == "rate_limit_exceeded"
    status, headers, reply = read_answer(waiter)
    waited = time.monotonic() - start
    assert status == 429 and QUEUE_MS / 1000 - 0.1 <= waited < 5, (status, waited)
    holder.sendall(payload[5:])
    status, _, reply = read_answer(holder, timeout=60)
    assert status == 200 and len(reply["data"]) == 1, reply
    holder.close()
    waiter.close()


def test_metrics_count_what_the_models_did(serve):
    """Items and tokens (the answer's usage) by model, requests by status, and the refused item as a failure of
    the model that refused it."""
    port = serve.openai_port
    before = scrape(port)
    texts = ["a short sentence", "another one, a little longer than the first", "three"]
    status, _, ok = post(port, {"model": TEXT, "input": texts})
    assert status == 200, ok
    liar = "data:audio/flac;base64," + base64.b64encode(lying_flac(declared=48000, samples=24000)).decode()
    status, _, refused = post(port, {"model": ALIGNED, "input": [{"audio": liar}]})
    assert status == 400 and refused["error"]["message"].startswith("input[0]:"), refused
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/embeddings"
    assert delta("zoo_door_requests_total", route=route, method="POST", status="200") == 1
    assert delta("zoo_door_requests_total", route=route, method="POST", status="400") == 1
    assert delta("zoo_door_items_total", model=TEXT) == 3
    assert delta("zoo_door_tokens_total", model=TEXT) == ok["usage"]["prompt_tokens"] > 3
    assert delta("zoo_door_items_total", model=ALIGNED) == 0
    assert delta("zoo_door_model_failures_total", model=ALIGNED, reason="input_refused") == 1
    assert delta("zoo_door_request_duration_seconds_count", route=route) == 2
    assert value(after, "zoo_door_requests_in_flight") == value(after, "zoo_door_requests_queued") == 0


@pytest.mark.parametrize("how", ["field", "header"])
def test_every_priority_is_served(serve, how):
    """Every level is accepted by the client and tritonserver, as the body field or the X-Priority header (that
    Triton serves them in order: tests/test_client_overload.py)."""
    for level in ("high", "normal", "low"):
        extra, headers = ({"priority": level}, None) if how == "field" else ({}, {"X-Priority": level})
        status, _, reply = post(serve.openai_port, {"model": TEXT, "input": [f"at {level}"], **extra}, headers=headers)
        assert status == 200 and len(reply["data"]) == 1, reply


def test_spans_join_the_callers_trace(serve, collector):
    """The door's span is a child of the caller's traceparent, with the route, model, items, tokens and status."""
    status, _, reply = post(serve.openai_port, {"model": TEXT, "input": ["traced", "twice"]},
                            headers={"traceparent": TRACEPARENT})
    assert status == 200, reply
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ours = [s for s in collector.spans() if s.trace_id.hex() == TRACE_ID]
        if ours:
            break
        time.sleep(0.1)
    assert len(ours) == 1, collector.spans()
    span = ours[0]
    assert span.parent_span_id.hex() == PARENT_ID and span.name == "POST /v1/embeddings"
    assert attributes(span) == {
        "http.request.method": "POST", "http.route": "/v1/embeddings", "http.response.status_code": 200,
        "zoo_door.priority": "normal", "gen_ai.operation.name": "embeddings", "gen_ai.request.model": TEXT,
        "zoo_door.items": 2, "gen_ai.usage.input_tokens": reply["usage"]["prompt_tokens"]}
    # tritonserver traced the inference in the same trace, as a child of the door's span (the traceparent header)
    deadline = time.monotonic() + 30
    while not (triton := [s for s in collector.json_spans() if s["traceId"] == TRACE_ID]):
        assert time.monotonic() < deadline, collector.json_spans()
        time.sleep(0.2)
    infer = next(s for s in triton if s["name"] == "InferRequest")
    assert infer["parentSpanId"] == span.span_id.hex()
    assert request(serve.openai_port, "GET", "/health")[0] == 200
