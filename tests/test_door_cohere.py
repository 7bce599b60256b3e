"""Cohere's embed API at the door of a real `zoo serve` (``/v2/embed``, ``/v1/embed``), driven by the real
``cohere.ClientV2``, raw HTTP, and LangChain's ``CohereEmbeddings`` and Haystack's ``CohereTextEmbedder`` from the
clients' venv; every answer is compared with in-process ``encode()``."""

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cohere
import numpy as np
import pytest

import zoo
from serving.cohere_embed import INPUT_PROMPTS, prompt_for, turn
from zoo.defaults import default_model

from .processes import start_serve, stop_group
from .test_openai import cos, png_uri  # the same helpers as the OpenAI door's tests

pytestmark = pytest.mark.server
KEY = "co-zoo-test"
TEXT = default_model("text")
ALIGNED = default_model("image")
PROMPTED = "tiny-prompted"  # a tiny text model with a prompt for every input_type (its folder's name)
PROMPTS = {"query": "query: ", "document": "passage: ", "classification": "classify: ", "clustering": "cluster: "}
ROOT = Path(__file__).resolve().parent.parent
CLIENTS = Path(os.environ.get("ZOO_CLIENTS_VENV", ROOT / ".venv-clients")) / "bin" / "python"
DOCS = ROOT / "docs" / "openai.md"
LONG = "word " * 400  # over MiniLM's 256-token window


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory) -> Path:
    from .tiny_models import make_tiny_text_folder

    return make_tiny_text_folder(tmp_path_factory.mktemp("cohere") / PROMPTED, pooling="mean", prompts=PROMPTS)


@pytest.fixture(scope="module")
def serve(tmp_path_factory, prompted_dir):
    from serving.export import export

    repository = tmp_path_factory.mktemp("cohere-repo") / "repository"
    export([TEXT, ALIGNED, str(prompted_dir)], repository)
    s = start_serve("--api-key", KEY, repository=repository, wait_for="OpenAI-compatible API:")
    s.root = s.openai.removesuffix("/v1")  # Cohere's clients take the host and add /v2/embed themselves
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def local(prompted_dir):
    return {TEXT: zoo.create(TEXT, device="cpu"), ALIGNED: zoo.create(ALIGNED, device="cpu"),
            PROMPTED: zoo.create(str(prompted_dir), device="cpu")}


@pytest.fixture()
def co(serve):
    return cohere.ClientV2(api_key=KEY, base_url=serve.root, max_retries=0)


def post(serve, path: str, body: dict, key: str | None = KEY) -> tuple[int, dict]:
    """(status, JSON body) of a raw POST to the door."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(serve.root + path, data=json.dumps(body).encode(), method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ---- without a server ----------------------------------------------------------------------------------------
def test_input_type_picks_the_prompt_of_that_use():
    """Each input_type names the model's prompt of that use where it has one; else none (the model's default)."""
    assert set(INPUT_PROMPTS) == {"search_query", "search_document", "classification", "clustering", "image"}
    assert [prompt_for(t, PROMPTS) for t in ("search_query", "search_document", "classification", "clustering",
                                             "image", None)] == ["query", "document", "classification", "clustering",
                                                                 None, None]
    only_query = {"query": "q: "}
    assert [prompt_for(t, only_query) for t in ("search_query", "search_document", "classification")] == [
        "query", None, None]
    assert prompt_for("search_query", {}) is None


def test_priority_number_to_turn():
    """Cohere's priority (lower first, 0 its default) keeps the header's turn at 0 and is low above it; the
    door's names are taken as they are."""
    assert turn(None, None) == turn(0, None) == "normal" and turn(0, "high") == "high"
    assert turn(3, "high") == "low" and turn("high", "low") == "high"


def test_openapi_documents_the_routes():
    """/openapi.json documents both routes with their request models, Cohere's answers and error shape."""
    from serving.openai_server import create_app

    doc = create_app("127.0.0.1:1", api_key=KEY).openapi()
    for path, model in (("/v2/embed", "CohereEmbedRequest"), ("/v1/embed", "CohereEmbedV1Request")):
        route = doc["paths"][path]["post"]
        assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert route["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("CohereError")
        assert route["security"] == [{"bearer": []}]
    fields = doc["components"]["schemas"]["CohereEmbedRequest"]["properties"]
    assert {"texts", "images", "inputs", "input_type", "embedding_types", "output_dimension", "truncate"} <= set(fields)


# ---- against a real server -----------------------------------------------------------------------------------
def test_texts_float_equal_in_process(co, local, minilm_dir):
    """ClientV2's texts come back as in-process encode()'s vectors, in Cohere's v2 shape, with the tokens read."""
    from sentence_transformers import SentenceTransformer

    texts = ["a cat on a sofa", "naïve café ☕", "the third text"]
    reply = co.embed(model=TEXT, texts=texts, input_type="search_document", embedding_types=["float"])
    assert reply.response_type == "embeddings_by_type" and reply.id and reply.texts == texts
    assert cos(reply.embeddings.float_, local[TEXT].encode(texts, "text")).min() >= 1 - 1e-5
    assert reply.embeddings.int8 is None and reply.meta.api_version.version == "2"
    tokens = int(SentenceTransformer(str(minilm_dir), device="cpu").tokenize(texts)["attention_mask"].sum())
    assert reply.meta.billed_units.input_tokens == tokens and reply.meta.billed_units.images == 0
    default = co.embed(model=TEXT, texts=texts[:1], input_type="search_query")  # embedding_types left out: float
    assert cos(default.embeddings.float_[0], reply.embeddings.float_[0]) >= 1 - 1e-6


def test_several_types_equal_in_process_precisions(co, local):
    """Every embedding type in one call equals encode() at that precision (int8, uint8, binary, ubinary exactly;
    base64: the float vector's float32 bytes), at the full width and at an output_dimension."""
    texts = ["a red circle", "a blue square", "zebra crossing"]
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    for dims in (None, 64):
        extra = {} if dims is None else {"output_dimension": dims}
        reply = co.embed(model=TEXT, texts=texts, input_type="search_document", embedding_types=types, **extra)
        got = reply.embeddings
        for kind in ("int8", "uint8", "binary", "ubinary"):
            want = local[TEXT].encode(texts, "text", precision=kind, dimensions=dims)
            assert np.array_equal(np.array(getattr(got, kind)), want), (kind, dims)
        floats = local[TEXT].encode(texts, "text", dimensions=dims)
        assert np.array(got.float_).shape == floats.shape == (3, dims or 384)
        assert cos(got.float_, floats).min() >= 1 - 1e-5
        decoded = np.stack([np.frombuffer(base64.b64decode(b), "<f4") for b in got.base64])
        assert np.array_equal(decoded, np.array(got.float_, np.float32))


def test_output_dimension_the_model_refuses(co):
    """The model's own checks of output_dimension, in Cohere's names: past its width, and binary's bytes."""
    with pytest.raises(cohere.BadRequestError) as wide:
        co.embed(model=TEXT, texts=["x"], input_type="search_query", output_dimension=1000)
    assert "output_dimension=1000 is outside 1..384" in wide.value.body["message"]
    with pytest.raises(cohere.BadRequestError) as packed:
        co.embed(model=TEXT, texts=["x"], input_type="search_query", output_dimension=100,
                 embedding_types=["float", "binary"])
    assert "embedding type 'binary' packs 8 dimensions" in packed.value.body["message"]
    assert "output_dimension=100 is not a multiple of 8" in packed.value.body["message"]


def test_images_and_mixed_inputs(co, local):
    """images (data URIs) and inputs: mixed content is one interleaved item on a model that embeds them; a
    one-part input is that text or image on a model that does not; several parts there are refused."""
    red, blue = png_uri((220, 30, 30)), png_uri((30, 30, 220))
    m = local[ALIGNED]
    images = co.embed(model=ALIGNED, images=[red, blue], input_type="image", embedding_types=["float", "int8"])
    assert cos(images.embeddings.float_, m.encode([red, blue], "image")).min() >= 1 - 1e-5
    assert np.array_equal(np.array(images.embeddings.int8), m.encode([red, blue], "image", precision="int8"))
    assert images.meta.billed_units.images == 2 and images.texts == []
    mixed = [{"content": [{"type": "image_url", "image_url": {"url": red}}, {"type": "text", "text": "but blue"}]},
             {"content": [{"type": "text", "text": "a red square"}]}]
    reply = co.embed(model=ALIGNED, inputs=mixed, input_type="search_document", embedding_types=["float"])
    want = m.encode([[red, "but blue"], ["a red square"]], "interleaved")
    assert cos(reply.embeddings.float_, want).min() >= 1 - 1e-5
    assert reply.meta.billed_units.images == 1 and reply.meta.billed_units.input_tokens > 0
    one_part = [{"content": [{"type": "text", "text": "a red square"}]}, {"content": [{"type": "text", "text": "b"}]}]
    reply = co.embed(model=TEXT, inputs=one_part, input_type="search_document", embedding_types=["float"])
    assert cos(reply.embeddings.float_, local[TEXT].encode(["a red square", "b"], "text")).min() >= 1 - 1e-5
    with pytest.raises(cohere.BadRequestError) as several:
        co.embed(model=TEXT, inputs=mixed, input_type="search_document")
    assert several.value.body["message"].startswith(f"inputs[0]: model `{TEXT}` does not embed interleaved")
    with pytest.raises(cohere.BadRequestError) as image_on_text:
        co.embed(model=TEXT, images=[red], input_type="image")
    assert image_on_text.value.body["message"].startswith(f"images[0]: model `{TEXT}` does not embed image")


def test_input_type_applies_the_prompt(co, local):
    """Each input_type embeds with the model's prompt of that use, as encode(prompt_name=...) does; image (or no
    such prompt) embeds with none."""
    texts = ["how do cats sleep", "cats sleep most of the day"]
    m = local[PROMPTED]
    plain = m.encode(texts, "text")
    for input_type, name in (("search_query", "query"), ("search_document", "document"),
                             ("classification", "classification"), ("clustering", "clustering")):
        got = co.embed(model=PROMPTED, texts=texts, input_type=input_type, embedding_types=["float"])
        want = m.encode(texts, "text", prompt_name=name)
        assert cos(got.embeddings.float_, want).min() >= 1 - 1e-5, input_type
        assert cos(got.embeddings.float_, plain).min() < 0.9999, input_type  # the prompt made a difference
    none = co.embed(model=PROMPTED, texts=texts, input_type="image", embedding_types=["float"])
    assert cos(none.embeddings.float_, plain).min() >= 1 - 1e-5


def test_truncate(co, local):
    """END (default) and START cut a long text as encode(truncate=...) does; NONE is a Cohere-shaped 400 naming
    the text."""
    texts = ["short one", LONG + "the end"]
    for mode in ("END", "START"):
        got = co.embed(model=TEXT, texts=texts, input_type="search_document", truncate=mode)
        want = local[TEXT].encode(texts, "text", truncate=mode.lower())
        assert cos(got.embeddings.float_, want).min() >= 1 - 1e-5, mode
    with pytest.raises(cohere.BadRequestError) as refused:
        co.embed(model=TEXT, texts=texts, input_type="search_document", truncate="NONE")
    message = refused.value.body["message"]
    assert set(refused.value.body) == {"id", "message"}
    assert "maximum context length is 256 tokens" in message and "(texts[1])" in message
    assert 'truncate to "END" or "START"' in message


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/v2/embed", {"model": "no-such-model", "texts": ["x"], "input_type": "search_query"}, 404, "no-such-model"),
    ("/v2/embed", {"model": TEXT, "input_type": "search_query"}, 400, "send exactly one of `texts`"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "images": ["data:image/png;base64,AA=="]}, 400,
     "send exactly one of"),
    ("/v2/embed", {"model": ALIGNED, "images": ["https://example.com/cat.png"]}, 400,
     "images[0]: URLs are not fetched"),
    ("/v2/embed", {"model": TEXT, "texts": []}, 400, "`texts` must not be empty"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "embedding_types": ["int4"]}, 400, "`embedding_types[0]` should be"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "input_type": "poetry"}, 400, "`input_type` should be"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "truncate": "MIDDLE"}, 400, "truncate must be one of"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "max_tokens": 8}, 400, "max_tokens=8 is below the model's window"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "priority": -1}, 400, "priority must be one of high, normal, low"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "output_dimension": 0}, 400, "`output_dimension` should be"),
    ("/v2/embed", {"model": TEXT, "texts": ["x"], "dimensions": 8}, 400, "unrecognized request argument(s) "
     "['dimensions']"),
    ("/v2/embed", {"model": TEXT, "inputs": [{"content": [{"type": "video", "video": "x"}]}]}, 400,
     "inputs[0].content[0]: a content part must be"),
    ("/v2/embed", {"model": TEXT, "inputs": ["a bare string"]}, 400, 'inputs[0]: an input is {"content"'),
    ("/v1/embed", {"model": TEXT, "inputs": [{"content": [{"type": "text", "text": "x"}]}]}, 400,
     "unrecognized request argument(s) ['inputs']"),
])
def test_bad_requests_answer_in_cohere_shape(serve, path, body, status, says):
    """A bad request gets Cohere's error body ({id, message}) naming the field, with the door's status."""
    got, reply = post(serve, path, body)
    assert got == status and set(reply) == {"id", "message"} and says in reply["message"], reply


def test_key_and_v1_shapes(serve, local):
    """The key is required (401 in Cohere's shape); v1 answers embeddings_floats without embedding_types, by type
    with them; max_tokens at the window is accepted."""
    got, reply = post(serve, "/v2/embed", {"model": TEXT, "texts": ["x"]}, key=None)
    assert got == 401 and "API key" in reply["message"] and set(reply) == {"id", "message"}
    got, reply = post(serve, "/v1/embed", {"model": TEXT, "texts": ["a", "b"], "truncate": None, "input_type": None})
    assert got == 200 and reply["response_type"] == "embeddings_floats" and reply["texts"] == ["a", "b"]
    assert cos(reply["embeddings"], local[TEXT].encode(["a", "b"], "text")).min() >= 1 - 1e-5
    assert reply["meta"]["api_version"] == {"version": "1"}
    got, reply = post(serve, "/v1/embed", {"model": TEXT, "texts": ["a"], "embedding_types": ["ubinary"]})
    assert got == 200 and reply["response_type"] == "embeddings_by_type" and set(reply["embeddings"]) == {"ubinary"}
    assert np.array_equal(reply["embeddings"]["ubinary"], local[TEXT].encode(["a"], "text", precision="ubinary"))
    for priority in (2, "high"):
        got, reply = post(serve, "/v2/embed", {"model": TEXT, "texts": ["a"], "max_tokens": 256, "priority": priority})
        assert got == 200 and len(reply["embeddings"]["float"][0]) == 384


CLIENT_SCRIPT = """
import json, sys
from langchain_cohere import CohereEmbeddings
from haystack.utils import Secret
from haystack_integrations.components.embedders.cohere import CohereTextEmbedder

root, key, model = sys.argv[1:4]
lc = CohereEmbeddings(model=model, base_url=root, cohere_api_key=key)
hay = CohereTextEmbedder(api_key=Secret.from_token(key), model=model, api_base_url=root)
print(json.dumps({"documents": lc.embed_documents(["a cat on a sofa", "zebra crossing"]),
                  "query": lc.embed_query("where do cats sleep"),
                  "haystack": hay.run(text="where do cats sleep")["embedding"]}))
"""


def test_langchain_and_haystack_cohere_embedders(serve, local):
    """LangChain's CohereEmbeddings (cohere.Client: /v1/embed) and Haystack's CohereTextEmbedder (ClientV2:
    /v2/embed), with their defaults, get in-process encode()'s vectors."""
    if not CLIENTS.exists():
        pytest.fail(f"the clients' venv is missing ({CLIENTS}; scripts/test.sh makes it, ZOO_CLIENTS_VENV names it)")
    run = subprocess.run([str(CLIENTS), "-c", CLIENT_SCRIPT, serve.root, KEY, TEXT], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COHERE_API_KEY": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    m = local[TEXT]
    assert cos(got["documents"], m.encode(["a cat on a sofa", "zebra crossing"], "text")).min() >= 1 - 1e-5
    query = m.encode(["where do cats sleep"], "text")[0]
    assert cos(got["query"], query) >= 1 - 1e-5 and cos(got["haystack"], query) >= 1 - 1e-5


def cohere_section() -> str:
    """The docs page's section on this API (tests/test_openai.py runs the page's other blocks)."""
    text = DOCS.read_text()
    start = text.index("\n## Cohere's embed API")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def test_docs_examples_run(serve, local):
    """The page's Cohere examples (the SDK, curl), run as written against this server (its port and key put in)."""
    blocks = re.findall(r"```(python|bash)\n(.*?)```", cohere_section(), re.S)
    assert [kind for kind, _ in blocks] == ["python", "bash"]
    env = {**os.environ, "ZOO_API_KEY": KEY}
    for kind, code in blocks:
        code = code.replace("8080", str(serve.openai_port))
        if kind == "python":
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 0, out.stderr
            widths, tokens = out.stdout.splitlines()[-2:]
            assert widths == "128 128 16" and int(tokens) > 0
        else:
            out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 0, out.stderr
            v2, v1 = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            assert len(v2["embeddings"]["binary"][0]) == 384 // 8 and v2["response_type"] == "embeddings_by_type"
            assert v1["response_type"] == "embeddings_floats"
            assert cos(v1["embeddings"][0], local[TEXT].encode(["a cat on a sofa"], "text")[0]) >= 1 - 1e-5
