"""Scores between outputs of every kind: dense (see :func:`zoo.postprocess.similarity`), late-interaction
MaxSim between multi-vector items, dot products between sparse rows, and reciprocal rank fusion of rankings.
:func:`score` picks the one of a kind by its handler (:mod:`zoo.kinds`).

Quantized inputs are dequantized first (:func:`zoo.postprocess.dequantize`), so a score at any precision
approximates the float32 score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import postprocess as pp

SCORE_BLOCK = 1 << 24  # scores held per block (64 MB): bounds memory whatever the corpus size


def _padded(items: Sequence[np.ndarray], precision: str) -> tuple[np.ndarray, np.ndarray]:
    """``[N, L, d]`` dequantized vectors padded with zeros and their ``[N, L]`` validity mask."""
    floats = [pp.dequantize(np.asarray(x), precision) for x in items]
    width = max((x.shape[1] for x in floats if x.ndim == 2 and x.shape[0]), default=0)
    longest = max((len(x) for x in floats), default=0)
    out = np.zeros((len(floats), longest, width), np.float32)
    mask = np.zeros((len(floats), longest), bool)
    for i, x in enumerate(floats):
        out[i, : len(x)] = x
        mask[i, : len(x)] = True
    return out, mask


def maxsim(queries: Sequence[np.ndarray], documents: Sequence[np.ndarray], precision: str = "float32") -> np.ndarray:
    """``[len(queries), len(documents)]`` late-interaction scores: for every query vector its best dot
    product over the document's vectors, summed over the query's vectors (ColBERT's MaxSim)."""
    docs, mask = _padded(documents, precision)
    scores = np.zeros((len(queries), len(documents)), np.float32)
    if docs.size == 0:
        return scores
    flat = docs.reshape(-1, docs.shape[-1])  # [N * L, d]: one BLAS product per query and block
    for qi, q in enumerate(queries):
        q = pp.dequantize(np.asarray(q), precision)
        if len(q) == 0:
            continue
        step = max(1, SCORE_BLOCK // max(1, docs.shape[1] * len(q)))
        for s in range(0, len(docs), step):
            block = min(step, len(docs) - s)
            sim = (q @ flat[s * docs.shape[1]:(s + block) * docs.shape[1]].T).reshape(len(q), block, -1)
            best = np.where(mask[None, s:s + block], sim, -np.inf).max(-1)  # [n_q, block]
            scores[qi, s:s + block] = np.where(np.isfinite(best), best, 0.0).sum(0)
    return scores


def sparse_dot(a, b) -> np.ndarray:
    """``[a.rows, b.rows]`` dot products of two sparse matrices (``csr_matrix`` term weights)."""
    import scipy.sparse as sps

    a = sps.csr_matrix(a, dtype=np.float32)
    b = sps.csr_matrix(b, dtype=np.float32)
    return np.asarray((a @ b.T).todense(), np.float32)


def score(kind: str, queries: Any, documents: Any, precision: str = "float32") -> np.ndarray:
    """``[queries, documents]`` scores between two results of output ``kind``, as its handler scores them
    (:meth:`zoo.kinds.OutputKind.score`: dot products for dense and FDE, MaxSim for multi-vector, sparse dot
    products for sparse, and whatever a registered kind defines)."""
    from . import kinds  # lazily: the kinds' handlers call back into this module

    return kinds.get(kind).score(queries, documents, precision)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists: each id scores ``Σ 1 / (k + rank)`` over the lists it appears in (rank from 1),
    best first (Cormack et al., 2009; ``k=60`` as there)."""
    total: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            total[key] = total.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(total.items(), key=lambda kv: -kv[1])
