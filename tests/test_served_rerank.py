"""Cross-encoders served: pairs in (one TEXT element each), one score out; the backend's batching, token budget,
TOKENS, TRUNCATED, max_tokens_per_doc and per-item errors over pairs; warm-up with pairs; the clients' predict()
and rank(), and zoo.rerank / score_pairs over a served cross-encoder and a served bi-encoder, equal to in-process.
One `zoo serve` (of a repository `zoo export` wrote) for the module's server tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import zoo
from serving import contract
from serving.client import AsyncTritonEmbedder, TritonEmbedder
from serving.server import free_ports
from serving.triton_model import Request, handle
from serving.warmup import warm_up, warmup_requests
from tests.processes import start_and_wait, stop_group
from tests.tiny_models import make_cross_encoder
from zoo.cli import main
from zoo.defaults import default_model
from zoo.errors import InputError, InvalidArgumentError
from zoo.long import too_long_counts
from zoo.ranking import pair_from_wire, pair_to_wire, score_pairs
from zoo.spec import Modality

MINILM = default_model("text")
RERANKER = "tiny-reranker"  # the folder's name: its Triton name
TEXT = contract.INPUTS[Modality.TEXT]
pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")  # long pairs are cut on purpose
QUERY = "how do tides work"
DOCS = ["the moon pulls the sea, and the sea rises and falls twice a day", "a cat sleeps on the sofa",
        " ".join(f"the tide at hour {i} is high." for i in range(40)),  # past the tiny model's 64-token window
        "tides", "recipes for bread and cake"]
PAIRS = [(QUERY, d) for d in DOCS] + [("a cat", "a cat on a sofa")]


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-5)


def same_ranking(got: list[dict], want: list[dict]) -> None:
    """The same documents in the same order (and texts), with scores equal to 1e-5."""
    assert [(r["corpus_id"], r.get("text")) for r in got] == [(r["corpus_id"], r.get("text")) for r in want]
    close([r["score"] for r in got], [r["score"] for r in want])


def _raised(fn, *args, **kwargs) -> Exception:
    try:
        fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001  (the error itself is the result)
        return err
    raise AssertionError("no error")


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory):
    return make_cross_encoder(tmp_path_factory.mktemp("rerank") / RERANKER)


@pytest.fixture(scope="module")
def ce(ce_dir):
    return zoo.create(str(ce_dir), device="cpu")


# ---- the backend without a server --------------------------------------------------------------------------------
def test_scores_tokens_and_cuts_equal_in_process(ce):
    """One dynamic batch of pair requests: each gets the scores, TOKENS (the pair's tokens) and TRUNCATED (the
    pair cut to the window) in-process gives; max_tokens_per_doc cuts documents; a bad element fails its request
    alone, naming its index; truncate='none' names the pair over the window."""
    wire = [pair_to_wire(q, d) for q, d in PAIRS]
    got = handle(ce, [Request({TEXT: wire}, {"output": "score"}, tokens=True, truncated=True),
                      Request({TEXT: wire}, {"max_tokens_per_doc": 3}, tokens=True, truncated=True),
                      Request({TEXT: [wire[0], b"a lone text", wire[1]]}, {}),
                      Request({TEXT: wire}, {"truncate": "none"}),
                      Request({TEXT: wire[:1]}, {"truncate": "start"}),
                      Request({TEXT: wire}, {"max_tokens_per_doc": 3})])  # cut, though nothing is to be told
    for answer, controls in zip(got[:2], ({}, {"max_tokens_per_doc": 3})):
        done = ce.encode_items(PAIRS, Modality.TEXT, ce.options(**controls), tokens=True)
        assert answer.embedding.shape == (len(PAIRS), 1) and answer.embedding.dtype == np.float32
        close(answer.embedding.reshape(-1), done.result)
        close(done.result, ce.predict(PAIRS, **controls))
        assert answer.tokens.reshape(-1).tolist() == done.tokens
        assert answer.outputs[contract.TRUNCATED].reshape(-1).tolist() == done.truncated
    assert got[0].outputs[contract.TRUNCATED].reshape(-1).tolist() == [False, False, True, False, False, False]
    assert max(got[1].tokens.reshape(-1)) < ce.max_input_tokens  # the documents were cut to 3 tokens each
    assert isinstance(got[2], InputError) and got[2].index == 1 and "(query, document) pairs" in str(got[2])
    assert isinstance(got[3], InputError) and got[3].index == 2
    assert too_long_counts(str(got[3])) == too_long_counts(str(_raised(ce.predict, PAIRS, truncate="none")))
    assert isinstance(got[4], InvalidArgumentError) and got[4].param == "truncate"
    close(got[5].embedding.reshape(-1), ce.predict(PAIRS, max_tokens_per_doc=3))
    assert set(got[5].outputs) == {contract.OUTPUT}


def test_a_batch_of_pairs_is_cut_into_passes_by_the_token_budget(ce, monkeypatch):
    """Two requests of one dynamic batch go through one embed_decoded call, whose forward passes hold at most
    spec.batch_tokens tokens (items x padded length) each; the scores are those of the whole budget."""
    want = ce.predict(PAIRS)
    budget = 80
    monkeypatch.setattr(ce, "spec", dataclasses.replace(ce.spec, max_batch_tokens=budget))
    passes, calls = [], []
    forward, embed = ce.forward, ce.embed_decoded
    monkeypatch.setattr(ce, "forward", lambda batch, *a: passes.append(list(batch)) or forward(batch, *a))
    monkeypatch.setattr(ce, "embed_decoded", lambda items, *a, **k: calls.append(len(items)) or embed(items, *a, **k))
    wire = [pair_to_wire(q, d) for q, d in PAIRS]
    got = handle(ce, [Request({TEXT: wire}, {}), Request({TEXT: wire[::-1]}, {})])
    assert calls == [2 * len(PAIRS)]  # both requests' pairs in one call
    assert len(passes) > 2 and sum(map(len, passes)) == 2 * len(PAIRS)
    for batch in passes:
        assert len(batch) == 1 or len(batch) * max(ce._pair_lengths(batch, None)) <= budget
    close(np.concatenate([got[0].embedding, got[1].embedding]).reshape(-1), np.concatenate([want, want[::-1]]))


def test_text_tasks_are_refused_for_pairs(ce):
    """A cross-encoder's texts are pairs: tokenize, detokenize and late chunks are refused, naming the model."""
    wire = [pair_to_wire("a", "b")]
    for task in (contract.TOKENIZE, contract.DETOKENIZE, contract.LATE_CHUNKS):
        got = handle(ce, [Request({TEXT: wire}, {contract.TASK: task})])[0]
        assert isinstance(got, InvalidArgumentError) and f"scores (query, document) pairs; zoo_task {task!r}" in str(
            got) and got.param == contract.TASK


def test_max_tokens_per_doc_travels(ce, minilm):
    sent = contract.request_parameters(ce.options(max_tokens_per_doc=5))
    assert sent["max_tokens_per_doc"] == 5 and "max_tokens_per_doc" not in contract.request_parameters(ce.options())
    assert ce.options(**contract.parse_parameters(sent)) == ce.options(max_tokens_per_doc=5)
    with pytest.raises(InvalidArgumentError, match="'max_tokens_per_doc' does not apply to zoo_task 'tokenize'"):
        contract.parse_parameters({"max_tokens_per_doc": 5}, contract.TOKENIZE)
    with pytest.raises(InvalidArgumentError, match="'max_tokens_per_doc' must be a positive integer"):
        contract.parse_parameters({"max_tokens_per_doc": "five"})
    got = handle(minilm, [Request({TEXT: [b"a text"]}, {"max_tokens_per_doc": 5})])[0]
    assert isinstance(got, InvalidArgumentError) and "max_tokens_per_doc applies to (query, document) pairs" in str(got)


def test_warm_up_sends_pairs(ce):
    """Every text element of a cross-encoder's warm-up is a pair (one fills the window), none asks for a task, and
    the warm-up passes: the model can go READY."""
    requests = warmup_requests(ce)
    elements = [x for _, r in requests for x in r.inputs[TEXT]]
    pairs = [pair_from_wire(x, 0, 1 << 20) for x in elements]
    assert len(pairs) == 3 and max(ce._pair_lengths(pairs, None, cut=False)) > ce.max_input_tokens
    assert all(contract.TASK not in r.parameters for _, r in requests)
    assert warm_up(ce) == ["text/score", "text/score at full length"]


# ---- exported and served -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory, ce_dir):
    """`zoo export` of the tiny cross-encoder folder and MiniLM."""
    repo = tmp_path_factory.mktemp("rerank-repository")
    assert main(["export", str(ce_dir), MINILM, "--out", str(repo)]) == 0
    return repo


def test_export_declares_what_scores_need(repository):
    """Pairs in (TEXT), a score out (EMBEDDING one FP32 wide), TOKENS, TRUNCATED, SPEC; none of the text tasks'
    outputs, which a cross-encoder refuses. MiniLM's config keeps them."""
    def config(name: str) -> mc.ModelConfig:
        return text_format.Parse((repository / name / "config.pbtxt").read_text(), mc.ModelConfig())

    ce_config, minilm_config = config(RERANKER), config(contract.model_name(MINILM))
    assert [(i.name, i.data_type) for i in ce_config.input] == [(TEXT, mc.TYPE_STRING)]
    outputs = {o.name: (o.data_type, list(o.dims)) for o in ce_config.output}
    assert outputs == {contract.OUTPUT: (mc.TYPE_FP32, [1]), contract.TOKENS: (mc.TYPE_INT32, [1]),
                       contract.TRUNCATED: (mc.TYPE_BOOL, [1]), contract.SPEC: (mc.TYPE_STRING, [1])}
    assert json.loads(ce_config.parameters[contract.CONFIG_SPEC_KEY].string_value)["outputs"] == ["score"]
    assert ce_config.dynamic_batching.priority_levels == len(contract.PRIORITIES)
    minilm_outputs = {o.name: list(o.dims) for o in minilm_config.output}
    assert minilm_outputs[contract.OUTPUT] == [-1] and contract.TOKEN_IDS in minilm_outputs


def test_info_describes_a_cross_encoder(ce_dir, capsys):
    assert main(["info", str(ce_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "cross-encoder" and info["outputs"] == ["score"] and info["dim"] == 1


@pytest.fixture(scope="module")
def url(repository, tmp_path_factory):
    """`zoo serve` of the repository (no door, no supervisor): its gRPC address."""
    ports = free_ports()
    log = tmp_path_factory.mktemp("rerank-log") / "server.log"
    proc, lines = start_and_wait(["serve", "--repository", str(repository), "--grpc-port", str(ports.grpc),
                                  "--http-port", str(ports.http), "--metrics-port", str(ports.metrics),
                                  "--health-port", "0", "--openai-port", "0", "--no-supervise", "--log", str(log)],
                                 "ready:")
    try:
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        yield f"127.0.0.1:{ports.grpc}"
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def reranker(url):
    client = TritonEmbedder(RERANKER, url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def bi_encoder(url):
    client = TritonEmbedder(MINILM, url)
    yield client
    client.close()


@pytest.mark.server
def test_served_scores_equal_in_process(reranker, ce):
    """predict, rank, encode, zoo.rerank and score_pairs of the served cross-encoder give in-process's, whatever
    the requests' size; the description names the served model, its score output and its pair window."""
    assert reranker.spec.name == RERANKER and reranker.spec.outputs == ("score",)
    assert reranker.max_input_tokens == ce.max_input_tokens == 64
    want = ce.predict(PAIRS)
    for batch_size in (None, 2):
        got = reranker.predict(PAIRS, batch_size=batch_size)
        assert got.shape == (len(PAIRS),) and got.dtype == np.float32
        close(got, want)
    close(reranker.encode(PAIRS, "text"), ce.encode(PAIRS, "text"))
    close(score_pairs(reranker, PAIRS), want)
    for top_k, docs in ((None, False), (3, True)):
        same_ranking(reranker.rank(QUERY, DOCS, top_k=top_k, return_documents=docs),
                     ce.rank(QUERY, DOCS, top_k=top_k, return_documents=docs))
        same_ranking(zoo.rerank(reranker, QUERY, DOCS, top_k=top_k, return_documents=docs),
                     zoo.rerank(ce, QUERY, DOCS, top_k=top_k, return_documents=docs))
    # max_tokens_per_doc travels and is honoured (it changes the scores of the longer documents)
    cut = ce.predict(PAIRS, max_tokens_per_doc=4)
    assert not np.allclose(cut, want, atol=1e-3)
    close(reranker.predict(PAIRS, max_tokens_per_doc=4, batch_size=4), cut)
    same_ranking(reranker.rank(QUERY, DOCS, max_tokens_per_doc=4), ce.rank(QUERY, DOCS, max_tokens_per_doc=4))


@pytest.mark.server
def test_served_pairs_report_tokens_and_cuts(reranker, ce):
    """TOKENS and TRUNCATED of pairs, served: as in-process (the long pair is the one cut)."""
    served = reranker.infer_wire(reranker.wire(PAIRS, Modality.TEXT), Modality.TEXT, reranker.options(), tokens=True,
                                 truncated=True, batch_size=4)
    done = ce.encode_items(PAIRS, Modality.TEXT, ce.options(), tokens=True)
    close(served.result, done.result)
    assert served.tokens.tolist() == done.tokens and served.truncated.tolist() == done.truncated
    assert done.truncated == [False, False, True, False, False, False]


@pytest.mark.server
def test_bad_pairs_are_per_item_errors(reranker, ce, monkeypatch):
    """A bad pair is refused before anything is sent; a bad element the server reads fails with its index in the
    call; encode_per_item keeps each bad pair's error and scores the others; truncate='none' as in-process."""
    err = _raised(reranker.predict, [("a", "b"), ("a", 3)])
    assert isinstance(err, InputError) and err.index == 1 and "a pair is two strings" in str(err)
    raw = [pair_to_wire("a", "b"), pair_to_wire("c", "d"), b"a lone text", b'["one"]']
    err = _raised(reranker.infer_wire, raw, Modality.TEXT, reranker.options(), batch_size=2)
    assert isinstance(err, InputError) and err.index == 2 and "(query, document) pairs" in str(err)
    direct = grpcclient.InferenceServerClient(url=reranker.replicas.urls[0])
    tensor = grpcclient.InferInput(TEXT, [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[raw[0]], [b"\xff"]], dtype=object))
    with pytest.raises(grpcclient.InferenceServerException, match="input 1: ") as refused:
        direct.infer(RERANKER, [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "Traceback" not in refused.value.message()
    direct.close()
    # per item: one pair refused here, one by the server (its element swapped for a bad one), the rest scored
    wired = reranker.wire_per_item

    def hostile(inputs, modality):
        out = wired(inputs, modality)
        out[3] = b"not a pair"
        return out

    monkeypatch.setattr(reranker, "wire_per_item", hostile)
    rows = reranker.encode_per_item([*PAIRS[:2], ("x", None), *PAIRS[3:]], "text", batch_size=3)
    assert [r.index if isinstance(r, InputError) else None for r in rows] == [None, None, 2, 3, None, None]
    close([rows[k] for k in (0, 1, 4, 5)], ce.predict([PAIRS[k] for k in (0, 1, 4, 5)]))
    monkeypatch.undo()
    err = _raised(reranker.predict, PAIRS, truncate="none")
    assert isinstance(err, InputError) and err.index == 2
    assert too_long_counts(str(err)) == too_long_counts(str(_raised(ce.predict, PAIRS, truncate="none")))
    close(reranker.predict(PAIRS[:2]), ce.predict(PAIRS[:2]))  # and the model still serves


@pytest.mark.server
def test_refusals_name_the_problem(reranker, bi_encoder):
    """predict and rank of a bi-encoder, text tasks of a cross-encoder, truncate='start' of pairs: each a clean
    error naming the model or argument, before or after sending."""
    for call in (lambda: bi_encoder.predict(PAIRS), lambda: bi_encoder.rank(QUERY, DOCS)):
        err = _raised(call)
        assert isinstance(err, InvalidArgumentError) and "needs a cross-encoder" in str(err) and MINILM in str(err)
    for call in (lambda: reranker.tokenize(["a"]), lambda: reranker.detokenize([[101]]),
                 lambda: reranker.encode_chunks(["a"], chunk_tokens=8)):
        err = _raised(call)
        assert isinstance(err, InvalidArgumentError) and f"{RERANKER!r} scores (query, document) pairs" in str(err)
    err = _raised(reranker.predict, PAIRS, truncate="start")  # the server's refusal (no argument name travels)
    assert isinstance(err, InvalidArgumentError) and "truncate='start'" in str(err)
    with pytest.raises(InvalidArgumentError, match="top_k"):
        reranker.rank(QUERY, DOCS, top_k=0)
    with pytest.raises(InvalidArgumentError, match="documents is empty"):
        reranker.rank(QUERY, [])


@pytest.mark.server
def test_rerank_with_a_served_bi_encoder(bi_encoder, minilm):
    """zoo.rerank and score_pairs of served MiniLM (query and document prompts, cosine) equal in-process."""
    for top_k in (None, 2):
        same_ranking(zoo.rerank(bi_encoder, QUERY, DOCS, top_k=top_k, return_documents=True),
                     zoo.rerank(minilm, QUERY, DOCS, top_k=top_k, return_documents=True))
    close(score_pairs(bi_encoder, PAIRS), score_pairs(minilm, PAIRS))


@pytest.mark.server
def test_async_client_predicts_and_ranks(url, ce):
    async def run() -> tuple:
        aio = AsyncTritonEmbedder(RERANKER, url)
        try:
            return await aio.predict(PAIRS, batch_size=2), await aio.rank(QUERY, DOCS, top_k=2, max_tokens_per_doc=4)
        finally:
            await aio.close()

    scores, ranking = asyncio.run(run())
    close(scores, ce.predict(PAIRS))
    same_ranking(ranking, ce.rank(QUERY, DOCS, top_k=2, max_tokens_per_doc=4))
