"""``multivector``: one vector per token or patch, a ``list`` of N ``ndarray [n_i, d]`` (late interaction).

``max_vectors=k`` keeps at most ``k`` vectors per item. Models trained for it (meta tokens, Matryoshka
multi-vector: ``options["vector_budget"] == "first"``) keep their first ``k``; token-level models
(ColBERT, ColPali) are pooled to ``k`` by Ward hierarchical clustering on cosine distance, each cluster
becoming its mean (the token pooling of PyLate and sentence-transformers, here with a fixed count).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import postprocess as pp
from .base import LENGTHS, MULTIVECTORS, OUTPUT, OutputKind


def pool_vectors(vectors: np.ndarray, k: int) -> np.ndarray:
    """Pool ``[n, d]`` token vectors to at most ``k`` (Ward clustering on cosine distance, cluster means);
    an item with ``k`` or fewer vectors is returned unchanged."""
    n = len(vectors)
    if n <= k:
        return vectors
    if k == 1:
        return vectors.mean(0, keepdims=True)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    unit = pp.normalize(vectors)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="ward"), t=k, criterion="maxclust")
    return np.stack([vectors[labels == c].mean(0) for c in np.unique(labels)]).astype(np.float32)


def postprocess_multivector(items: list[np.ndarray], *, normalize_output: bool, dimensions: int | None,
                            precision: str, max_vectors: int | None, budget: str = "pool") -> list[np.ndarray]:
    """Per item ``[n_i, d]``: Matryoshka truncation → normalize → the ``max_vectors`` budget (first ``k`` or
    pooled to ``k``, then normalized again) → quantize, each vector like a dense row."""
    if not items:
        return []
    flat = pp.truncate(np.concatenate(items).astype(np.float32, copy=False), dimensions)  # every vector at once
    if normalize_output:
        flat = pp.normalize(flat)
    out = split_rows(flat, [len(x) for x in items])
    if max_vectors is not None:
        def within(x: np.ndarray) -> np.ndarray:  # an item over the budget: its first k, or pooled to k
            x = x[:max_vectors] if budget == "first" else pool_vectors(x, max_vectors)
            return pp.normalize(x) if normalize_output else x

        out = [x if len(x) <= max_vectors else within(x) for x in out]
    if precision == "float32":
        return out
    return split_rows(pp.quantize(np.concatenate(out), precision), [len(x) for x in out])


def split_rows(flat: np.ndarray, lengths: Any) -> list[np.ndarray]:
    """Consecutive items' rows of ``flat``, ``lengths[i]`` rows for item ``i`` (the flat form on the wire)."""
    return np.split(flat, np.cumsum(lengths)[:-1])


class MultiVector(OutputKind):
    """Vectors per item, each post-processed like a dense row; ``max_vectors`` bounds their count."""

    name = "multivector"
    controls = frozenset({"max_vectors"})
    sided = True  # query expansion, skip lists
    wire_roles = (OUTPUT, LENGTHS)  # every item's vectors, item after item, and the count per item
    index_layout = MULTIVECTORS

    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> list[np.ndarray]:
        """Per item: :func:`postprocess_multivector` with the model's vector budget."""
        return postprocess_multivector(raw, normalize_output=opts.normalize, dimensions=opts.dimensions,
                                       precision=opts.precision, max_vectors=opts.max_vectors,
                                       budget=spec.options.get("vector_budget", "pool"))

    def items_of(self, result: list) -> list:
        """The list itself: one ``[n_i, d]`` array per item."""
        return result

    def of_items(self, items: list) -> list:
        """The items as a list."""
        return list(items)

    def concat(self, parts: list) -> list:
        """The chunks' lists, one after the other."""
        return [x for p in parts for x in p]

    def take(self, result: list, rows: Iterable[int]) -> list:
        """The items at ``rows``."""
        return [result[r] for r in rows]

    def shape(self, result: list) -> list:
        """Each item's ``[n_i, d]``."""
        return [list(x.shape) for x in result]

    def to_arrays(self, result: list) -> dict[str, np.ndarray]:
        """``output``: every vector, item after item; ``lengths``: int32 vectors per item."""
        flat = np.concatenate(result) if result else np.zeros((0, 0), np.float32)
        return {OUTPUT: flat, LENGTHS: np.asarray([len(x) for x in result], np.int32)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray], vocab_size: int | None = None) -> list:
        """The flat vectors split by their lengths."""
        return split_rows(arrays[OUTPUT], np.asarray(arrays[LENGTHS]).reshape(-1))

    def score(self, queries: list, documents: list, precision: str = "float32") -> np.ndarray:
        """Late-interaction MaxSim (:func:`zoo.scoring.maxsim`)."""
        from ..scoring import maxsim

        return maxsim(queries, documents, precision)

    def bytes_per_item(self, result: Any, dim: int, dimensions: int | None = None,
                       precision: str = "float32") -> float:
        """Mean vectors per item of ``result`` times one vector's bytes at the setting."""
        if not result:
            return 0.0
        one = super().bytes_per_item(None, dim, dimensions, precision)
        return float(np.mean([len(x) for x in result])) * one

    def store_collection(self, dim: int, precision: str = "float32") -> Any:
        """Vectors per point, scored by MaxSim (each query vector's best inner product, summed)."""
        from ..store.layout import Layout, quantization

        return Layout(self.name, int(dim), multivector=True, quantization=quantization(precision))

    def parquet_fields(self, width: int, precision: str) -> list:
        """``embedding: list<fixed_size_list<T>[w]>`` (one vector per token or patch)."""
        import pyarrow as pa

        (field,) = super().parquet_fields(width, precision)
        return [pa.field("embedding", pa.list_(field.type))]
