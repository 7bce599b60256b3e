"""The embedded store: Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine in this process.

One Edge shard per collection, in the folder ``ROOT/<collection>/`` (its ``edge_config.json``, ``segments/``
and ``wal/``). Points are written to an appendable segment that is searched exactly; :meth:`EdgeShard.optimize`
turns segments past the indexing threshold into indexed ones (HNSW, and the quantized copy when the
collection is quantized). It blocks, so it runs when the writes are done: before the next search after a
write, and at close. A shard's folder is locked by its write-ahead log while it is open: one owner at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .layout import Layout

HNSW_M = 16  # edges per node and candidates while building: Qdrant's defaults
HNSW_EF_CONSTRUCT = 100
#: a segment's vectors past this many KB are indexed by optimize() (Qdrant's default); below it, exact search
INDEXING_THRESHOLD_KB = 10_000
#: a search over fewer KB of vectors than this scans them exactly even where an index exists (Qdrant's default)
FULL_SCAN_THRESHOLD_KB = 10_000
INT8_QUANTILE = 0.99  # scalar quantization's range: the central 99% of values (outliers clipped)
QUANTIZATION_NAMES = {"scalar": "int8", "binary": "binary"}  # Edge's config key → Layout.quantization
# Edge's own errors that are about the caller's input, not the engine: passed on as InvalidArgumentError
INPUT_ERRORS = ("Vector dimension error", "Not existing vector name", "Wrong input", "Bad input")


def default_threads() -> int:
    """The CPUs this process may use, at most 16 (HNSW building scales no further)."""
    return max(1, min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def edge_config(layout: Layout, threads: int) -> Any:
    """The ``EdgeConfig`` of a shard holding ``layout``."""
    import qdrant_edge as E

    if layout.sparse:
        return E.EdgeConfig(sparse_vectors={layout.name: E.EdgeSparseVectorParams()})
    quant = {None: None,
             "int8": lambda: E.ScalarQuantizationConfig(type=E.ScalarType.Int8, quantile=INT8_QUANTILE),
             "binary": lambda: E.BinaryQuantizationConfig(  # one bit per dimension stored; the query
                 query_encoding=E.BinaryQuantizationQueryEncoding.Scalar8Bits)}[layout.quantization]  # kept at 8
    params = E.EdgeVectorParams(
        size=layout.size, distance=E.Distance.Dot, quantization_config=quant() if quant else None,
        multivector_config=E.MultiVectorConfig(E.MultiVectorComparator.MaxSim) if layout.multivector else None,
        hnsw_config=E.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                      full_scan_threshold=FULL_SCAN_THRESHOLD_KB, max_indexing_threads=threads))
    return E.EdgeConfig(vectors={layout.name: params},
                        optimizers=E.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB))


def layouts_of(config: dict) -> dict[str, Layout]:
    """The layouts an ``edge_config.json`` describes, by vector name."""
    out = {name: Layout(name, sparse=True) for name in config.get("sparse_vectors") or {}}
    for name, v in (config.get("vectors") or {}).items():
        quant = next(iter(v.get("quantization_config") or {}), None)
        out[name] = Layout(name, int(v["size"]), multivector=bool(v.get("multivector_config")),
                           quantization=QUANTIZATION_NAMES.get(quant, quant))
    return out


def check_collection(name: str) -> str:
    """``name`` if it can name a folder of its own (the characters of :func:`zoo.store.collection_name`),
    else an error saying why."""
    if not name or name in (".", "..") or any(not (c.isalnum() or c in "-_.") for c in name):
        raise InvalidArgumentError(f"collection name {name!r} must be letters, digits, '-', '_' or '.' (and not "
                                   "'.' or '..'): an embedded collection is a folder of its own", "collection")
    return name


class EdgeBackend:
    """Collections as Qdrant Edge shards in the folder ``path`` (a temporary one, removed at close, if None)."""

    def __init__(self, path: str | None, *, indexing_threads: int | None = None) -> None:
        import qdrant_edge

        self._E = qdrant_edge
        self.temporary = path is None
        self.root = Path(tempfile.mkdtemp(prefix="zoo-store-") if path is None else path)
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgumentError(f"store folder {self.root} is a file", "store")
        if (self.root / "meta.json").is_file() and (self.root / "collection").is_dir():
            raise InvalidArgumentError(f"{self.root} holds a qdrant-client local-mode database (written by an "
                                       "earlier zoo); the embedded store is Qdrant Edge now: write the vectors "
                                       "again into a new folder (zoo embed ... --to qdrant:NEW_FOLDER)", "store")
        self.threads = indexing_threads or default_threads()
        self._shards: dict[str, Any] = {}
        self._dirty: set[str] = set()  # written (or opened) since the last optimize()
        self._layouts: dict[str, dict[str, Layout]] = {}  # each open collection's, read once
        self._lock = threading.RLock()  # the demo searches from several threads
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True) if self.temporary else None

    # ---- collections ----------------------------------------------------------------------------------
    def _folder(self, collection: str) -> Path:
        return self.root / check_collection(collection)

    def exists(self, collection: str) -> bool:
        """Whether the collection's shard is there."""
        folder = self._folder(collection)
        return collection in self._shards or (folder / "edge_config.json").is_file() or (folder / "segments").is_dir()

    def layouts(self, collection: str) -> dict[str, Layout]:
        """The existing collection's vectors (from the shard's configuration, which opening it writes)."""
        if collection not in self._layouts:
            config = self._folder(collection) / "edge_config.json"
            if not config.is_file():
                self._open(collection)
            self._layouts[collection] = layouts_of(json.loads(config.read_text()))
        return self._layouts[collection]

    def create(self, collection: str, layout: Layout) -> None:
        """A new shard for ``layout``."""
        with self._lock:
            self._shards[collection] = self._E.EdgeShard.create(str(self._folder(collection)),
                                                                edge_config(layout, self.threads))

    def _open(self, collection: str) -> Any:
        """The collection's shard, opened once (its folder's lock held until close)."""
        with self._lock:
            if collection in self._shards:
                return self._shards[collection]
            folder = self._folder(collection)
            if not self.exists(collection):
                raise InvalidArgumentError(f"collection {collection!r} does not exist in {self.root}", "collection")
            try:
                shard = self._E.EdgeShard.load(str(folder))
            except Exception as e:
                if "WAL" in str(e) or "WouldBlock" in str(e):
                    raise InvalidArgumentError(
                        f"collection folder {folder} is open in another store (this process or another): one "
                        "owner at a time, close the other first", "store") from None
                raise
            self._shards[collection] = shard
            self._dirty.add(collection)  # a writer may have stopped before indexing: the next search checks
            return shard

    # ---- points -----------------------------------------------------------------------------------------
    def _vector(self, layout: Layout, vector: Any) -> Any:
        if layout.sparse:
            return self._E.SparseVector(indices=vector[0], values=vector[1])
        return vector  # float32 arrays: Edge takes them as they are (a 2-D one is a multi-vector)

    def upsert(self, collection: str, layout: Layout, points: list[tuple[str, Any, dict]]) -> None:
        """Write ``(point id, vector, payload)`` triples."""
        E = self._E
        shard = self._open(collection)
        op = E.UpdateOperation.upsert_points([E.Point(pid, {layout.name: self._vector(layout, v)}, payload)
                                              for pid, v, payload in points])
        self._call(collection, shard.update, op)
        self._dirty.add(collection)

    def _filter(self, where: dict) -> Any:
        """Edge's ``Filter`` for metadata equal to ``where``'s values (None for no condition)."""
        E = self._E
        return E.Filter(must=[E.FieldCondition(key=f"metadata.{key}", match=E.MatchValue(value))
                              for key, value in where.items()]) if where else None

    def search(self, collection: str, layout: Layout, query: Any, k: int, where: dict, *,
               exact: bool = False) -> list[tuple[dict, float]]:
        """``(payload, score)`` of the ``k`` best points, best first, after building what the writes left;
        ``exact``: score every point ``where`` admits instead of walking the HNSW graph."""
        from . import OVERSAMPLING, SEARCH_EF

        E = self._E
        shard = self._open(collection)
        self.optimize(collection)
        stored = self.layouts(collection).get(layout.name)
        quant = stored and stored.quantization
        params = E.SearchParams(hnsw_ef=max(SEARCH_EF, k), exact=exact, quantization=E.QuantizationSearchParams(
            rescore=True, oversampling=OVERSAMPLING[quant]) if quant in OVERSAMPLING else None)
        request = E.QueryRequest(query=E.Query.Nearest(self._vector(layout, query), using=layout.name), limit=k,
                                 filter=self._filter(where), params=params, with_payload=True, with_vector=False)
        return [(p.payload, p.score) for p in self._call(collection, shard.query, request)]

    def count(self, collection: str, where: dict | None = None) -> int:
        """Points in the collection (those whose metadata has ``where``'s values)."""
        return self._open(collection).count(self._E.CountRequest(exact=True, filter=self._filter(where or {})))

    def info(self, collection: str) -> Any:
        """Edge's ``ShardInfo`` (points, segments, indexed vectors) of the collection."""
        return self._open(collection).info()

    def optimize(self, collection: str) -> None:
        """Build the index of what was written since the last call (blocks; nothing to do is quick)."""
        with self._lock:
            if collection in self._dirty:
                self._shards[collection].optimize()
                self._dirty.discard(collection)

    def _call(self, collection: str, fn: Any, arg: Any) -> Any:
        try:
            return fn(arg)
        except Exception as e:
            if str(e).startswith(INPUT_ERRORS):
                raise InvalidArgumentError(f"collection {collection!r}: {e}", "collection") from None
            raise

    # ---- snapshots --------------------------------------------------------------------------------------
    def _release(self, collection: str) -> None:
        """Index, flush and close one open shard (its lock released)."""
        with self._lock:
            shard = self._shards.get(collection)
            if shard is None:
                return
            self.optimize(collection)
            shard.flush()
            shard.close()
            del self._shards[collection]
            self._layouts.pop(collection, None)

    def snapshot(self, collection: str, dest: Path) -> Path:
        """A plain tar of the closed shard's ``segments/`` and ``wal/``, holes kept (GNU tar ``--sparse``: the
        segments are sparse files, and Edge refuses a compressed tar)."""
        self._open(collection)  # fails clearly while another store owns it
        self._release(collection)
        tar = shutil.which("tar")
        if tar is None:
            raise InvalidArgumentError("a snapshot needs GNU tar on PATH (it keeps the segments' holes)", "snapshot")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        done = subprocess.run([tar, "--sparse", "-cf", str(part), "-C", str(self._folder(collection)),
                               "segments", "wal"], capture_output=True, text=True)
        if done.returncode:
            part.unlink(missing_ok=True)
            raise RuntimeError(f"tar of {self._folder(collection)} failed: {done.stderr.strip()}")
        os.replace(part, dest)
        return dest

    def restore(self, collection: str, snapshot: Path) -> None:
        """A new collection unpacked from a shard snapshot, opened to check it."""
        folder = self._folder(collection)
        if self.exists(collection):
            raise InvalidArgumentError(f"collection {collection!r} already exists in {self.root}: restore into "
                                       "a new one", "collection")
        if not snapshot.is_file():
            raise InvalidArgumentError(f"snapshot {snapshot} is not a file", "snapshot")
        try:
            self._E.EdgeShard.unpack_snapshot(str(snapshot), str(folder))
            self._open(collection)
        except Exception as e:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(e, InvalidArgumentError):
                raise
            raise InvalidArgumentError(f"{snapshot} is not a shard snapshot Qdrant Edge can read ({e}); it must be "
                                       "an uncompressed tar of segments/ and wal/", "snapshot") from None

    def close(self) -> None:
        """Index, flush and close every open shard; remove a temporary folder."""
        with self._lock:
            for collection in list(self._shards):
                self._release(collection)
        if self._cleanup is not None:
            self._cleanup()
