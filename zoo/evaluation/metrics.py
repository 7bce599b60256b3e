"""Retrieval metrics from trec_eval's own implementation (``pytrec_eval``), the one mteb and BEIR use."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: metric names of rows and JSON, in display order
METRICS = ("ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10")
_TREC = {"ndcg@10": "ndcg_cut_10", "recall@1": "recall_1", "recall@10": "recall_10", "recall@100": "recall_100"}
DEPTH = 100  # results kept per query: the deepest cut-off above


def run_of(indices: np.ndarray, scores: np.ndarray, query_ids: Sequence[str],
           corpus_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """A trec run ``{query id: {document id: score}}`` from :func:`zoo.search.top_k`'s output."""
    return {q: {corpus_ids[j]: float(s) for j, s in zip(row, srow)}
            for q, row, srow in zip(query_ids, indices, scores)}


def _top10(docs: dict[str, float]) -> dict[str, float]:
    # trec_eval's own order: score descending, then document id descending
    return dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])


class Scorer:
    """Mean nDCG@10, Recall@1/10/100 and MRR@10 of runs against one set of judgements."""

    def __init__(self, qrels: dict[str, dict[str, int]]) -> None:
        import pytrec_eval

        self.queries = list(qrels)
        self._cut = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.1,10,100"})
        self._rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})  # on the top 10 only: MRR@10

    def per_query(self, run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Every metric of every judged query (0 for a query missing from ``run``)."""
        cut = self._cut.evaluate(run)
        rr = self._rr.evaluate({q: _top10(d) for q, d in run.items()})
        return {q: {m: cut.get(q, {}).get(t, 0.0) for m, t in _TREC.items()} | {"mrr@10": rr.get(q, {}).get(
            "recip_rank", 0.0)} for q in self.queries}

    def __call__(self, run: dict[str, dict[str, float]]) -> dict[str, float]:
        """The mean of each metric over the judged queries."""
        per = self.per_query(run)
        return {m: float(np.mean([v[m] for v in per.values()])) for m in METRICS}
