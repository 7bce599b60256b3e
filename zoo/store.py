"""A vector database behind one small interface: Qdrant, embedded in-process or a server, same client code.

Why Qdrant (measured in ``docs/VECTORDB.md`` with ``python -m scripts.bench_vectordb``): its client's local
mode runs in this process with nothing to start and answers exactly, and the same ``QdrantClient`` calls
talk to a Qdrant server or cluster (HNSW, sharding, replication) when given a URL; and one collection holds
all three of zoo's output kinds natively: dense vectors, sparse vectors and multi-vectors scored by MaxSim.

A store is named by a URI:

- ``qdrant:PATH`` (or a bare folder path): embedded, persisted in the folder ``PATH``;
- ``qdrant::memory:``: embedded, in memory (gone when the process ends);
- ``qdrant+http://HOST:PORT`` / ``qdrant+https://…``: a Qdrant server (``QDRANT_API_KEY`` from the
  environment when set).

A collection holds one model's output under the vector name of its kind (``dense``, ``multivector`` or
``sparse``, the same words as ``encode(output=…)``; an ``fde`` is stored as ``dense``), laid out as that kind's
handler says (:mod:`zoo.kinds`); a point's id is derived from the item's own id (UUID 5),
so writing an item again replaces it, and the item's id and metadata travel as its payload.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError

SCHEMES = ("qdrant:", "qdrant+http://", "qdrant+https://")
ID_NAMESPACE = uuid.UUID("6f1c1b3e-8c4e-4a53-9a55-7a3f1e0f2b11")  # fixed: the same item id → the same point
UPSERT_CHUNK = 256  # points per request: bounded request size on the wire and in the local mode's writes


@dataclass
class Match:
    """One search result: the item's own id, its score and its stored metadata."""

    id: str
    score: float
    metadata: dict


def point_id(item_id: str) -> str:
    """The point id an item id is stored under (stable across runs and machines)."""
    return str(uuid.uuid5(ID_NAMESPACE, str(item_id)))


def parse_uri(uri: str) -> dict[str, Any]:
    """``QdrantClient`` keyword arguments for a store URI, or an error naming the accepted forms."""
    if uri.startswith(("qdrant+http://", "qdrant+https://")):
        kwargs: dict[str, Any] = {"url": uri.removeprefix("qdrant+")}
        from .settings import settings

        if settings().qdrant_api_key:
            kwargs["api_key"] = settings().qdrant_api_key
        return kwargs
    if uri == "qdrant::memory:":
        return {"location": ":memory:"}
    path = uri.removeprefix("qdrant:")
    if not path or "://" in path:
        raise InvalidArgumentError(f"store URI {uri!r} is not one of qdrant:PATH, qdrant::memory:, "
                                   "qdrant+http://HOST:PORT, qdrant+https://HOST:PORT", "store")
    return {"path": os.path.expanduser(path)}


class VectorStore:
    """A Qdrant database: collections of one model's output each, written and searched by item id."""

    def __init__(self, uri: str) -> None:
        from .extras import require

        require("scale", "the vector database (zoo.store)")
        from qdrant_client import QdrantClient, models

        self.uri = uri
        self._m = models
        self.client = QdrantClient(**parse_uri(uri))

    def ensure(self, collection: str, kind: str, dim: int) -> None:
        """Create ``collection`` for vectors of output ``kind`` (``dim`` wide; ignored for sparse) unless it
        exists; an existing one must hold the same kind and width. The layout is the kind's
        (:meth:`zoo.kinds.OutputKind.store_collection`: dense and FDE vectors by inner product, multi-vectors by
        MaxSim, sparse vectors)."""
        if self.client.collection_exists(collection):
            self._check_existing(collection, kind, dim)
            return
        self.client.create_collection(collection, **_layout(kind).store_collection(self._m, dim))

    def _check_existing(self, collection: str, kind: str, dim: int) -> None:
        params = self.client.get_collection(collection).config.params
        dense = params.vectors if isinstance(params.vectors, dict) else {}
        sparse = set(params.sparse_vectors or {})
        if not _layout(kind).store_fits(dense, sparse, dim):
            width = {k: v.size for k, v in dense.items()}
            raise InvalidArgumentError(f"collection {collection!r} holds {sorted(set(dense) | sparse)} vectors "
                                       f"{width}, not {kind} of width {dim}: choose another --collection",
                                       "collection")

    def upsert(self, collection: str, kind: str, ids: Sequence[str], rows: Sequence[Any],
               metadata: Sequence[dict] | None = None) -> None:
        """Write items (replacing any stored under the same ids). ``rows``: dense ``[d]`` arrays,
        multivector ``[n, d]`` arrays, or sparse ``(indices, values)`` pairs."""
        metadata = metadata or [{}] * len(ids)
        layout = _layout(kind)
        for a in range(0, len(ids), UPSERT_CHUNK):
            points = [self._m.PointStruct(id=point_id(i), vector={layout.name: layout.store_vector(self._m, r)},
                                          payload={"id": str(i), "metadata": meta})
                      for i, r, meta in zip(ids[a:a + UPSERT_CHUNK], rows[a:a + UPSERT_CHUNK],
                                            metadata[a:a + UPSERT_CHUNK])]
            self.client.upsert(collection, points=points)

    def search(self, collection: str, kind: str, query: Any, k: int = 10, where: dict | None = None) -> list[Match]:
        """The ``k`` best items for one query of the collection's kind, best first; ``where``: only items
        whose metadata has these values."""
        m = self._m
        where_filter = m.Filter(must=[m.FieldCondition(key=f"metadata.{key}", match=m.MatchValue(value=value))
                                      for key, value in where.items()]) if where else None
        layout = _layout(kind)
        hits = self.client.query_points(collection, query=layout.store_vector(m, query), using=layout.name,
                                        limit=int(k), query_filter=where_filter, with_payload=True).points
        return [Match(h.payload["id"], float(h.score), h.payload.get("metadata") or {}) for h in hits]

    def count(self, collection: str) -> int:
        """How many items ``collection`` holds (0 when it does not exist)."""
        if not self.client.collection_exists(collection):
            return 0
        return self.client.count(collection, exact=True).count

    def close(self) -> None:
        """Release the client (the embedded mode's folder lock with it)."""
        self.client.close()


def _layout(kind: str) -> Any:
    """The handler whose layout a collection of output ``kind`` has (an FDE's is dense: one vector per item)."""
    from . import kinds

    return kinds.get(kind).stored()


def collection_name(model: str) -> str:
    """The default collection of a model: its name with characters Qdrant refuses in a name replaced."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
