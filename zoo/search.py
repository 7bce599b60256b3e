"""Exact top-k search (dense vectors; sparse term weights with :func:`sparse_top_k`), and hubness: how skewed the
k-occurrence of corpus items is, and two corrections.

Hubness (Radovanović et al., 2010) is a failure of nearest-neighbour search in high dimensions that the
cross-modal retrieval literature names often: a few corpus items ("hubs") are in the top k of very many
queries and crowd out the right answers. It is measured by the skewness of ``N_k``, the number of queries
whose top ``k`` holds an item (:func:`k_occurrence_skew`; 0 is symmetric, large positive values mean hubs).

Corrections re-score with the help of a *bank* of queries (the queries at hand, as CSLS is used at test time,
or any sample of past queries):

- ``"csls"`` (Lample et al., 2018): ``2·s(q, d) − r(q) − r(d)``, with ``r(d)`` the mean similarity of ``d`` to
  its ``k`` nearest bank queries and ``r(q)`` that of ``q`` to its ``k`` nearest corpus items;
- ``"isoftmax"`` (inverted softmax, Smith et al., 2017): ``β·s(q, d) − log Σ_b exp(β·s(b, d))``: each item's
  scores are normalised over the bank, so an item close to every query gains nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgumentError, choices
from .scoring import SCORE_BLOCK

CORRECTIONS = ("csls", "isoftmax")


def _step(n_cols: int) -> int:
    """Rows per block of a ``[rows, n_cols]`` score matrix."""
    return max(1, SCORE_BLOCK // max(1, n_cols))


def _top_of_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row's ``k`` largest values."""
    k = min(k, scores.shape[1])
    return np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def _doc_terms(corpus: np.ndarray, bank: np.ndarray, correction: str, hub_k: int, beta: float) -> np.ndarray:
    """Per corpus item, what the correction subtracts: ``r(d)`` (csls) or ``log Σ_b exp(β·s(b, d))``."""
    out = np.empty(len(corpus), np.float32)
    step = _step(len(bank))
    for s in range(0, len(corpus), step):
        sim = corpus[s:s + step] @ bank.T  # [block, B]
        if correction == "csls":
            out[s:s + len(sim)] = _top_of_rows(sim, hub_k)
        else:
            z = beta * sim
            top = z.max(axis=1, keepdims=True)
            out[s:s + len(sim)] = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    return out


def top_k(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    correction: str | None = None,
    bank: np.ndarray | None = None,
    hub_k: int = 10,
    beta: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best corpus rows of every query by dot product (cosine for unit vectors), best first.

    Args:
        queries: ``[Q, d]`` float vectors (dequantize quantized ones first, :func:`zoo.postprocess.dequantize`).
        corpus: ``[N, d]`` float vectors.
        k: results per query (at most ``N``).
        correction: ``None``, ``"csls"`` or ``"isoftmax"`` (see the module notes).
        bank: ``[B, d]`` queries the correction normalises over (default: ``queries``).
        hub_k: neighbourhood size of CSLS.
        beta: inverse temperature of the inverted softmax.

    Returns:
        ``(indices [Q, k] int64, scores [Q, k] float32)``.
    """
    queries = np.asarray(queries, np.float32)
    corpus = np.asarray(corpus, np.float32)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise InvalidArgumentError(f"queries {queries.shape} and corpus {corpus.shape} must be [*, d] of one width")
    if correction is not None and correction not in CORRECTIONS:
        raise InvalidArgumentError(f"unknown hubness correction {correction!r}; choose one of {choices(CORRECTIONS)}",
                                   "correction")
    k = min(int(k), len(corpus))
    doc_terms = None
    if correction is not None:
        bank = queries if bank is None else np.asarray(bank, np.float32)
        doc_terms = _doc_terms(corpus, bank, correction, hub_k, beta)
    indices = np.zeros((len(queries), k), np.int64)
    scores = np.zeros((len(queries), k), np.float32)
    step = _step(len(corpus))
    for s in range(0, len(queries), step):
        sim = queries[s:s + step] @ corpus.T  # [block, N]
        if correction == "csls":
            sim = 2 * sim - _top_of_rows(sim, hub_k)[:, None] - doc_terms[None]
        elif correction == "isoftmax":
            sim = beta * sim - doc_terms[None]
        indices[s:s + len(sim)], scores[s:s + len(sim)] = _best(sim, k)
    return indices, scores


def _best(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest columns of every row of ``sim`` and their values, largest first."""
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.tile(np.arange(k), (len(sim), 1))
    best = np.take_along_axis(sim, part, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(best, order, axis=1)


def sparse_top_k(queries: Any, corpus: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best corpus rows of every query by sparse dot product (term weights: SPLADE, BM25), best first.

    Args:
        queries: ``[Q, V]`` sparse rows (a ``scipy.sparse`` matrix, as ``encode(output="sparse")`` returns).
        corpus: ``[N, V]`` sparse rows over the same vocabulary.
        k: results per query (at most ``N``).

    Returns:
        ``(indices [Q, k] int64, scores [Q, k] float32)``, as :func:`top_k`.
    """
    import scipy.sparse as sps

    queries = sps.csr_matrix(queries, dtype=np.float32)
    corpus = sps.csr_matrix(corpus, dtype=np.float32)
    if queries.shape[1] != corpus.shape[1]:
        raise InvalidArgumentError(f"queries {queries.shape} and corpus {corpus.shape} must be [*, V] over one "
                                   "vocabulary")
    k = min(int(k), corpus.shape[0])
    indices = np.zeros((queries.shape[0], k), np.int64)
    scores = np.zeros((queries.shape[0], k), np.float32)
    step = _step(corpus.shape[0])
    for s in range(0, queries.shape[0], step):
        sim = (queries[s:s + step] @ corpus.T).toarray()  # [block, N]
        indices[s:s + len(sim)], scores[s:s + len(sim)] = _best(sim, k)
    return indices, scores


def k_occurrence(indices: np.ndarray, n_corpus: int, k: int = 10) -> np.ndarray:
    """``N_k`` per corpus item: in how many queries' top ``k`` (``indices`` from :func:`top_k`) it appears."""
    return np.bincount(np.asarray(indices)[:, :k].ravel(), minlength=n_corpus)


def k_occurrence_skew(indices: np.ndarray, n_corpus: int, k: int = 10) -> float:
    """Skewness of :func:`k_occurrence` (0 when every item is retrieved equally often; hubs make it large)."""
    from scipy.stats import skew

    counts = k_occurrence(indices, n_corpus, k).astype(np.float64)
    return float(skew(counts)) if counts.std() > 0 else 0.0
