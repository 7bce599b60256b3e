"""The server store: a Qdrant server or cluster through qdrant-client, in the layout the embedded store uses
(the same vector names, point ids, payloads and quantization), so an embedded shard's snapshot fits it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .layout import Layout

INT8_QUANTILE = 0.99  # as the embedded store's (zoo.store.edge)


def collection_params(m: Any, layout: Layout) -> dict[str, Any]:
    """``create_collection`` keywords for ``layout`` (``m``: ``qdrant_client.models``)."""
    if layout.sparse:
        return {"vectors_config": {}, "sparse_vectors_config": {layout.name: m.SparseVectorParams()}}
    quant = {None: None,
             "int8": lambda: m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8,
                                                                                    quantile=INT8_QUANTILE)),
             "binary": lambda: m.BinaryQuantization(binary=m.BinaryQuantizationConfig(
                 query_encoding=m.BinaryQuantizationQueryEncoding.SCALAR8BITS))}[layout.quantization]
    multi = m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM) if layout.multivector else None
    return {"vectors_config": {layout.name: m.VectorParams(size=layout.size, distance=m.Distance.DOT,
                                                           multivector_config=multi,
                                                           quantization_config=quant() if quant else None)}}


def layouts_of(params: Any) -> dict[str, Layout]:
    """The layouts of an existing collection's ``config.params``, by vector name."""
    out = {name: Layout(name, sparse=True) for name in params.sparse_vectors or {}}
    for name, v in (params.vectors if isinstance(params.vectors, dict) else {}).items():
        q = v.quantization_config
        quant = None if q is None else "int8" if hasattr(q, "scalar") else "binary" if hasattr(q, "binary") else "other"
        out[name] = Layout(name, int(v.size), multivector=v.multivector_config is not None, quantization=quant)
    return out


class ServerBackend:
    """Collections of a Qdrant server; ``client_kwargs`` are ``QdrantClient``'s (see :func:`zoo.store.parse_uri`)."""

    def __init__(self, client_kwargs: dict[str, Any]) -> None:
        from qdrant_client import QdrantClient, models

        self.m = models
        self.client = QdrantClient(**client_kwargs)
        self._layouts: dict[str, dict[str, Layout]] = {}  # each searched collection's, asked for once

    def exists(self, collection: str) -> bool:
        """Whether the server has the collection."""
        return self.client.collection_exists(collection)

    def layouts(self, collection: str) -> dict[str, Layout]:
        """The collection's vectors, as the server describes them."""
        return layouts_of(self.client.get_collection(collection).config.params)

    def create(self, collection: str, layout: Layout) -> None:
        """A new collection for ``layout``."""
        self.client.create_collection(collection, **collection_params(self.m, layout))

    def vector(self, layout: Layout, vector: Any) -> Any:
        """A neutral vector (float32 array, or term ids and weights) as qdrant-client takes it."""
        if layout.sparse:
            return self.m.SparseVector(indices=vector[0].tolist(), values=vector[1].tolist())
        return vector.tolist()

    def points(self, layout: Layout, points: list[tuple[str, Any, dict]]) -> list:
        """``(point id, vector, payload)`` triples as qdrant-client's ``PointStruct``s."""
        return [self.m.PointStruct(id=pid, vector={layout.name: self.vector(layout, v)}, payload=payload)
                for pid, v, payload in points]

    def upsert(self, collection: str, layout: Layout, points: list[tuple[str, Any, dict]]) -> None:
        """Write ``(point id, vector, payload)`` triples."""
        self.client.upsert(collection, points=self.points(layout, points))

    def _filter(self, where: dict) -> Any:
        """qdrant-client's ``Filter`` for metadata equal to ``where``'s values (None for no condition)."""
        m = self.m
        return m.Filter(must=[m.FieldCondition(key=f"metadata.{key}", match=m.MatchValue(value=value))
                              for key, value in where.items()]) if where else None

    def search(self, collection: str, layout: Layout, query: Any, k: int, where: dict, *,
               exact: bool = False) -> list[tuple[dict, float]]:
        """``(payload, score)`` of the ``k`` best points, best first; ``exact``: score every point ``where``
        admits instead of walking the HNSW graph."""
        from . import OVERSAMPLING, SEARCH_EF

        m = self.m
        if collection not in self._layouts:
            self._layouts[collection] = self.layouts(collection)
        stored = self._layouts[collection].get(layout.name)
        quant = stored and stored.quantization
        params = m.SearchParams(hnsw_ef=max(SEARCH_EF, k), exact=exact, quantization=m.QuantizationSearchParams(
            rescore=True, oversampling=OVERSAMPLING[quant]) if quant in OVERSAMPLING else None)
        hits = self.client.query_points(collection, query=self.vector(layout, query), using=layout.name, limit=k,
                                        query_filter=self._filter(where), search_params=params,
                                        with_payload=True).points
        return [(h.payload, h.score) for h in hits]

    def count(self, collection: str, where: dict | None = None) -> int:
        """Points in the collection (those whose metadata has ``where``'s values)."""
        return self.client.count(collection, count_filter=self._filter(where or {}), exact=True).count

    def snapshot(self, collection: str, dest: Path) -> Path:
        """Refused: a server makes its own snapshots."""
        raise InvalidArgumentError("a server's collections are snapshotted by the server (POST "
                                   f"/collections/{collection}/snapshots); VectorStore.snapshot is for qdrant:PATH "
                                   "stores", "snapshot")

    def restore(self, collection: str, snapshot: Path) -> None:
        """Refused: a server restores through its own API."""
        raise InvalidArgumentError("a server restores a shard snapshot through its API (POST /collections/"
                                   f"{collection}/shards/0/snapshots/upload, see docs/VECTORDB.md); "
                                   "VectorStore.restore is for qdrant:PATH stores", "snapshot")

    def close(self) -> None:
        """Release the client."""
        self.client.close()
