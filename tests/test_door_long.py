"""Long inputs at the OpenAI-compatible door: `truncate` (OpenAI's context_length_exceeded 400 for "none"), which
items were cut, /v1/tokenize and /v1/detokenize against the model's own tokenizer, late chunking, and the models'
max_input_tokens. The request checks run without a server; the rest against a real `zoo serve` of MiniLM."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

import zoo
from serving.openai_api import ApiError, api_error, parse_request, render_embeddings
from serving.openai_long import MAX_TOKEN_IDS, DetokenizeRequest, TokenizeRequest, parse_as
from serving.openai_models import MAX_ITEMS
from zoo.defaults import default_model
from zoo.errors import InputError, InvalidArgumentError
from zoo.long import check_truncate, too_long_message

from .processes import start_serve, stop_group

KEY = "sk-zoo-long"
TEXT = default_model("text")
LONG_TEXT = " ".join(f"word{i} is here" for i in range(400))  # ~2,000 MiniLM tokens: over its 256 (or 512)


def refusal(call, *args, **kwargs) -> ApiError:
    """The ApiError ``call`` raises."""
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


# ---- request checks, no server -------------------------------------------------------------------------------
def test_truncate_spellings_and_late_chunking_rules():
    """Cohere's upper-case spellings read as lower case; anything else, and late chunking without chunk_tokens,
    with media items or another output, is a 400 naming the field."""
    base = {"model": TEXT, "input": ["a"]}
    assert parse_request({**base, "truncate": "START"}).truncate == "start"
    assert parse_request({**base, "truncate": "None"}).truncate == "none"
    assert parse_request(base).truncate == "end" and parse_request({**base, "truncate": None}).truncate == "end"
    err = refusal(parse_request, {**base, "truncate": "middle"})
    with pytest.raises(InvalidArgumentError) as core:  # the door words it as the core does: one check
        check_truncate("middle")
    assert (err.status, err.param, err.message) == (400, "truncate", str(core.value))
    err = refusal(parse_request, {**base, "late_chunking": True})
    assert err.param == "chunk_tokens" and "needs chunk_tokens" in err.message
    err = refusal(parse_request, {**base, "late_chunking": True, "chunk_tokens": 8, "output": "sparse"})
    assert err.param == "output"
    err = refusal(parse_request, {**base, "input": ["a", {"image": "data:image/png;base64,AA=="}],
                                  "late_chunking": True, "chunk_tokens": 8})
    assert err.param == "input" and err.message.startswith("input[1]: late_chunking takes text items only")
    err = refusal(parse_request, {**base, "chunk_tokens": "8"})
    assert err.param == "chunk_tokens"
    for field, value in (("truncate", "start"), ("truncate", "NONE"), ("long", "chunk")):
        err = refusal(parse_request, {**base, "late_chunking": True, "chunk_tokens": 8, field: value})
        assert (err.status, err.param) == (400, field) and "late_chunking" in err.message, err.message
    assert parse_request({**base, "late_chunking": True, "chunk_tokens": 8, "truncate": "END"}).late_chunking


@pytest.mark.parametrize("field", ["chunk_tokens", "overlap", "dimensions", "max_vectors", "top_k"])
def test_huge_counts_are_a_400_not_a_500(field):
    """A count no model takes, past what Triton's 64-bit parameter holds, is refused by name before any work."""
    base = {"model": TEXT, "input": ["a"], "long": "chunk"}
    for value in (2 ** 63, 2 ** 40):
        err = refusal(parse_request, {**base, field: value})
        assert (err.status, err.param) == (400, field) and "less than or equal" in err.message, err.message


def test_tokenize_and_detokenize_bodies_are_bounded():
    """Texts and id lists are bounded like /v1/embeddings' items; an id that is no id is named; unknown fields
    list this route's own fields."""
    one = parse_as(TokenizeRequest, json.dumps({"model": TEXT, "input": "hi", "truncate": "END"}).encode())
    assert one.texts == ["hi"] and one.truncate == "end"
    err = refusal(parse_as, TokenizeRequest, json.dumps({"model": TEXT, "input": ["x"] * (MAX_ITEMS + 1)}).encode())
    assert err.status == 400 and err.param == "input" and str(MAX_ITEMS) in err.message
    err = refusal(parse_as, TokenizeRequest, json.dumps({"model": TEXT, "input": [5]}).encode())
    assert err.param == "input"
    err = refusal(parse_as, TokenizeRequest, json.dumps({"model": TEXT, "input": "x", "ids": 1}).encode())
    assert err.param == "ids" and "prompt_name" in err.message and "dimensions" not in err.message
    assert parse_as(DetokenizeRequest, b'{"model": "m", "tokens": [101, 7]}').tokens == [[101, 7]]
    assert parse_as(DetokenizeRequest, b'{"model": "m", "tokens": [[1], [2, 3]]}').tokens == [[1], [2, 3]]
    err = refusal(parse_as, DetokenizeRequest, b'{"model": "m", "tokens": [[1], [2, -3]]}')
    assert err.param == "tokens" and err.message.startswith("tokens[1]: token ids must be")
    err = refusal(parse_as, DetokenizeRequest, json.dumps({"model": "m", "tokens": [[1], [2 ** 31]]}).encode())
    assert err.param == "tokens" and err.message.startswith("tokens[1]: ")
    err = refusal(parse_as, DetokenizeRequest, b'{"model": "m", "tokens": [true, 2]}')
    assert err.param == "tokens"
    too_many = json.dumps({"model": "m", "tokens": [0] * (MAX_TOKEN_IDS + 1)}).encode()
    err = refusal(parse_as, DetokenizeRequest, too_many, MAX_TOKEN_IDS)
    assert err.param == "tokens" and str(MAX_TOKEN_IDS) in err.message
    assert len(parse_as(DetokenizeRequest, json.dumps({"model": "m", "tokens": [0] * 5000}).encode(),
                        MAX_TOKEN_IDS).tokens[0]) == 5000


def test_too_long_is_openais_context_length_exceeded():
    """The core's too-long InputError becomes OpenAI's 400, placed in `input` through the modality's positions;
    other item errors stay plain 400s."""
    err = api_error(InputError(1, too_long_message(600, 256)), positions=[3, 5])
    assert (err.status, err.type, err.param, err.code) == (400, "invalid_request_error", "input",
                                                           "context_length_exceeded")
    assert err.message.startswith("This model's maximum context length is 256 tokens, however you requested 600 "
                                  "tokens (input[5])") and "truncate" in err.message
    other = api_error(InputError(0, "not a valid image"), positions=[2])
    assert other.code == "invalid_value" and other.message == "input[2]: not a valid image"


def test_every_answer_says_which_items_were_cut():
    rows = [np.ones(2, np.float32)] * 3
    body = json.loads(render_embeddings("m", rows, "float", 9, "dense", [False, True, True]))
    assert [d["truncated"] for d in body["data"]] == [False, True, True]
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9, "truncated_inputs": 2}
    assert json.loads(render_embeddings("m", rows, "float", 9, "dense"))["usage"]["truncated_inputs"] == 0


def test_late_chunks_answer_says_what_was_cut():
    """Late chunks render through the same renderer as embeddings: per item its chunks, spans and whether its text
    was cut, and usage counting the tokens each whole text was read from."""
    from serving.openai_long import render_chunks
    from zoo.long import Chunks

    found = [Chunks(np.ones((2, 3), np.float32), [(0, 4), (5, 9)], False, 12),
             Chunks(np.zeros((1, 3), np.float32), [(0, 7)], True, 90000)]
    body = json.loads(render_chunks("m", found, "float", 90012))
    assert [d["truncated"] for d in body["data"]] == [False, True]
    assert body["data"][0]["spans"] == [[0, 4], [5, 9]] and body["data"][0]["embedding"] == [[1.0] * 3] * 2
    assert body["usage"] == {"prompt_tokens": 90012, "total_tokens": 90012, "truncated_inputs": 1}
    assert set(body) == {"object", "data", "model", "usage"} and body["data"][1]["index"] == 1


def test_openapi_documents_the_new_routes():
    from fastapi.testclient import TestClient

    from serving.openai_server import create_app

    with TestClient(create_app("127.0.0.1:1", api_key=KEY)) as http:
        doc = http.get("/openapi.json").json()
        unauthorized = http.post("/v1/tokenize", json={"model": TEXT, "input": "x"})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "invalid_api_key"
    schemas = doc["components"]["schemas"]
    for path, model in (("/v1/tokenize", "TokenizeRequest"), ("/v1/detokenize", "DetokenizeRequest")):
        route = doc["paths"][path]["post"]
        assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert route["security"] == [{"bearer": []}] and model in schemas
    assert {"truncate", "long", "chunk_tokens", "overlap", "late_chunking"} <= set(
        schemas["EmbeddingRequest"]["properties"])


# ---- against a real server -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    from serving.export import export

    repository = tmp_path_factory.mktemp("long") / "repository"
    export([TEXT], repository)  # a fresh repository: the contract's current outputs
    s = start_serve("--api-key", KEY, repository=repository, wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def local():
    return zoo.create(TEXT, device="cpu")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


def post(serve, path: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) of a POST to the door."""
    request = urllib.request.Request(serve.openai + path, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_models_list_max_input_tokens(serve, local):
    status, listed = post_get(serve, "/models")
    card = next(m for m in listed["data"] if m["id"] == TEXT)
    assert status == 200 and card["max_input_tokens"] == local.max_input_tokens > 0
    assert post_get(serve, f"/models/{TEXT}")[1]["max_input_tokens"] == local.max_input_tokens


def post_get(serve, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(serve.openai + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, json.loads(reply.read())


def test_truncate_none_is_context_length_exceeded(serve, local):
    status, body = post(serve, "/embeddings", {"model": TEXT, "input": ["short", LONG_TEXT], "truncate": "NONE"})
    assert status == 400 and set(body) == {"error"}, body
    err = body["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "input", "context_length_exceeded")
    assert err["message"].startswith(f"This model's maximum context length is {local.max_input_tokens} tokens, "
                                     "however you requested") and "(input[1])" in err["message"], err
    status, body = post(serve, "/embeddings", {"model": TEXT, "input": ["short"], "truncate": "none"})
    assert status == 200 and body["data"][0]["truncated"] is False


def test_start_and_end_say_which_items_were_cut(serve, local):
    for truncate in ("end", "START"):
        status, body = post(serve, "/embeddings", {"model": TEXT, "input": ["short", LONG_TEXT, "also short"],
                                                   "truncate": truncate, "encoding_format": "float"})
        assert status == 200, body
        assert [d["truncated"] for d in body["data"]] == [False, True, False]
        assert body["usage"]["truncated_inputs"] == 1
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > local.max_input_tokens
        want = local.encode(["short", LONG_TEXT], "text", truncate=truncate.lower())
        got = [body["data"][0]["embedding"], body["data"][1]["embedding"]]
        assert cos(got, want).min() >= 0.9999
    end = post(serve, "/embeddings", {"model": TEXT, "input": LONG_TEXT, "encoding_format": "float"})[1]
    assert cos(end["data"][0]["embedding"], got[1]) < 0.999  # start kept other tokens than end


def test_tokenize_equals_the_models_tokenizer(serve, local, tokenizer):
    texts = ["a cat on a sofa", "naïve café ☕", "", LONG_TEXT]
    limit = local.max_input_tokens
    status, body = post(serve, "/tokenize", {"model": TEXT, "input": texts})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == TEXT and body["max_input_tokens"] == limit
    assert body["max_model_len"] == limit and "tokens" not in body
    want = tokenizer(texts, truncation=True, max_length=limit, return_offsets_mapping=True,
                     return_special_tokens_mask=True)
    for i, item in enumerate(body["data"]):
        assert item["index"] == i and item["tokens"] == want["input_ids"][i]
        assert item["token_strs"] == tokenizer.convert_ids_to_tokens(want["input_ids"][i])
        assert item["offsets"] == [None if added else list(o)  # [UNK] comes from the text: it has its span
                                   for added, o in zip(want["special_tokens_mask"][i], want["offset_mapping"][i])]
        assert item["count"] == len(item["tokens"]) and item["truncated"] is (i == 3)
    assert body["count"] == sum(d["count"] for d in body["data"])
    status, one = post(serve, "/tokenize", {"model": TEXT, "input": "a cat on a sofa"})
    assert one["tokens"] == want["input_ids"][0] and one["count"] == len(one["tokens"]) and len(one["data"]) == 1
    status, start = post(serve, "/tokenize", {"model": TEXT, "input": LONG_TEXT, "truncate": "start"})
    ids = tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]
    assert start["tokens"] == local.tokenize([LONG_TEXT], truncate="start")[0].ids  # served equals in-process
    # the kept text starts at a word start, so its ids are exactly the whole text's last ones
    kept = start["tokens"][1:-1]
    assert kept == ids[-len(kept):] and len(kept) > limit // 2 and start["data"][0]["truncated"] is True
    status, err = post(serve, "/tokenize", {"model": TEXT, "input": ["ok", LONG_TEXT], "truncate": "none"})
    assert status == 400 and err["error"]["code"] == "context_length_exceeded"
    assert "(input[1])" in err["error"]["message"]


def test_detokenize_round_trip(serve, tokenizer):
    texts = ["a cat on a sofa", "naïve café"]
    ids = post(serve, "/tokenize", {"model": TEXT, "input": texts})[1]["data"]
    status, body = post(serve, "/detokenize", {"model": TEXT, "tokens": [d["tokens"] for d in ids]})
    assert status == 200 and body["model"] == TEXT, body
    assert [d["text"] for d in body["data"]] == [tokenizer.decode(d["tokens"], skip_special_tokens=True)
                                                  for d in ids] == ["a cat on a sofa", "naive cafe"]
    status, one = post(serve, "/detokenize", {"model": TEXT, "tokens": ids[0]["tokens"]})
    assert one["prompt"] == "a cat on a sofa" and len(one["data"]) == 1
    status, err = post(serve, "/detokenize", {"model": TEXT, "tokens": [[101], [7, len(tokenizer)]]})
    assert status == 400 and err["error"]["param"] == "tokens" and err["error"]["message"].startswith("tokens[1]")
    status, err = post(serve, "/detokenize", {"model": TEXT, "tokens": [-1]})
    assert status == 400 and err["error"]["message"].startswith("tokens[0]: token ids must be")


def test_late_chunking_shape_and_spans(serve, local):
    texts = ["The first sentence is about cats. The second one is about dogs and their owners.", LONG_TEXT]
    want = local.encode_chunks(texts, chunk_tokens=8)
    status, body = post(serve, "/embeddings", {"model": TEXT, "input": texts, "late_chunking": True,
                                               "chunk_tokens": 8, "encoding_format": "float"})
    assert status == 200, body
    for item, chunks in zip(body["data"], want):
        assert item["object"] == "embedding" and item["truncated"] is False
        assert [tuple(s) for s in item["spans"]] == [tuple(s) for s in chunks.spans]
        got = np.asarray(item["embedding"], np.float32)
        assert got.shape == chunks.vectors.shape and got.shape[1] == 384
        assert cos(got, chunks.vectors).min() >= 0.9999
    assert len(body["data"][1]["spans"]) > local.max_input_tokens // 8  # read past one window
    # usage counts every token of each whole text (not one window's)
    assert body["usage"]["truncated_inputs"] == 0
    assert body["usage"]["prompt_tokens"] == sum(c.tokens for c in want) > local.max_input_tokens
    status, b64 = post(serve, "/embeddings", {"model": TEXT, "input": texts[0], "late_chunking": True,
                                              "chunk_tokens": 8, "encoding_format": "base64"})
    rows = [np.frombuffer(base64.b64decode(s), "<f4") for s in b64["data"][0]["embedding"]]
    assert cos(rows, want[0].vectors).min() >= 0.9999


@pytest.mark.parametrize(("path", "body", "param", "pattern"), [
    ("/embeddings", {"truncate": "sideways"}, "truncate", "truncate"),
    ("/embeddings", {"chunk_tokens": 8}, "chunk_tokens", "long='chunk'"),
    ("/embeddings", {"long": "chunk", "chunk_tokens": 0}, "chunk_tokens", "at least 1"),
    ("/tokenize", {"input": [3]}, "input", "input"),
    ("/tokenize", {"input": "x", "prompt_name": "nope"}, "prompt_name", "nope"),
    ("/detokenize", {"tokens": "abc"}, "tokens", "tokens"),
])
def test_bad_input_is_a_clean_400(serve, path, body, param, pattern):
    request = {"model": TEXT, **({"input": "x"} if path == "/embeddings" else {}), **body}
    status, answer = post(serve, path, request)
    assert status == 400 and set(answer) == {"error"}, answer
    err = answer["error"]
    assert err["param"] == param and pattern in err["message"], err
    assert "Traceback" not in err["message"] and ".py" not in err["message"] and "/work" not in err["message"]
