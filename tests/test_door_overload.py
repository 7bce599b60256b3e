"""The OpenAI-compatible door under overload, with a stub model behind it (no tritonserver): its own admission
(429 with Retry-After, priority order), Triton's overload mapped to 429, the request's priority and trace context
handed to the client, /metrics counting exactly what was sent, and OpenTelemetry spans sent over OTLP/HTTP.

A real `zoo serve` with these flags, /metrics and spans: tests/test_door_metrics.py."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving import contract
from serving.openai_api import ApiError, api_error
from zoo.errors import ModelUnavailableError, OverloadedError

from .door_stub import (
    MODEL,
    PARENT_ID,
    TRACE_ID,
    TRACEPARENT,
    Collector,
    attributes,
    body,
    scrape,
    stub_doors,
    value,
    wait_for,
)
from .test_door_limits import assert_openai_error, connect, head, post, request


@pytest.fixture()
def stub(monkeypatch):
    """Doors over a stub model (tests/door_stub.py); held model calls are let go at the end."""
    doors = stub_doors(monkeypatch)
    yield doors
    doors.release.set()


@pytest.fixture()
def collector():
    """An OTLP/HTTP trace receiver on loopback."""
    receiver = Collector()
    yield receiver
    receiver.close()


# ---- the door's own admission -------------------------------------------------------------------------------


def test_queue_time_limit_and_queue_bound_give_429_with_retry_after(stub):
    """One at work (held by the model), one waiting: a third is refused at once (the queue is full); the waiting
    one is refused after the queue-time limit, not before; both in OpenAI's shape with an integer Retry-After.
    The one at work is answered once the model lets go."""
    with stub.door(max_concurrent=1, max_queued=1, queue_wait=0.4) as d, ThreadPoolExecutor(4) as pool:
        admission = d.app.state.admission
        working = pool.submit(post, d.port, body("hold"))
        wait_for(lambda: admission.active == 1 and stub.calls)
        start = time.monotonic()
        waiting = pool.submit(post, d.port, body("second"))
        wait_for(lambda: admission.waiting == 1)
        status, headers, reply = post(d.port, body("third"))
        assert status == 429 and time.monotonic() - start < 0.4, (status, reply)
        assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
        err = assert_openai_error(reply, "rate_limit_exceeded")
        assert err["type"] == "requests" and err["param"] is None
        status, headers, reply = waiting.result(timeout=5)
        waited = time.monotonic() - start
        assert status == 429 and 0.4 <= waited < 3, (status, waited)
        assert headers["retry-after"] == "1" and reply["error"]["code"] == "rate_limit_exceeded"
        assert [c.texts for c in stub.calls] == [["hold"]]  # the refused ones never reached the model
        stub.release.set()
        assert working.result(timeout=5)[0] == 200
        assert admission.active == 0 and admission.waiting == 0


def test_a_freed_turn_goes_to_the_best_priority_first(stub):
    """Waiting requests are admitted high, then normal, then low (X-Priority), whatever order they came in."""
    with stub.door(max_concurrent=1, max_queued=8, queue_wait=10) as d, ThreadPoolExecutor(4) as pool:
        admission = d.app.state.admission
        working = pool.submit(post, d.port, body("hold"))
        wait_for(lambda: stub.calls)
        futures = []
        for n, level in enumerate(["low", "normal", "high"]):
            futures.append(pool.submit(post, d.port, body(level), headers={"X-Priority": level}))
            wait_for(lambda n=n: admission.waiting == n + 1)
        stub.release.set()
        assert working.result(timeout=5)[0] == 200
        assert [f.result(timeout=5)[0] for f in futures] == [200, 200, 200]
        assert [c.texts[0] for c in stub.calls[1:]] == ["high", "normal", "low"]


def test_a_waiter_that_goes_away_passes_its_turn_on(stub):
    """A client that disconnects while waiting leaves no hole: the turn freed later goes to the next waiter."""
    with stub.door(max_concurrent=1, max_queued=4, queue_wait=10) as d, ThreadPoolExecutor(4) as pool:
        admission = d.app.state.admission
        working = pool.submit(post, d.port, body("hold"))
        wait_for(lambda: stub.calls)
        gone = connect(d.port)
        gone.sendall(head("/v1/embeddings", 2) + b"{}")
        wait_for(lambda: admission.waiting == 1)
        gone.close()
        later = pool.submit(post, d.port, body("later"))
        wait_for(lambda: admission.waiting >= 1)
        stub.release.set()
        assert working.result(timeout=5)[0] == 200 and later.result(timeout=5)[0] == 200
        wait_for(lambda: admission.active == 0 and admission.waiting == 0)


def test_admission_passes_the_turn_of_a_cancelled_waiter_on():
    """A waiter cancelled while waiting leaves the queue; one cancelled just after it was handed the turn (before
    it ran) hands it to the next: no turn is lost, and the counts come back to zero."""
    from serving.openai_limits import Admission

    async def main() -> list[str]:
        admission, order = Admission(1, 4, 10), []

        async def user(name: str, priority: str = "normal") -> None:
            async with admission.slot(priority):
                order.append(name)

        held = admission.slot()
        await held.__aenter__()
        gone, handed, last = (asyncio.create_task(user(n, p)) for n, p in
                              (("gone", "high"), ("handed", "normal"), ("last", "low")))
        await asyncio.sleep(0.01)
        assert admission.waiting == 3
        gone.cancel()
        await asyncio.sleep(0.01)
        assert admission.waiting == 2 and admission.active == 1
        await held.__aexit__(None, None, None)  # the turn goes to `handed`, which has not run yet
        handed.cancel()
        await asyncio.wait_for(asyncio.gather(gone, handed, last, return_exceptions=True), 2)
        assert admission.active == 0 and admission.waiting == 0
        return order

    assert asyncio.run(main()) == ["last"]


def test_a_full_queue_gives_a_better_level_the_place_of_the_last_worse_waiter():
    """Bulk work filling the door's queue never locks interactive requests out: a high request arriving at a full
    queue takes the place of the latest low waiter (which gets 429); a request no better than every waiter gets
    429 itself; timed-out and evicted waiters leave nothing behind."""
    from serving.openai_limits import Admission

    async def main() -> tuple[list[str], list[str]]:
        admission, order, refused = Admission(1, 2, 10), [], []

        async def user(name: str, priority: str) -> None:
            try:
                async with admission.slot(priority):
                    order.append(name)
            except ApiError as err:
                assert err.status == 429
                refused.append(name)

        held = admission.slot()
        await held.__aenter__()
        tasks = [asyncio.create_task(user("low 1", "low")), asyncio.create_task(user("low 2", "low"))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(user("low 3", "low")))  # no worse waiter to replace: refused
        tasks.append(asyncio.create_task(user("high", "high")))  # replaces the latest low waiter
        await asyncio.sleep(0.01)
        assert refused == ["low 3", "low 2"] and admission.waiting == 2
        await held.__aexit__(None, None, None)
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert admission.active == 0 and admission.waiting == 0 and admission._queue == []
        return order, refused

    order, refused = asyncio.run(main())
    assert order == ["high", "low 1"] and refused == ["low 3", "low 2"]


# ---- overload from Triton ------------------------------------------------------------------------------------


def test_overload_from_triton_is_429_with_its_retry_after():
    """OverloadedError (Triton's queue full or its queue timeout) is OpenAI's 429 with Retry-After in whole seconds,
    rounded up; none suggested: 1 s. A plain ModelUnavailableError stays 503. No server detail is passed on."""
    err = api_error(OverloadedError("Exceeds maximum queue size on /models/x", retry_after=2.5))
    assert err.status == 429 and err.headers == {"Retry-After": "3"} and err.code == "rate_limit_exceeded"
    assert err.type == "requests" and "/models" not in err.message and "retry in 3 s" in err.message
    assert api_error(OverloadedError("Request timeout expired")).headers == {"Retry-After": "1"}
    assert api_error(OverloadedError("x", retry_after=0.01)).headers == {"Retry-After": "1"}
    plain = api_error(ModelUnavailableError("stub is not healthy"))
    assert plain.status == 503 and plain.code == "model_not_ready" and "Retry-After" not in plain.headers


def test_overload_and_failures_of_the_model_through_the_door(stub):
    """Through HTTP: Triton's overload is 429 + Retry-After, an item the model refuses 400 naming its index in
    `input`, an unexpected failure 500 with a fixed message."""
    with stub.door() as d:
        status, headers, reply = post(d.port, body("fine", "overload"))
        assert status == 429 and headers["retry-after"] == "3", reply
        assert_openai_error(reply, "rate_limit_exceeded")
        status, _, reply = post(d.port, body("fine", "refuse"))
        assert status == 400 and reply["error"]["message"].startswith("input[1]:"), reply
        status, _, reply = post(d.port, body("boom"))
        assert status == 500 and "secret" not in str(reply), reply
        assert_openai_error(reply, "internal_error")


# ---- priority ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "header", "sent"), [
    (None, None, contract.DEFAULT_PRIORITY), ("high", None, "high"), (None, "low", "low"), (None, " HIGH ", "high"),
    ("low", "high", "low"),  # the field wins
    ("high", "urgent", "high"),  # ... even over a header naming no level
])
def test_priority_from_field_or_header_reaches_the_client(stub, field, header, sent):
    with stub.door() as d:
        extra = {"priority": field} if field is not None else {}
        status, _, reply = post(d.port, body("a b", **extra), headers={"X-Priority": header} if header else None)
        assert status == 200, reply
        assert [c.priority for c in stub.calls] == [sent]
        assert sent in contract.PRIORITIES


@pytest.mark.parametrize(("field", "header", "message"), [
    ("urgent", None, "`priority` should be 'high', 'normal' or 'low', got 'urgent'"),
    (2, None, "`priority` should be 'high', 'normal' or 'low', got 2"),
    (None, "urgent", "the X-Priority header must be one of 'high', 'normal', 'low', got 'urgent'"),
])
def test_a_bad_priority_is_400_naming_the_field(stub, field, header, message):
    with stub.door() as d:
        extra = {"priority": field} if field is not None else {}
        status, _, reply = post(d.port, body("a", **extra), headers={"X-Priority": header} if header else None)
        assert status == 400, reply
        err = assert_openai_error(reply, "invalid_value")
        assert err["param"] == "priority" and err["message"] == message
        assert not stub.calls
    with stub.door() as d:  # on the routes without a body, the header alone
        status, _, raw = request(d.port, "GET", "/v1/models", headers={"X-Priority": "urgent"})
        assert status == 400 and b"X-Priority" in raw


def test_the_callers_traceparent_reaches_the_client_without_tracing(stub):
    """Without --otlp-endpoint the door makes no span, but Triton is given the caller's valid trace context (and
    nothing for one that is not W3C's)."""
    with stub.door() as d:
        post(d.port, body("a"), headers={"traceparent": TRACEPARENT})
        post(d.port, body("b"), headers={"traceparent": "00-zzzz-not-a-trace-01"})
        post(d.port, body("c"))
    assert [c.traceparent for c in stub.calls] == [TRACEPARENT, None, None]


# ---- /metrics ------------------------------------------------------------------------------------------------


def test_metrics_count_exactly_what_was_sent(stub):
    """Requests by route template, method and status (door 429s and model failures included), items and tokens
    of the answered requests only, a latency histogram by route, and the model's failures by reason; a
    caller's path or model name never becomes a label."""
    route = "/v1/embeddings"
    model = MODEL
    with stub.door(max_concurrent=0, max_queued=0) as busy:  # every /v1 request is refused by admission
        assert post(busy.port, body("x"))[0] == 429
        samples = scrape(busy.port)
        assert value(samples, "zoo_door_requests_total", route=route, method="POST", status="429") == 1
        assert not [k for k in samples if k[0] == "zoo_door_model_failures_total"]  # the door's 429: no failure
    with stub.door() as d:
        before = scrape(d.port)
        statuses = [post(d.port, body("one two", "three"))[0], post(d.port, body("four five six"))[0],
                    post(d.port, body("fine", "refuse"))[0], post(d.port, body("overload"))[0],
                    post(d.port, body("boom"))[0], post(d.port, {"model": "evil-name-x9", "input": "a"})[0],
                    post(d.port, body())[0],  # empty input: the door's own 400, not the model's
                    request(d.port, "GET", "/v1/models/evil-path-x9")[0], request(d.port, "GET", "/nowhere-x9")[0]]
        assert statuses == [200, 200, 400, 429, 500, 404, 400, 404, 404]
        samples = scrape(d.port)
    raw = "\n".join(str(k) for k in samples)
    assert "x9" not in raw and "nowhere" not in raw  # caller-chosen strings are no labels

    def delta(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    assert delta("zoo_door_requests_total", route=route, method="POST", status="200") == 2
    assert delta("zoo_door_requests_total", route=route, method="POST", status="400") == 2
    assert delta("zoo_door_requests_total", route=route, method="POST", status="429") == 1
    assert delta("zoo_door_requests_total", route=route, method="POST", status="500") == 1
    assert delta("zoo_door_requests_total", route=route, method="POST", status="404") == 1
    assert delta("zoo_door_requests_total", route="/v1/models/{model}", method="GET", status="404") == 1
    assert delta("zoo_door_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("zoo_door_requests_total", route="/metrics", method="GET", status="200") == 1  # `before`
    assert delta("zoo_door_items_total", model=model) == 3
    assert delta("zoo_door_tokens_total", model=model) == 6
    assert delta("zoo_door_model_failures_total", model=model, reason="input_refused") == 1
    assert delta("zoo_door_model_failures_total", model=model, reason="overloaded") == 1
    assert delta("zoo_door_model_failures_total", model=model, reason="internal") == 1
    assert sum(v - value(before, *k[:1], **dict(k[1])) for k, v in samples.items()
               if k[0] == "zoo_door_model_failures_total") == 3
    assert delta("zoo_door_request_duration_seconds_count", route=route) == 7
    assert delta("zoo_door_request_duration_seconds_bucket", route=route, le="60.0") == 7
    assert value(samples, "zoo_door_request_duration_seconds_bucket", route=route, le="0.005") >= 0


def test_metrics_gauges_show_requests_at_work_and_waiting(stub):
    with stub.door(max_concurrent=1, max_queued=2, queue_wait=10) as d, ThreadPoolExecutor(2) as pool:
        admission = d.app.state.admission
        working = pool.submit(post, d.port, body("hold"))
        wait_for(lambda: stub.calls)
        waiting = pool.submit(post, d.port, body("next"))
        wait_for(lambda: admission.waiting == 1)
        samples = scrape(d.port)
        assert value(samples, "zoo_door_requests_in_flight") == 1
        assert value(samples, "zoo_door_requests_queued") == 1
        stub.release.set()
        assert working.result(timeout=5)[0] == waiting.result(timeout=5)[0] == 200
        samples = scrape(d.port)
        assert value(samples, "zoo_door_requests_in_flight") == value(samples, "zoo_door_requests_queued") == 0


def test_metrics_is_open_with_an_api_key(stub):
    """/metrics follows /health's rule: no key needed (the /v1 routes still need it)."""
    with stub.door(api_key="sk-x") as d:
        assert request(d.port, "GET", "/metrics")[0] == 200
        assert post(d.port, body("a"))[0] == 401
        assert value(scrape(d.port), "zoo_door_requests_total", route="/v1/embeddings", method="POST",
                     status="401") == 1


# ---- OpenTelemetry ------------------------------------------------------------------------------------------


def test_spans_go_to_the_otlp_endpoint_as_children_of_the_callers_trace(stub, collector):
    """A span per request, in the caller's trace (its traceparent the parent), named by route, with the model,
    items, tokens and status; the context Triton is given is the door's span's."""
    with stub.door(otlp_endpoint=collector.url) as d:
        status, _, _ = post(d.port, body("one two", "three"), headers={"traceparent": TRACEPARENT,
                                                                       "X-Priority": "high"})
        assert status == 200
        assert post(d.port, body("refuse"))[0] == 400
        assert d.app.state.tracing.force_flush(10)
    spans = collector.spans()
    assert len(spans) == 2, spans
    first = next(s for s in spans if s.trace_id.hex() == TRACE_ID)
    assert first.parent_span_id.hex() == PARENT_ID and first.name == "POST /v1/embeddings"
    assert attributes(first) == {"http.request.method": "POST", "http.route": "/v1/embeddings",
                                 "http.response.status_code": 200, "zoo_door.priority": "high",
                                 "gen_ai.operation.name": "embeddings", "gen_ai.request.model": MODEL,
                                 "zoo_door.items": 2, "gen_ai.usage.input_tokens": 3}
    assert stub.calls[0].traceparent == f"00-{TRACE_ID}-{first.span_id.hex()}-01"
    second = next(s for s in spans if s is not first)
    assert second.trace_id.hex() != TRACE_ID and not second.parent_span_id  # no caller's trace: a root span
    assert attributes(second)["zoo_door.failure"] == "input_refused"
    assert attributes(second)["http.response.status_code"] == 400


def test_the_door_flushes_its_spans_when_it_closes(stub, collector):
    with stub.door(otlp_endpoint=collector.url) as d:
        assert post(d.port, body("a"))[0] == 200
    assert len(collector.spans()) == 1  # exported at shutdown, without a flush of ours


def test_otlp_endpoint_without_the_trace_extra_is_one_line(monkeypatch):
    """`zoo serve --otlp-endpoint` with the 'trace' extra missing fails before anything starts, in one line
    naming the extra; a URL that is not HTTP is refused too."""
    import zoo.extras
    from serving.cli import _check_door
    from zoo.cli import build_parser
    from zoo.errors import MissingExtraError, ServerError

    parser = build_parser()
    args = parser.parse_args(["serve", "--otlp-endpoint", "http://127.0.0.1:4318/v1/traces",
                              "--max-concurrent-requests", "3", "--max-queued-requests", "5", "--max-queue-ms", "250"])
    assert (args.max_concurrent_requests, args.max_queued_requests, args.max_queue_ms) == (3, 5, 250)
    _check_door(args)  # installed here: fine
    monkeypatch.setattr(zoo.extras, "missing", lambda extra: ["opentelemetry.sdk"] if extra == "trace" else [])
    with pytest.raises(MissingExtraError) as caught:
        _check_door(args)
    assert "\n" not in str(caught.value) and "embedding-zoo[trace]" in str(caught.value)
    monkeypatch.undo()
    args.otlp_endpoint = "127.0.0.1:4318"
    with pytest.raises(ServerError, match="--otlp-endpoint must be an OTLP/HTTP traces URL"):
        _check_door(args)
    args.otlp_endpoint, args.max_queue_ms = None, -1
    with pytest.raises(ServerError, match="--max-queue-ms must be 0 or more"):
        _check_door(args)
