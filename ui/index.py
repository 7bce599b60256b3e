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

On disk an index is a set of files written whole: each under a new name (a temporary name in the same folder,
fsync, ``os.replace``), then ``index.json``, written the same way, last: it holds the item ids and names each
file with its size and SHA-256. A load reads only what ``index.json`` names and verifies it, so a save cut
short leaves the previous index in force; an index that does not verify is embedded again, never fatal.

An item the model cannot embed (a file that decodes on no model's side, say) is quarantined in the corpus
(:meth:`ui.corpus.Corpus.quarantine`) with the reason, and the others are indexed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from zoo import fde, kinds, scoring
from zoo import postprocess as pp
from zoo.errors import (
    InputError,
    MissingExtraError,
    ServerError,
    UnknownFamilyError,
    UnknownModelError,
    UnsupportedModalityError,
    WeightsUnavailableError,
)
from zoo.spec import EmbedderSpec, Modality

from .corpus import Corpus, Item

Encode = Callable[[list, str], Any]  # (inputs, modality) -> full-width float32 output of the index's kind

MANIFEST = "index.json"
FORMAT = 1
STALE_S = 3600  # a temporary or unnamed file older than this is left over from a save that did not finish
#: failures that say nothing about the item being embedded (the backend, the model, the machine): never quarantine
NOT_THE_ITEM = (ServerError, WeightsUnavailableError, MissingExtraError, UnknownModelError, UnknownFamilyError,
                UnsupportedModalityError, MemoryError)


class IndexSaveWarning(UserWarning):
    """An index could not be written; it is kept in memory and written again at its next change."""


@dataclass
class Hit:
    """One search result."""

    item: Item
    score: float


def _write_file(path: Path, write: Callable[[IO[bytes]], Any]) -> dict[str, Any]:
    """Write ``path`` whole or not at all: ``write`` fills a temporary file in the same folder, which is
    fsynced, then renamed over ``path``. Returns its entry for the manifest (name, bytes, SHA-256)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        entry = {"name": path.name, "bytes": os.path.getsize(tmp), "sha256": _sha256(Path(tmp))}
        os.replace(tmp, path)
        return entry
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(err: BaseException) -> str:
    """Why an item could not be embedded, in a line."""
    if isinstance(err, InputError):
        return err.reason
    return f"{type(err).__name__}: {err}".strip().rstrip(":")


class _CorpusIndex:
    """What every index shares: which corpus items it holds, embedding the new ones in chunks (quarantining
    those the model fails on), persistence. Subclasses keep the outputs: :meth:`_load` (from ``self._paths``),
    :meth:`_add`, :meth:`_write` (one of their ``files``), :meth:`_rows_held`."""

    kind = "dense"
    files: dict[str, str] = {}  # role → file extension; before index.json the file was named role + extension

    def __init__(self, folder: Path, spec: EmbedderSpec, approximate: bool = False) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.approximate = approximate
        self.ids: list[str] = []
        self._views: dict[tuple, object] = {}
        self._rows: dict[str, np.ndarray] = {}  # target modality → rows (valid while the corpus doesn't change)
        self._synced = -1  # corpus version at the last update
        self._unsaved = False  # held in memory, not (yet) on disk
        self._written: set[str] = set()  # the files the manifest on disk names
        self._paths: dict[str, Path] = {}
        self._empty()
        self._restore()

    def _empty(self) -> None: ...

    def _load(self) -> None: ...

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None: ...

    def _write(self, role: str, fh: IO[bytes]) -> None: ...

    def _rows_held(self) -> int | None:
        """How many items the loaded outputs hold (None: not checked)."""
        return None

    # ---- persistence ---------------------------------------------------------------------------
    def _restore(self) -> None:
        """Load what ``index.json`` names, verified (or an index of the layout before it); anything that does
        not verify leaves the index empty, to be embedded again."""
        manifest = self.folder / MANIFEST
        try:
            if manifest.is_file():
                record = json.loads(manifest.read_text())
                if record.get("format") != FORMAT or record.get("kind") != self.kind:
                    raise ValueError(f"format {record.get('format')} of kind {record.get('kind')!r}")
                if sorted(record["files"]) != sorted(self.files):
                    raise ValueError(f"files {sorted(record['files'])}")
                for role, entry in record["files"].items():
                    path = self.folder / entry["name"]
                    if path.parent != self.folder or not path.is_file():
                        raise ValueError(f"{entry['name']} is missing")
                    if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
                        raise ValueError(f"{entry['name']} is not the file written")
                    self._paths[role] = path
                ids = [str(i) for i in record["ids"]]
                self._written = {entry["name"] for entry in record["files"].values()}
            elif (self.folder / "ids.json").is_file():  # written in place before index.json: checked, rewritten
                ids = [str(i) for i in json.loads((self.folder / "ids.json").read_text())]
                self._paths = {role: self.folder / f"{role}{ext}" for role, ext in self.files.items()}
                self._unsaved = True
            else:
                return
            self.ids = ids
            self._load()
            held = self._rows_held()
            if held is not None and held != len(self.ids):
                raise ValueError(f"{held} rows for {len(self.ids)} ids")
        except Exception as err:  # never fatal: the items are embedded again
            print(f"index {self.folder.name}: not loaded ({type(err).__name__}: {err}); its items are embedded "
                  "again", file=sys.stderr, flush=True)
            self.ids, self._paths, self._written, self._unsaved = [], {}, set(), False
            self._empty()

    def _save(self) -> None:
        """Write every file under a new name, then the manifest naming them; then remove what it replaced."""
        self.folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(6)
        entries: dict[str, dict[str, Any]] = {}
        try:
            for role, ext in self.files.items():
                entries[role] = _write_file(self.folder / f"{role}.{token}{ext}",
                                            lambda fh, r=role: self._write(r, fh))
            record = {"format": FORMAT, "kind": self.kind, "model": self.spec.name, "count": len(self.ids),
                      "ids": self.ids, "files": entries}
            _write_file(self.folder / MANIFEST, lambda fh: fh.write(json.dumps(record).encode()))
        except BaseException:
            for entry in entries.values():
                (self.folder / entry["name"]).unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)
        previous, self._written = self._written, {entry["name"] for entry in entries.values()}
        self._tidy(previous)

    def _tidy(self, previous: set[str]) -> None:
        """Remove the files the last manifest named, the layout before index.json, and leftovers of saves that
        did not finish (temporary files and unnamed sets older than :data:`STALE_S`)."""
        roles = "|".join(map(re.escape, self.files)) or "(?!)"
        generation = re.compile(rf"^(?:{roles})\.[0-9a-f]{{12}}\.\w+$")  # a file of a set a manifest may name
        legacy = {"ids.json", *(f"{role}{ext}" for role, ext in self.files.items())}
        cutoff = time.time() - STALE_S
        for path in self.folder.iterdir():
            name = path.name
            if name in self._written or name == MANIFEST:
                continue
            try:
                leftover = (name.startswith(".") and name.endswith(".tmp")) or generation.match(name)
                stale = bool(leftover) and path.stat().st_mtime < cutoff
                if name in previous or name in legacy or stale:
                    path.unlink()
            except OSError:
                continue

    # ---- adding items --------------------------------------------------------------------------
    def update(self, corpus: Corpus, encode: Encode, progress: Callable[[float, str], None] | None = None) -> int:
        """Embed corpus items not yet indexed (by modality, in chunks); returns how many were added. An item
        the model fails on is quarantined in the corpus with the reason (unless nothing embeds at all: then the
        error is the model's or the backend's, and it is raised)."""
        version = corpus.version
        if self._synced == version:  # nothing new since the last call: the per-query fast path
            return 0
        self._views.clear()  # items came or were quarantined: the views and their rows are rebuilt
        self._rows.clear()
        known = set(self.ids)
        todo = [i for i in corpus.items if i.id not in known and self.spec.supports(i.modality)]
        new_ids: list[str] = []
        new_modalities: list[str] = []
        parts: list = []
        failed: list[tuple[Item, Exception]] = []
        chunk = 16
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for modality in sorted({i.modality for i in part}):
                group = [i for i in part if i.modality == modality]
                inputs = [i.text if modality == Modality.TEXT.value else str(corpus.file(i)) for i in group]
                embedded, errors = _embed_each(encode, inputs, modality)
                for rows, out in embedded:
                    parts.append(out)
                    new_ids += [group[r].id for r in rows]
                    new_modalities += [modality] * len(rows)
                failed += [(group[r], err) for r, err in errors.items()]
            if progress:
                progress(min(1.0, (start + chunk) / len(todo)), f"indexing {len(todo)} items for {self.spec.name}")
        suspects = [err for _, err in failed if not isinstance(err, InputError)]
        if suspects and not self.ids and not new_ids:
            raise suspects[0]  # the model embeds nothing at all: its fault (or the backend's), not the items'
        if new_ids:
            self.ids += new_ids
            self._add(parts, new_ids, new_modalities)
            self._unsaved = True
        for item, err in failed:
            print(f"quarantined {item.label!r} ({item.id}): {self.spec.name} cannot embed it: {_reason(err)}",
                  file=sys.stderr, flush=True)
            corpus.quarantine(item, f"{self.spec.name} cannot embed it: {_reason(err)}")
        if self._unsaved:
            try:
                self._save()
                self._unsaved = False
            except OSError as err:  # kept in memory and searched; written again at the next change
                warnings.warn(f"index {self.folder.name} not saved ({err}); it is kept in memory", IndexSaveWarning,
                              stacklevel=2)
        self._synced = version
        return len(new_ids)

    def _target_rows(self, corpus: Corpus, target: str) -> np.ndarray:
        if target not in self._rows:
            by_id = corpus.by_id
            self._rows[target] = np.array(
                [n for n, i in enumerate(self.ids) if i in by_id and by_id[i].modality == target], np.int64)
        return self._rows[target]

    def _hits(self, corpus: Corpus, rows: np.ndarray, order: np.ndarray, scores: np.ndarray) -> list[Hit]:
        by_id = corpus.by_id  # an item quarantined since the rows were taken is left out
        return [Hit(by_id[self.ids[rows[j]]], float(s)) for j, s in zip(order, scores)
                if j >= 0 and self.ids[rows[j]] in by_id]


def _embed_each(encode: Encode, inputs: list, modality: str) -> tuple[list[tuple[list[int], Any]],
                                                                      dict[int, Exception]]:
    """Embed ``inputs`` in one call; if that fails, one at a time, so one bad item fails alone. Returns
    ``[(rows, output)]`` and ``{row: error}``; a failure that is not the item's (:data:`NOT_THE_ITEM`) is raised."""
    try:
        return [(list(range(len(inputs))), encode(inputs, modality))], {}
    except NOT_THE_ITEM:
        raise
    except Exception as err:
        if len(inputs) == 1:
            return [], {0: err}
    embedded, errors = [], {}
    for n, x in enumerate(inputs):
        try:
            embedded.append(([n], encode([x], modality)))
        except NOT_THE_ITEM:
            raise
        except Exception as err:
            errors[n] = err
    return embedded, errors


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
        self.matrix = kinds.concat([self.matrix, *parts])

    def _write(self, role: str, fh: IO[bytes]) -> None:
        import scipy.sparse as sps

        sps.save_npz(fh, self.matrix)

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
