"""A FAISS index over the corpus, per model, persisted on disk and reused on restart.

Stored once per model: full-width float32 embeddings of every item the model can embed. A search with
``dimensions`` / ``precision`` derives its view from them with the same post-processing as ``encode()``:
Matryoshka truncation + re-normalization, then quantization. Binary precisions search a FAISS binary
index (Hamming distance, reported as ``1 - 2·hamming/d``); the others search the dequantized vectors by
exact inner product (``IndexFlatIP``), or approximately (``IndexHNSWFlat``) when ``approximate`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from zoo import postprocess as pp
from zoo.spec import EmbedderSpec, Modality

from .corpus import Corpus, Item

Encode = Callable[[list, str], np.ndarray]  # (inputs, modality) -> full-width float32, normalized


@dataclass
class Hit:
    """One search result."""

    item: Item
    score: float


class ModelIndex:
    """Embeddings of the corpus items one model can embed, with FAISS views per output setting."""

    def __init__(self, folder: Path, spec: EmbedderSpec, approximate: bool = False) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.approximate = approximate
        self.ids: list[str] = []
        self.vectors = np.zeros((0, spec.dim), np.float32)
        self._views: dict[tuple, object] = {}
        self._rows: dict[str, np.ndarray] = {}  # target modality → vector rows (valid while ids don't change)
        self._synced = -1  # corpus size at the last update (a corpus only grows)
        if (self.folder / "ids.json").is_file():
            self.ids = json.loads((self.folder / "ids.json").read_text())
            self.vectors = np.load(self.folder / "vectors.npy")

    def update(self, corpus: Corpus, encode: Encode, progress: Callable[[float, str], None] | None = None) -> int:
        """Embed corpus items not yet indexed (by modality, in chunks); returns how many were added."""
        if self._synced == len(corpus.items):  # nothing new since the last call: the per-query fast path
            return 0
        known = set(self.ids)
        todo = [i for i in corpus.items if i.id not in known and self.spec.supports(i.modality)]
        self._synced = len(corpus.items)
        if not todo:
            return 0
        new_ids, new_vecs = [], []
        chunk = 16
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for modality in {i.modality for i in part}:
                group = [i for i in part if i.modality == modality]
                inputs = [i.text if modality == Modality.TEXT.value else str(corpus.file(i)) for i in group]
                new_vecs.append(encode(inputs, modality))
                new_ids += [i.id for i in group]
            if progress:
                progress(min(1.0, (start + chunk) / len(todo)), f"indexing {len(todo)} items for {self.spec.name}")
        self.ids += new_ids
        self.vectors = np.concatenate([self.vectors, *new_vecs]).astype(np.float32)
        self._views.clear()
        self._rows.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(self.folder / "vectors.npy", self.vectors)
        (self.folder / "ids.json").write_text(json.dumps(self.ids))
        return len(new_ids)

    def _target_rows(self, corpus: Corpus, target: str) -> np.ndarray:
        if target not in self._rows:
            by_id = corpus.by_id
            self._rows[target] = np.array(
                [n for n, i in enumerate(self.ids) if i in by_id and by_id[i].modality == target], np.int64)
        return self._rows[target]

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
        return [Hit(corpus.by_id[self.ids[rows[j]]], float(s)) for j, s in zip(idx[0], scores) if j >= 0]
