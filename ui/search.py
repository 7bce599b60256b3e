"""The demo's search: one index per model and output kind over the corpus, a first stage that ranks by one kind
(or fuses the dense and sparse rankings), and an optional second stage that reranks its top N
(:mod:`ui.rerank`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from zoo import kinds, scoring
from zoo.defaults import default_model_names
from zoo.errors import InvalidArgumentError, choices
from zoo.spec import Modality

from .backend import Backend, kind_outputs, searchable, supporting
from .corpus import Corpus
from .index import Hit
from .layouts import open_index
from .rerank import Choice, Reranked, Rerankers, check_depth, rerank_hits

HYBRID = ("dense", "sparse")  # the kinds whose rankings "hybrid" fuses
SHOWN = (Modality.IMAGE.value, Modality.VIDEO.value)  # result modalities the gallery displays


def retrieval_modes() -> tuple[str, ...]:
    """How a search ranks: "auto" by the model's first output kind, by any one kind (:func:`zoo.kinds.names`),
    or "hybrid", which fuses its :data:`HYBRID` rankings by reciprocal rank fusion."""
    return ("auto", *kinds.names(), "hybrid")


class Searcher:
    """Holds the corpus and one index per model; thread-safe indexing. ``reranker``: the operator's
    ``--reranker`` model (see :class:`ui.rerank.Rerankers`)."""

    def __init__(self, backend: Backend, corpus: Corpus, index_root: Path, approximate: bool = False,
                 store: Any = None, reranker: str | None = None) -> None:
        self.backend, self.corpus = backend, corpus
        self.index_root, self.approximate = Path(index_root), approximate
        self.store = store  # a zoo.store.VectorStore: dense vectors live there instead of in FAISS
        self.rerankers = Rerankers(backend, reranker)
        self.indexes: dict[Any, Any] = {}  # model (dense) or (model, kind) → its index
        self._lock = threading.Lock()

    def index_folder(self, model: str, weights: str, kind: str = "dense") -> Path:
        """Where a model's vectors are kept: keyed by its name and its weights' fingerprint, so vectors of
        other (older, retrained) weights are never served; other output kinds beside the dense vectors (the
        folder's suffix is the kind's, :attr:`zoo.kinds.OutputKind.index_suffix`)."""
        name = model.replace("/", "--").strip("-.")
        name = f"{name}@{weights}" if weights else name
        return self.index_root / f"{name}{kinds.get(kind).index_suffix}"

    def index(self, model: str, progress=None, kind: str = "dense") -> Any:
        """The model's index of output ``kind``, extended with any corpus items it has not embedded yet."""
        with self._lock:
            embedder = self.backend.embedder(model)
            handler = kinds.get(kind)
            key = (model, kind) if handler.index_suffix else model  # a plain folder, a plain key
            if key not in self.indexes:
                folder = self.index_folder(model, embedder.weights_fingerprint, kind)
                if self.store is not None and handler.index_layout == kinds.VECTORS:  # the database keeps vectors
                    from .store_index import StoreIndex

                    self.indexes[key] = StoreIndex(folder, embedder.spec, self.store)
                else:
                    self.indexes[key] = open_index(kind, folder, embedder.spec, self.approximate)
            self.indexes[key].update(self.corpus, lambda x, m: kind_outputs(embedder, x, m, kind), progress)
            return self.indexes[key]

    def search(self, model: str, query: Any, modality: Modality, target: str, k: int, dimensions: int,
               precision: str, progress=None, mode: str = "auto", rerank_n: int = 0) -> tuple[list, list[dict], str]:
        """Run one query; returns gallery entries, ranked results and a latency line (with what one item of
        the index costs to store). ``rerank_n``: how many of the first stage's top results the second stage
        re-scores and re-orders (0: none); each result then carries ``score_before`` and ``rank_before`` too,
        and where no reranker reads the documents the latency line says why."""
        depth = check_depth(rerank_n)
        spec = self.backend.spec(model)
        if not searchable(spec):  # indexing with it would fail on every corpus item
            raise InvalidArgumentError(f"{model} scores (query, document) pairs: it reranks (zoo demo --reranker "
                                       f"{model}) but cannot index the corpus; search with an embedding model",
                                       "model")
        plan = self.plan(model, modality, target, mode)
        dims = int(dimensions) or None
        indexes = [self.index(m, progress, kind) for m, kind in plan]
        choice = self.rerankers.pick(model, modality, Modality(target)) if depth else None
        fetch = max(int(k), depth if isinstance(choice, Choice) else 0)  # the reranker reads the top N
        t0 = time.perf_counter()
        queries = [kinds.items_of(kind_outputs(self.backend.embedder(m), [query], modality.value, kind, query=True),
                                  kind)[0] for m, kind in plan]
        t1 = time.perf_counter()
        rankings = [index.search(q, self.corpus, target, fetch, dimensions=dims, precision=precision)
                    for index, q in zip(indexes, queries)]
        if len(rankings) == 1:
            hits = rankings[0]
        else:  # reciprocal rank fusion of the dense and the sparse ranking
            by_id = {h.item.id: h.item for ranking in rankings for h in ranking}
            fused = scoring.reciprocal_rank_fusion([[h.item.id for h in ranking] for ranking in rankings])[:fetch]
            hits = [Hit(by_id[key], score) for key, score in fused]
        t2 = time.perf_counter()
        index = indexes[0]
        costs = " + ".join(f"{i.kind} {i.bytes_per_item(dims, precision):,.0f} B" for i in indexes)
        used = "+".join(kind if m == model else f"{kind} of {m}" for m, kind in plan)
        latency = (f"query embedding {1000 * (t1 - t0):.1f} ms · search {1000 * (t2 - t1):.1f} ms · "
                   f"{len(index.ids)} items indexed · {used} · {costs} per item · "
                   f"{self.backend.kind} backend · {model}")
        if isinstance(choice, Choice):
            second, seconds = rerank_hits(choice, self.corpus, query, hits, depth)
            latency += (f" · reranked the top {min(depth, len(hits))} by {choice.name} in {1000 * seconds:.1f} ms")
            return self._reranked(second[: int(k)], latency)
        if isinstance(choice, str):
            latency += f" · not reranked: {choice}"
        hits = hits[: int(k)]
        results = [{"rank": r + 1, "score": round(h.score, 4), "label": h.item.label, "modality": h.item.modality,
                    "id": h.item.id} for r, h in enumerate(hits)]
        gallery = [(str(self.corpus.file(h.item)), f"{h.score:.3f}  {h.item.label}") for h in hits
                   if h.item.modality in SHOWN]
        return gallery, results, latency

    def plan(self, model: str, modality: Modality, target: str, mode: str) -> list[tuple[str, str]]:
        """The ``(model, output kind)`` rankings a search of ``mode`` runs: the model's own kind, or for "hybrid"
        each of :data:`HYBRID`, a kind the model does not give taken from another model that embeds the same
        query and corpus modalities (the default sparse text model first), so a dense text model searches
        hybrid beside a sparse one."""
        given = kinds.available(self.backend.spec(model).outputs)  # derived kinds too
        if mode not in retrieval_modes():
            raise InvalidArgumentError(f"unknown retrieval {mode!r}; choose one of {choices(retrieval_modes())}",
                                       "mode")
        if mode != "hybrid":
            kind = self.backend.spec(model).outputs[0] if mode == "auto" else mode
            if kind not in given:
                raise InvalidArgumentError(f"retrieval {mode!r} needs outputs {[kind]} but {model} gives "
                                           f"{choices(given)}; choose one of {choices(retrieval_modes())}", "mode")
            return [(model, kind)]
        plan = []
        for kind in HYBRID:
            partner = model if kind in given else self._partner(kind, modality, target)
            if partner is None:
                raise InvalidArgumentError(f"retrieval 'hybrid' needs outputs {list(HYBRID)}: {model} gives "
                                           f"{choices(given)} and no other model here gives {kind} output for "
                                           f"{modality.value} → {target}", "mode")
            plan.append((partner, kind))
        return plan

    def _partner(self, kind: str, modality: Modality, target: str) -> str | None:
        """A model that gives ``kind`` for ``modality`` queries over ``target`` items: a default model first."""
        found = [m for m in supporting(self.backend, (modality, Modality(target)))
                 if kind in kinds.available(self.backend.spec(m).outputs)]
        ranked = sorted(found, key=lambda m: (m not in default_model_names(), m))
        return ranked[0] if ranked else None

    def _reranked(self, rows: list[Reranked], latency: str) -> tuple[list, list[dict], str]:
        """The page's view of reranked results: each with its score before and after, and its rank before."""
        results = [{"rank": r + 1, "score": round(x.score, 4), "label": x.hit.item.label,
                    "modality": x.hit.item.modality, "id": x.hit.item.id, "score_before": round(x.score_before, 4),
                    "rank_before": x.rank_before, "reranked": x.reranked} for r, x in enumerate(rows)]
        gallery = [(str(self.corpus.file(x.hit.item)),
                    (f"{x.score:.3f} (was {x.score_before:.3f}, #{x.rank_before})" if x.reranked
                     else f"{x.score:.3f}") + f"  {x.hit.item.label}")
                   for x in rows if x.hit.item.modality in SHOWN]
        return gallery, results, latency
