"""The storage sweep: what each ``dimensions`` × ``precision`` setting (and PCA, binary with rescoring, and the
hubness corrections) keeps of retrieval quality, from one set of full-width float32 embeddings.

Every stored corpus vector is exactly what ``encode(..., dimensions=d, precision=p)`` returns
(:func:`zoo.postprocess.postprocess`: truncate → normalize → quantize). Queries are embedded fresh at search time,
so they stay float32 and score against the dequantized corpus, except for ``binary``/``ubinary`` rows, which are
a Hamming search (queries binarized too). Methods:

- ``truncate``: Matryoshka truncation to ``d`` (the model's trained widths, or halvings of the full width);
- ``pca``: the corpus's principal axes (:class:`zoo.postprocess.PCA`, fitted on the corpus) in place of
  truncation, at every width below the full one;
- ``binary+rescore``: Hamming search for the top 100, re-ranked by the float32 query against those documents'
  binary vectors (nothing but the binary vectors is stored);
- ``csls`` / ``isoftmax``: float32 at full width, re-scored against hubness (:mod:`zoo.search`), with the
  judged queries as the bank.

``compression`` is float32-full bytes over a row's bytes per vector; ``<metric>_change`` is the relative change
against the float32 full-width ``truncate`` row. ``k_occurrence_skew`` is the hubness of the row's top 10;
``pareto`` marks the storage rows on the nDCG@10 vs bytes Pareto front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import postprocess as pp
from .. import search
from .metrics import DEPTH, METRICS, Scorer, run_of

BASE_METHOD = "truncate"
HUB_K = 10


def widths(dim: int, matryoshka_dims: Sequence[int] = ()) -> list[int]:
    """Widths to try, widest first: the model's Matryoshka widths, else halvings of ``dim`` while they stay
    whole multiples of 8 (so binary packs them) and at least 32."""
    if matryoshka_dims:
        return sorted({dim, *matryoshka_dims}, reverse=True)
    out, d = [dim], dim
    while d % 16 == 0 and d // 2 >= 32:
        d //= 2
        out.append(d)
    return out


def bytes_per_vector(dimensions: int, precision: str) -> int:
    """Storage of one vector of ``dimensions`` components at ``precision`` (the dense kind's bytes per item:
    the sweep measures dense vectors, see :mod:`zoo.kinds`)."""
    from .. import kinds

    return int(kinds.get("dense").bytes_per_item(None, dimensions, dimensions, precision))


@dataclass(frozen=True)
class Setting:
    """One row of the sweep."""

    method: str
    dimensions: int
    precision: str


def settings(dim: int, matryoshka_dims: Sequence[int] = ()) -> list[Setting]:
    """Every row the sweep measures, in report order."""
    ws = widths(dim, matryoshka_dims)
    rows = [Setting("truncate", d, p) for d in ws for p in pp.PRECISIONS]
    rows += [Setting("pca", d, p) for d in ws[1:] for p in pp.PRECISIONS]
    rows += [Setting("binary+rescore", d, "binary") for d in ws if d % 8 == 0]
    rows += [Setting(c, dim, "float32") for c in search.CORRECTIONS]
    return rows


def project(setting: Setting, raw: np.ndarray, pca: pp.PCA | None = None, precision: str = "float32") -> np.ndarray:
    """``raw`` full-width vectors as the row stores them: truncated (or PCA-projected) to the row's width,
    normalized, at ``precision``. For ``truncate`` this is exactly ``encode(dimensions=d, precision=p)``."""
    if setting.method == "pca":
        raw = pca.transform(pp.normalize(raw))
    return pp.postprocess(raw, normalize_output=True, dimensions=setting.dimensions, precision=precision)


def _search(setting: Setting, queries: np.ndarray, stored: np.ndarray, bank: np.ndarray):
    """Top results of float ``queries`` (in the row's space, unit rows) against the ``stored`` corpus."""
    docs = pp.dequantize(stored, setting.precision)
    if setting.method in search.CORRECTIONS:
        return search.top_k(queries, docs, DEPTH, correction=setting.method, bank=bank, hub_k=HUB_K)
    if setting.precision in pp.PACKED:  # Hamming search: the query is binarized as well
        idx, scores = search.top_k(pp.dequantize(pp.quantize(queries, setting.precision), setting.precision),
                                   docs, DEPTH)
        if setting.method == "binary+rescore":  # float query · candidates' binary vectors, re-ranked
            rescored = np.concatenate([np.einsum("qd,qkd->qk", queries[s:s + 256], docs[idx[s:s + 256]])
                                       for s in range(0, len(idx), 256)])  # blocks bound the [q, k, d] gather
            order = np.argsort(-rescored, axis=1, kind="stable")
            idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(rescored, order, 1)
        return idx, scores
    return search.top_k(queries, docs, DEPTH)


def sweep(
    corpus_raw: np.ndarray,
    query_raw: np.ndarray,
    corpus_ids: Sequence[str],
    query_ids: Sequence[str],
    qrels: dict[str, dict[str, int]],
    *,
    matryoshka_dims: Sequence[int] = (),
    only: Callable[[Setting], bool] | None = None,
    pca: pp.PCA | None = None,
    progress: Callable[[Setting], None] | None = None,
) -> list[dict]:
    """Measure every setting (or those ``only`` keeps) on raw full-width embeddings; one dict per row.

    ``pca`` is the corpus's fitted PCA when one was stored (else it is fitted here, on the normalized corpus,
    with as many components as the widest reduced width).
    """
    dim = corpus_raw.shape[1]
    todo = [s for s in settings(dim, matryoshka_dims) if only is None or only(s)]
    scorer = Scorer(qrels)
    full_q = pp.normalize(query_raw)
    if any(s.method == "pca" for s in todo) and pca is None:
        pca = fit_pca(corpus_raw, max(s.dimensions for s in todo if s.method == "pca"))
    floats: dict[tuple[bool, int], tuple[np.ndarray, np.ndarray]] = {}  # (pca?, width) -> float32 (q, corpus)
    rows = []
    for setting in todo:
        if progress:
            progress(setting)
        space = (setting.method == "pca", setting.dimensions)
        if space not in floats:
            floats[space] = (project(setting, query_raw, pca), project(setting, corpus_raw, pca))
        queries, corpus = floats[space]
        idx, scores = _search(setting, queries, pp.quantize(corpus, setting.precision), full_q)
        row = {"method": setting.method, "dimensions": setting.dimensions, "precision": setting.precision,
               "bytes_per_vector": bytes_per_vector(setting.dimensions, setting.precision)}
        row.update(scorer(run_of(idx, scores, query_ids, corpus_ids)))
        row["k_occurrence_skew"] = search.k_occurrence_skew(idx, len(corpus_ids), HUB_K)
        rows.append(row)
    rows = relative(rows, dim)
    front = {id(r) for r in pareto(rows)}
    for row in rows:
        row["pareto"] = id(row) in front
    return rows


def fit_pca(corpus_raw: np.ndarray, n_components: int) -> pp.PCA:
    """The PCA the sweep uses: fitted on the L2-normalized corpus vectors."""
    return pp.PCA.fit(pp.normalize(corpus_raw), min(n_components, *corpus_raw.shape))


def relative(rows: list[dict], dim: int) -> list[dict]:
    """Add ``compression`` and ``<metric>_change`` against the float32 full-width truncate row (if present)."""
    full = bytes_per_vector(dim, "float32")
    base = next((r for r in rows if (r["method"], r["dimensions"], r["precision"]) == (BASE_METHOD, dim,
                                                                                          "float32")), None)
    for row in rows:
        row["compression"] = full / row["bytes_per_vector"]
        for m in METRICS:
            ref = base[m] if base else None
            row[f"{m}_change"] = (row[m] - ref) / ref if ref else None
    return rows


STORAGE_METHODS = ("truncate", "pca", "binary+rescore")  # the hubness rows change scoring, not storage


def pareto(rows: list[dict], metric: str = "ndcg@10") -> list[dict]:
    """The storage rows no other storage row beats on both fewer bytes per vector and a higher ``metric``,
    fewest bytes first."""
    front, best = [], -np.inf
    storage = [r for r in rows if r["method"] in STORAGE_METHODS]
    for row in sorted(storage, key=lambda r: (r["bytes_per_vector"], -r[metric])):
        if row[metric] > best:
            front.append(row)
            best = row[metric]
    return front
