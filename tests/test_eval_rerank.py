"""Reranking in zoo eval: the listwise reranker built from an embedding model (zoo.listwise), ``zoo eval --rerank``
(the dense row and the reranked one, any reranker model, the flags checked before a model loads), and the
``manpages`` set."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.tiny_models import make_cross_encoder
from zoo import listwise, search
from zoo import postprocess as pp
from zoo.cli import main
from zoo.errors import InvalidArgumentError
from zoo.evaluation import embed_set
from zoo.evaluation.build import build
from zoo.evaluation.data import load
from zoo.evaluation.embed import Cache
from zoo.evaluation.manpages import manpage_pairs, page_pair
from zoo.evaluation.metrics import METRICS
from zoo.evaluation.rerank import compare, listwise_scores

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = ["The cat sat on the mat and purred all afternoon in the warm sun by the window.",
        "Stock prices fell sharply on Monday as investors worried about inflation and rates.",
        "A kitten is a young cat; kittens sleep for most of the day and play at night.",
        "The recipe needs two eggs, a cup of flour and a pinch of salt, mixed well.",
        "Unbelievably hyphenated-words and dotted.names make tokenizers split words apart."]


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory) -> Path:
    """A small real set: 40 standard-library docstring pairs."""
    return build("docstrings", tmp_path_factory.mktemp("sets") / "docstrings", limit=40)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One embedding cache for the module: the set's first stage is embedded once."""
    return tmp_path_factory.mktemp("cache")


class Reorder:
    """A stand-in cross-encoder that scores each pair by its position in the list it is given (the first stage's
    order): ``reverse`` puts the first stage's last candidate first, else it keeps the order."""

    def __init__(self, reverse: bool) -> None:
        self.spec = SimpleNamespace(name="reverse" if reverse else "keep", output="score")
        self.sign = 1.0 if reverse else -1.0

    def encode(self, *args, **kwargs):  # what zoo.rerank checks a model has
        raise AssertionError("a cross-encoder is read through predict()")

    def predict(self, pairs, **kwargs) -> np.ndarray:
        return self.sign * np.arange(len(pairs), dtype=np.float32)


# --- zoo.listwise ------------------------------------------------------------------------------------------------

def test_listwise_rank_has_the_ranking_shape(minilm):
    got = listwise.rank(minilm, "a sleepy kitten", DOCS, feedback=3)
    assert [set(r) for r in got] == [{"corpus_id", "score"}] * len(DOCS)
    assert sorted(r["corpus_id"] for r in got) == list(range(len(DOCS)))
    assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
    assert got[0]["corpus_id"] in (0, 2)  # the two cat documents lead
    top = listwise.rank(minilm, "a sleepy kitten", DOCS, feedback=3, top_k=2, return_documents=True)
    assert [(r["corpus_id"], r["score"]) for r in top] == [(r["corpus_id"], r["score"]) for r in got[:2]]
    assert [r["text"] for r in top] == [DOCS[r["corpus_id"]] for r in top]
    scores = listwise.scores(minilm, "a sleepy kitten", DOCS, feedback=3)
    assert scores.shape == (len(DOCS),) and scores.dtype == np.float32
    np.testing.assert_allclose(sorted(scores, reverse=True), [r["score"] for r in got], rtol=1e-6)


def test_listwise_scores_do_not_depend_on_the_documents_order(minilm):
    perm = [3, 0, 4, 2, 1]
    base = listwise.scores(minilm, "a sleepy kitten", DOCS, feedback=2)
    again = listwise.scores(minilm, "a sleepy kitten", [DOCS[i] for i in perm], feedback=2)
    np.testing.assert_allclose(again, base[perm], atol=1e-5)


def test_pseudo_query_holds_the_query_and_every_feedback_document_within_the_window(minilm):
    long_docs = [" ".join([d] * 12) for d in DOCS] * 4  # 20 documents, each past the window on its own
    query = "which documents talk about cats sleeping in the sun"
    ((text, held),) = listwise.pseudo_queries(minilm, [query], [long_docs])
    assert held == 20
    view = minilm.tokenize([text])[0]
    assert not view.truncated and view.count <= minilm.max_input_tokens
    assert text.startswith(listwise.TASK) and text.endswith(f"\nSearch Query: {query}")
    lines = text.split("\n")[2:-1]
    assert [line.split("] ", 1)[0] for line in lines] == [f"[{i}" for i in range(1, 21)]
    for line, doc in zip(lines, long_docs):
        kept = line.split("] ", 1)[1]
        assert kept and doc.startswith(kept) and len(kept) < len(doc)  # a start of each, cut to its share
    assert view.count > minilm.max_input_tokens - 40  # the shares use the window, not a fraction of it


def test_listwise_errors_name_the_argument(minilm, tmp_path):
    with pytest.raises(InvalidArgumentError, match="feedback must be a positive integer") as e:
        listwise.rank(minilm, "q", DOCS, feedback=0)
    assert e.value.param == "feedback"
    with pytest.raises(InvalidArgumentError, match=r"documents\[1\] must be a string .*bytes"):
        listwise.scores(minilm, "q", ["a", b"b"])
    with pytest.raises(InvalidArgumentError, match="dense text embedding model"):
        listwise.rank(str(make_cross_encoder(tmp_path / "ce")), "q", DOCS)
    no_tokenizer = SimpleNamespace(spec=minilm.spec, encode=minilm.encode)
    with pytest.raises(InvalidArgumentError, match="does not expose its tokenizer"):
        listwise.rank(no_tokenizer, "q", DOCS)


def test_a_query_too_long_for_every_feedback_document_keeps_the_best_that_fit(minilm):
    docs = [" ".join([d] * 12) for d in DOCS] * 4
    long_query, longer = "word " * 180, "word " * 300
    (few, none) = listwise.pseudo_queries(minilm, [long_query, longer], [docs, docs])
    assert 0 < few.held < 20 and few.text.endswith(long_query)
    lines = few.text.split("\n")[2:-1]
    assert [line.split("] ", 1)[0] for line in lines] == [f"[{i}" for i in range(1, few.held + 1)]
    assert all(line.split("] ", 1)[1] and doc.startswith(line.split("] ", 1)[1]) for line, doc in zip(lines, docs))
    assert not minilm.tokenize([few.text])[0].truncated
    assert none.held == 0 and "\n[1] " not in none.text  # no room at all: the query's prompt alone
    assert listwise.scores(minilm, longer, DOCS).shape == (len(DOCS),)


# --- zoo eval --rerank -------------------------------------------------------------------------------------------

def test_a_reranker_that_reverses_the_order_lowers_ndcg(minilm, docstrings, cache_dir):
    """One that keeps the first stage's order changes nothing; one that reverses the top 20 loses clearly."""
    data = load(docstrings)
    kept = compare(minilm, data, Reorder(reverse=False), depth=20, cache=Cache(cache_dir))
    for m in METRICS:
        assert kept[1][m] == pytest.approx(kept[0][m]), m
    rows = compare(minilm, data, Reorder(reverse=True), depth=20, cache=Cache(cache_dir))
    dense, after = rows
    assert dense == kept[0]
    assert after["method"] == "dense+reverse" and after["depth"] == 20
    assert after["ndcg@10"] < dense["ndcg@10"] - 0.3 and after["ndcg@10_change"] < -0.4
    assert after["recall@1"] < dense["recall@1"] and after["hurt"] > 5 * after["helped"]
    assert after["recall@100"] == pytest.approx(dense["recall@100"])  # reordering the top 20 keeps the top 100
    lo, hi = after["ndcg@10_diff_ci"]
    assert lo <= after["ndcg@10_diff"] <= hi < 0


def test_eval_listwise_scores_are_the_public_rerankers(minilm, docstrings, cache_dir):
    """The eval reuses the first stage's vectors; zoo.listwise.scores embeds afresh: same scores, same feedback."""
    data = load(docstrings)
    corpus, queries = (pp.normalize(x) for x in embed_set(minilm, data, cache=Cache(cache_dir)))
    candidates, _ = search.top_k(queries[:4], corpus, 12)
    got, held = listwise_scores(minilm, data, candidates, corpus, feedback=5)
    assert held.tolist() == [5] * 4
    for i, row in enumerate(candidates):
        want = listwise.scores(minilm, data.queries.items[i], [data.corpus.items[j] for j in row], feedback=5)
        np.testing.assert_allclose(got[i], want, atol=2e-4)
    assert not np.allclose(got, listwise_scores(minilm, data, candidates, corpus, feedback=1)[0], atol=1e-3)


def test_cli_rerank_e2rank_reports_both_rows(docstrings, cache_dir, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["eval", MINILM, "--data", str(docstrings), "--rerank", "e2rank", "--rerank-depth", "20",
                 "--rerank-feedback", "5", "--max-queries", "12", "--cache-dir", str(cache_dir),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["dense", "dense+e2rank"]
    assert rows[1]["depth"] == 20 and rows[1]["feedback"] == 5 and rows[1]["rerank_ms_per_query"] > 0
    assert rows[1]["feedback_short"] == 0
    assert all(r["queries"] == 12 for r in rows)
    for m in METRICS:
        assert 0 <= rows[0][m] <= 1 and 0 <= rows[1][m] <= 1
    lines = printed.splitlines()
    assert "reranked by e2rank (feedback: its top 5)" in lines[0]
    assert lines[1].split()[:2] == ["method", "depth"] and "rerank ms/query" in lines[1]
    assert lines[2].startswith("dense ") and lines[3].startswith("dense+e2rank ")
    assert f"{rows[1]['ndcg@10']:.4f}" in lines[3] and "nDCG@10 dense+e2rank - dense" in lines[4]


def test_tiny_cross_encoder_reranks_through_the_cli(docstrings, cache_dir, tmp_path):
    folder = make_cross_encoder(tmp_path / "tiny-ce")
    out = tmp_path / "rows.json"
    assert main(["eval", MINILM, "--data", str(docstrings), "--rerank", str(folder), "--rerank-depth", "10",
                 "--max-queries", "8", "--cache-dir", str(cache_dir), "--json", str(out)]) == 0
    dense, after = json.loads(out.read_text())
    assert after["reranker"] == after["method"].removeprefix("dense+") and after["depth"] == 10
    assert after["rerank_ms_per_query"] > 0 and after["feedback"] is None
    for m in ("recall@10", "recall@100"):  # only the top 10 were reordered
        assert after[m] == pytest.approx(dense[m])


@pytest.mark.parametrize(("extra", "match"), [
    (["--rerank", "e2rank", "--long", "truncate"], "--rerank and --long"),
    (["--rerank", "e2rank", "--plot", "x.png"], "leave it out with --rerank"),
    (["--rerank", "e2rank", "--rerank-depth", "0"], "rerank depth must be an integer from 1"),
    (["--rerank", "e2rank", "--rerank-feedback", "0"], "feedback must be a positive integer"),
    (["--rerank", " "], "--rerank needs a model name"),
])
def test_cli_refuses_bad_rerank_flags_before_loading_a_model(extra, match, capsys):
    assert main(["eval", "no/such-model", "--data", "no-such-set", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


# --- the manpages set --------------------------------------------------------------------------------------------

MAN_PAGE = r""".\" a comment
.TH FROB 1 "2024" "frob 1.0" "User Commands"
.SH NAME
frob \- twiddle the \fIbits\fR of a file
.SH SYNOPSIS
.B frob
[\fB\-v\fR] \fIFILE\fR
.SH DESCRIPTION
.PP
\fBfrob\fR reads \fIFILE\fR and twiddles its bits \(em all of them \- in place.
.TP
\fB\-v\fR, \fB\-\-verbose\fR
say which bits were twiddled, one line per byte of the file read so far.
.SH "SEE ALSO"
.BR twiddle (1)
"""

MDOC_PAGE = r""".Dd March 1, 2024
.Dt WOBBLE 1
.Sh NAME
.Nm wobble
.Nd shake a directory tree until it settles
.Sh DESCRIPTION
The
.Nm
utility walks each
.Ar path
and shakes it.
.Bl -tag -width Ds
.It Fl n
Do not settle, only report what would move in the tree and where it would go.
.El
"""


def test_manual_pages_read_as_plain_text():
    query, doc = page_pair(MAN_PAGE)
    assert query == "twiddle the bits of a file"
    assert doc == ("frob reads FILE and twiddles its bits - all of them - in place. -v, --verbose say which bits "
                   "were twiddled, one line per byte of the file read so far.")
    query, doc = page_pair(MDOC_PAGE)
    assert query == "shake a directory tree until it settles"
    assert doc.startswith("The utility walks each path and shakes it. -n Do not settle")
    assert page_pair(MAN_PAGE.replace("DESCRIPTION", "DETAILS")) is None
    assert page_pair(MAN_PAGE.replace("twiddle the", "manual page for")) is None


def test_manpages_set_is_built_from_this_machines_pages(tmp_path):
    pairs = manpage_pairs(limit=30)
    assert len(pairs) == 30
    assert len({q for q, _ in pairs}) == len({d for _, d in pairs}) == 30
    for query, doc in pairs:
        assert query.strip() == query and not any("\\" + c in query + doc for c in "f-(")  # no roff escapes
        assert not doc.startswith(".")
    data = load(build("manpages", tmp_path / "man", limit=30))
    assert len(data.corpus) == len(data.queries) == 30
    with pytest.raises(InvalidArgumentError, match="is missing"):
        manpage_pairs(tmp_path / "no-such-folder")
