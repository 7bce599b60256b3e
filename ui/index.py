"""Indexes over the corpus, per model and output kind, persisted on disk and reused on restart.

Dense (:class:`ModelIndex`): full-width float32 embeddings of every item the model can embed. A search with
``dimensions`` / ``precision`` derives its view from them with the same post-processing as ``encode()``:
Matryoshka truncation + re-normalization, then quantization. Binary precisions search a FAISS binary
index (Hamming distance, reported as ``1 - 2·hamming/d``); the others search the dequantized vectors by
exact inner product (``IndexFlatIP``), or approximately (``IndexHNSWFlat``) when ``approximate`` is set.

Multi-vector (:class:`MultiVectorIndex`): every item's token / patch vectors; a search takes the top
``candidates`` by the MUVERA FDEs of the view (:mod:`zoo.fde`, exact inner product over them) and reranks
them by exact MaxSim. Sparse (:class:`SparseIndex`): the term-weight matrix, searched by exact sparse dot
products. Each reports what one item costs to store (``bytes_per_item``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from zoo import fde, kinds, scoring
from zoo import postprocess as pp
from zoo.spec import EmbedderSpec, Modality

from .corpus import Corpus, Item

Encode = Callable[[list, str], Any]  # (inputs, modality) -> full-width float32 output of the index's kind


@dataclass
class Hit:
    """One search result."""

    item: Item
    score: float


class _CorpusIndex:
    """What every index shares: which corpus items it holds, embedding the new ones in chunks, persistence.
    Subclasses keep the outputs (:meth:`_load`, :meth:`_add`, :meth:`_save`)."""

    kind = "dense"

    def __init__(self, folder: Path, spec: EmbedderSpec, approximate: bool = False) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.approximate = approximate
        self.ids: list[str] = []
        self._views: dict[tuple, object] = {}
        self._rows: dict[str, np.ndarray] = {}  # target modality → rows (valid while ids don't change)
        self._synced = -1  # corpus size at the last update (a corpus only grows)
        self._empty()
        if (self.folder / "ids.json").is_file():
            self.ids = json.loads((self.folder / "ids.json").read_text())
            self._load()

    def _empty(self) -> None: ...

    def _load(self) -> None: ...

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None: ...

    def _save(self) -> None: ...

    def update(self, corpus: Corpus, encode: Encode, progress: Callable[[float, str], None] | None = None) -> int:
        """Embed corpus items not yet indexed (by modality, in chunks); returns how many were added."""
        if self._synced == len(corpus.items):  # nothing new since the last call: the per-query fast path
            return 0
        known = set(self.ids)
        todo = [i for i in corpus.items if i.id not in known and self.spec.supports(i.modality)]
        self._synced = len(corpus.items)
        if not todo:
            return 0
        new_ids, new_modalities, parts = [], [], []
        chunk = 16
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for modality in {i.modality for i in part}:
                group = [i for i in part if i.modality == modality]
                inputs = [i.text if modality == Modality.TEXT.value else str(corpus.file(i)) for i in group]
                parts.append(encode(inputs, modality))
                new_ids += [i.id for i in group]
                new_modalities += [modality] * len(group)
            if progress:
                progress(min(1.0, (start + chunk) / len(todo)), f"indexing {len(todo)} items for {self.spec.name}")
        self.ids += new_ids
        self._add(parts, new_ids, new_modalities)
        self._views.clear()
        self._rows.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save()
        (self.folder / "ids.json").write_text(json.dumps(self.ids))
        return len(new_ids)

    def _target_rows(self, corpus: Corpus, target: str) -> np.ndarray:
        if target not in self._rows:
            by_id = corpus.by_id
            self._rows[target] = np.array(
                [n for n, i in enumerate(self.ids) if i in by_id and by_id[i].modality == target], np.int64)
        return self._rows[target]

    def _hits(self, corpus: Corpus, rows: np.ndarray, order: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return [Hit(corpus.by_id[self.ids[rows[j]]], float(s)) for j, s in zip(order, scores) if j >= 0]


class ModelIndex(_CorpusIndex):
    """Dense embeddings of the corpus items one model can embed, with FAISS views per output setting."""

    def _empty(self) -> None:
        self.vectors = np.zeros((0, self.spec.dim), np.float32)

    def _load(self) -> None:
        self.vectors = np.load(self.folder / "vectors.npy")

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.vectors = np.concatenate([self.vectors, *parts]).astype(np.float32)

    def _save(self) -> None:
        np.save(self.folder / "vectors.npy", self.vectors)

    def bytes_per_item(self, dimensions: int | None, precision: str) -> float:
        """Stored bytes of one item's vector at this output setting."""
        return pp.output_width(dimensions or self.spec.dim, precision) * pp.PRECISIONS[precision].itemsize

    def _view(self, dimensions: int, precision: str, target: str, rows: np.ndarray):
        key = (dimensions, precision, target)
        if key not in self._views:
            base = self.vectors[rows]
            q = pp.postprocess(base, normalize_output=True, dimensions=dimensions, precision=precision)
            if precision in pp.PACKED:
                index = faiss.IndexBinaryFlat(dimensions)
                index.add(q.view(np.uint8))
            else:
                vecs = np.ascontiguousarray(pp.dequantize(q, precision), dtype=np.float32)
                if self.approximate:
                    index = faiss.IndexHNSWFlat(dimensions, 32, faiss.METRIC_INNER_PRODUCT)
                else:
                    index = faiss.IndexFlatIP(dimensions)
                index.add(vecs)
            self._views[key] = index
        return self._views[key]

    def search(self, query: np.ndarray, corpus: Corpus, target: str, k: int = 8, *,
               dimensions: int | None = None, precision: str = "float32") -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one full-width float query vector."""
        dims = pp.check_dimensions(dimensions, self.spec.dim, pp.check_precision(precision))
        rows = self._target_rows(corpus, target)
        if len(rows) == 0:
            return []
        index = self._view(dims, precision, target, rows)
        q = pp.postprocess(query[None], normalize_output=True, dimensions=dims, precision=precision)
        k = min(k, len(rows))
        if precision in pp.PACKED:
            dist, idx = index.search(q.view(np.uint8), k)
            scores = 1 - 2 * dist[0] / dims
        else:
            scores, idx = index.search(np.ascontiguousarray(pp.dequantize(q, precision), np.float32), k)
            scores = scores[0]
        return self._hits(corpus, rows, idx[0], scores)


class MultiVectorIndex(_CorpusIndex):
    """Token / patch vectors of every item: FDE candidates, then exact MaxSim."""

    kind = "multivector"

    def _empty(self) -> None:
        self.items: list[np.ndarray] = []

    def _load(self) -> None:
        flat, lengths = np.load(self.folder / "vectors.npy"), np.load(self.folder / "lengths.npy")
        self.items = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.items += [x.astype(np.float32) for p in parts for x in p]

    def _save(self) -> None:
        np.save(self.folder / "vectors.npy", np.concatenate(self.items) if self.items else
                np.zeros((0, self.spec.dim), np.float32))
        np.save(self.folder / "lengths.npy", np.array([len(x) for x in self.items], np.int64))

    def _setting(self, items: list[np.ndarray], dimensions: int, precision: str) -> list[np.ndarray]:
        return kinds.postprocess_multivector(items, normalize_output=True, dimensions=dimensions, precision=precision,
                                             max_vectors=None)

    def _view(self, dimensions: int, precision: str, target: str, rows: np.ndarray):
        key = (dimensions, precision, target)
        if key not in self._views:
            stored = self._setting([self.items[r] for r in rows], dimensions, precision)
            codes = fde.encode([pp.dequantize(x, precision) for x in stored], query=False)
            index = faiss.IndexFlatIP(codes.shape[1])
            index.add(codes)
            self._views[key] = (stored, index)
        return self._views[key]

    def bytes_per_item(self, dimensions: int | None, precision: str) -> float:
        """Mean stored bytes of one item's vectors at this output setting (the FDE is derived, not stored)."""
        width = pp.output_width(dimensions or self.spec.dim, precision) * pp.PRECISIONS[precision].itemsize
        return float(np.mean([len(x) for x in self.items])) * width if self.items else 0.0

    def search(self, query: np.ndarray, corpus: Corpus, target: str, k: int = 8, *, dimensions: int | None = None,
               precision: str = "float32", candidates: int = 100) -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one query's ``[n, d]`` float vectors: the ``candidates``
        best by FDE, reranked by exact MaxSim at the output setting."""
        dims = pp.check_dimensions(dimensions, self.spec.dim, pp.check_precision(precision))
        rows = self._target_rows(corpus, target)
        if len(rows) == 0:
            return []
        stored, index = self._view(dims, precision, target, rows)
        q = self._setting([query], dims, precision)[0]
        _, cand = index.search(fde.encode([pp.dequantize(q, precision)], query=True), min(candidates, len(rows)))
        cand = cand[0][cand[0] >= 0]
        exact = scoring.maxsim([q], [stored[j] for j in cand], precision)[0]
        order = np.argsort(-exact, kind="stable")[:k]
        return self._hits(corpus, rows, cand[order], exact[order])


class SparseIndex(_CorpusIndex):
    """Term weights of every item, searched by exact sparse dot products."""

    kind = "sparse"

    def _empty(self) -> None:
        import scipy.sparse as sps

        self.matrix = sps.csr_matrix((0, self.spec.vocab_size or 1), dtype=np.float32)

    def _load(self) -> None:
        import scipy.sparse as sps

        self.matrix = sps.load_npz(self.folder / "sparse.npz").tocsr()

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.matrix = kinds.concat([self.matrix, *parts])

    def _save(self) -> None:
        import scipy.sparse as sps

        sps.save_npz(self.folder / "sparse.npz", self.matrix)

    def bytes_per_item(self, dimensions: int | None = None, precision: str = "float32") -> float:
        """Mean stored bytes of one item: an int32 term id and a float32 weight per term."""
        return 8.0 * self.matrix.nnz / max(1, self.matrix.shape[0])

    def search(self, query, corpus: Corpus, target: str, k: int = 8, **_: Any) -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one query's ``1 × V`` sparse row."""
        rows = self._target_rows(corpus, target)
        if len(rows) == 0:
            return []
        scores = scoring.sparse_dot(query, self.matrix[rows])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return self._hits(corpus, rows, order, scores[order])


INDEXES: dict[str, type[_CorpusIndex]] = {"dense": ModelIndex, "multivector": MultiVectorIndex,
                                           "sparse": SparseIndex}
