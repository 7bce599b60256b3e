"""What a stranger can make the OpenAI door and zoo's /health spend: body size and arrival time, parse time,
concurrent requests, per-item size, slow headers, idle and unread connections, and /health's gRPC channels.

No tritonserver: every request here is answered before the door would call Triton (its gRPC address is a closed
port, so one that got that far would be a 503)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import zoo
from serving import openai_api
from serving.health import HEALTH_DEADLINE_S, HealthServer, health_report
from serving.http import HttpLimits
from serving.openai_api import ApiError, parse_json, parse_request, render_embeddings
from serving.openai_models import EmbeddingResponse
from serving.openai_server import OpenAIServer
from serving.server import free_ports
from zoo.media.budgets import MAX_PARTS, MAX_TEXT_CHARS
from zoo.spec import Modality

from .processes import taken_port

NOWHERE = "127.0.0.1:1"  # nothing listens: a request that reached Triton would be a 503
MiB = 1 << 20


@contextlib.contextmanager
def door(limits: HttpLimits | None = None, **options):
    server = OpenAIServer(NOWHERE, "127.0.0.1", free_ports().http, limits=limits,
                          health=options.pop("health", lambda: (True, {"status": "ready"})), **options).start()
    try:
        yield server
    finally:
        server.close()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def post(port: int, payload: dict | bytes, **kw) -> tuple[int, dict, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, headers, raw = request(port, "POST", "/v1/embeddings", body, **kw)
    return status, headers, json.loads(raw)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, dict]:
    """One HTTP answer (status, headers, JSON body) read from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(rest[:int(headers["content-length"])])


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and discarding what it sends), or None."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        sock.settimeout(max(seconds - (time.monotonic() - start), 0.01))
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            return None
        except ConnectionError:
            return time.monotonic() - start
    return None


def assert_openai_error(body: dict, code: str | None = None) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode()


# ---- body size and arrival --------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_without_reading_it():
    """Content-Length over the limit: 413 after a few KiB of a declared 100 MiB; chunked: 413 once the count
    passes the limit, while the client has not finished. Either way what else comes is not waited for: the
    connection is closed within the drain time although the client never finishes. A client that does finish
    its (discarded) body in time keeps its connection, as any HTTP/1.1 client expects."""
    with door(HttpLimits(drain=1.0), max_body_bytes=MiB) as d:
        sock = connect(d.port)
        sock.sendall(head("/v1/embeddings", 2 * MiB))
        status, _, body = read_answer(sock, timeout=5)
        assert status == 413 and body["error"]["code"] == "request_too_large"
        sock.sendall(b" " * (2 * MiB))  # the rest, then the next request on the same connection
        sock.sendall(head("/v1/embeddings", 14) + b'{"model": "m"}')
        status, _, body = read_answer(sock, timeout=5)
        assert status == 400 and "`input` is required" in body["error"]["message"]
        sock.close()

        sock = connect(d.port)
        sock.sendall(head("/v1/embeddings", 100 * MiB) + b'{"model": "m", "input": "' + b"x" * 4096)
        status, _, body = read_answer(sock, timeout=5)
        assert status == 413 and str(MiB) in assert_openai_error(body, "request_too_large")["message"]
        assert closed_within(sock, 4) is not None
        sock.close()

        sock = connect(d.port)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * (256 << 10)
        for _ in range(5):  # 1.25 MiB, no last chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _, body = read_answer(sock, timeout=5)
        assert status == 413 and body["error"]["code"] == "request_too_large"
        assert closed_within(sock, 4) is not None
        sock.close()
        status, _, body = post(d.port, {"model": "m"})  # still serving
        assert status == 400 and "`input` is required" in body["error"]["message"]


def test_an_early_answer_with_connection_close_lingers():
    """`Connection: close` and a body over the limit: uvicorn would close as soon as the 413 is written, while the
    client is still sending, and the kernel would reset the connection (which can destroy the 413 before the client
    reads it). Instead the answer is followed by a FIN and what still comes is read and discarded, so the client
    sends its whole body without error, reads the whole 413, then EOF."""
    with door(max_body_bytes=MiB) as d:
        for _ in range(3):
            sock = connect(d.port)
            sock.sendall(head("/v1/embeddings", 4 * MiB, "Connection: close\r\n") + b" " * (64 << 10))
            time.sleep(0.3)  # the 413 is written and the server closes its side
            sock.sendall(b" " * (4 * MiB - (64 << 10)))  # would raise BrokenPipe / ConnectionReset after a reset
            sock.shutdown(socket.SHUT_WR)
            status, headers, body = read_answer(sock)
            assert status == 413 and headers["connection"] == "close" and body["error"]["code"] == "request_too_large"
            assert sock.recv(65536) == b""  # a clean end
            sock.close()


def test_body_that_does_not_arrive_in_time_is_408():
    with door(HttpLimits(drain=0.5), body_timeout=1.0) as d:
        sock = connect(d.port)
        start = time.monotonic()
        sock.sendall(head("/v1/embeddings", 1000) + b'{"model": ')
        status, _, body = read_answer(sock, timeout=5)
        assert status == 408 and assert_openai_error(body, "request_timeout")
        assert 0.9 < time.monotonic() - start < 3
        sock.close()


def test_bodies_held_at_once_share_a_byte_budget():
    """A body that would push the bytes held past the budget is refused with 429 before it is read."""
    with door(max_body_bytes=MiB, max_buffered_bytes=MiB + MiB // 2) as d:
        holder = connect(d.port)
        holder.sendall(head("/v1/embeddings", MiB) + b'{"model": ')  # holds 1 MiB of the budget
        deadline = time.monotonic() + 5
        while d.app.state.budget.used == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, body = post(d.port, b" " * (MiB - 10) + b'{"a": 1}')
        assert status == 429 and headers["retry-after"] == "1"
        assert assert_openai_error(body, "rate_limit_exceeded")["message"].startswith("the server holds too many")
        holder.close()
        deadline = time.monotonic() + 5
        while d.app.state.budget.used and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.app.state.budget.used == 0  # released when the request ended
        status, _, body = post(d.port, b" " * (MiB - 10) + b'{"a": 1}')
        assert status == 400 and "unrecognized request argument" in body["error"]["message"]


# ---- parsing off the event loop -----------------------------------------------------------------------------


def _flood(target_bytes: int) -> bytes:
    """A body of nothing but empty objects: json.loads makes ~24x its size of Python objects, holding the GIL."""
    row = b"[" + b",".join([b"{}"] * 2000) + b"]"
    rows = target_bytes // (len(row) + 1)
    return b'{"model": "m", "input": [' + b",".join([row] * rows) + b"]}"


def test_a_huge_body_under_the_limit_does_not_stall_other_requests():
    """While the door parses a 15 MiB body (json.loads takes most of a second on it, GIL held), other requests are
    answered within a bounded time; the body itself gets a 400 once it holds more values than a valid request."""
    flood = _flood(15 * MiB)
    assert len(flood) < 16 * MiB
    with door() as d:
        done: dict = {}

        def big():
            start = time.monotonic()
            done["status"], _, done["body"] = post(d.port, flood)
            done["span"] = (start, time.monotonic())

        thread = threading.Thread(target=big)
        thread.start()
        small = []
        while thread.is_alive():
            start = time.monotonic()
            status, _, _ = post(d.port, {"model": "m"})  # parsed and refused: 400
            assert status == 400
            small.append((start, time.monotonic()))
            status, _, _ = request(d.port, "GET", "/health")
            assert status == 200
            small.append((start, time.monotonic()))
        thread.join()
    begin, end = done["span"]
    during = [b - a for a, b in small if begin <= a <= end]  # started while the big one was sent or parsed
    assert end - begin > 0.2, (end - begin, small)  # a parse long enough to have stalled the loop
    assert len(during) >= 3 and max(during) < 0.3, (end - begin, sorted(during)[-5:])
    assert done["status"] == 400 and "JSON values" in done["body"]["error"]["message"], done


def test_the_parser_reads_what_json_reads_within_bounds():
    """parse_json gives json.loads' values and error messages; it stops at the depth, list length and value count
    no valid request reaches."""
    for body in [b'{"model": "m", "input": ["a", {"image": "data:,"}], "dimensions": 8, "user": null}',
                 b' {"a" : [1, -2.5e3, 0.1, true, false, "x\\u00e9\\n", {"b": []}]} ',
                 '{"k": "naïve ☕"}'.encode(), '{"k": "naïve"}'.encode("utf-16"), b'\xef\xbb\xbf{"a": 1}',
                 b'{"a": 1, "a": 2}', b'"s"', b"[]", b"-0"]:
        assert parse_json(body) == json.loads(body)
    for body in [b"", b"{", b'{"a"}', b"[1,]", b"[1 2]", b'{"a": 1} x', b'"\x01"', b"\xff", b"01", b"1" * 5000]:
        try:
            json.loads(body)
        except ValueError as err:
            with pytest.raises(ApiError) as caught:
                parse_json(body)
            assert caught.value.message == f"the request body is not valid JSON: {err}"
    with pytest.raises(ApiError, match="nests too deeply"):
        parse_json(b"[" * (openai_api.MAX_DEPTH + 1) + b"]" * (openai_api.MAX_DEPTH + 1))
    parse_json(b"[" * openai_api.MAX_DEPTH + b"]" * openai_api.MAX_DEPTH)
    with pytest.raises(ApiError, match=r"`input` has more than 2048 items") as caught:
        parse_json(b'{"input": [' + b",".join([b'"a"'] * 2049) + b"]}")
    assert caught.value.param == "input"
    with pytest.raises(ApiError, match="JSON values"):
        parse_json(_flood(2 * MiB))
    # the largest valid shape parses: 2048 interleaved items of MAX_PARTS image parts
    part = {"type": "image_url", "image_url": {"url": "data:,"}}
    widest = {"model": "m", "input": [{"content": [part] * MAX_PARTS}] * 2048, "dimensions": 8}
    assert parse_json(json.dumps(widest).encode()) == widest


def test_token_id_arrays_are_read_compactly_with_json_values():
    """With int_arrays (the embeddings body), an array of non-negative integers comes back as an int64 array with
    json.loads' values, however long; anything else in the body is read as before, invalid JSON refused alike;
    a body of LangChain's default shape (1000 texts of 300 ids: 300,000 values, past MAX_VALUES) is a valid request
    whose items are the texts the ids spell."""
    from serving.openai_api import read_request
    from serving.token_input import encoding

    for body in [b'{"input": [[1, 2 ,3],[4], [0]], "x": [1.5, 2, -3], "y": [[1, 2], "a"]}', b"[ 7 ]", b"[[]]",
                 b'{"input": [1e3, 10000000000, 12345678901]}']:
        got = parse_json(body, int_arrays=True)
        assert json.loads(json.dumps(got, default=list)) == json.loads(body)
    assert type(parse_json(b'{"input": [[5, 6]]}', int_arrays=True)["input"][0]).__name__ == "array"
    for body in [b"[01]", b"[1,]", b"[1 2]", b"[1, 2"]:
        with pytest.raises(ApiError, match="not valid JSON"):
            parse_json(body, int_arrays=True)
    text = "the quick brown fox jumps over the lazy dog " * 30
    ids = encoding().encode(text)
    body = json.dumps({"model": "m", "input": [ids] * 1000}).encode()
    with pytest.raises(ApiError, match="JSON values"):
        parse_json(body)  # walked value by value, it is past the bound
    req = read_request(body)
    assert len(req.items) == 1000 and req.items[999] == (Modality.TEXT, text)


def test_token_ids_are_bounded_before_they_are_decoded():
    """An id array over MAX_TOKEN_IDS is refused as its first id past the bound is read, and what ids spell is
    counted before it is decoded (one id may spell 128 characters in 6 bytes of body): an item over
    MAX_SPELLED_BYTES, or a request over MAX_SPELLED_REQUEST, is a 400 naming it; TEI's bodies read their id
    arrays compactly too (1000 inputs of 512 ids is a valid body)."""
    from serving.openai_api import read_request
    from serving.openai_models import MAX_SPELLED_BYTES, MAX_SPELLED_REQUEST
    from serving.tei_models import TEIEmbedRequest, parse
    from serving.token_input import encoding, spelled_bytes
    from zoo.long import MAX_TOKEN_IDS

    wide = 58040  # an id that spells 128 characters
    assert spelled_bytes([wide]) == 128 == len(encoding().decode([wide]))
    with pytest.raises(ApiError, match=f"more than {MAX_TOKEN_IDS} token ids") as caught:
        read_request(json.dumps({"model": "m", "input": [[1] * (MAX_TOKEN_IDS + 1)]}).encode())
    assert caught.value.param == "input"
    with pytest.raises(ApiError, match=f"spell {MAX_TOKEN_IDS * 128} bytes of text; at most {MAX_SPELLED_BYTES}"):
        read_request(json.dumps({"model": "m", "input": [[wide] * MAX_TOKEN_IDS]}).encode())
    per_item = MAX_TEXT_CHARS // 128  # items of the most characters one may hold
    with pytest.raises(ApiError, match=f"spell more than {MAX_SPELLED_REQUEST} bytes") as caught:
        read_request(json.dumps({"model": "m", "input": [[wide] * per_item] * 17}).encode())
    assert caught.value.message.startswith(f"input[{MAX_SPELLED_REQUEST // MAX_TEXT_CHARS}]")
    body = json.dumps({"inputs": [list(range(1000, 1512))] * 1000}).encode()
    got = parse(TEIEmbedRequest, body)
    assert len(got.items) == 1000 and got.items[999] == list(range(1000, 1512))


def test_the_answer_renders_as_json_response_would():
    from fastapi.responses import JSONResponse
    from scipy import sparse

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(8).astype(np.float32) for _ in range(3)]
    ints = [np.array([-3, 0, 127], np.int8)]
    sparse_rows = [sparse.csr_matrix(np.array([[0, 1.5, 0, 2]], np.float32))]
    for batch, fmt, kind in [(rows, "float", "dense"), (rows, "base64", "dense"), (ints, "float", "dense"),
                             (ints, "base64", "dense"), (sparse_rows, "float", "sparse")]:
        want = JSONResponse(openai_api.embeddings_response("naïve/model", batch, fmt, 7, kind)).body
        assert render_embeddings("naïve/model", batch, fmt, 7, kind) == want
        EmbeddingResponse.model_validate_json(want)  # the answer /openapi.json documents


# ---- per-item caps ------------------------------------------------------------------------------------------


def test_text_over_max_text_chars_is_400_naming_its_index():
    with door() as d:
        status, _, body = post(d.port, {"model": "m", "input": ["fine", "x" * (MAX_TEXT_CHARS + 1)]})
        err = assert_openai_error(body, "text_too_long")
        assert status == 400 and err["param"] == "input" and err["message"].startswith("input[1]: ")
        assert str(MAX_TEXT_CHARS) in err["message"], err
        parts = [{"type": "text", "text": "y" * (MAX_TEXT_CHARS // 2 + 1)}] * 2
        status, _, body = post(d.port, {"model": "m", "input": ["a", "b", {"content": parts}]})
        assert status == 400 and assert_openai_error(body, "text_too_long")["message"].startswith("input[2]: ")
    assert parse_request({"model": "m", "input": "x" * MAX_TEXT_CHARS}).items[0][1] == "x" * MAX_TEXT_CHARS


def test_interleaved_item_over_max_parts_is_400():
    part = {"type": "text", "text": "a"}
    with door() as d:
        status, _, body = post(d.port, {"model": "m", "input": ["a", {"content": [part] * (MAX_PARTS + 1)}]})
    err = assert_openai_error(body, "too_many_parts")
    assert status == 400 and err["message"].startswith("input[1]: ") and f"at most {MAX_PARTS}" in err["message"]
    assert len(parse_request({"model": "m", "input": [{"content": [part] * MAX_PARTS}]}).items[0][1]) == MAX_PARTS


# ---- concurrency --------------------------------------------------------------------------------------------


def test_requests_past_the_cap_get_429_in_openai_shape():
    """2 at work and 1 waiting (slow bodies): the 4th gets 429 with Retry-After at once; the waiting one gets 429
    after queue_wait; once the slow ones finish, requests are served again."""
    with door(max_concurrent=2, max_queued=1, queue_wait=1.5) as d:
        admission = d.app.state.admission
        slow = []
        for _ in range(3):
            sock = connect(d.port)
            sock.sendall(head("/v1/embeddings", 16) + b'{"model"')  # 8 of 16 bytes: the body does not end
            slow.append(sock)
        deadline = time.monotonic() + 5
        while admission.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert admission.waiting == 1
        start = time.monotonic()
        status, headers, body = post(d.port, {"model": "m", "input": "x"})
        assert status == 429 and time.monotonic() - start < 1 and headers["retry-after"] == "1"
        err = assert_openai_error(body, "rate_limit_exceeded")
        assert err["type"] == "requests" and "busy" in err["message"]
        status, _, body = read_answer(slow[2], timeout=5)  # the waiting one, after queue_wait
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
        for sock in slow[:2]:
            sock.sendall(b': "m"}  ')
            status, _, body = read_answer(sock)
            assert status == 400 and "`input` is required" in body["error"]["message"]
        for sock in slow:
            sock.close()
        status, _, _ = post(d.port, {"model": "m"})
        assert status == 400
        assert request(d.port, "GET", "/health")[0] == 200  # never queued


# ---- the HTTP stack -----------------------------------------------------------------------------------------


@pytest.fixture(params=["door", "health"])
def stack(request):
    """A door or a HealthServer with a 1.5 s header timeout and 6 connections at most."""
    limits = HttpLimits(header_timeout=1.5, max_connections=6, keep_alive=30)
    if request.param == "door":
        with door(limits) as d:
            yield SimpleNamespace(port=d.port, path="/health")
    else:
        h = HealthServer(None, port=free_ports().http, limits=limits,
                         report=lambda: (True, {"status": "ready"})).start()
        try:
            yield SimpleNamespace(port=h.port, path="/health")
        finally:
            h.close()


def test_slowloris_is_closed_within_the_header_timeout(stack):
    """Headers sent one byte at a time (4 a second, so they would take 10 s) and a connection that sends nothing
    are closed at the header timeout (1.5 s); so is a slow second request on a kept-alive connection."""
    trickle, silent = connect(stack.port), connect(stack.port)
    line = f"GET {stack.path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {'a' * 20}\r\n\r\n".encode()
    start, closed = time.monotonic(), None
    for byte in line:
        try:
            trickle.send(bytes([byte]))
        except OSError:
            closed = time.monotonic() - start
            break
        if closed_within(trickle, 0.25) is not None:
            closed = time.monotonic() - start
            break
    assert closed is not None and 1.2 < closed < 3.5, closed
    assert closed_within(silent, 1.0) is not None  # opened at the same time
    kept = connect(stack.port)
    kept.sendall(line)
    assert read_answer(kept)[0] == 200
    start = time.monotonic()
    kept.sendall(line[:5])
    assert closed_within(kept, 4) is not None and time.monotonic() - start < 3
    for sock in (trickle, silent, kept):
        sock.close()


def test_headers_past_the_size_cap_are_refused(stack):
    """A request line and headers still incomplete past 16 KiB (h11's incomplete-event limit, set explicitly):
    400 and closed. (A whole header block that arrives in one read is parsed: at most asyncio's read size.)"""
    sock = connect(stack.port)
    sock.sendall(f"GET {stack.path} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * (17 << 10)}".encode())
    sock.settimeout(5)
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ") and closed_within(sock, 2) is not None
    sock.close()


def test_connections_past_the_cap_are_closed(stack):
    held = [connect(stack.port) for _ in range(6)]
    time.sleep(0.2)
    extra = connect(stack.port)
    assert closed_within(extra, 1.0) is not None
    assert all(closed_within(sock, 0.05) is None for sock in held)
    for sock in held + [extra]:
        sock.close()
    time.sleep(0.2)
    assert request(stack.port, "GET", stack.path)[0] == 200


def test_a_client_that_does_not_read_its_answer_is_disconnected():
    """A 64 MiB answer to a client that reads none of it: the write timeout (1 s) drops the connection (reset,
    so the kernel does not go on sending it either)."""
    big = {"status": "ready", "blob": "x" * (64 * MiB)}
    h = HealthServer(None, port=free_ports().http, limits=HttpLimits(write_timeout=1.0),
                     report=lambda: (True, big)).start()
    try:
        sock = connect(h.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        connections = h._http._server.server_state.connections
        deadline = time.monotonic() + 10
        while not connections and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        while connections and time.monotonic() < deadline:  # read nothing meanwhile
            time.sleep(0.05)
        assert not connections and 0.9 < time.monotonic() - start < 4
        got = 0
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        assert got < 64 * MiB
        sock.close()
    finally:
        h.close()


def test_the_sdk_reads_the_limits_as_its_own_errors():
    """The openai SDK raises its own classes: RateLimitError for 429 (with nothing admitted), BadRequestError
    naming the item for a text over the cap, APIStatusError 413 over the body limit."""
    import openai

    with door(max_concurrent=0, max_queued=0) as d, openai.OpenAI(base_url=d.url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.RateLimitError) as caught:
            c.embeddings.create(model="m", input="x")
        assert caught.value.status_code == 429 and caught.value.body["code"] == "rate_limit_exceeded"
    with door(max_body_bytes=MAX_TEXT_CHARS * 3) as d, openai.OpenAI(base_url=d.url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.BadRequestError, match=r"input\[1\]: the text has"):
            c.embeddings.create(model="m", input=["a", "x" * (MAX_TEXT_CHARS + 1)])
        with pytest.raises(openai.APIStatusError) as caught:
            c.embeddings.create(model="m", input=["x" * MAX_TEXT_CHARS] * 4)
        assert caught.value.status_code == 413


def test_answers_are_not_held_by_nagle(stack):
    """Sequential requests on one kept-alive connection take about a millisecond, not delayed ACK's 40 ms: the
    pre-bound listening socket is TCP (asyncio sets TCP_NODELAY only on those), like uvicorn's own."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        conn.request("GET", stack.path)
        reply = conn.getresponse()
        reply.read()
        times.append(time.perf_counter() - start)
    conn.close()
    assert reply.status == 200 and sorted(times)[len(times) // 2] < 0.02, times


def test_the_sdk_reuses_its_connection_after_a_413():
    """The SDK sends its whole body although the 413 came first, reads the 413, and sends the next request on the
    same pooled connection at once: that connection must still be open (closing it when the discarded body ended
    lost about 4 of 10 such requests)."""
    import openai

    with door(max_body_bytes=MiB) as d, openai.OpenAI(base_url=d.url, api_key="x", max_retries=0) as c:
        for _ in range(20):
            with pytest.raises(openai.APIStatusError) as caught:
                c.embeddings.create(model="m", input=["x" * MiB] * 2)
            assert caught.value.status_code == 413
            with pytest.raises(openai.BadRequestError, match="not an id of cl100k_base"):
                c.embeddings.create(model="m", input=[[100256]])


def test_taken_ports_are_one_line_errors():
    with taken_port() as port:
        with pytest.raises(zoo.ServerError, match=f"port {port} .*--openai-port"):
            OpenAIServer(NOWHERE, "127.0.0.1", port)
        with pytest.raises(zoo.ServerError, match=f"port {port} .*--health-port"):
            HealthServer(None, port=port)


# ---- /health ------------------------------------------------------------------------------------------------


class FakeClient:
    """tritonclient.grpc.InferenceServerClient, counted."""

    made: list = []
    answer = True

    def __init__(self, url, *args, **kwargs):
        self.url, self.deadlines, self.closed = url, [], False
        FakeClient.made.append(self)

    def is_server_ready(self, client_timeout=None):
        self.deadlines.append(client_timeout)
        return FakeClient.answer

    def close(self):
        self.closed = True


def test_health_reuses_one_grpc_client_and_answers_get_and_head(monkeypatch):
    """Twenty GETs and HEADs on /health and on the door's /health (both from the supervisor's report) make one
    gRPC client, each call with the short deadline; 503 with the same body shape when not ready."""
    import tritonclient.grpc

    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", FakeClient)
    monkeypatch.setattr(FakeClient, "made", [])
    url = f"127.0.0.1:{free_ports().grpc}"  # a fresh address: no probe of an earlier test is shared
    process = SimpleNamespace(poll=lambda: None)
    models = {"m": {"state": "ready", "reason": None, "restarts": 0}}
    supervisor = SimpleNamespace(server=SimpleNamespace(process=process, grpc_url=url), ready=lambda: True,
                                 status=lambda: models)
    h = HealthServer(supervisor, port=free_ports().http).start()
    try:
        port = h.port
        with door(health=lambda: health_report(supervisor)) as d:
            for target in (port, d.port):
                for _ in range(5):
                    status, headers, raw = request(target, "GET", "/health")
                    assert status == 200 and headers["content-type"] == "application/json"
                    assert json.loads(raw) == {"status": "ready", "tritonserver": "ready", "models": models}
                    status, headers, raw = request(target, "HEAD", "/health")
                    assert status == 200 and raw == b"" and int(headers["content-length"]) > 0
            FakeClient.answer = False
            for target in (port, d.port):
                status, _, raw = request(target, "GET", "/health")
                assert status == 503 and json.loads(raw)["tritonserver"] == "running"
                assert request(target, "HEAD", "/health")[0] == 503
        assert request(port, "GET", "/other")[0] == 404
    finally:
        FakeClient.answer = True
        h.close()
    assert len(FakeClient.made) == 1, FakeClient.made
    client = FakeClient.made[0]
    assert client.url == url and len(client.deadlines) == 24 and set(client.deadlines) == {HEALTH_DEADLINE_S}
    assert client.closed  # close() released the channel
