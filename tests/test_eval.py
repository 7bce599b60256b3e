"""zoo eval: the BEIR reader, the metrics (trec_eval), the sweep, PCA, hubness, the set builders, the CLI, and the
mteb wrapper (same nDCG@10 as zoo eval on the same data)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import postprocess as pp
from zoo import search
from zoo.errors import InvalidArgumentError
from zoo.evaluation import evaluate
from zoo.evaluation.build import build
from zoo.evaluation.data import load, write
from zoo.evaluation.metrics import Scorer
from zoo.evaluation.sweep import Setting, project, settings, widths

BASE = ("truncate", 384, "float32")
KEYS = {"method", "dimensions", "precision", "bytes_per_vector", "compression", "ndcg@10", "recall@1", "recall@10",
        "recall@100", "mrr@10", "ndcg@10_change", "recall@1_change", "recall@10_change", "recall@100_change",
        "mrr@10_change", "k_occurrence_skew", "pareto"}


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory) -> Path:
    """A small real set: 150 standard-library docstring pairs, built here."""
    return build("docstrings", tmp_path_factory.mktemp("sets") / "docstrings", limit=150)


@pytest.fixture(scope="module")
def minilm_rows(minilm, docstrings):
    return evaluate(minilm, docstrings)


def _row(rows, method, dims, precision):
    return next(r for r in rows if (r["method"], r["dimensions"], r["precision"]) == (method, dims, precision))


# --- PCA and search helpers -------------------------------------------------------------------------------------

def test_pca_matches_scikit_learn_and_round_trips(tmp_path):
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 24)) * np.linspace(3, 0.1, 24)).astype(np.float32) + 0.5
    ours = pp.PCA.fit(x, 6)
    ref = SkPCA(6).fit(x)
    ours_t, ref_t = ours.transform(x), ref.transform(x)
    signs = np.sign((ours_t * ref_t).sum(0))  # each axis is defined up to its sign
    np.testing.assert_allclose(ours_t, ref_t * signs, atol=1e-3)
    np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-3)
    ours.save(tmp_path / "pca.safetensors")
    np.testing.assert_array_equal(pp.PCA.load(tmp_path / "pca.safetensors").transform(x), ours_t)
    with pytest.raises(InvalidArgumentError, match="outside 1..24"):
        pp.PCA.fit(x, 25)
    with pytest.raises(InvalidArgumentError, match="fitted on width 24"):
        ours.transform(x[:, :10])


def test_top_k_is_exact_and_corrections_follow_their_formulas():
    rng = np.random.default_rng(1)
    q, c = pp.normalize(rng.normal(size=(40, 16))), pp.normalize(rng.normal(size=(300, 16)))
    idx, scores = search.top_k(q, c, 7)
    sim = q @ c.T
    np.testing.assert_array_equal(idx, np.argsort(-sim, axis=1)[:, :7])
    np.testing.assert_allclose(scores, np.take_along_axis(sim, idx, 1), rtol=1e-6)
    # CSLS: 2 s - r(q) - r(d), r = mean of the 10 best similarities (the bank is the queries)
    r_q = np.sort(sim, axis=1)[:, -10:].mean(1)
    r_d = np.sort(sim.T, axis=1)[:, -10:].mean(1)
    csls = 2 * sim - r_q[:, None] - r_d[None]
    idx, scores = search.top_k(q, c, 5, correction="csls")
    np.testing.assert_array_equal(idx, np.argsort(-csls, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(csls, idx, 1), rtol=1e-5, atol=1e-6)
    inv = 30 * sim - np.log(np.exp(30 * sim).sum(0))[None]
    idx, _ = search.top_k(q, c, 5, correction="isoftmax")
    np.testing.assert_array_equal(idx, np.argsort(-inv, axis=1)[:, :5])
    with pytest.raises(InvalidArgumentError, match="unknown hubness correction"):
        search.top_k(q, c, 5, correction="magic")


def test_hubs_raise_skewness_and_csls_lowers_it():
    from scipy.stats import skew

    rng = np.random.default_rng(2)
    centre = pp.normalize(rng.normal(size=(1, 32)))
    q = pp.normalize(rng.normal(size=(200, 32)) + 3 * centre)  # queries share a direction
    c = rng.normal(size=(500, 32)) + 3 * centre
    c[:10] = centre + rng.normal(size=(10, 32)) * 0.05  # ten items at the queries' centre: hubs
    c = pp.normalize(c)
    idx, _ = search.top_k(q, c, 10)
    counts = search.k_occurrence(idx, len(c), 10)
    assert counts.sum() == 200 * 10 and counts[:10].mean() > 5 * counts[10:].mean()  # hubs: in many top 10s
    assert search.k_occurrence_skew(idx, len(c)) == pytest.approx(skew(counts.astype(float)))
    fixed, _ = search.top_k(q, c, 10, correction="csls")
    assert search.k_occurrence_skew(fixed, len(c)) < search.k_occurrence_skew(idx, len(c)) / 2


# --- metrics ------------------------------------------------------------------------------------------------------

def test_metrics_are_trec_evals_by_hand():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}}
    run = {"q1": {"d9": 0.9, "d1": 0.8, "d8": 0.1},  # the relevant one at rank 2
           "q2": {"d3": 0.7, "d7": 0.6}}  # one of two relevant at rank 1, the other never retrieved
    deep = {"q1": {f"x{i}": 1 - i / 100 for i in range(10)} | {"d1": 0.5}}  # relevant at rank 11: no MRR@10
    assert Scorer({"q1": {"d1": 1}})(deep)["mrr@10"] == 0 and Scorer({"q1": {"d1": 1}})(deep)["recall@100"] == 1
    got = Scorer(qrels)(run)
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = 1 / (1 + 1 / math.log2(3))  # DCG 1, ideal 1 + 1/log2(3)
    assert got["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert got["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert got["recall@10"] == pytest.approx((1 + 0.5) / 2)
    assert got["mrr@10"] == pytest.approx((0.5 + 1) / 2)


# --- the BEIR reader ----------------------------------------------------------------------------------------------

def _set(tmp_path, corpus=None, queries=None, qrels=None, header="query-id\tcorpus-id\tscore"):
    root = tmp_path / "set"
    write(root, corpus or [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}],
          queries or [{"_id": "q1", "text": "first"}], qrels or [("q1", "d1", 1)])
    if header != "query-id\tcorpus-id\tscore":
        path = root / "qrels" / "test.tsv"
        path.write_text(header + "\n" + path.read_text().split("\n", 1)[1])
    return root


def test_reader_joins_titles_and_keeps_judged_queries(tmp_path):
    root = _set(tmp_path, queries=[{"_id": "q1", "text": "first"}, {"_id": 7, "text": "unjudged"}])
    data = load(root)
    assert data.corpus.items == ["T one", "two"] and data.queries.ids == ["q1"]
    assert data.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(("corpus_line", "qrels_text", "match"), [
    ('{"_id": "d3", "text": "x"', None, r"corpus.jsonl:3: not a JSON object"),
    ('{"text": "no id"}', None, r"corpus.jsonl:3: .*\"_id\""),
    ('{"_id": "d1", "text": "again"}', None, "appears twice"),
    ('{"_id": "d3", "text": "x", "image": "a.png"}', None, "exactly one of"),
    ('{"_id": "d3", "image": "../../etc/passwd"}', None, "leaves the set's folder"),
    ('{"_id": "d3", "image": "/etc/hostname"}', None, "leaves the set's folder"),
    ('{"_id": "d3", "audio": "missing.wav"}', None, "does not exist"),
    (None, "query-id corpus-id score\nq1 d1 1\n", "header must be"),
    (None, "query-id\tcorpus-id\tscore\nq1\tnope\t1\n", "corpus-id 'nope' is not in corpus.jsonl"),
    (None, "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "score 'high' is not a number"),
    (None, "query-id\tcorpus-id\tscore\nq1\td1\t0\n", "judges no document relevant"),
])
def test_reader_names_each_problem(tmp_path, corpus_line, qrels_text, match):
    root = _set(tmp_path)
    if corpus_line:
        with (root / "corpus.jsonl").open("a") as f:
            f.write(corpus_line + "\n")
    if qrels_text:
        (root / "qrels" / "test.tsv").write_text(qrels_text)
    with pytest.raises(InvalidArgumentError, match=match) as err:
        load(root)
    assert str(tmp_path) not in str(err.value)  # names the file, not the server path


# --- the sweep ------------------------------------------------------------------------------------------------------

def test_sweep_settings_cover_widths_precisions_pca_and_rescoring():
    assert widths(384) == [384, 192, 96, 48]
    assert widths(768, (512, 256, 128)) == [768, 512, 256, 128]
    rows = settings(384)
    assert {s.precision for s in rows if s.method == "truncate"} == set(pp.PRECISIONS)
    assert {s.dimensions for s in rows if s.method == "pca"} == {192, 96, 48}
    assert [s.dimensions for s in rows if s.method == "binary+rescore"] == [384, 192, 96, 48]
    assert {s.method for s in rows} >= {"csls", "isoftmax"}


def test_stored_vectors_are_what_encode_returns(minilm, docstrings):
    texts = load(docstrings).corpus.items[:20]
    raw = minilm.encode(texts, "text", normalize=False)
    for dims, precision in ((96, "int8"), (384, "float8"), (192, "binary"), (48, "uint8")):
        stored = project(Setting("truncate", dims, precision), raw, precision=precision)
        expected = minilm.encode(texts, "text", dimensions=dims, precision=precision)
        assert stored.dtype == expected.dtype
        np.testing.assert_array_equal(stored.view(np.uint8), expected.view(np.uint8))


def test_binary_rescoring_reranks_the_hamming_candidates_by_the_float_query():
    from zoo.evaluation.sweep import _search

    rng = np.random.default_rng(3)
    q, c = pp.normalize(rng.normal(size=(30, 64))), pp.normalize(rng.normal(size=(400, 64)))
    stored = pp.quantize(c, "binary")
    plain, _ = _search(Setting("truncate", 64, "binary"), q, stored, q)
    idx, scores = _search(Setting("binary+rescore", 64, "binary"), q, stored, q)
    assert [set(a) for a in idx] == [set(a) for a in plain]  # the same 100 candidates
    expected = np.einsum("qd,qkd->qk", q, pp.dequantize(stored, "binary")[idx])
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first


def test_each_side_uses_its_prompt():
    from zoo.evaluation.embed import side_prompt

    prompts = zoo.get_spec("intfloat/e5-small-v2").prompts
    assert (side_prompt(prompts, True), side_prompt(prompts, False)) == ("query", "document")
    assert side_prompt({}, True) is None  # the model's default prompt


def test_sweep_rows(minilm_rows):
    assert all(set(r) == KEYS for r in minilm_rows)
    base = _row(minilm_rows, *BASE)
    assert base["compression"] == 1 and base["ndcg@10_change"] == 0 and base["bytes_per_vector"] == 1536
    assert 0.5 < base["ndcg@10"] <= 1  # MiniLM finds a docstring's body from its summary line
    binary = _row(minilm_rows, "truncate", 384, "binary")
    assert binary["bytes_per_vector"] == 48 and binary["compression"] == 32
    rescored = _row(minilm_rows, "binary+rescore", 384, "binary")
    assert rescored["recall@100"] == binary["recall@100"]  # re-ranking keeps the same 100 candidates
    half = _row(minilm_rows, "truncate", 384, "float16")
    assert abs(half["ndcg@10"] - base["ndcg@10"]) < 2e-3
    for r in minilm_rows:
        assert r["ndcg@10_change"] == pytest.approx((r["ndcg@10"] - base["ndcg@10"]) / base["ndcg@10"])
    front = [r for r in minilm_rows if r["pareto"]]
    assert front and all(not (o["bytes_per_vector"] <= f["bytes_per_vector"] and o["ndcg@10"] > f["ndcg@10"])
                         for f in front for o in minilm_rows if o["method"] in ("truncate", "pca"))


# --- builders -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["debian", "shapes", "shapes-i2t", "speech"])
def test_builders_make_loadable_sets(tmp_path, name):
    from zoo.data.speech import espeak_available

    if name == "speech" and not espeak_available():
        pytest.skip("espeak-ng is not installed")
    data = load(build(name, tmp_path / name, limit=64))
    assert len(data.queries) >= 32 and len(data.corpus) >= 32
    assert len(set(data.queries.items)) == len(data.queries)  # no repeated query (text, image or audio file)
    kinds = {"debian": ("text", "text"), "shapes": ("text", "image"), "shapes-i2t": ("image", "text"),
             "speech": ("audio", "image")}[name]
    assert (data.queries.modalities[0].value, data.corpus.modalities[0].value) == kinds
    with pytest.raises(InvalidArgumentError, match="already holds a set"):
        build(name, tmp_path / name)


def test_aligned_model_on_generated_shapes(tmp_path):
    model = zoo.create("zoo/shapes-aligned-minilm", device="cpu")
    data = load(build("shapes", tmp_path / "shapes", limit=64))
    rows = evaluate(model, data, only=lambda s: s.method == "truncate" and s.precision in ("float32", "binary"))
    base = _row(rows, "truncate", model.spec.dim, "float32")
    chance = 2 / 64  # two relevant images of 64
    assert base["recall@10"] > 5 * chance * 10 / 2 and base["ndcg@10"] > 0.3


# --- the command line, the cache, mteb ------------------------------------------------------------------------------

def _zoo(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def test_cli_eval_writes_json_and_plot_and_reuses_the_cache(tmp_path, docstrings):
    args = ["eval", "sentence-transformers/all-MiniLM-L6-v2", "--data", str(docstrings), "--json",
            str(tmp_path / "rows.json"), "--plot", str(tmp_path / "plot.png"), "--cache-dir", str(tmp_path / "c")]
    first = _zoo(*args)
    assert first.returncode == 0, first.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == len(settings(384)) and all(set(r) == KEYS for r in rows)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hubness: k-occurrence skewness" in first.stdout and "from the cache" not in first.stdout
    assert len(list((tmp_path / "c").glob("*-pca.safetensors"))) == 1  # the PCA is kept with the vectors
    second = _zoo(*args)
    assert second.returncode == 0 and "(embeddings from the cache)" in second.stdout
    assert json.loads((tmp_path / "rows.json").read_text()) == rows


@pytest.mark.parametrize(("args", "match"), [
    (["eval", "sentence-transformers/all-MiniLM-L6-v2"], "give a MODEL and --data"),
    (["eval", "sentence-transformers/all-MiniLM-L6-v2", "--data", "/nonexistent-set"], "is not a folder"),
    (["eval", "--build", "wikipedia", "/tmp/x"], "unknown set 'wikipedia'"),
    (["eval", "x", "--data", ".", "--backend", "carrier-pigeon"], "backend 'carrier-pigeon' is not installed"),
])
def test_cli_eval_errors(args, match):
    out = _zoo(*args)
    assert out.returncode == 2 and match in out.stderr and "Traceback" not in out.stderr


def test_mteb_gives_the_same_ndcg_as_zoo_eval(minilm, docstrings, minilm_rows):
    import mteb

    from zoo.integrations.mteb import MTEBEncoder, beir_task

    result = mteb.evaluate(MTEBEncoder(minilm), beir_task(docstrings), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    base = _row(minilm_rows, *BASE)
    assert scores["ndcg_at_10"] == pytest.approx(base["ndcg@10"], abs=1e-4)
    assert scores["mrr_at_10"] == pytest.approx(base["mrr@10"], abs=1e-4)


@pytest.mark.server
def test_served_model_gives_the_same_rows_as_in_process(triton, docstrings, minilm_rows):
    from zoo.backends import open_model

    server, _ = triton
    remote = open_model("sentence-transformers/all-MiniLM-L6-v2", "triton", server.grpc_url, None)
    try:
        rows = evaluate(remote, docstrings, backend="triton",
                        only=lambda s: s.method == "truncate" and s.dimensions in (384, 96))
    finally:
        remote.close()
    assert type(remote).__name__ == "TritonEmbedder"  # through the entry point serving registers
    for row in rows:
        local = _row(minilm_rows, row["method"], row["dimensions"], row["precision"])
        for metric in ("ndcg@10", "recall@1", "recall@10", "mrr@10"):
            assert row[metric] == pytest.approx(local[metric], abs=1e-4), (row["dimensions"], row["precision"])
