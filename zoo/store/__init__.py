"""A vector database behind one small interface: Qdrant's engine, embedded in-process or a server, same calls.

Why Qdrant (measured in ``docs/VECTORDB.md`` with ``python -m scripts.bench_vectordb``): one collection holds
all three of zoo's output kinds natively (dense vectors, sparse vectors and multi-vectors scored by MaxSim);
embedded, Qdrant Edge (``qdrant-edge-py``) runs Qdrant's own engine in this process with nothing to start:
HNSW, scalar and binary quantization, on-disk segments; and the same layout lives in a Qdrant server or cluster
(sharding, replication) reached by URL, where an embedded collection's snapshot can be restored.

A store is named by a URI:

- ``qdrant:PATH`` (or a bare folder path): embedded (Qdrant Edge), one shard per collection in the folder
  ``PATH/<collection>/``; one process owns a collection at a time (its write-ahead log is locked);
- ``qdrant::memory:``: embedded, in a temporary folder removed at :meth:`VectorStore.close`;
- ``qdrant+http://HOST:PORT`` / ``qdrant+https://…``: a Qdrant server through qdrant-client
  (``QDRANT_API_KEY`` from the environment when set).

A collection holds one model's output under the vector name of its kind (``dense``, ``multivector`` or
``sparse``, the same words as ``encode(output=…)``; an ``fde`` is stored as ``dense``), laid out as that kind's
handler says (:mod:`zoo.kinds`, as a :class:`~zoo.store.layout.Layout` both backends build from); a point's id
is derived from the item's own id (UUID 5), so writing an item again replaces it, and the item's id and
metadata travel as its payload. Embedded, small collections are searched exactly and larger ones by HNSW,
built when the writes are done (before the next search, or at close).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .layout import Layout

__all__ = ["Layout", "Match", "VectorStore", "collection_name", "parse_uri", "point_id"]

SCHEMES = ("qdrant:", "qdrant+http://", "qdrant+https://")
ID_NAMESPACE = uuid.UUID("6f1c1b3e-8c4e-4a53-9a55-7a3f1e0f2b11")  # fixed: the same item id → the same point
UPSERT_CHUNK = 256  # points per request: bounded request size on the wire and per write of the embedded shard
SEARCH_EF = 128  # HNSW candidates per search (Qdrant's default is ef_construct, 100); both backends use it
#: quantized collections: this many times ``k`` candidates found by the quantized vectors, rescored by the float32
#: ones (one bit per dimension ranks coarsely: binary needs about 8× for recall@10 ≥ 0.95, see docs/VECTORDB.md)
OVERSAMPLING = {"int8": 2.0, "binary": 8.0}


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
    """``QdrantClient`` keyword arguments for a store URI (``path`` / ``location`` name the embedded forms),
    or an error naming the accepted forms."""
    if uri.startswith(("qdrant+http://", "qdrant+https://")):
        kwargs: dict[str, Any] = {"url": uri.removeprefix("qdrant+")}
        from ..settings import settings

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
    """A Qdrant database: collections of one model's output each, written and searched by item id.

    ``indexing_threads``: threads an embedded store builds HNSW graphs with (default: the CPUs this process
    may use, at most 16); a server decides its own."""

    def __init__(self, uri: str, *, indexing_threads: int | None = None) -> None:
        from ..extras import require

        require("scale", "the vector database (zoo.store)")
        self.uri = uri
        where = parse_uri(uri)
        if "url" in where:
            from .server import ServerBackend

            self.backend: Any = ServerBackend(where)
        else:
            from .edge import EdgeBackend

            self.backend = EdgeBackend(where.get("path"), indexing_threads=indexing_threads)

    def ensure(self, collection: str, kind: str, dim: int, *, precision: str = "float32") -> None:
        """Create ``collection`` for vectors of output ``kind`` (``dim`` wide; ignored for sparse) unless it
        exists; an existing one must hold the same kind and width (and keeps the quantization it was made
        with). The layout is the kind's (:meth:`zoo.kinds.OutputKind.store_collection`: dense and FDE vectors
        by inner product, multi-vectors by MaxSim, sparse vectors). ``precision``: ``float32`` (no
        quantization), ``int8`` (Qdrant's scalar quantization) or ``binary`` / ``ubinary`` (binary
        quantization); the float32 rows are stored either way and rescore the quantized candidates."""
        handler = _layout(kind)
        layout = handler.store_collection(dim, precision)
        if self.backend.exists(collection):
            existing = self.backend.layouts(collection)
            if not handler.store_fits(existing, dim):
                width = {k: v.size for k, v in existing.items() if not v.sparse}
                raise InvalidArgumentError(f"collection {collection!r} holds {sorted(existing)} vectors {width}, "
                                           f"not {kind} of width {dim}: choose another --collection", "collection")
            return
        self.backend.create(collection, layout)

    def upsert(self, collection: str, kind: str, ids: Sequence[str], rows: Sequence[Any],
               metadata: Sequence[dict] | None = None) -> None:
        """Write items (replacing any stored under the same ids). ``rows``: dense ``[d]`` arrays,
        multivector ``[n, d]`` arrays, or sparse ``(indices, values)`` pairs."""
        if len(rows) != len(ids) or (metadata is not None and len(metadata) != len(ids)):
            raise InvalidArgumentError(f"{len(ids)} ids, {len(rows)} rows and "
                                       f"{'no' if metadata is None else len(metadata)} metadata: one of each per item")
        metadata = metadata or [{}] * len(ids)
        handler = _layout(kind)
        layout = handler.store_collection(0 if not len(rows) else handler.row_width(rows[0]))
        for a in range(0, len(ids), UPSERT_CHUNK):
            self.backend.upsert(collection, layout, [
                (point_id(i), handler.store_vector(r), {"id": str(i), "metadata": meta})
                for i, r, meta in zip(ids[a:a + UPSERT_CHUNK], rows[a:a + UPSERT_CHUNK], metadata[a:a + UPSERT_CHUNK])])

    def search(self, collection: str, kind: str, query: Any, k: int = 10, where: dict | None = None) -> list[Match]:
        """The ``k`` best items for one query of the collection's kind, best first; ``where``: only items
        whose metadata has these values."""
        handler = _layout(kind)
        layout = handler.store_collection(handler.row_width(query))
        vector, k, where = handler.store_vector(query), int(k), where or {}
        hits = self.backend.search(collection, layout, vector, k, where)
        # (sparse search scores only the items sharing a term with the query: fewer hits is its answer)
        if where and not layout.sparse and len(hits) < k and self.backend.count(collection, where) > len(hits):
            # A filtered walk of the HNSW graph only steps onto points the filter admits, so it can be cut off
            # from them (Qdrant then returns as few as one of a thousand matches): score the matches instead.
            hits = self.backend.search(collection, layout, vector, k, where, exact=True)
        return [Match(payload["id"], float(score), payload.get("metadata") or {}) for payload, score in hits]

    def count(self, collection: str) -> int:
        """How many items ``collection`` holds (0 when it does not exist)."""
        return self.backend.count(collection) if self.backend.exists(collection) else 0

    def snapshot(self, collection: str, dest: str | Path) -> Path:
        """Write an embedded collection as a Qdrant shard snapshot at ``dest`` (a plain tar of its segments and
        write-ahead log; the file a Qdrant server's shard snapshot upload takes, see ``docs/VECTORDB.md``).
        The collection's index is built and its shard closed first; it reopens on next use."""
        return self.backend.snapshot(collection, Path(dest))

    def restore(self, collection: str, snapshot: str | Path) -> None:
        """Make a new embedded ``collection`` from a shard snapshot (:meth:`snapshot`'s, or a Qdrant server's
        shard snapshot)."""
        self.backend.restore(collection, Path(snapshot))

    def close(self) -> None:
        """Finish and release everything: build the index of what was written, flush, and release the
        embedded folders' locks (a temporary folder is removed) or the server connection."""
        self.backend.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layout(kind: str) -> Any:
    """The handler whose layout a collection of output ``kind`` has (an FDE's is dense: one vector per item)."""
    from .. import kinds

    return kinds.get(kind).stored()


def collection_name(model: str) -> str:
    """The default collection of a model: its name with characters Qdrant refuses in a name replaced."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
