"""Sparse models in ``zoo eval`` (SPLADE, BM25): exact sparse search, one row per model, and BM25 fitted on the set.

A model whose output is sparse (and not dense) has its corpus and queries embedded once (``output="sparse"``,
each side on its prompt: :func:`zoo.kinds.side_prompt`) and searched exactly by dot product
(:func:`zoo.search.sparse_top_k`). Its one row has the sweep's keys: ``method`` ``"sparse"``, ``dimensions`` the
vocabulary, ``precision`` float32, ``bytes_per_vector`` the corpus's mean bytes per item (an int32 term id and a
float32 weight per term), ``compression`` and the ``<metric>_change`` keys None (there is no dense float32 row
to compare with), and the hubness of its top 10.

``zoo eval bm25 --data DIR`` fits BM25 (bm25s' defaults, :func:`zoo.families.bm25.fit`) on the set's own corpus
first (:func:`fitted_bm25`): the fitted folder is kept in the cache folder under a name made of the set's
fingerprint and the parameters, beside the rows it embeds, so a second run reuses both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import kinds, search
from ..errors import InvalidArgumentError
from ..spec import Modality
from .data import RetrievalSet, Side
from .embed import CHUNK, Cache
from .metrics import DEPTH, METRICS, Scorer, run_of

BM25 = "bm25"  # the model name zoo eval fits on the set's corpus (a folder of that name: ./bm25)
HUB_K = 10


#: the ``method`` of a sparse model's row (the sweep's rows say how the vectors were cut: this one was not)
METHOD = "sparse"


def is_sparse_model(spec: Any) -> bool:
    """Whether ``zoo eval`` measures the model's sparse rows (it gives sparse output and no dense output)."""
    return "sparse" in spec.outputs and "dense" not in spec.outputs


def embed_sparse(model: Any, side: Side, *, query: bool, batch_size: int | None = None, cache: Cache | None = None,
                 key: dict | None = None) -> Any:
    """``[len(side), V]`` sparse rows (``csr_matrix``) of a text ``side`` from ``model``, on the side's prompt,
    cached as ``.npz`` when ``cache`` is given."""
    import scipy.sparse as sps

    spec = model.spec
    if any(m is not Modality.TEXT for m in side.modalities):
        raise InvalidArgumentError(f"{spec.name} gives sparse rows of texts; the set's "
                                   f"{'queries' if query else 'corpus'} hold other media")
    prompt = kinds.side_prompt(spec.prompts, query)
    name = Cache.key(**(key or {}), side="queries" if query else "corpus", prompt=prompt, output="sparse")
    path = cache.path(name, ".npz") if cache else None
    if path is not None and path.is_file():
        try:
            rows = sps.load_npz(path).tocsr()
        except (OSError, ValueError):  # a damaged file is recomputed, not trusted
            rows = None
        if rows is not None and rows.shape == (len(side), spec.vocab_size):
            cache.hits += 1
            return rows
    parts = [model.encode(side.items[s:s + CHUNK], Modality.TEXT, output="sparse", prompt_name=prompt,
                          batch_size=batch_size) for s in range(0, len(side), CHUNK)]
    rows = kinds.concat(parts, "sparse") if parts else sps.csr_matrix((0, spec.vocab_size), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            sps.save_npz(f, rows)
        os.replace(tmp, path)
    return rows


def evaluate_sparse(model: Any, data: RetrievalSet, *, key: dict | None = None, cache: Cache | None = None,
                    batch_size: int | None = None) -> list[dict]:
    """The one row of a sparse model on ``data`` (module notes); ``key``: what its cached rows depend on."""
    corpus = embed_sparse(model, data.corpus, query=False, batch_size=batch_size, cache=cache, key=key)
    queries = embed_sparse(model, data.queries, query=True, batch_size=batch_size, cache=cache, key=key)
    idx, scores = search.sparse_top_k(queries, corpus, DEPTH)
    row: dict[str, Any] = {"method": METHOD, "dimensions": int(model.spec.vocab_size), "precision": "float32",
                           "bytes_per_vector": round(kinds.get("sparse").bytes_per_item(corpus, 0), 1),
                           "compression": None}
    row.update(Scorer(data.qrels)(run_of(idx, scores, data.queries.ids, data.corpus.ids)))
    row.update({f"{m}_change": None for m in METRICS})
    row["k_occurrence_skew"] = search.k_occurrence_skew(idx, len(data.corpus), HUB_K)
    row["pareto"] = False
    return [row]


def fitted_bm25(data: RetrievalSet, cache: Cache | None = None, **params: Any) -> Path:
    """A BM25 model fitted on ``data``'s corpus (``params``: :func:`zoo.families.bm25.fit`'s), kept in the cache
    folder (reused while the set and the parameters are the same), or in a new temporary folder without one."""
    from ..families.bm25 import fit, is_fitted

    if any(m is not Modality.TEXT for m in data.corpus.modalities):
        raise InvalidArgumentError(f"BM25 is fitted on texts; the corpus of {data.name} holds other media")
    folder = cache.path(Cache.key(model=BM25, params=params, data=data.fingerprint), "-bm25") if cache else None
    if folder is None:
        return fit(data.corpus.items, Path(tempfile.mkdtemp(prefix="zoo-bm25-")) / BM25, **params)
    if is_fitted(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, suffix=".tmp"))
    try:
        fit(data.corpus.items, staging / BM25, **params)
        os.replace(staging / BM25, folder)  # whole or not at all: a concurrent run may have put one there first
    except OSError:
        if not is_fitted(folder):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
