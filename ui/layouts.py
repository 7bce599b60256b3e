"""The storage classes of the demo's corpus indexes, one per index layout of :mod:`zoo.kinds`, and
:func:`open_index`, which picks the one a kind's handler names (see :mod:`ui.index` for what they share:
persistence, verification, quarantine)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from zoo import fde, kinds
from zoo import postprocess as pp
from zoo.errors import InvalidArgumentError
from zoo.spec import EmbedderSpec

from .corpus import Corpus
from .index import Hit, _CorpusIndex


class ModelIndex(_CorpusIndex):
    """Dense embeddings of the corpus items one model can embed, with FAISS views per output setting."""

    files = {"vectors": ".npy"}

    def _empty(self) -> None:
        self.vectors = np.zeros((0, self.spec.dim), np.float32)

    def _load(self) -> None:
        vectors = np.load(self._paths["vectors"])
        if vectors.ndim != 2 or vectors.shape[1] != self.spec.dim:
            raise ValueError(f"vectors of shape {vectors.shape} for a {self.spec.dim}-d model")
        self.vectors = vectors.astype(np.float32, copy=False)

    def _rows_held(self) -> int:
        return len(self.vectors)

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.vectors = np.concatenate([self.vectors, *parts]).astype(np.float32)

    def _write(self, role: str, fh: IO[bytes]) -> None:
        np.save(fh, self.vectors)

    def bytes_per_item(self, dimensions: int | None, precision: str) -> float:
        """Stored bytes of one item's vector at this output setting."""
        return self.handler.bytes_per_item(None, self.spec.dim, dimensions, precision)

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
    files = {"vectors": ".npy", "lengths": ".npy"}

    def _empty(self) -> None:
        self.items: list[np.ndarray] = []

    def _load(self) -> None:
        flat, lengths = np.load(self._paths["vectors"]), np.load(self._paths["lengths"])
        if flat.ndim != 2 or lengths.ndim != 1 or int(lengths.sum()) != len(flat) or (lengths < 0).any():
            raise ValueError(f"{len(flat)} vectors for lengths summing to {int(lengths.sum())}")
        self.items = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def _rows_held(self) -> int:
        return len(self.items)

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.items += [x.astype(np.float32) for p in parts for x in p]

    def _write(self, role: str, fh: IO[bytes]) -> None:
        if role == "vectors":
            np.save(fh, np.concatenate(self.items) if self.items else np.zeros((0, self.spec.dim), np.float32))
        else:
            np.save(fh, np.array([len(x) for x in self.items], np.int64))

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
        return self.handler.bytes_per_item(self.items, self.spec.dim, dimensions, precision)

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
        exact = self.handler.score([q], [stored[j] for j in cand], precision)[0]
        order = np.argsort(-exact, kind="stable")[:k]
        return self._hits(corpus, rows, cand[order], exact[order])


class SparseIndex(_CorpusIndex):
    """Term weights of every item, searched by exact sparse dot products."""

    kind = "sparse"
    files = {"sparse": ".npz"}

    def _empty(self) -> None:
        import scipy.sparse as sps

        self.matrix = sps.csr_matrix((0, self.spec.vocab_size or 1), dtype=np.float32)

    def _load(self) -> None:
        import scipy.sparse as sps

        self.matrix = sps.load_npz(self._paths["sparse"]).tocsr()

    def _rows_held(self) -> int:
        return self.matrix.shape[0]

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.matrix = self.handler.concat([self.matrix, *parts])

    def _write(self, role: str, fh: IO[bytes]) -> None:
        import scipy.sparse as sps

        sps.save_npz(fh, self.matrix)

    def bytes_per_item(self, dimensions: int | None = None, precision: str = "float32") -> float:
        """Mean stored bytes of one item: an int32 term id and a float32 weight per term."""
        return self.handler.bytes_per_item(self.matrix, self.spec.dim, dimensions, precision)

    def search(self, query, corpus: Corpus, target: str, k: int = 8, **_: Any) -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one query's ``1 × V`` sparse row."""
        rows = self._target_rows(corpus, target)
        if len(rows) == 0:
            return []
        scores = self.handler.score(query, self.matrix[rows])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return self._hits(corpus, rows, order, scores[order])


class ArrayIndex(_CorpusIndex):
    """Any kind without a storage of its own: its full-width float32 result kept as its wire form's arrays (one
    file per role), searched exhaustively by its handler's score. What it holds is one setting, so a search at
    other ``dimensions`` / ``precision`` is refused with the reason."""

    kind = ""  # given by open_index

    def __init__(self, folder: Path, spec: EmbedderSpec, approximate: bool = False, kind: str | None = None) -> None:
        self.files = {role: ".npy" for role in kinds.get(kind or self.kind).wire_roles}  # read by the manifest
        super().__init__(folder, spec, approximate, kind)

    def _empty(self) -> None:
        self.result: Any = None

    def _load(self) -> None:
        arrays = {role: np.load(self._paths[role]) for role in self.files}
        self.result = self.handler.from_arrays(arrays, vocab_size=self.spec.vocab_size)

    def _rows_held(self) -> int:
        return 0 if self.result is None else self.handler.count(self.result)

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        self.result = self.handler.concat(([] if self.result is None else [self.result]) + parts)

    def _write(self, role: str, fh: IO[bytes]) -> None:
        np.save(fh, self.handler.to_arrays(self.result)[role] if self.result is not None else np.zeros(0))

    def bytes_per_item(self, dimensions: int | None = None, precision: str = "float32") -> float:
        """Mean stored bytes of one item as held: full width, float32."""
        return self.handler.bytes_per_item(self.result, self.spec.dim, None, "float32")

    def search(self, query: Any, corpus: Corpus, target: str, k: int = 8, *, dimensions: int | None = None,
               precision: str = "float32", **_: Any) -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one query item (an entry of the kind's ``items_of``)."""
        if dimensions is not None or precision != "float32":
            raise InvalidArgumentError(f"the {self.kind} index holds its full-width float32 outputs; search it with "
                                       "dimensions 0 and precision float32")
        rows = self._target_rows(corpus, target)
        if len(rows) == 0 or self.result is None:
            return []
        scores = self.handler.score(self.handler.of_items([query]), self.handler.take(self.result, rows))[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return self._hits(corpus, rows, order, scores[order])


#: the storage class of each index layout (:attr:`zoo.kinds.OutputKind.index_layout`)
LAYOUTS: dict[str, type[_CorpusIndex]] = {kinds.VECTORS: ModelIndex, kinds.MULTIVECTORS: MultiVectorIndex,
                                          kinds.TERMS: SparseIndex, kinds.ARRAYS: ArrayIndex}


def open_index(kind: str, folder: Path, spec: EmbedderSpec, approximate: bool = False) -> _CorpusIndex:
    """The index of output ``kind`` in ``folder``: the storage class its handler's layout names (loaded from
    disk where an index is there)."""
    return LAYOUTS[kinds.get(kind).index_layout](folder, spec, approximate, kind=kind)
