"""Long inputs over gRPC: truncate, TRUNCATED, tokenize / detokenize, chunked embedding and late chunking, served
by a real tritonserver (MiniLM) and equal to in-process; and the backend's handling of them without a server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from serving import contract
from serving import contract_long as wl
from serving.client import AsyncTritonEmbedder, Served, TritonEmbedder
from serving.export import export
from serving.server import TritonServer, free_ports
from serving.triton_model import Request, handle
from zoo.defaults import default_model
from zoo.errors import InputError, InvalidArgumentError
from zoo.long import too_long_counts
from zoo.spec import Modality

MINILM = default_model("text")
pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")  # long texts are cut on purpose
# a short text, two past MiniLM's 256 tokens (one of ~1,100, one of ~2,400: several windows), and a short one
TEXTS = ["a cat on a sofa", " ".join(f"word{i}" for i in range(400)), "tiny",
         " ".join(f"sentence {i} about the sea and its tides." for i in range(300))]
TEXT = contract.INPUTS[Modality.TEXT]


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-5)


# ---- the backend without a server --------------------------------------------------------------------------------
def test_tasks_are_answered_alone_and_a_bad_one_fails_alone(minilm):
    """One batch of every task: each request gets its own answer, equal to in-process; an unknown task, a
    parameter the task does not take and truncate='none' over the window fail only their request."""
    wire = [t.encode() for t in TEXTS]
    requests = [Request({TEXT: wire}, {contract.TASK: contract.TOKENIZE, "truncate": "start"}),
                Request({TEXT: wl.ids_to_wire([[101, 7592, 102]])}, {contract.TASK: contract.DETOKENIZE}),
                Request({TEXT: wire}, {"truncate": "none"}),
                Request({TEXT: wire}, {contract.TASK: "summarize"}),
                Request({TEXT: wire}, {contract.TASK: contract.TOKENIZE, "precision": "int8"}),
                Request({TEXT: wire}, {"truncate": "start"}, truncated=True, tokens=True),
                Request({TEXT: wire}, {contract.TASK: contract.LATE_CHUNKS, "chunk_tokens": 64})]
    got = handle(minilm, requests)
    assert wl.tokens_from_wire(got[0].outputs) == minilm.tokenize(TEXTS, truncate="start")
    assert got[1].outputs[contract.DETOKENIZED].reshape(-1).tolist() == [b"hello"]
    assert isinstance(got[2], InputError) and got[2].index == 1
    assert too_long_counts(str(got[2]))[1] == minilm.max_input_tokens
    assert isinstance(got[3], InvalidArgumentError) and "'tokenize'" in str(got[3])
    assert isinstance(got[4], InvalidArgumentError) and "'precision' does not apply" in str(got[4])
    done = minilm.encode_items(TEXTS, Modality.TEXT, minilm.options(truncate="start"), tokens=True)
    close(got[5].embedding, done.result)
    assert got[5].outputs[contract.TRUNCATED].reshape(-1).tolist() == done.truncated == [False, True, False, True]
    assert got[5].tokens.reshape(-1).tolist() == done.tokens
    chunks = minilm.encode_chunks(TEXTS, chunk_tokens=64)
    served = wl.chunks_from_wire(got[6].outputs, "float32")
    assert [c.spans for c in served] == [c.spans for c in chunks]
    close(np.concatenate([c.vectors for c in served]), np.concatenate([c.vectors for c in chunks]))
    # what was cut and the tokens read (the whole texts', not one window's) travel with the chunks
    assert [(c.truncated, c.tokens) for c in served] == [(c.truncated, c.tokens) for c in chunks]
    assert served[3].tokens > minilm.max_input_tokens


def test_late_chunks_say_which_texts_were_cut(tmp_path):
    """A text past MAX_LONG_CHARS characters is read up to there: its late_chunks answer says so (TRUNCATED) and
    counts the tokens read (TOKENS), as in-process; the element is handed to the model's own bounded decoding."""
    import zoo
    from tests.tiny_models import make_tiny_text_folder
    from zoo.long import MAX_LONG_CHARS

    model = zoo.create(str(make_tiny_text_folder(tmp_path / "tiny", pooling="mean")), device="cpu")
    texts = ["a short one", "ab " * 100 + " " * MAX_LONG_CHARS + "the cut tail"]  # spaces: no tokens to pay for
    got = handle(model, [Request({TEXT: [t.encode() for t in texts]},
                                 {contract.TASK: contract.LATE_CHUNKS, "chunk_tokens": 256})])[0]
    assert not isinstance(got, Exception), got
    assert got.outputs[contract.TRUNCATED].reshape(-1).tolist() == [False, True]
    local = model.encode_chunks(texts, chunk_tokens=256)
    assert got.outputs[contract.TOKENS].reshape(-1).tolist() == [c.tokens for c in local]
    assert max(e for _, e in wl.chunks_from_wire(got.outputs, "float32")[1].spans) <= MAX_LONG_CHARS


def test_a_model_without_text_refuses_the_tasks():
    """An image model asked to tokenize: a clean error naming the model, no traceback."""
    image_only = SimpleNamespace(spec=SimpleNamespace(name="org/pixels", modalities=[Modality.IMAGE]))
    got = handle(image_only, [Request({TEXT: [b"x"]}, {contract.TASK: contract.TOKENIZE})])[0]
    assert isinstance(got, InvalidArgumentError) and "'org/pixels' reads no text" in str(got)


def test_task_texts_are_decoded_by_the_model_bounded():
    """The tasks hand the model the UTF-8 elements as they came: the model's own decoding keeps only what its
    truncate and long modes read (zoo.long), never a whole multi-megabyte element as one string."""
    seen = []
    stub = SimpleNamespace(spec=SimpleNamespace(name="org/text", modalities=[Modality.TEXT]),
                           tokenize=lambda texts, **_: seen.append(texts) or [],
                           encode_chunks=lambda texts, **_: seen.append(texts) or [])
    big = b"word " * 400_000
    handle(stub, [Request({TEXT: [big]}, {contract.TASK: contract.TOKENIZE, "truncate": "start"}),
                  Request({TEXT: [big]}, {contract.TASK: contract.LATE_CHUNKS, "chunk_tokens": 8})])
    assert len(seen) == 2 and all(texts == [big] and isinstance(texts[0], bytes) for texts in seen)


def test_truncated_comes_when_asked_for(minilm):
    """TRUNCATED comes when asked for (and only then)."""
    plain = handle(minilm, [Request({TEXT: [t.encode() for t in TEXTS]}, {})])[0]
    assert set(plain.outputs) == {contract.OUTPUT}
    asked = handle(minilm, [Request({TEXT: [t.encode() for t in TEXTS]}, {}, truncated=True)])[0]
    assert asked.outputs[contract.TRUNCATED].reshape(-1).tolist() == [False, True, False, True]


def test_parameters_of_long_inputs_travel_only_when_set(minilm):
    assert set(contract.request_parameters(minilm.options())) == {"normalize", "precision", "output"}
    sent = contract.request_parameters(minilm.options(long="chunk", chunk_tokens=50, overlap=5))
    assert {k: sent[k] for k in ("long", "chunk_tokens", "overlap")} == {"long": "chunk", "chunk_tokens": 50,
                                                                        "overlap": 5}
    assert minilm.options(**contract.parse_parameters(sent)) == minilm.options(long="chunk", chunk_tokens=50,
                                                                               overlap=5)
    assert contract.request_parameters(minilm.options(truncate="START"))["truncate"] == "start"
    with pytest.raises(InvalidArgumentError, match="'chunk_spans' does not apply to zoo_task 'embed'"):
        contract.parse_parameters({contract.CHUNK_SPANS: "[]"})


# ---- served by a real tritonserver ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tritonserver holding MiniLM, for this module."""
    tmp = tmp_path_factory.mktemp("long")
    export([MINILM], tmp / "repository")
    with TritonServer(tmp / "repository", ports=free_ports(), log_path=tmp / "server.log").start(timeout=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = TritonEmbedder(MINILM, server.grpc_url)
    yield c
    c.close()


@pytest.mark.server
def test_tokenize_and_detokenize_equal_in_process(client, minilm):
    assert client.max_input_tokens == minilm.max_input_tokens
    for truncate in ("end", "start"):
        assert client.tokenize(TEXTS, truncate=truncate) == minilm.tokenize(TEXTS, truncate=truncate)
    ids = [t.ids for t in minilm.tokenize(TEXTS)]
    assert client.detokenize(ids) == minilm.detokenize(ids)
    with pytest.raises(InputError, match="input 1: text has") as err:
        client.tokenize(TEXTS, truncate="none")
    assert too_long_counts(str(err.value)) == too_long_counts(str(_raised(minilm.tokenize, TEXTS, truncate="none")))


def _raised(fn, *args, **kwargs) -> Exception:
    try:
        fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001  (the error itself is the result)
        return err
    raise AssertionError("no error")


@pytest.mark.server
def test_truncate_and_chunk_rows_equal_in_process(client, minilm):
    for controls in ({"truncate": "start"}, {"long": "chunk"}, {"long": "chunk", "chunk_tokens": 100, "overlap": 10}):
        close(client.encode(TEXTS, "text", **controls), minilm.encode(TEXTS, "text", **controls))
    # truncate='none': the item over the window fails the call, named by its index in the whole call
    err = _raised(client.encode, ["fine", *TEXTS], "text", truncate="NONE", batch_size=2)
    assert isinstance(err, InputError) and err.index == 2
    assert too_long_counts(str(err)) == too_long_counts(str(_raised(minilm.encode, TEXTS, "text", truncate="none")))
    rows = client.encode_per_item(TEXTS, "text", truncate="none")
    assert [isinstance(r, InputError) for r in rows] == [False, True, False, True]


@pytest.mark.server
def test_late_chunks_equal_in_process(client, minilm):
    for kwargs in ({"chunk_tokens": 32}, {"chunk_tokens": 80, "overlap": 16, "dimensions": 128, "precision": "int8",
                                          "normalize": True}):
        served, local = client.encode_chunks(TEXTS, batch_size=2, **kwargs), minilm.encode_chunks(TEXTS, **kwargs)
        assert [c.spans for c in served] == [c.spans for c in local]
        for s, lo in zip(served, local):
            assert s.vectors.dtype == lo.vectors.dtype
            np.testing.assert_allclose(s.vectors.astype(np.float32), lo.vectors.astype(np.float32), atol=1.01)
            if kwargs.get("precision", "float32") == "float32":
                close(s.vectors, lo.vectors)
    spans = [[(0, 5), (6, 15)], [(0, 40), (100, 200)], [(0, 4)], [(10, 60), (3000, 3400)]]
    served = client.encode_chunks(TEXTS, spans=spans, batch_size=3)  # the spans of the second request sliced right
    local = minilm.encode_chunks(TEXTS, spans=spans)
    assert [c.spans for c in served] == [c.spans for c in local] == spans
    close(np.concatenate([c.vectors for c in served]), np.concatenate([c.vectors for c in local]))
    assert [(c.truncated, c.tokens) for c in served] == [(c.truncated, c.tokens) for c in local]
    with pytest.raises(InvalidArgumentError, match="exactly one of chunk_tokens and spans"):
        client.encode_chunks(TEXTS)
    with pytest.raises(InvalidArgumentError, match="a span is"):  # checked as in-process, before anything is sent
        client.encode_chunks(TEXTS, spans=[[(0, 5)], [("0", 5)], [(0, 4)], [(0, 1)]])


@pytest.mark.server
def test_async_client_serves_the_same(server, minilm):
    async def main() -> tuple:
        aio = AsyncTritonEmbedder(MINILM, server.grpc_url)
        try:
            wired = aio.wire(TEXTS, Modality.TEXT)
            served = await aio.infer_wire(wired, Modality.TEXT, aio.options(truncate="start"), tokens=True,
                                          truncated=True, batch_size=3)
            plain = await aio.infer_wire(wired, Modality.TEXT, aio.options())
            return (served, plain, await aio.tokenize(TEXTS, truncate="start"), await aio.detokenize([[7592, 2088]]),
                    await aio.encode_chunks(TEXTS, chunk_tokens=50), aio.max_input_tokens)
        finally:
            await aio.close()

    served, plain, tokens, texts, chunks, limit = asyncio.run(main())
    done = minilm.encode_items(TEXTS, Modality.TEXT, minilm.options(truncate="start"), tokens=True)
    assert isinstance(served, Served) and served.truncated.tolist() == done.truncated == [False, True, False, True]
    rows, counts = served  # today's callers unpack a pair
    close(rows, done.result)
    assert counts.tolist() == done.tokens
    assert plain.tokens is None and plain.truncated is None
    assert tokens == minilm.tokenize(TEXTS, truncate="start") and texts == ["hello world"]
    local = minilm.encode_chunks(TEXTS, chunk_tokens=50)
    assert [c.spans for c in chunks] == [c.spans for c in local] and limit == minilm.max_input_tokens
    close(np.concatenate([c.vectors for c in chunks]), np.concatenate([c.vectors for c in local]))


@pytest.mark.server
def test_refusals_name_the_problem(client):
    with pytest.raises(InvalidArgumentError, match="truncate must be one of"):
        client.tokenize(TEXTS, truncate="middle")
    with pytest.raises(InputError, match="input 0: token ids must be a list of"):  # the model's vocabulary's
        client.detokenize([[10 ** 9]])
    with pytest.raises(InputError, match="input 1: token ids must be a list of"):  # no id: refused before sending
        client.detokenize([[1], [True]])
    import tritonclient.grpc as grpcclient

    raw = grpcclient.InferenceServerClient(client.replicas.urls[0])
    tensor = grpcclient.InferInput(TEXT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    with pytest.raises(grpcclient.InferenceServerException, match="unknown zoo_task 'summarize'") as err:
        raw.infer(client.triton_name, [tensor], parameters={contract.TASK: "summarize"})
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    raw.close()


def test_media_report_nothing_cut_and_refuse_truncate(tmp_path):
    """An image request asking for TRUNCATED gets False per item; truncate on it is refused by name; an
    open_clip model (no tokenizer offsets) refuses to tokenize, naming the model."""
    import zoo
    from tests.tiny_models import TINY_MODELS

    model = zoo.create(str(TINY_MODELS["open_clip"](tmp_path / "clip")), device="cpu")
    image = contract.encode_item(Modality.IMAGE, np.full((32, 32, 3), 128, np.uint8), 0)
    got = handle(model, [Request({contract.INPUTS[Modality.IMAGE]: [image, image]}, {}, truncated=True),
                         Request({contract.INPUTS[Modality.IMAGE]: [image]}, {"truncate": "start"}),
                         Request({TEXT: [b"a cat"]}, {contract.TASK: contract.TOKENIZE})])
    assert got[0].outputs[contract.TRUNCATED].tolist() == [[False], [False]]
    assert isinstance(got[1], InvalidArgumentError) and "truncate applies to text inputs" in str(got[1])
    assert isinstance(got[2], InvalidArgumentError) and model.spec.name in str(got[2])
