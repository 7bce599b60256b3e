"""``zoo eval``: retrieval quality of a model on a BEIR-layout set, across ``dimensions`` × ``precision``.

    rows = zoo.evaluation.evaluate(zoo.create("sentence-transformers/all-MiniLM-L6-v2"), "sets/docstrings")

See :mod:`.data` for the layout, :mod:`.build` for the sets made on this machine, :mod:`.sweep` for the rows,
:mod:`.long` for the comparison of ways to embed long documents (``compare``), :mod:`.rerank` for what a
reranker adds to the dense search, :mod:`.sparse` for sparse models (SPLADE, BM25 fitted on the set), and
:mod:`.hybrid` for two models fused by reciprocal rank fusion and the query latency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..postprocess import PCA
from .data import RetrievalSet, load
from .embed import Cache, embed_side
from .long import compare
from .sparse import evaluate_sparse, fitted_bm25, is_sparse_model
from .sweep import Setting, fit_pca, sweep, widths


def _key(model: Any, data: RetrievalSet, backend: str) -> dict:
    """What the cached vectors of ``model`` on ``data`` depend on (the side and prompt are added per side)."""
    return {"model": model.spec.to_dict(), "backend": backend, "data": data.fingerprint}


def embed_set(model: Any, data: RetrievalSet, *, backend: str = "local", cache: Cache | None = None,
              batch_size: int | None = None):
    """Raw full-width float32 ``(corpus, queries)`` vectors of ``data`` (cached when ``cache`` is given)."""
    key = _key(model, data, backend)
    corpus = embed_side(model, data.corpus, query=False, batch_size=batch_size, cache=cache, key=key)
    queries = embed_side(model, data.queries, query=True, batch_size=batch_size, cache=cache, key=key)
    return corpus, queries


def evaluate(
    model: Any,
    data: str | Path | RetrievalSet,
    *,
    backend: str = "local",
    cache: Cache | None = None,
    batch_size: int | None = None,
    only: Callable[[Setting], bool] | None = None,
) -> list[dict]:
    """The sweep's rows (see :mod:`.sweep`) for ``model`` (anything with zoo's ``encode()`` and ``spec``) on
    ``data`` (a set folder or a loaded set). The corpus's PCA is kept in ``cache`` beside its vectors. A sparse
    model (sparse output, no dense) gets one row instead (:mod:`.sparse`)."""
    data = data if isinstance(data, RetrievalSet) else load(data)
    if is_sparse_model(model.spec):  # SPLADE, BM25: one row of exact sparse search
        return evaluate_sparse(model, data, key=_key(model, data, backend), cache=cache, batch_size=batch_size)
    corpus, queries = embed_set(model, data, backend=backend, cache=cache, batch_size=batch_size)
    reduced = widths(model.spec.dim, model.spec.matryoshka_dims)[1:]
    pca_path = cache.path(Cache.key(**_key(model, data, backend)), "-pca.safetensors") if cache else None
    pca = None
    if pca_path is not None and reduced:
        if pca_path.is_file():
            pca = PCA.load(pca_path)
        else:
            pca = fit_pca(corpus, reduced[0])
            pca.save(pca_path)
    return sweep(corpus, queries, data.corpus.ids, data.queries.ids, data.qrels,
                 matryoshka_dims=model.spec.matryoshka_dims, only=only, pca=pca)


__all__ = ["Cache", "RetrievalSet", "compare", "evaluate", "embed_set", "fitted_bm25", "load"]
