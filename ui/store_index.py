"""The demo's dense index kept in a vector database (``zoo demo --index URI``) instead of FAISS.

The database (:mod:`zoo.store`: Qdrant, embedded or a server) holds each corpus item's full-width float32
vector with the item's modality as metadata; a search asks it for the top ``k`` of the target modality.
What the database stores is one setting, so a search at other ``dimensions`` / ``precision`` is refused with
the reason (the FAISS index derives every setting from the same vectors). The ids already sent are listed
beside the other indexes, as for them; a collection that no longer holds them all is filled again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo import postprocess as pp
from zoo.errors import InvalidArgumentError
from zoo.spec import EmbedderSpec
from zoo.store import VectorStore, collection_name

from .corpus import Corpus
from .index import Hit, _CorpusIndex


class StoreIndex(_CorpusIndex):
    """Dense vectors of the corpus items one model can embed, in a collection of ``store``."""

    def __init__(self, folder: Path, spec: EmbedderSpec, store: VectorStore) -> None:
        self.store = store
        self.collection = collection_name(Path(folder).name)
        super().__init__(folder, spec)

    # no files of its own (``files`` is empty): index.json keeps the ids sent, the database keeps the vectors
    def _load(self) -> None:
        if self.store.count(self.collection) != len(self.ids):  # wiped or another database: start again
            self.ids = []

    def _add(self, parts: list, ids: list[str], modalities: list[str]) -> None:
        vectors = pp.postprocess(np.concatenate(parts).astype(np.float32), normalize_output=True,
                                 dimensions=self.spec.dim, precision="float32")  # as the FAISS index's views
        self.store.ensure(self.collection, "dense", vectors.shape[1])
        self.store.upsert(self.collection, "dense", ids, list(vectors), [{"modality": m} for m in modalities])

    def bytes_per_item(self, dimensions: int | None, precision: str) -> float:
        """Stored bytes of one item's vector (full-width float32, what the database holds)."""
        return self.spec.dim * 4.0

    def search(self, query: np.ndarray, corpus: Corpus, target: str, k: int = 8, *,
               dimensions: int | None = None, precision: str = "float32") -> list[Hit]:
        """Top ``k`` items of modality ``target`` for one full-width float query vector, from the database."""
        dims = pp.check_dimensions(dimensions, self.spec.dim, pp.check_precision(precision))
        if dims != self.spec.dim or precision != "float32":
            raise InvalidArgumentError(f"the database index ({self.store.uri}) holds full-width float32 vectors; "
                                       "search with dimensions 0 and precision float32, or start the demo "
                                       "without --index to try other settings")
        if not self.ids:
            return []
        q = pp.postprocess(query[None], normalize_output=True, dimensions=dims, precision="float32")[0]
        matches = self.store.search(self.collection, "dense", q, k, where={"modality": target})
        return [Hit(corpus.by_id[m.id], m.score) for m in matches if m.id in corpus.by_id]
