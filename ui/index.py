"""Indexes over the corpus, per model and output kind, persisted on disk and reused on restart.

Dense (:class:`ui.layouts.ModelIndex`): full-width float32 embeddings of every item the model can embed. A search with
``dimensions`` / ``precision`` derives its view from them with the same post-processing as ``encode()``:
Matryoshka truncation + re-normalization, then quantization. Binary precisions search a FAISS binary
index (Hamming distance, reported as ``1 - 2·hamming/d``); the others search the dequantized vectors by
exact inner product (``IndexFlatIP``), or approximately (``IndexHNSWFlat``) when ``approximate`` is set.

Multi-vector (:class:`ui.layouts.MultiVectorIndex`): every item's token / patch vectors; a search takes the top
``candidates`` by the MUVERA FDEs of the view (:mod:`zoo.fde`, exact inner product over them) and reranks
them by exact MaxSim. Sparse (:class:`ui.layouts.SparseIndex`): the term-weight matrix, searched by exact sparse
dot products. Any other kind (:class:`ui.layouts.ArrayIndex`): its wire form's arrays, searched exhaustively by its
handler's score. Each reports what one item costs to store (``bytes_per_item``, the kind's own count).

Which class keeps a kind is the kind's handler's choice (:attr:`zoo.kinds.OutputKind.index_layout`, see
:func:`ui.layouts.open_index`); what the classes store, score and count goes through the handler too, so no class here
knows a kind by its name.

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

import numpy as np

from zoo import kinds
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

    kind = "dense"  # the output kind it holds (the manifest records it); open_index passes the kind asked for
    files: dict[str, str] = {}  # role → file extension; before index.json the file was named role + extension

    def __init__(self, folder: Path, spec: EmbedderSpec, approximate: bool = False, kind: str | None = None) -> None:
        if kind is not None:
            self.kind = kind
        self.handler = kinds.get(self.kind)  # stores, scores and counts the kind's outputs
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
