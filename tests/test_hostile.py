"""Hostile input against a real tritonserver: no server path is ever opened, decoding is bounded by what the
model uses, every error carries the protocol's status and no server internals, and co-batched good requests
are unaffected."""

import json
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import zoo
from serving import contract
from serving.client import AsyncTritonEmbedder, TritonEmbedder
from serving.triton_model import Request, handle
from zoo import media
from zoo.defaults import default_model

from .hostile import long_flac, lying_flac

pytestmark = pytest.mark.server
TEXT_MODEL = contract.model_name(default_model("text"))
ALIGNED = contract.model_name(default_model("image"))  # embeds text, image, audio and interleaved


def _png(color=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def grpc_infer(server, model, name, elements, **params):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput(name, [len(elements), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=object).reshape(-1, 1))
    return client.infer(model, [tensor], parameters=params)


def grpc_error(server, model, name, elements, **params) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(server, model, name, elements, **params)
    return err.value


def http_infer(server, model, name, data, **params) -> tuple[int, dict]:
    body = {"inputs": [{"name": name, "shape": [len(data), 1], "datatype": "BYTES", "data": data}],
            "parameters": params}
    request = urllib.request.Request(f"{server.http_url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def assert_clean(message: str) -> None:
    """No traceback and no server path in what a remote caller is told."""
    assert "Traceback" not in message and "File \"" not in message and "/zoo/" not in message, message
    assert "/tmp/" not in message and "/work/" not in message and "site-packages" not in message, message


# ---- 2. nothing in a request names a server path -------------------------------------------------------
@pytest.mark.parametrize("exists", [True, False])
def test_interleaved_image_path_is_refused_not_opened(triton, tmp_path, exists):
    server, _ = triton
    target = tmp_path / "secret.png"
    if exists:
        target.write_bytes(_png())
    element = json.dumps([{"text": "a"}, {"image": str(target)}]).encode()
    err = grpc_error(server, ALIGNED, "INTERLEAVED", [element])
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "file paths are not accepted" in err.message() and str(target) not in err.message()
    status, body = http_infer(server, ALIGNED, "INTERLEAVED", [element.decode()])
    assert status == 400 and "file paths are not accepted" in body["error"]
    # the same reply whether or not the file exists: nothing about the server's files leaks
    other = grpc_error(server, ALIGNED, "INTERLEAVED", [json.dumps([{"image": str(tmp_path / "nope.png")}])
                                                        .encode()])
    assert other.message() == err.message()


def test_image_and_audio_inputs_are_data_never_paths(triton, tmp_path):
    server, _ = triton
    real = tmp_path / "real.png"
    real.write_bytes(_png())
    # the IMAGE tensor carries bytes: a path string is just undecodable bytes, never opened
    err = grpc_error(server, ALIGNED, "IMAGE", [str(real).encode()])
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "not an image" in err.message()
    err = grpc_error(server, ALIGNED, "AUDIO", [str(real).encode()])
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "cannot decode audio" in err.message()
    # a data: URI image part works
    uri = "data:image/png;base64," + __import__("base64").b64encode(_png()).decode()
    out = grpc_infer(server, ALIGNED, "INTERLEAVED", [json.dumps([{"image": uri}, {"text": "red"}]).encode()])
    assert out.as_numpy("EMBEDDING").shape == (1, zoo.get_spec(default_model("image")).dim)


def test_in_process_refusal_switch():
    with pytest.raises(zoo.InputError, match="file paths are not accepted"):
        media.decode_image(__file__, 0, allow_paths=False)
    with pytest.raises(zoo.InputError, match="file paths are not accepted"):
        media.decode_interleaved([{"image": __file__}], 0, allow_paths=False)
    with pytest.raises(zoo.InputError, match="not found"):  # in-process callers may still pass their paths
        media.decode_image("/no/such/file.png", 0)


# ---- 3. decoding bounded by what the model uses ---------------------------------------------------------
def test_lying_audio_header_is_an_input_error():
    for max_seconds in (10.0, None):
        with pytest.raises(zoo.InputError) as err:
            media.decode_audio(lying_flac(), 4, 16000, max_seconds=max_seconds)
        assert err.value.index == 4
        assert_clean(str(err.value))


def test_hour_long_audio_is_read_only_to_the_window(tmp_path):
    data = long_flac(tmp_path / "hour.flac").read_bytes()
    assert len(data) < 1_000_000  # a real file: one hour of 16 kHz audio
    media.decode_audio(data, 0, 16000, max_seconds=10)  # warm imports
    tracemalloc.start()
    try:
        wave = media.decode_audio(data, 0, 16000, max_seconds=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(wave) == int(np.ceil((10 + media.budgets.RESAMPLE_MARGIN_S) * 16000))
    assert peak < 16_000_000, f"decoding allocated {peak} bytes; the whole hour would be 230 MB"
    assert np.abs(wave[:16000]).max() > 0.1  # the tone at the start really was decoded


def test_lying_flac_fails_alone_in_a_dynamic_batch(triton):
    """The bad request and good audio requests from other threads share batches: only the bad one fails."""
    server, _ = triton
    rng = np.random.default_rng(5)
    good = [(rng.standard_normal(16000).astype(np.float32) * 0.1, 16000) for _ in range(12)]
    remote = TritonEmbedder(ALIGNED, server.grpc_url)
    expected = zoo.create(default_model("audio"), device="cpu").encode(good, "audio")
    outcomes, bad_errors = {}, []

    def run(i):
        outcomes[i] = remote.encode([good[i]], "audio")

    def run_bad():
        for _ in range(3):
            bad_errors.append(grpc_error(server, ALIGNED, "AUDIO", [lying_flac()]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(good))] + [threading.Thread(target=run_bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(bad_errors) == 3
    for err in bad_errors:
        assert err.status() == "StatusCode.INVALID_ARGUMENT" and err.message().startswith("[InputError] input 0:")
        assert_clean(err.message())
    for i in range(len(good)):
        assert (outcomes[i][0] @ expected[i]) >= 0.9999


def test_unexpected_failures_stay_inside_their_request(minilm):
    """A MemoryError while decoding one request (what a lying header did before) fails that request alone,
    as a plain internal error without the exception's text."""

    class Exploding:
        def __getattr__(self, name):
            return getattr(minilm, name)

        def decode(self, raw, modality, allow_paths=True, opts=None):
            if raw == [b"boom"]:
                raise MemoryError("/secret/server/path")
            return minilm.decode(raw, modality, allow_paths=allow_paths, opts=opts)

    requests = [Request({"TEXT": [b"fine"]}, {}), Request({"TEXT": [b"boom"]}, {}), Request({"TEXT": [b"ok"]}, {})]
    results = handle(Exploding(), requests)
    assert len(results) == 3 and isinstance(results[1], MemoryError)
    assert zoo.errors.to_wire(results[1]) == f"[ServerError] {zoo.errors.INTERNAL_MESSAGE}"
    assert zoo.errors.code_of(results[1]) == "internal"
    for i, text in ((0, "fine"), (2, "ok")):  # the requests before and after the failing one get their answers
        assert not isinstance(results[i], BaseException) and results[i] is not None, (i, results[i])
        np.testing.assert_allclose(results[i].embedding, minilm.encode([text], "text"), atol=1e-5)


# ---- 4. error codes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "element", "params", "grpc_code", "http_code", "cls"), [
    ("TEXT", b"\xff\xfe", {}, "INVALID_ARGUMENT", None, "InputError"),
    ("TEXT", b"fine", {"precision": "int4"}, "INVALID_ARGUMENT", 400, "InvalidArgumentError"),
    ("TEXT", b"fine", {"dimensions": 100000}, "INVALID_ARGUMENT", 400, "InvalidArgumentError"),
    ("TEXT", b"fine", {"colour": "blue"}, "INVALID_ARGUMENT", 400, "InvalidArgumentError"),
    ("IMAGE", b"\x89PNG\r\n\x1a\nnot really", {}, "INVALID_ARGUMENT", 400, "InputError"),
    ("TEXT", b"fine", {"prompt_name": "nope"}, "NOT_FOUND", 404, "UnknownPromptError"),
])
def test_client_mistakes_get_the_protocol_status(triton, name, element, params, grpc_code, http_code, cls):
    server, _ = triton
    model = ALIGNED if name == "IMAGE" else TEXT_MODEL
    err = grpc_error(server, model, name, [element], **params)
    assert err.status() == f"StatusCode.{grpc_code}", err
    assert err.message().startswith(f"[{cls}] ")
    assert_clean(err.message())
    if http_code is not None:  # JSON carries text only; invalid UTF-8 cannot be written in it
        status, body = http_infer(server, model, name, [element.decode("latin-1")], **params)
        assert status == http_code, body
        assert body["error"].startswith(f"[{cls}] ")  # (the JSON text is the UTF-8 of those bytes)


def test_unknown_model_is_not_found(triton):
    server, _ = triton
    err = grpc_error(server, "no-such-model", "TEXT", [b"x"])
    assert err.status() == "StatusCode.NOT_FOUND"
    status, _ = http_infer(server, "no-such-model", "TEXT", ["x"])
    assert status == 404


def test_error_codes_are_one_table():
    assert {cls.code for cls in (zoo.InputError, zoo.InvalidArgumentError, zoo.UnsupportedModalityError)} == {
        "invalid_argument"}
    assert zoo.UnknownModelError.code == zoo.UnknownPromptError.code == "not_found"
    assert zoo.ServerError.code == "internal" and zoo.ModelUnavailableError.code == "unavailable"
    assert all(c.code in zoo.errors.CODES for c in zoo.errors._all_subclasses(zoo.ZooError))


# ---- 5. the remote clients keep the per-item promise ---------------------------------------------------
def test_remote_encode_per_item_keeps_good_rows(triton, tmp_path):
    server, _ = triton
    local = zoo.create(default_model("image"), device="cpu")
    red, blue = _png((220, 20, 20)), _png((20, 20, 220))
    items = [red, b"\x89PNG\r\n\x1a\ncorrupt", blue, b"", np.zeros((4, 4, 3), np.uint8)]
    want = local.encode_per_item(items, "image")
    remote = TritonEmbedder(ALIGNED, server.grpc_url)
    got = remote.encode_per_item(items, "image")
    assert [type(g).__name__ for g in got] == [type(w).__name__ for w in want]
    for g, w in zip(got, want):
        if isinstance(w, zoo.InputError):
            assert g.index == w.index
        else:
            assert float(g @ w) >= 0.9999

    import asyncio

    async def main():
        client = AsyncTritonEmbedder(ALIGNED, server.grpc_url)
        try:
            return await client.encode_per_item(items, "image", batch_size=2)
        finally:
            await client.close()

    got_async = asyncio.run(main())
    assert [type(g).__name__ for g in got_async] == [type(w).__name__ for w in want]
    assert [g.index for g in got_async if isinstance(g, zoo.InputError)] == [1, 3]


def test_per_item_survives_a_server_side_rejection(triton, monkeypatch):
    """An item that passes the local check but that the server refuses costs only its own row."""
    server, _ = triton
    remote = TritonEmbedder(TEXT_MODEL, server.grpc_url)
    texts = ["one", "two", "three", "four"]
    real = remote.wire_per_item

    def sneak(items, modality):  # item 2 reaches the server as invalid UTF-8
        wired = real(items, modality)
        wired[2] = b"\xff"
        return wired

    monkeypatch.setattr(remote, "wire_per_item", sneak)
    got = remote.encode_per_item(texts, "text")
    assert isinstance(got[2], zoo.InputError) and got[2].index == 2
    want = zoo.create(default_model("text"), device="cpu").encode(texts, "text")
    for i in (0, 1, 3):
        assert float(got[i] @ want[i]) >= 0.9999


def test_clients_have_no_unimplemented_methods():
    import inspect

    for cls in (TritonEmbedder, AsyncTritonEmbedder):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                assert "NotImplementedError" not in inspect.getsource(fn), f"{cls.__name__}.{name}"
        assert not issubclass(cls, zoo.base.Embedder)


def test_lying_header_via_the_client_fails_locally_first(triton):
    server, _ = triton
    remote = TritonEmbedder(ALIGNED, server.grpc_url)
    t0 = time.monotonic()
    with pytest.raises(zoo.InputError) as err:
        remote.encode([(np.zeros(1600, np.float32), 16000), lying_flac()], "audio")
    assert err.value.index == 1 and time.monotonic() - t0 < 10
