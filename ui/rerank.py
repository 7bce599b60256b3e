"""The demo's second stage: the first stage's top N results re-scored by a reranker and re-ordered.

Which reranker reads a search's documents (:meth:`Rerankers.pick`):

1. the operator's ``--reranker MODEL``, where it reads them: a cross-encoder scores (text query, text document)
   pairs; any other model scores documents of a modality it embeds against a query it embeds
   (:func:`zoo.rerank`);
2. else, for text documents of a text query, the listwise reranker (:func:`zoo.listwise.rank`) built from a
   text embedding model (dense, text only): the search's own, else the default text model where the backend
   has it (the demo's weights that ship, so it works from the main command);
3. else none, and the search says why instead of failing.

Every model call goes through the demo's backend (:class:`ui.backend.Backend`): in-process, or the served
models on Triton, as the search's own calls do.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoo import kinds
from zoo.defaults import default_model
from zoo.errors import InvalidArgumentError, ZooError
from zoo.spec import EmbedderSpec, Modality

from .backend import Backend
from .corpus import Corpus
from .index import Hit

MAX_RERANK = 50  # the most first-stage results one search reranks (each is a model call's item)
DEFAULT_RERANK = 20
DENSE = "dense"

#: (query, documents) -> the ranking, best first: ``[{"corpus_id": i, "score": s}, …]`` (zoo.rerank's shape)
Rank = Callable[[Any, list], list[dict[str, Any]]]


@dataclass(frozen=True)
class Choice:
    """The reranker one search uses: what the page calls it, and how it ranks."""

    name: str
    rank: Rank


def check_depth(depth: Any) -> int:
    """``depth`` (how many first-stage results are reranked; 0 = none) as an int in 0..:data:`MAX_RERANK`."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Real) or not math.isfinite(depth) \
            or depth != int(depth) or not 0 <= depth <= MAX_RERANK:
        raise InvalidArgumentError(f"rerank_n must be a whole number in 1..{MAX_RERANK} (0: no reranking), got "
                                   f"{depth!r}", "rerank_n")
    return int(depth)


def reads(spec: EmbedderSpec, query: Modality, target: Modality) -> bool:
    """Whether a reranker of this spec can score ``target`` documents against a ``query``: a cross-encoder
    reads text pairs; any other model must embed both modalities."""
    if kinds.get(spec.output).pairs:
        return query is Modality.TEXT and target is Modality.TEXT
    return spec.supports(query) and spec.supports(target)


def text_only_dense(spec: EmbedderSpec) -> bool:
    """Whether a model is a text embedding model the listwise reranker is built from: dense first, text only."""
    return spec.output == DENSE and spec.modalities == (Modality.TEXT,)


class Rerankers:
    """Picks and runs the reranker of each search (see the module's text)."""

    def __init__(self, backend: Backend, reranker: str | None = None) -> None:
        self.backend = backend
        self.reranker = reranker or None

    def check(self) -> None:
        """Fail now, naming ``--reranker``, when the backend does not know the operator's reranker."""
        if self.reranker is None:
            return
        try:
            self.backend.spec(self.reranker)
        except ZooError as err:
            raise InvalidArgumentError(f"--reranker {self.reranker}: {err}", "reranker") from None

    def describe(self) -> str:
        """One line for the page: which reranker reads which documents."""
        listwise = "text documents of a text query: the listwise reranker of a text embedding model"
        if self.reranker is None:
            return f"Reranker: {listwise}."
        return f"Reranker: **{self.reranker}** where it reads the documents; other {listwise}."

    def _listwise_model(self, model: str) -> str | None:
        """The text embedding model a listwise reranker is built from: the search's where it is one (dense, text
        only), else the default text model. A multimodal model's text side is not used: its window is short
        (CLIP's 77 tokens) and it may not expose the tokenizer the pseudo-query is fitted with."""
        if text_only_dense(self.backend.spec(model)):
            return model
        fallback = default_model(Modality.TEXT)
        if fallback in self.backend.models() and text_only_dense(self.backend.spec(fallback)):
            return fallback
        return None

    def pick(self, model: str, query: Modality, target: Modality) -> Choice | str:
        """The reranker of a search by ``model`` of ``target`` documents for a ``query``, or why there is none."""
        if self.reranker is not None and reads(self.backend.spec(self.reranker), query, target):
            embedder = self.backend.embedder(self.reranker)

            def rank(q: Any, documents: list) -> list[dict[str, Any]]:
                import zoo

                return zoo.rerank(embedder, q, documents, modality=target, query_modality=query)

            return Choice(self.reranker, rank)
        if query is Modality.TEXT and target is Modality.TEXT:
            text_model = self._listwise_model(model)
            if text_model is not None:
                embedder = self.backend.embedder(text_model)

                def listwise(q: Any, documents: list) -> list[dict[str, Any]]:
                    from zoo import listwise as lw

                    return lw.rank(embedder, q, documents)

                return Choice(f"listwise ({text_model})", listwise)
        given = (f"--reranker {self.reranker} reads no {target.value} documents for a {query.value} query"
                 if self.reranker else "the demo was started without --reranker")
        return (f"no reranker applies to {target.value} documents of a {query.value} query ({given}; the listwise "
                "reranker reads text documents of a text query); start the demo with --reranker MODEL, a model "
                f"that embeds {query.value} and {target.value}")


def document(corpus: Corpus, hit: Hit) -> str:
    """What a reranker reads of a hit: a text item's text, else its file's path."""
    return (hit.item.text or "") if hit.item.modality == Modality.TEXT.value else str(corpus.file(hit.item))


@dataclass
class Reranked:
    """A hit after the second stage: its score now, and where the first stage had it."""

    hit: Hit
    score: float
    score_before: float
    rank_before: int  # 1-based
    reranked: bool  # False: beyond the depth, kept in first-stage order with its first-stage score


def rerank_hits(choice: Choice, corpus: Corpus, query: Any, hits: list[Hit],
                depth: int) -> tuple[list[Reranked], float]:
    """The first ``depth`` hits re-ordered by ``choice``'s scores (then the others, as they were); and the
    seconds it took."""
    head, tail = hits[:depth], hits[depth:]
    t0 = time.perf_counter()
    ranking = choice.rank(query, [document(corpus, h) for h in head]) if head else []
    seconds = time.perf_counter() - t0
    out = [Reranked(head[r["corpus_id"]], float(r["score"]), head[r["corpus_id"]].score, int(r["corpus_id"]) + 1,
                    True) for r in ranking]
    out += [Reranked(h, h.score, h.score, depth + n + 1, False) for n, h in enumerate(tail)]
    return out, seconds
