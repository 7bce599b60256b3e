"""BM25 (zoo.families.bm25): a fitted model of the sparse kind whose dot products are bm25s' own scores, its
persisted statistics, documents outside the fitted corpus, the store, hybrid fusion with a dense model, and
``zoo eval bm25``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import scoring
from zoo.evaluation.build import build
from zoo.evaluation.data import load
from zoo.evaluation.metrics import DEPTH, Scorer, run_of
from zoo.families import bm25 as B

bm25s = pytest.importorskip("bm25s")

#: queries with a repeated term, an unknown word and stopwords (bm25s counts a repeat twice, drops the rest)
EXTRA_QUERIES = ["json json data to a file", "the sorted list in place", "zzqx unknownword return"]


@pytest.fixture(scope="module")
def docset(tmp_path_factory):
    """A real small set: 150 standard-library docstrings and their queries, built here."""
    return load(build("docstrings", tmp_path_factory.mktemp("sets") / "docstrings", limit=150))


@pytest.fixture(scope="module")
def corpus(docset) -> list[str]:
    """The set's documents, plus bm25s' edge cases: an empty text and a text of stopwords only."""
    return [*docset.corpus.items, "", "the of and to"]


@pytest.fixture(scope="module")
def queries(docset) -> list[str]:
    return [*docset.queries.items[:40], *EXTRA_QUERIES]


def reference(corpus: list[str], method: str):
    """bm25s fitted its own way (its tokenizer, its index) on ``corpus``: the parity reference."""
    tok = bm25s.tokenization.Tokenizer(stopwords="en")
    index = bm25s.BM25(method=method)
    index.index(tok.tokenize(corpus, update_vocab=True, return_as="tuple", show_progress=False), show_progress=False)
    return tok, index


def reference_scores(tok, index, queries: list[str]) -> np.ndarray:
    """``get_scores`` of every query (the empty-document term ``""`` left out, as the query rows leave it)."""
    empty = tok.get_vocab_dict()[""]
    out = []
    for ids in tok.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False):
        ids = [i for i in ids if i != empty]
        out.append(index.get_scores(ids) if ids else np.zeros(index.scores["num_docs"], np.float32))
    return np.stack(out)


def offset(tok, index, queries: list[str]) -> np.ndarray:
    """bm25l/bm25+: the per-query constant ``get_scores`` adds to every document (0 for the other methods)."""
    if index.nonoccurrence_array is None:
        return np.zeros(len(queries))
    empty = tok.get_vocab_dict()[""]
    return np.array([index.nonoccurrence_array[[i for i in ids if i != empty]].sum()
                     for ids in tok.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)])


@pytest.mark.parametrize("method", B.METHODS)
def test_dot_products_are_bm25s_scores(method, corpus, queries, tmp_path):
    """The sparse kind's score (query row · document row) is bm25s' get_scores on the fitted corpus, for every
    bm25s method (bm25l/bm25+: less its per-query constant), and the document rows are bm25s' stored weights."""
    import scipy.sparse as sps

    model = zoo.create(str(B.fit(corpus, tmp_path / "bm25", method=method)))
    docs = model.encode(corpus, "text")  # the document side is the default
    qs = model.encode(queries, "text", prompt_name="query")
    ours = zoo.scoring.score("sparse", qs, docs)
    tok, index = reference(corpus, method)
    want = reference_scores(tok, index, queries)
    assert np.ptp(want) > 1 and (want > 0).any(axis=1).sum() >= len(queries) - 1  # real matches, not all zero
    np.testing.assert_allclose(ours + offset(tok, index, queries)[:, None], want, rtol=1e-5, atol=1e-5)
    s = index.scores
    stored = sps.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1))
    stored = stored.tocsr()
    stored.eliminate_zeros()  # robertson's clamped idf stores zeros
    assert docs.shape == stored.shape == (len(corpus), model.spec.vocab_size)
    assert (docs != 0).nnz == stored.nnz and abs(docs - stored).max() < 1e-5


def test_a_repeated_query_term_counts_twice(corpus, tmp_path):
    model = zoo.create(str(B.fit(corpus, tmp_path / "bm25")))
    once, twice = model.encode(["json data", "json json data"], "text", prompt_name="query")
    term = model.vocab["json"]
    assert once[0, term] == 1 and twice[0, term] == 2 and once.nnz == twice.nnz == 2


def test_persisted_model_reloads_to_identical_rows(corpus, queries, tmp_path):
    """The fitted folder, loaded again (and moved elsewhere), gives identical rows; its bm25s files load in bm25s
    and score as the freshly fitted bm25s index."""
    folder = B.fit(corpus, tmp_path / "bm25", k1=1.2, b=0.6)
    first = zoo.create(str(folder))
    rows = [first.encode(corpus, "text"), first.encode(queries, "text", prompt_name="query")]
    moved = Path(shutil.move(str(folder), str(tmp_path / "elsewhere")))
    again = zoo.create(str(moved))
    assert again.spec.options["k1"] == 1.2 and again.spec.options["b"] == 0.6 and again.spec.family == "bm25"
    for want, got in zip(rows, [again.encode(corpus, "text"), again.encode(queries, "text", prompt_name="query")]):
        assert (want != got).nnz == 0 and np.array_equal(want.indices, got.indices)
    stats = json.loads((moved / B.STATS).read_text())
    assert stats["num_docs"] == len(corpus) and stats["k1"] == 1.2 and stats["terms"][0] == ""
    saved = bm25s.BM25.load(str(moved / B.BM25S_DIR))
    tok = bm25s.tokenization.Tokenizer(stopwords=[])
    tok.load_vocab(str(moved / B.BM25S_DIR))
    tok.load_stopwords(str(moved / B.BM25S_DIR))
    fresh_tok = bm25s.tokenization.Tokenizer(stopwords="en")
    fresh = bm25s.BM25(k1=1.2, b=0.6)
    fresh.index(fresh_tok.tokenize(corpus, return_as="tuple", show_progress=False), show_progress=False)
    np.testing.assert_allclose(reference_scores(tok, saved, queries), reference_scores(fresh_tok, fresh, queries))


def test_documents_outside_the_corpus_follow_the_formula(corpus, tmp_path):
    """A new document's weights are lucene BM25 with the fitted N, df and avgdl, by hand: idf = ln(1 + (N − df
    + 0.5)/(df + 0.5)), weight = idf · tf / (tf + k1·(1 − b + b·dl/avgdl)), dl counting its unknown words too."""
    k1, b = 1.2, 0.75
    folder = B.fit(corpus, tmp_path / "bm25", k1=k1, b=b)
    model = zoo.create(str(folder))
    stats = json.loads((folder / B.STATS).read_text())
    vocab = {t: i for i, t in enumerate(stats["terms"])}
    n, avgdl = stats["num_docs"], stats["avgdl"]
    texts = ["Return the sorted list; the list is sorted in place. Zzqx frobnicates the list.",
             "Encode data as JSON, then write the JSON string to a file", "wholly unknown vocabulary qqq"]
    rows = model.encode(texts, "text")
    for text, row in zip(texts, rows):
        words = [w for w in re.findall(r"\w{2,}", text.lower()) if w not in set(stats["stopwords"])]
        dl, tf = len(words), Counter(w for w in words if w in vocab)
        want = {vocab[w]: math.log(1 + (n - stats["df"][vocab[w]] + 0.5) / (stats["df"][vocab[w]] + 0.5))
                * c / (c + k1 * (1 - b + b * dl / avgdl)) for w, c in tf.items()}
        got = dict(zip(row.indices.tolist(), row.data.tolist()))
        assert got.keys() == want.keys()
        assert all(abs(got[i] - want[i]) < 1e-5 * max(1, want[i]) for i in want)
    assert rows[2].nnz == 0 and rows[0].nnz > 0  # unknown words have no column
    assert "zzqx" not in vocab  # yet counted in dl: 9 terms, the stopwords (the, is, in) left out
    assert model.count_tokens(texts[:1], zoo.Modality.TEXT, None) == [9]
    # a corpus document encoded again is its fitted row: the same statistics either way
    np.testing.assert_allclose(model.encode(corpus[:5], "text").toarray(),
                               model.encode(corpus, "text")[:5].toarray())
    named = model.terms(rows[1:2])[0]  # readable rows: {term: weight}, heaviest first
    assert named == {stats["terms"][i]: w for i, w in sorted(zip(rows[1].indices, rows[1].data), key=lambda x: -x[1])}
    assert list(named)[:2] == list(model.terms(rows[1:2], top_k=2)[0]) and {"json", "file"} <= set(named)


def test_sides_and_refusals(corpus, tmp_path):
    model = zoo.create(str(B.fit(corpus, tmp_path / "bm25")))
    spec = model.spec
    assert spec.outputs == ("sparse",) and spec.default_prompt_name == "document"
    assert zoo.kinds.side_prompt(spec.prompts, True) == "query" and zoo.kinds.side_prompt(spec.prompts, False)
    doc, query = model.encode(["json data"], "text"), model.encode(["json data"], "text", prompt_name="query")
    assert sorted(query.data) == [1.0, 1.0] and (doc.data != 1).all()
    with pytest.raises(zoo.InvalidArgumentError, match="dimensions does not apply"):
        model.encode(["x"], "text", dimensions=8)
    with pytest.raises(zoo.InvalidArgumentError, match="float32"):
        model.encode(["x"], "text", precision="int8")
    with pytest.raises(zoo.InvalidArgumentError, match="cannot give output 'dense'"):
        model.encode(["x"], "text", output="dense")
    with pytest.raises(zoo.UnsupportedModalityError):
        model.encode([b"\x89PNG"], "image")
    with pytest.raises(zoo.InvalidArgumentError, match="truncate"):
        model.encode(["x"], "text", truncate="none")
    for bad, match in [(dict(method="bm26"), "method 'bm26'"), (dict(k1=-1), "k1"), (dict(b=2), "within 0..1"),
                       (dict(splitter="("), "not a regex")]:
        with pytest.raises(zoo.InvalidArgumentError, match=match):
            B.fit(corpus, tmp_path / "bad", **bad)
    with pytest.raises(zoo.InvalidArgumentError, match="not an empty folder"):
        B.fit(corpus, tmp_path / "bm25")
    with pytest.raises(zoo.InvalidArgumentError, match="no terms"):
        B.fit(["", "the of"], tmp_path / "none")
    with pytest.raises(zoo.InvalidArgumentError, match="item 1 is a bytes"):
        B.fit(["a text", b"bytes"], tmp_path / "none")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / B.STATS).write_text(json.dumps({"format": B.FORMAT, "version": 1, "k1": 1}))
    with pytest.raises(zoo.InvalidArgumentError, match="lack or garble"):
        zoo.create(str(tmp_path / "broken"))


def test_store_search_and_hybrid_with_a_dense_model(minilm, docset, tmp_path):
    """BM25 rows go into the vector database as sparse vectors and come back in bm25s' order with its scores;
    the same store holds MiniLM's dense vectors, and reciprocal rank fusion of the two rankings is the hybrid."""
    pytest.importorskip("qdrant_client")
    from zoo.store import VectorStore

    texts, ids = docset.corpus.items, docset.corpus.ids
    model = zoo.create(str(B.fit(texts, tmp_path / "bm25")))
    queries = docset.queries.items
    store = VectorStore(f"qdrant:{tmp_path / 'db'}")
    store.ensure("bm25", "sparse", model.spec.vocab_size)
    store.upsert("bm25", "sparse", ids, list(model.encode(texts, "text")))
    store.ensure("minilm", "dense", minilm.spec.dim)
    store.upsert("minilm", "dense", ids, list(minilm.encode(texts, "text")))
    tok, index = reference(texts, "lucene")
    want = reference_scores(tok, index, queries)
    qrows = model.encode(queries, "text", prompt_name="query")
    dense_q = minilm.encode(queries, "text")
    hits = {"bm25": 0, "dense": 0, "hybrid": 0}  # queries whose judged document is in the top 10
    for i in range(len(queries)):
        lexical = store.search("bm25", "sparse", qrows[i], 10)
        top = [j for j in np.argsort(-want[i], kind="stable")[:10] if want[i][j] > 0]  # a sparse search finds
        assert [h.score for h in lexical] == pytest.approx(want[i][top].tolist(), rel=1e-5)  # matches only
        if top:  # (a query of stopwords and unknown words matches nothing)
            assert {h.id for h in lexical if h.score > want[i][top[-1]] + 1e-4} <= {ids[j] for j in top}
        dense = store.search("minilm", "dense", dense_q[i], 10)
        fused = scoring.reciprocal_rank_fusion([[h.id for h in dense], [h.id for h in lexical]])
        tops = {"bm25": [h.id for h in lexical], "dense": [h.id for h in dense], "hybrid": [k for k, _ in fused[:10]]}
        for name, found in tops.items():
            hits[name] += any(docset.qrels[docset.queries.ids[i]].get(key, 0) > 0 for key in found)
    store.close()
    assert hits["hybrid"] > max(hits["bm25"], hits["dense"]), hits  # fusion finds more than either alone


def test_zoo_eval_bm25_fits_on_the_set_and_matches_bm25s_retrieval(docset, tmp_path):
    """``zoo eval bm25`` fits BM25 on the set's corpus (kept in the cache, reused), and its row's metrics are
    those of bm25s' own retrieval of the same set."""
    args = [sys.executable, "-m", "zoo.cli", "eval", "bm25", "--data", str(docset.root), "--cache-dir",
            str(tmp_path / "cache"), "--json", str(tmp_path / "rows.json")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert row["method"] == "sparse" and row["precision"] == "float32" and row["bytes_per_vector"] > 0
    fitted = [p for p in (tmp_path / "cache").iterdir() if B.is_fitted(p)]
    assert len(fitted) == 1 and json.loads((fitted[0] / B.STATS).read_text())["num_docs"] == len(docset.corpus)
    tok, index = reference(docset.corpus.items, "lucene")
    scores = reference_scores(tok, index, docset.queries.items)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
    top = np.take_along_axis(scores, idx, axis=1)
    want = Scorer(docset.qrels)(run_of(idx, top, docset.queries.ids, docset.corpus.ids))
    assert want["ndcg@10"] > 0.3
    for metric in ("ndcg@10", "recall@10", "mrr@10"):
        assert row[metric] == pytest.approx(want[metric], abs=1e-6), metric
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "(embeddings from the cache)" in again.stdout, again.stderr
    assert json.loads((tmp_path / "rows.json").read_text()) == [row]
