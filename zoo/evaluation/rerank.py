"""What a reranker adds to the dense search, measured on one set: ``zoo eval MODEL --data DIR --rerank RERANKER``.

The first stage is the eval's model, dense and exact (full float32 cosine, the sweep's base row). The top
``depth`` candidates of each query are then re-scored by the reranker and re-ordered; the candidates below
``depth`` (down to the metrics' depth of 100) keep their first-stage order under them. The reranker is

- ``e2rank``: the listwise reranker built from the eval's own model (:mod:`zoo.listwise`): each query's top
  ``feedback`` candidates and the query make a pseudo-query, embedded by the same model, and the candidates score
  their cosine with it. The candidates' vectors are the first stage's (cached), so it costs one embedding a query;
- any other model: :func:`zoo.rerank` on the candidates (a cross-encoder reads each pair; a bi-encoder embeds the
  query and the candidates afresh and scores them its way).

Two rows come back: ``dense`` and ``dense+<reranker>``, each with the sweep's metrics; the second also holds
``<metric>_change`` against dense, the paired difference of nDCG@10 per query with a 95 % bootstrap interval
(``ndcg@10_diff``, ``ndcg@10_diff_ci``), how many queries the reranker helped and hurt, and
``rerank_ms_per_query``: the reranker's wall time (embedding, scoring and ordering) over the queries; for
``e2rank``, ``feedback`` and ``feedback_short``: the queries whose pseudo-query held fewer candidates, being too
long to leave each its share of the window.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import postprocess as pp
from .. import search
from ..errors import InvalidArgumentError
from ..listwise import DEFAULT_FEEDBACK, check_feedback, pseudo_queries, pseudo_query_vectors
from ..ranking import scores as rerank_scores
from ..spec import Modality
from . import embed_set
from .data import RetrievalSet, Side
from .embed import CHUNK, Cache, _load_item
from .metrics import DEPTH, METRICS, Scorer, run_of

#: ``--rerank`` value naming the listwise reranker built from the eval's own model
LISTWISE = "e2rank"
DEFAULT_DEPTH = 100
BOOTSTRAP = 2000  # resamples of the paired interval
MAX_DEPTH = 10_000  # candidates a query may send to the reranker


def check_depth(depth: Any) -> int:
    """``depth`` as a positive integer of at most :data:`MAX_DEPTH`, else an error naming ``rerank_depth``."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= MAX_DEPTH:
        raise InvalidArgumentError(f"rerank depth must be an integer from 1 to {MAX_DEPTH}, got {depth!r}",
                                   "rerank_depth")
    return int(depth)


def _modality(side: Side, what: str) -> Modality:
    kinds = set(side.modalities)
    if len(kinds) != 1:
        raise InvalidArgumentError(f"reranking needs the set's {what} in one modality; they hold "
                                   f"{', '.join(sorted(m.value for m in kinds))}")
    return next(iter(kinds))


def _bootstrap(diff: np.ndarray, seed: int = 0) -> list[float]:
    """The 95 % percentile interval of the mean of ``diff`` over :data:`BOOTSTRAP` resamples."""
    rng = np.random.default_rng(seed)
    step = max(1, min(BOOTSTRAP, 10_000_000 // len(diff)))  # resamples drawn at once: bounds the memory
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(min(step, BOOTSTRAP - s), len(diff)))].mean(axis=1)
                            for s in range(0, BOOTSTRAP, step)])
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def listwise_scores(model: Any, data: RetrievalSet, candidates: np.ndarray, corpus: np.ndarray, feedback: int,
                    batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``([Q, depth] scores, [Q] documents held)``: the cosines of each query's candidates (``candidates``:
    corpus rows, best first) with its pseudo-query, made of the query and its first ``feedback`` candidates
    (:mod:`zoo.listwise`; ``held``: how many it holds, fewer for a query too long to leave them room);
    ``corpus``: the corpus's unit vectors (the first stage's)."""
    from tqdm.auto import tqdm

    if _modality(data.queries, "queries") != Modality.TEXT or _modality(data.corpus, "corpus") != Modality.TEXT:
        raise InvalidArgumentError(f"--rerank {LISTWISE} writes queries and documents into one text prompt: it "
                                   "needs a text set", "rerank")
    out = np.zeros(candidates.shape, np.float32)
    held = np.zeros(len(candidates), np.int64)
    with tqdm(total=len(candidates), desc=f"rerank ({LISTWISE})", unit="query", disable=None) as bar:
        for s in range(0, len(candidates), CHUNK):
            rows = range(s, min(s + CHUNK, len(candidates)))
            fb = [[data.corpus.items[j] for j in candidates[i, :feedback]] for i in rows]
            pseudo = pseudo_queries(model, [data.queries.items[i] for i in rows], fb)
            vecs = pseudo_query_vectors(model, [p.text for p in pseudo], batch_size=batch_size)
            for r, i in enumerate(rows):
                out[i] = corpus[candidates[i]] @ vecs[r]
                held[i] = pseudo[r].held
            bar.update(len(rows))
    return out, held


def model_scores(reranker: Any, data: RetrievalSet, candidates: np.ndarray,
                 batch_size: int | None = None) -> np.ndarray:
    """``[Q, depth]`` scores of each query's candidates by ``reranker`` (:func:`zoo.ranking.scores`)."""
    from tqdm.auto import tqdm

    q_mod, d_mod = _modality(data.queries, "queries"), _modality(data.corpus, "corpus")
    out = np.zeros(candidates.shape, np.float32)
    with tqdm(total=len(candidates), desc=f"rerank ({reranker.spec.name})", unit="query", disable=None) as bar:
        for i, row in enumerate(candidates):
            out[i] = rerank_scores(reranker, _load_item(data.queries.items[i]),
                                   [_load_item(data.corpus.items[j]) for j in row], modality=d_mod,
                                   query_modality=q_mod, batch_size=batch_size)
            bar.update(1)
    return out


def compare(model: Any, data: RetrievalSet, reranker: Any = LISTWISE, *, depth: int = DEFAULT_DEPTH,
            feedback: int = DEFAULT_FEEDBACK, backend: str = "local", cache: Cache | None = None,
            batch_size: int | None = None) -> list[dict]:
    """The ``dense`` and ``dense+<reranker>`` rows (see the module's text) of ``model`` on ``data``.

    Args:
        reranker: :data:`LISTWISE` (the listwise reranker from ``model`` itself) or a loaded/served model.
        depth: first-stage candidates each query sends to the reranker.
        feedback: ``e2rank``: candidates written into the pseudo-query.
    """
    depth = check_depth(depth)
    listwise = isinstance(reranker, str)
    if listwise and reranker != LISTWISE:
        raise InvalidArgumentError(f"reranker must be {LISTWISE!r} or a loaded model, got {reranker!r}", "rerank")
    if listwise:
        feedback = check_feedback(feedback)
    corpus, queries = embed_set(model, data, backend=backend, cache=cache, batch_size=batch_size)
    corpus, queries = pp.normalize(corpus), pp.normalize(queries)
    k = min(max(depth, DEPTH), len(data.corpus))
    idx, first = search.top_k(queries, corpus, k)
    depth = min(depth, k)
    candidates = idx[:, :depth]
    start = time.perf_counter()
    short = None
    if listwise:
        feedback = min(feedback, depth)
        new, held = listwise_scores(model, data, candidates, corpus, feedback, batch_size)
        short = int((held < feedback).sum())
    else:
        new = model_scores(reranker, data, candidates, batch_size)
    order = np.argsort(-new, axis=1, kind="stable")  # ties keep the first stage's order
    elapsed = time.perf_counter() - start
    reordered = np.concatenate([np.take_along_axis(candidates, order, 1), idx[:, depth:]], axis=1)
    ranks = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float32), reordered.shape)  # trec_eval sorts by score
    scorer = Scorer(data.qrels)
    runs = {"dense": run_of(idx, first, data.queries.ids, data.corpus.ids),
            "rerank": run_of(reordered, ranks, data.queries.ids, data.corpus.ids)}
    per = {name: scorer.per_query(run) for name, run in runs.items()}
    name = LISTWISE if listwise else reranker.spec.name
    rows = [{"method": "dense", "reranker": None, "depth": None, "feedback": None, "feedback_short": None,
             "rerank_ms_per_query": None},
            {"method": f"dense+{name}", "reranker": name, "depth": depth, "feedback": feedback if listwise else None,
             "feedback_short": short, "rerank_ms_per_query": round(1000 * elapsed / max(1, len(data.queries)), 2)}]
    for row, key in zip(rows, per):
        row["queries"] = len(per[key])
        row.update({m: float(np.mean([v[m] for v in per[key].values()])) for m in METRICS})
    base, after = rows
    for m in METRICS:
        base[f"{m}_change"] = None
        after[f"{m}_change"] = (after[m] - base[m]) / base[m] if base[m] else None
    diff = np.array([per["rerank"][q]["ndcg@10"] - per["dense"][q]["ndcg@10"] for q in per["dense"]])
    after["ndcg@10_diff"] = float(diff.mean()) if len(diff) else 0.0
    after["ndcg@10_diff_ci"] = _bootstrap(diff) if len(diff) else [0.0, 0.0]
    after["helped"], after["hurt"] = int((diff > 0).sum()), int((diff < 0).sum())
    return rows


def _cell(row: dict, m: str) -> str:
    change = row.get(f"{m}_change")
    return f"{row[m]:.4f}" + ("" if change is None else f" {100 * change:+.1f}%")


def table(rows: list[dict]) -> str:
    """A fixed-width table: one line per row, each metric with its change against dense, and the reranker's
    time per query."""
    head = ["method", "depth"] + list(METRICS) + ["rerank ms/query"]
    lines = [head]
    for r in rows:
        lines.append([r["method"], "" if r["depth"] is None else str(r["depth"])] + [_cell(r, m) for m in METRICS]
                     + ["" if r["rerank_ms_per_query"] is None else f"{r['rerank_ms_per_query']:.1f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def summary(rows: list[dict]) -> str:
    """One line: the paired nDCG@10 difference with its interval, and the queries helped and hurt."""
    after = rows[-1]
    lo, hi = after["ndcg@10_diff_ci"]
    short = after.get("feedback_short")
    return (f"nDCG@10 {after['method']} - dense: {after['ndcg@10_diff']:+.4f} (95% bootstrap interval "
            f"[{lo:+.4f}, {hi:+.4f}] over {after['queries']} queries); helped {after['helped']}, hurt {after['hurt']}"
            + (f"; the pseudo-queries of {short} long queries held fewer than {after['feedback']} documents"
               if short else ""))
