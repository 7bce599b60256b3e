"""The clients' jobs for cross-encoders, sans IO like :mod:`serving.client_core`'s: ``predict()`` and ``rank()``,
with the names, arguments and results of :class:`zoo.families.cross.CrossEncoder` (sentence-transformers'
``CrossEncoder``). Each is ``encode()``'s job with the ``score`` output over pairs that travel as one ``TEXT``
element each (:func:`zoo.ranking.pair_to_wire`), so chunking, replicas, retries, priorities and the mapping of
errors (a bad pair is an :class:`zoo.errors.InputError` naming its index in the call) are ``encode()``'s. The sync
and async clients drive them (:mod:`serving.client`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.front import check_items
from zoo.kinds import SCORE
from zoo.ranking import check_top_k, cross_pairs, ranked
from zoo.spec import Modality

from .client_core import Job, _Core


def check_cross_encoder(core: _Core, method: str) -> None:
    """Refuse ``method`` (``predict`` or ``rank``) of a served model that does not score pairs, naming it."""
    if not core.reads_pairs:
        raise InvalidArgumentError(
            f"model {core.spec.name!r} gives {', '.join(map(repr, core.spec.outputs))} output, not scores of (query, "
            f"document) pairs: {method}() needs a cross-encoder (zoo.rerank(model, query, documents) scores "
            "documents with any model)", "model")


def predict_job(core: _Core, pairs: Sequence[Any], *, batch_size: int | None = None,
                max_tokens_per_doc: int | None = None, prompt_name: str | None = None, truncate: str = "end",
                priority: str | None = None, method: str = "predict") -> Job[np.ndarray]:
    """``predict()``: ``[len(pairs)]`` float32 scores of ``(query, document)`` pairs, as
    :meth:`zoo.families.cross.CrossEncoder.predict` gives them in-process."""
    check_cross_encoder(core, method)
    check_items(pairs)
    controls = {"output": SCORE, "max_tokens_per_doc": max_tokens_per_doc, "prompt_name": prompt_name,
                "truncate": truncate}
    return core._encode_job(list(pairs), Modality.TEXT, batch_size, controls, priority)


def rank_job(core: _Core, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, *, batch_size: int | None = None, max_tokens_per_doc: int | None = None,
             priority: str | None = None) -> Job[list[dict[str, Any]]]:
    """``rank()``: ``documents`` ranked against ``query``, best first, as
    :meth:`zoo.families.cross.CrossEncoder.rank` ranks them: ``[{"corpus_id": i, "score": s, "text": document}]``
    (``text`` with ``return_documents``), at most ``top_k``."""
    check_cross_encoder(core, "rank")
    pairs = cross_pairs(query, documents)
    top_k = check_top_k(top_k)  # before anything is sent
    job = predict_job(core, pairs, batch_size=batch_size,
                      max_tokens_per_doc=max_tokens_per_doc, priority=priority, method="rank")
    return Job(job.parts, lambda parts: ranked(job.finish(parts), documents, top_k, return_documents), "rank")
