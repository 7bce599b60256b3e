"""``sparse``: term weights over the vocabulary, a float32 ``scipy.sparse.csr_matrix [N, vocab_size]``.

scipy is imported when a sparse result is made or read, never before: ``zoo.spec`` imports this package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, choices
from .base import INDICES, LENGTHS, TERMS, VALUES, OutputKind

SPARSE_PRECISIONS = ("float32",)  # scipy.sparse has no float16


def heaviest(matrix: Any, top_k: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row of a ``csr_matrix`` as ``(column ids, weights)``, heaviest first (``top_k``: at most that many;
    ties keep column order)."""
    out = []
    for r in range(matrix.shape[0]):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        order = np.argsort(-matrix.data[lo:hi], kind="stable")[:top_k]
        out.append((matrix.indices[lo:hi][order], matrix.data[lo:hi][order]))
    return out


def postprocess_sparse(matrix: Any, *, normalize_output: bool, top_k: int | None) -> Any:
    """A float32 ``csr_matrix`` of term weights with at most ``top_k`` terms per row (the largest),
    L2-normalized rows when asked; column indices sorted within each row."""
    import scipy.sparse as sps

    m = sps.csr_matrix(matrix, dtype=np.float32)
    m.eliminate_zeros()
    if top_k is not None:
        kept = heaviest(m, top_k)
        rows = np.repeat(np.arange(m.shape[0]), [len(c) for c, _ in kept])
        m = sps.csr_matrix((np.concatenate([v for _, v in kept]), (rows, np.concatenate([c for c, _ in kept]))),
                           shape=m.shape, dtype=np.float32)
    if normalize_output:
        norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
        m = sps.csr_matrix(sps.diags(1.0 / np.maximum(norms, 1e-12)) @ m, dtype=np.float32)
    m.sort_indices()
    return m


def sparse_rows(rows: list[tuple[np.ndarray, np.ndarray]], vocab_size: int) -> Any:
    """``(indices, values)`` per item → one ``csr_matrix [N, vocab_size]``."""
    if not rows:
        return csr_of(np.zeros(0, np.int64), np.zeros(0, np.float32), [], vocab_size)
    return csr_of(np.concatenate([i for i, _ in rows]), np.concatenate([v for _, v in rows]),
                  [len(i) for i, _ in rows], vocab_size)


def csr_of(indices: np.ndarray, values: np.ndarray, lengths: Any, vocab_size: int) -> Any:
    """A float32 ``csr_matrix [len(lengths), vocab_size]`` from every row's terms, row after row."""
    import scipy.sparse as sps

    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return sps.csr_matrix((np.asarray(values, np.float32), np.asarray(indices, np.int64), indptr),
                          shape=(len(lengths), vocab_size))


class Sparse(OutputKind):
    """Term weights: ``top_k`` terms per item; not normalized unless asked; float32 only."""

    name = "sparse"
    controls = frozenset({"top_k"})
    normalize_default = False  # weights as the model gives them, as sentence-transformers' SparseEncoder
    sided = True  # query and document expansion differ
    base64 = False  # an item is {indices, values}, not one array
    wire_roles = (INDICES, VALUES, LENGTHS)  # every item's terms, item after item, ids ascending in an item
    index_layout = TERMS

    def check_spec(self, spec: Any) -> None:
        """A sparse row's width is the vocabulary: the spec must say it."""
        if not spec.vocab_size:
            raise ValueError(f"{spec.name}: a sparse model needs vocab_size")

    def check_controls(self, *, dimensions: int | None, precision: str, max_vectors: int | None,
                       top_k: int | None) -> None:
        """Besides the kind controls: no ``dimensions`` (the width is the vocabulary), float32 only."""
        super().check_controls(dimensions=dimensions, precision=precision, max_vectors=max_vectors, top_k=top_k)
        if dimensions is not None:
            raise InvalidArgumentError("dimensions does not apply to sparse output (its width is the vocabulary); "
                                       "use top_k to keep fewer terms", "dimensions")
        if precision not in SPARSE_PRECISIONS:
            raise InvalidArgumentError(f"sparse output values come as {choices(SPARSE_PRECISIONS)}, not "
                                       f"{precision!r}", "precision")

    def width(self, spec: Any, opts: Any) -> int:
        """The vocabulary size."""
        return int(spec.vocab_size or 0)

    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> Any:
        """``(indices, values)`` per item → :func:`postprocess_sparse` of their matrix."""
        return postprocess_sparse(sparse_rows(raw, spec.vocab_size), normalize_output=opts.normalize,
                                  top_k=opts.top_k)

    def items_of(self, result: Any) -> list:
        """One ``1 × V`` row per item."""
        return [result[i] for i in range(result.shape[0])]

    def of_items(self, items: list) -> Any:
        """The rows stacked."""
        return self.concat(items)

    def concat(self, parts: list) -> Any:
        """The matrices stacked."""
        import scipy.sparse as sps

        return sps.vstack(parts, format="csr")

    def take(self, result: Any, rows: Iterable[int]) -> Any:
        """The rows at ``rows``."""
        return result.tocsr()[np.asarray(list(rows), np.int64)]

    def count(self, result: Any) -> int:
        """Its rows."""
        return result.shape[0]

    def to_arrays(self, result: Any) -> dict[str, np.ndarray]:
        """int32 term ids, float32 weights, int32 terms per item."""
        m = result.tocsr()
        return {INDICES: m.indices.astype(np.int32), VALUES: m.data.astype(np.float32, copy=False),
                LENGTHS: np.diff(m.indptr).astype(np.int32)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray], vocab_size: int | None = None) -> Any:
        """The ``csr_matrix [N, vocab_size]`` of those terms."""
        return csr_of(np.asarray(arrays[INDICES]).reshape(-1), np.asarray(arrays[VALUES]).reshape(-1),
                      np.asarray(arrays[LENGTHS]).reshape(-1), int(vocab_size or 0))

    def to_json(self, item: Any, encoding_format: str = "float") -> dict:
        """``{"indices": [...], "values": [...]}``: a row's terms, whatever the format (never base64: the door
        refuses to be asked for it, see :attr:`base64`)."""
        row = item.tocsr()
        return {"indices": row.indices.tolist(), "values": row.data.astype(np.float32).tolist()}

    def describe(self, item: Any) -> str:
        """Its number of terms."""
        return f"{item.nnz} terms"

    def score(self, queries: Any, documents: Any, precision: str = "float32") -> np.ndarray:
        """Dot products of the rows (:func:`zoo.scoring.sparse_dot`)."""
        from ..scoring import sparse_dot

        return sparse_dot(queries, documents)

    def bytes_per_item(self, result: Any, dim: int, dimensions: int | None = None,
                       precision: str = "float32") -> float:
        """An int32 term id and a float32 weight per term, mean over the rows of ``result``."""
        return 8.0 * result.nnz / max(1, result.shape[0]) if result is not None else 0.0

    def store_collection(self, dim: int, precision: str = "float32") -> Any:
        """A sparse vector per point (any width; ``dim`` is not used). Qdrant does not quantize sparse
        vectors, so a precision other than float32 is refused."""
        from ..store.layout import Layout

        if precision != "float32":
            raise InvalidArgumentError(f"sparse vectors are stored as float32 weights (Qdrant does not quantize "
                                       f"them), not {precision!r}", "precision")
        return Layout(self.name, sparse=True)

    def store_vector(self, row: Any) -> Any:
        """``(indices, values)`` (or a ``1 × V`` row) as ``uint32`` term ids and ``float32`` weights."""
        indices, values = self._terms(row)
        return np.asarray(indices, dtype=np.uint32), np.asarray(values, dtype=np.float32)

    def row_width(self, row: Any) -> int:
        """0: a sparse vector has no fixed width."""
        return 0

    def parquet_fields(self, width: int, precision: str) -> list:
        """``indices: list<int32>``, ``values: list<float32>``."""
        import pyarrow as pa

        return [pa.field("indices", pa.list_(pa.int32())), pa.field("values", pa.list_(pa.float32()))]

    def parquet_columns(self, items: list, schema: Any) -> dict[str, Any]:
        """Each row's term ids and weights."""
        import pyarrow as pa

        return {"indices": pa.array([x.indices.astype(np.int32) for x in items], schema.field("indices").type),
                "values": pa.array([x.data.astype(np.float32) for x in items], schema.field("values").type)}

    def parquet_rows(self, columns: Mapping[str, list]) -> list:
        """``(indices, values)`` per row."""
        return list(zip(columns["indices"], columns["values"]))

    @staticmethod
    def _terms(row: Any) -> tuple[Any, Any]:
        sps = sys.modules.get("scipy.sparse")
        if sps is not None and sps.issparse(row):  # a 1 × V row, as encode() gives it
            row = row.tocsr()
            return row.indices, row.data
        return row
