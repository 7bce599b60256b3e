"""Hybrid search in ``zoo eval`` (``--hybrid OTHER``): reciprocal rank fusion of two models' rankings, and the
query latency of each way of searching (``--latency N``).

Each model ranks the corpus exactly on its own: a dense model by the dot product of its L2-normalized
full-width float32 vectors (the sweep's ``truncate`` full-width float32 row), a sparse model (SPLADE, BM25) by
the dot product of its term weights (:mod:`.sparse`). The hybrid keeps each model's top :data:`DEPTH` and ranks
the union by reciprocal rank fusion, ``Σ 1 / (k + rank)`` with ``k = 60`` (:func:`zoo.scoring.
reciprocal_rank_fusion`, Cormack et al., 2009). :func:`compare` gives three rows, one per model and the fused
one, with the sweep's keys plus ``model`` (the hybrid's is ``"A + B"``); the fused row's ``method`` is ``rrf``,
its ``dimensions`` None and its ``bytes_per_vector`` the two indexes' together.

``query_ms`` (with ``latency=N``) is the median wall time of one query, taken one at a time over the first N
queries: encoding it on the model's query prompt and searching the whole corpus exactly (both models and the
fusion, for the hybrid). The corpus side is embedded beforehand, so it measures what a search costs, not indexing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import kinds, search
from .. import postprocess as pp
from ..errors import InvalidArgumentError
from ..scoring import reciprocal_rank_fusion
from ..spec import Modality
from .data import RetrievalSet
from .embed import Cache, embed_side
from .metrics import DEPTH, METRICS, Scorer, run_of
from .sparse import embed_sparse, is_sparse_model
from .sweep import bytes_per_vector

RRF_K = 60  # Cormack et al.'s constant, the one Qdrant and most engines default to
HUB_K = 10


class Ranker:
    """One model's exact search over ``data``'s corpus: ``rank(queries)`` for all queries (embedded through the
    cache), ``one(text)`` for a single query from scratch (latency)."""

    def __init__(self, model: Any, data: RetrievalSet, *, key: dict, cache: Cache | None = None,
                 batch_size: int | None = None) -> None:
        self.model, self.data, self.key, self.cache, self.batch_size = model, data, key, cache, batch_size
        self.sparse = is_sparse_model(model.spec)
        self.prompt = kinds.side_prompt(model.spec.prompts, True)
        if self.sparse:
            self.corpus = embed_sparse(model, data.corpus, query=False, batch_size=batch_size, cache=cache, key=key)
            self.bytes = round(kinds.get("sparse").bytes_per_item(self.corpus, 0), 1)
        else:
            raw = embed_side(model, data.corpus, query=False, batch_size=batch_size, cache=cache, key=key)
            self.corpus = pp.normalize(raw)
            self.bytes = bytes_per_vector(model.spec.dim, "float32")

    def _search(self, queries: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.sparse:
            return search.sparse_top_k(queries, self.corpus, DEPTH)
        return search.top_k(pp.normalize(queries), self.corpus, DEPTH)

    def rank(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices [Q, DEPTH], scores)`` of every query of the set, best first."""
        if self.sparse:
            q = embed_sparse(self.model, self.data.queries, query=True, batch_size=self.batch_size,
                             cache=self.cache, key=self.key)
        else:
            q = embed_side(self.model, self.data.queries, query=True, batch_size=self.batch_size, cache=self.cache,
                           key=self.key)
        return self._search(q)

    def one(self, text: str) -> np.ndarray:
        """The top :data:`DEPTH` corpus indices of one query text, embedded now."""
        if self.sparse:
            q = self.model.encode([text], Modality.TEXT, output="sparse", prompt_name=self.prompt)
        else:
            controls = {} if self.model.spec.output == "dense" else {"output": "dense"}
            q = self.model.encode([text], Modality.TEXT, normalize=False, precision="float32",
                                  prompt_name=self.prompt, **controls)
        return self._search(q)[0][0]


def fuse(rankings: Sequence[np.ndarray], k: int = RRF_K, depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of per-query rankings: each ``[Q, n]`` array holds corpus indices best first; the
    result is ``(indices [Q, depth'], scores)`` by ``Σ 1 / (k + rank)`` (rank from 1), best first, where
    ``depth'`` is ``depth`` or the size of the smallest union. Ties keep the first list's order."""
    if not rankings or len({len(r) for r in rankings}) != 1:
        raise InvalidArgumentError("fuse needs one or more rankings over the same queries")
    fused = [reciprocal_rank_fusion([[int(j) for j in r[q]] for r in rankings], k) for q in range(len(rankings[0]))]
    width = min([depth] + [len(f) for f in fused])
    idx = np.array([[j for j, _ in f[:width]] for f in fused], np.int64).reshape(len(fused), width)
    scores = np.array([[s for _, s in f[:width]] for f in fused], np.float32).reshape(len(fused), width)
    return idx, scores


def _row(method: str, name: str, dims: int | None, nbytes: float, idx: np.ndarray, scores: np.ndarray,
         data: RetrievalSet) -> dict:
    row: dict[str, Any] = {"model": name, "method": method, "dimensions": dims, "precision": "float32",
                           "bytes_per_vector": nbytes, "compression": None}
    row.update(Scorer(data.qrels)(run_of(idx, scores, data.queries.ids, data.corpus.ids)))
    row.update({f"{m}_change": None for m in METRICS})
    row["k_occurrence_skew"] = search.k_occurrence_skew(idx, len(data.corpus), HUB_K)
    row["pareto"] = False
    return row


def median_ms(fn: Callable[[str], Any], texts: Sequence[str]) -> float:
    """Median milliseconds of ``fn(text)`` over ``texts``, one call at a time, after one untimed warm-up call."""
    if not texts:
        raise InvalidArgumentError("latency needs at least one query")
    fn(texts[0])  # first call pays lazy initialisation (kernels, tokenizer caches), not a query's cost
    times = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        times.append(1000 * (time.perf_counter() - start))
    return round(float(np.median(times)), 3)


def compare(first: Any, second: Any, data: RetrievalSet, *, keys: tuple[dict, dict], cache: Cache | None = None,
            batch_size: int | None = None, latency: int = 0, k: int = RRF_K,
            names: tuple[str, str] | None = None) -> list[dict]:
    """The rows of ``first`` alone, ``second`` alone and their RRF fusion on ``data`` (module notes); ``keys``:
    what each model's cached rows depend on; ``latency``: queries timed one at a time (0: no ``query_ms``);
    ``names``: the models' names in the rows (default: their specs' names)."""
    if any(m is not Modality.TEXT for m in data.queries.modalities):
        raise InvalidArgumentError(f"--hybrid fuses text searches; the queries of {data.name} hold other media")
    a = Ranker(first, data, key=keys[0], cache=cache, batch_size=batch_size)
    b = Ranker(second, data, key=keys[1], cache=cache, batch_size=batch_size)
    (ia, sa), (ib, sb) = a.rank(), b.rank()
    fi, fs = fuse([ia, ib], k)
    names = names or (first.spec.name, second.spec.name)
    rows = [_row("sparse" if r.sparse else "dense", n, int(r.model.spec.vocab_size if r.sparse else r.model.spec.dim),
                 r.bytes, i, s, data) for r, n, i, s in ((a, names[0], ia, sa), (b, names[1], ib, sb))]
    rows.append(_row("rrf", f"{names[0]} + {names[1]}", None, round(a.bytes + b.bytes, 1), fi, fs, data))
    if latency:
        texts = list(data.queries.items[:latency])
        rows[0]["query_ms"] = median_ms(a.one, texts)
        rows[1]["query_ms"] = median_ms(b.one, texts)
        rows[2]["query_ms"] = median_ms(lambda t: fuse([a.one(t)[None], b.one(t)[None]], k), texts)
    return rows
