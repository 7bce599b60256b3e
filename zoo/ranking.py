"""Scoring a query against documents with any model, and the ranking every reranking API reports.

- **Cross-encoders** (:mod:`zoo.families.cross`) read each ``(query, document)`` pair together and give one
  relevance score per pair (:meth:`~zoo.families.cross.CrossEncoder.predict`), with their card's activation.
- **Bi-encoders** embed the query (its ``query`` prompt where the model has one) and the documents (their
  ``document`` prompt where it has one) and score them as their output kind scores
  (:meth:`zoo.kinds.OutputKind.score`): cosine for dense rows (normalized by default), MaxSim for multi-vector
  output (ColBERT, ColPali pages), dot products for sparse rows. Documents may be of another modality than the
  query where the model embeds both into one space (images through an aligned model, pages through ColPali).

Either way the scores are the ``score`` output kind (:mod:`zoo.kinds.score`): one float32 per document, and
:func:`rerank` reports them as sentence-transformers' ``CrossEncoder.rank`` does, best first:
``[{"corpus_id": i, "score": s, "text": document}]`` (``text`` with ``return_documents=True``).

The model may be a registry name or folder, a loaded model or a served one (:mod:`serving.client`): anything
with zoo's ``spec`` and ``encode()`` (and ``predict()`` for a cross-encoder).

A pair travels to a served cross-encoder as one text element, the UTF-8 JSON array ``[query, document]``
(:func:`pair_to_wire`), so that Triton's dynamic batcher batches pairs like any texts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kinds
from .errors import InputError, InvalidArgumentError
from .front import check_items
from .spec import Modality

#: a wire pair's JSON besides its two texts (brackets, quotes, the comma and a space); the bound before it is
#: parsed is both sides at ``max_chars`` characters, escaped at worst 6 bytes a character, plus this
PAIR_OVERHEAD = 16


def is_pair(item: Any) -> bool:
    """Whether ``item`` is a ``(query, document)`` pair of two strings (a tuple or list)."""
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)


def check_pair(item: Any, index: int) -> tuple[str, str]:
    """``item`` as a ``(query, document)`` pair of strings, or an :class:`InputError` naming its index."""
    from .media.text import decode_text

    if not is_pair(item):
        raise InputError(index, f"a pair is two strings (query, document); got {type(item).__name__}"
                         + (f" of {len(item)}" if isinstance(item, (tuple, list)) else ""))
    return decode_text(item[0], index), decode_text(item[1], index)  # each side valid Unicode (it travels)


def pair_chars(spec: Any) -> int:
    """Characters of each side of a pair worth sending to a model with ``spec``: what its window could read
    (:func:`zoo.media.text.max_chars`) and one more, so the server still sees that a longer text was cut. A pair
    repeats its query for every document: sent whole, one long query would travel a thousand times."""
    from .media.text import max_chars

    return max_chars(spec.max_length) + 1


def pair_to_wire(query: str, document: str, limit: int | None = None) -> bytes:
    """A pair as the text element a served cross-encoder reads: the UTF-8 JSON array ``[query, document]`` (each
    side cut to ``limit`` characters when given, see :func:`pair_chars`)."""
    return json.dumps([query[:limit], document[:limit]], ensure_ascii=False).encode("utf-8")


def pair_from_wire(raw: Any, index: int, max_chars: int) -> tuple[str, str]:
    """Undo :func:`pair_to_wire` (a pair given in-process passes through :func:`check_pair`). The element's size
    is bounded before it is parsed: at most two sides of ``max_chars`` characters, escaped."""
    if isinstance(raw, (tuple, list)):
        return check_pair(raw, index)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InputError(index, f"a pair is two strings (query, document); got {type(raw).__name__}")
    limit = 2 * 6 * max_chars + PAIR_OVERHEAD
    if len(raw) > limit:
        raise InputError(index, f"the pair holds {len(raw)} bytes; at most {limit} (two texts of {max_chars} "
                         "characters)")
    value = None
    if bytes(raw[:1]) == b"[":  # a pair's JSON is an array; anything else is refused before it is parsed
        try:
            value = json.loads(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested 100,000 deep
            value = None
    if not is_pair(value):
        raise InputError(index, "a cross-encoder reads (query, document) pairs: two strings, or on the wire the "
                         "UTF-8 JSON array [query, document]")
    return value[0], value[1]


def check_documents(documents: Any) -> None:
    """Refuse anything but a non-empty list of documents."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise InvalidArgumentError(f"documents must be a list, got {type(documents).__name__}", "documents")
    if len(documents) == 0:
        raise InvalidArgumentError("documents is empty: pass at least one document", "documents")


def check_texts(query: Any, documents: Any) -> None:
    """Refuse anything but a string query against a non-empty list of string documents (what rerankers that read
    text take), naming the bad one."""
    check_documents(documents)
    if not isinstance(query, str):
        raise InvalidArgumentError(f"the query must be a string, got {type(query).__name__}", "query")
    bad = next((i for i, d in enumerate(documents) if not isinstance(d, str)), None)
    if bad is not None:
        raise InvalidArgumentError(f"documents[{bad}] must be a string (this reranker reads text), got "
                                   f"{type(documents[bad]).__name__}", "documents")


def cross_pairs(query: Any, documents: Any) -> list[tuple[str, str]]:
    """The ``(query, document)`` pairs a cross-encoder scores to rank ``documents`` against ``query``
    (checked by :func:`check_texts`)."""
    check_texts(query, documents)
    return [(query, d) for d in documents]


def refuse_doc_tokens(model: Any, max_tokens_per_doc: int | None) -> None:
    """Refuse ``max_tokens_per_doc`` for a model that embeds documents whole (a bi-encoder)."""
    if max_tokens_per_doc is not None:
        raise InvalidArgumentError(f"max_tokens_per_doc applies to cross-encoders; model {model.spec.name!r} embeds "
                                   "the documents whole", "max_tokens_per_doc")


def check_top_k(top_k: Any) -> int | None:
    """``None`` or a positive integer (the most results a ranking keeps)."""
    return kinds.check_count(top_k, "top_k")


def ranked(scores: np.ndarray, documents: Sequence[Any] | None = None, top_k: int | None = None,
           return_documents: bool = False) -> list[dict[str, Any]]:
    """Scores as sentence-transformers' ``CrossEncoder.rank`` reports them: ``{"corpus_id", "score"}`` (and
    ``"text"``: the document, with ``return_documents``), best first (ties in document order), at most
    ``top_k``."""
    top_k = check_top_k(top_k)
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top_k]
    out = []
    for i in order:
        row: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
        if return_documents and documents is not None:
            row["text"] = documents[i]
        out.append(row)
    return out


def is_cross_encoder(model: Any) -> bool:
    """Whether ``model`` scores pairs itself (its spec's first output is the ``score`` kind)."""
    return kinds.get(model.spec.output).pairs


def model_of(model: Any) -> Any:
    """``model`` loaded when it is a name or folder (:func:`zoo.create`); a loaded or served model as it is;
    anything else refused."""
    if isinstance(model, str):
        from .registry import create

        return create(model)
    if not hasattr(model, "spec") or not hasattr(model, "encode"):
        raise InvalidArgumentError(f"model must be a name, a folder or a loaded model, got {type(model).__name__}",
                                   "model")
    return model


def bi_sides(spec: Any, output: str | None = None) -> tuple[str, str | None, str | None]:
    """How a bi-encoder scores: the output kind (``output`` checked, default the model's first) and the prompt
    names of the query side and of the document side (``query`` / ``document`` where the model has them, else
    its default). What a caller that embeds the two sides itself (a server's door, asynchronously) asks for."""
    kind = kinds.check_output(output, spec.outputs, spec.name)
    return kind, kinds.side_prompt(spec.prompts, True), kinds.side_prompt(spec.prompts, False)


def bi_scores(kind: str, queries: Any, documents: Any, pairwise: bool = False) -> np.ndarray:
    """Float32 scores of two results of output ``kind`` as its handler scores them: ``[queries, documents]``, or
    with ``pairwise`` ``[N]``, item ``i`` of ``queries`` against item ``i`` of ``documents``."""
    handler = kinds.get(kind)
    if not pairwise:
        return np.asarray(handler.score(queries, documents), np.float32)
    n = handler.count(queries)
    return np.array([handler.score(handler.take(queries, [i]), handler.take(documents, [i]))[0, 0] for i in range(n)],
                    np.float32).reshape(n)


def scores(model: Any, query: Any, documents: Sequence[Any], *, modality: Modality | str = Modality.TEXT,
           query_modality: Modality | str = Modality.TEXT, output: str | None = None,
           batch_size: int | None = None, max_tokens_per_doc: int | None = None) -> np.ndarray:
    """``[len(documents)]`` float32 scores of ``documents`` against ``query`` (see the module's text).

    Args:
        model: a name, folder, loaded or served model.
        query: one query item of ``query_modality``.
        documents: items of ``modality`` (text for a cross-encoder).
        output: a bi-encoder's output kind to score with (default: its first).
        max_tokens_per_doc: a cross-encoder's documents are cut to that many tokens first.
    """
    model = model_of(model)
    check_documents(documents)
    if is_cross_encoder(model):
        if output is not None:
            kinds.check_output(output, model.spec.outputs, model.spec.name)
        for side in (modality, query_modality):
            if str(side) != Modality.TEXT.value:
                raise InvalidArgumentError(f"model {model.spec.name!r} scores text pairs; it reads no {side}",
                                           "modality")
        return model.predict(cross_pairs(query, documents), batch_size=batch_size,
                             max_tokens_per_doc=max_tokens_per_doc)
    refuse_doc_tokens(model, max_tokens_per_doc)
    kind, q_prompt, d_prompt = bi_sides(model.spec, output)
    q = model.encode([query], query_modality, output=kind, batch_size=batch_size, prompt_name=q_prompt)
    d = model.encode(list(documents), modality, output=kind, batch_size=batch_size, prompt_name=d_prompt)
    return bi_scores(kind, q, d)[0]


def rerank(model: Any, query: Any, documents: Sequence[Any], *, top_k: int | None = None,
           return_documents: bool = False, modality: Modality | str = Modality.TEXT,
           query_modality: Modality | str = Modality.TEXT, output: str | None = None, batch_size: int | None = None,
           max_tokens_per_doc: int | None = None) -> list[dict[str, Any]]:
    """``documents`` ranked against ``query`` by ``model`` (any kind: see the module's text), best first, as
    sentence-transformers' ``CrossEncoder.rank`` reports: ``[{"corpus_id": i, "score": s, "text": document}]``.
    (``top_k``: at most that many; ``return_documents``: each result carries its document as ``text``)."""
    top_k = check_top_k(top_k)
    got = scores(model, query, documents, modality=modality, query_modality=query_modality, output=output,
                 batch_size=batch_size, max_tokens_per_doc=max_tokens_per_doc)
    return ranked(got, documents, top_k, return_documents)


def score_pairs(model: Any, pairs: Sequence[Any], *, output: str | None = None, batch_size: int | None = None,
                max_tokens_per_doc: int | None = None) -> np.ndarray:
    """``[len(pairs)]`` float32 scores of text pairs ``(a, b)``: a cross-encoder's own, or a bi-encoder's score of
    ``b`` against ``a`` (``a`` under the query prompt, ``b`` under the document prompt)."""
    model = model_of(model)
    check_items(pairs)
    checked = [check_pair(p, i) for i, p in enumerate(pairs)]
    if is_cross_encoder(model):
        if output is not None:
            kinds.check_output(output, model.spec.outputs, model.spec.name)
        return model.predict(checked, batch_size=batch_size, max_tokens_per_doc=max_tokens_per_doc)
    refuse_doc_tokens(model, max_tokens_per_doc)
    kind, q_prompt, d_prompt = bi_sides(model.spec, output)
    a = model.encode([p[0] for p in checked], Modality.TEXT, output=kind, batch_size=batch_size, prompt_name=q_prompt)
    b = model.encode([p[1] for p in checked], Modality.TEXT, output=kind, batch_size=batch_size, prompt_name=d_prompt)
    return bi_scores(kind, a, b, pairwise=True)
