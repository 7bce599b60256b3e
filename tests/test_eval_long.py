"""Long documents in zoo eval: the ``longdocs`` set (built here, deterministic, honest queries), the four ways of
embedding a long document compared through one code path, the naive chunker, and the tiny e5-4k (MiniLM with
positions stretched to 4,096) loaded like dwzhu/e5-base-4k and measured by the same code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.tiny_models import long_minilm
from zoo.errors import InvalidArgumentError
from zoo.evaluation import compare
from zoo.evaluation.build import build
from zoo.evaluation.data import load, write
from zoo.evaluation.long import WAYS, best_chunk_scores, table, token_chunks

CUT = 2500  # characters of each document the comparison tests keep: past MiniLM's window, quick to embed


@pytest.fixture(scope="module")
def longdocs(tmp_path_factory) -> Path:
    """The real set, 8 documents."""
    return build("longdocs", tmp_path_factory.mktemp("sets") / "longdocs", limit=8)


@pytest.fixture(scope="module")
def short_longdocs(longdocs, tmp_path_factory) -> Path:
    """The set's documents cut to :data:`CUT` characters (still longer than MiniLM's 256 tokens) with the queries
    whose answer is in what is kept: the four ways on both models in seconds."""
    corpus = [json.loads(line) for line in (longdocs / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (longdocs / "queries.jsonl").read_text().splitlines()]
    queries = [q for q in queries if q["start"] < CUT - 300]
    for row in corpus:
        row["text"] = row["text"][:CUT]
    dest = tmp_path_factory.mktemp("sets") / "short"
    return write(dest, corpus, queries, [(q["_id"], q["doc"], 1) for q in queries])


@pytest.fixture(scope="module")
def long_e5(tmp_path_factory):
    return zoo.create(str(long_minilm(tmp_path_factory.mktemp("models") / "minilm-4k")), device="cpu")


def test_longdocs_is_deterministic_and_every_query_names_its_module(longdocs, tmp_path):
    again = build("longdocs", tmp_path / "again", limit=8)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (again / name).read_bytes() == (longdocs / name).read_bytes(), name
    data = load(longdocs)
    rows = {r["_id"]: r for r in map(json.loads, (longdocs / "queries.jsonl").read_text().splitlines())}
    docs = dict(zip(data.corpus.ids, data.corpus.items))
    assert len(docs) == 8 and len(data.queries) >= 16
    assert min(len(t) for t in docs.values()) >= 1500  # long: hundreds of tokens at the least
    for qid, query in zip(data.queries.ids, data.queries.items):
        row = rows[qid]
        assert data.qrels[qid] == {row["doc"]: 1}  # one positive: the module the summary came from
        assert docs[row["doc"]].startswith(row["doc"])  # a document opens with its module's name
        assert docs[row["doc"]][row["start"]:].startswith(row["name"] + ": ")  # the entry the summary left
        assert not any(query in text for text in docs.values())  # never a verbatim substring of any document
    assert len(set(data.queries.items)) == len(data.queries)


def test_token_chunks_cover_the_text_in_whole_words_of_at_most_n_tokens(minilm):
    text = " ".join(f"word{i} unbelievably-hyphenated alpha.beta" for i in range(150))  # ~1,500 tokens
    (spans,) = token_chunks(minilm, [text], 40)
    assert len(spans) > 10
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert text[end:start].strip() == "" and not (text[start - 1].isalnum() and text[start].isalnum())
    counts = [len([o for o in v.offsets if o]) for v in minilm.tokenize([text[s:e] for s, e in spans])]
    assert max(counts) <= 40 and min(counts[:-1]) >= 30  # full chunks, cut back only to a word's start
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        token_chunks(minilm, [text], 300)  # more than MiniLM's 256-token window holds


def test_best_chunk_score_is_the_max_over_each_documents_vectors():
    rng = np.random.default_rng(0)
    q, v = rng.normal(size=(5, 8)), rng.normal(size=(9, 8))
    lengths = np.array([2, 0, 4, 3])
    got = best_chunk_scores(q, v, lengths)
    sims = q @ v.T
    want = [sims[:, 0:2].max(1), np.full(5, -np.inf), sims[:, 2:6].max(1), sims[:, 6:9].max(1)]
    np.testing.assert_allclose(got, np.stack(want, 1), rtol=1e-6)


def _check_rows(rows, model, data):
    assert [r["method"] for r in rows] == list(WAYS)
    by = {r["method"]: r for r in rows}
    assert by["truncate"]["vectors_per_doc"] == by["chunk-mean"]["vectors_per_doc"] == 1
    assert by["naive-chunks"]["vectors_per_doc"] > 1 and by["late-chunks"]["vectors_per_doc"] > 1
    for r in rows:
        assert r["dimensions"] == model.spec.dim and 0 <= r["ndcg@10"] <= 1 and r["recall@100"] == 1.0
        assert r["near"]["queries"] > 0 and r["far"]["queries"] > 0  # both groups measured
        assert r["near"]["queries"] + r["far"]["queries"] == len(data.queries)
    assert "late-chunks" in table(rows).splitlines()[-1]


def test_four_ways_on_minilm(minilm, short_longdocs):
    data = load(short_longdocs)
    rows = compare(minilm, data, chunk_tokens=64)
    _check_rows(rows, minilm, data)
    by = {r["method"]: r for r in rows}
    assert by["truncate"]["docs_over_window"] == len(data.corpus)  # every document is past 256 tokens
    with pytest.raises(InvalidArgumentError, match="unknown way"):
        compare(minilm, data, "truncate,summarize")


def test_tiny_e5_4k_loads_like_e5_base_4k_and_runs_the_same_code(long_e5, minilm, short_longdocs):
    old = minilm.model.embeddings.position_embeddings.weight.detach().numpy()
    new = long_e5.model.embeddings.position_embeddings.weight.detach().numpy()
    assert old.shape == (512, 384) and new.shape == (4096, 384)
    for p in (0, 1000, 2049, 4095):  # linear interpolation: row p reads the old table at p * 511 / 4095
        x = p * 511 / 4095
        lo = min(int(x), 510)
        np.testing.assert_allclose(new[p], old[lo] + (x - lo) * (old[lo + 1] - old[lo]), atol=1e-5)
    spec = long_e5.spec
    assert spec.max_length == 4096 and long_e5.max_input_tokens == 4096
    assert spec.prompts == {"query": "query: ", "document": "passage: "} and spec.options["pooling"] == "mean"
    view, empty = long_e5.tokenize(["word " * 3000, ""], prompt_name="document")
    assert len(view.ids) == 3000 + len(empty.ids) and not view.truncated  # 3,000 words read whole
    data = load(short_longdocs)
    rows = compare(long_e5, data, chunk_tokens=64)
    _check_rows(rows, long_e5, data)
    by = {r["method"]: r for r in rows}
    assert by["truncate"]["docs_over_window"] == 0  # the window holds every document: nothing is cut
    assert by["chunk-mean"]["ndcg@10"] == pytest.approx(by["truncate"]["ndcg@10"])  # one window: the same vector


@pytest.mark.parametrize(("extra", "match"), [
    (["--long", "truncate,summarize"], "unknown way(s) ['summarize']"),
    (["--long", "late-chunks", "--plot", "x.png"], "--plot draws the storage sweep"),
])
def test_cli_refuses_bad_long_flags_before_loading_a_model(extra, match, capsys):
    from zoo.cli import main

    assert main(["eval", "no/such-model", "--data", "no-such-set", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
