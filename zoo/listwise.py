"""A listwise reranker built from any dense text embedding model, after *E²Rank: Your Text Embedding can Also be an
Effective and Efficient Listwise Reranker* (Liu et al., 2025).

The query and the top documents of the first-stage ranking are written into one *listwise prompt*, the
pseudo-query (:func:`pseudo_queries`)::

    Given a search query and some relevant documents, rerank the documents that answer the query:
    Documents:
    [1] <first document, whitespace collapsed, cut to its share of the window>
    ...
    [K] <K-th document>
    Search Query: <query>

embedded with the same model (under its ``query`` prompt where it has one), and every candidate is re-scored by
its cosine with that vector. As in the paper's own evaluation, the pseudo-query's cosine is the whole score: the
original query's score is not mixed back in. The pseudo-query acts as pseudo-relevance feedback: the query is
enriched with what its best candidates say. The documents' vectors are the first stage's own, so reranking
costs one more embedding per query (:func:`pseudo_query_vectors`, what ``zoo eval --rerank e2rank`` uses).

The paper trains its model for this prompt; any other dense model gets the same construction untrained, and
whether it helps is measured, not assumed (docs/EVAL.md, "Reranking").

The window bounds the prompt: each of the K feedback documents is cut (at a word boundary, with the model's
own tokenizer) to an equal share of what the window leaves after the instruction, the numbering and the query,
so the pseudo-query holds the whole query and every feedback document (MiniLM's 256 tokens leave K = 20 documents
about 7 tokens each; :data:`DEFAULT_FEEDBACK` is the paper's 20). Only a query that leaves less than
:data:`MIN_DOC_TOKENS` a document holds fewer: the best that fit (:class:`PseudoQuery` says how many).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from . import postprocess as pp
from .errors import InvalidArgumentError
from .ranking import bi_sides, check_texts, check_top_k, model_of, ranked
from .spec import Modality

#: feedback documents in the pseudo-query: the paper's ``num_input_docs``
DEFAULT_FEEDBACK = 20
#: the instruction that opens the pseudo-query (the paper's, for a search query without a domain)
TASK = "Given a search query and some relevant documents, rerank the documents that answer the query:"
#: the fewest tokens a feedback document may be cut to: below that it says nothing
MIN_DOC_TOKENS = 4


def _sides(model: Any) -> tuple[str | None, str | None]:
    """The query and document prompt names of a dense text model, or an error naming the model."""
    spec = model.spec
    if not spec.supports(Modality.TEXT) or "dense" not in spec.outputs:
        raise InvalidArgumentError(f"the listwise reranker needs a dense text embedding model; {spec.name!r} gives "
                                   f"{', '.join(spec.outputs)} for {', '.join(m.value for m in spec.modalities)}",
                                   "model")
    _, q_prompt, d_prompt = bi_sides(spec, "dense")
    return q_prompt, d_prompt


def check_feedback(feedback: Any) -> int:
    """``feedback`` as a positive integer, else an error naming it."""
    if feedback is None or isinstance(feedback, bool) or not isinstance(feedback, (int, np.integer)) or feedback < 1:
        raise InvalidArgumentError(f"feedback must be a positive integer, got {feedback!r}", "feedback")
    return int(feedback)


def _window(model: Any) -> int:
    limit = getattr(model, "max_input_tokens", None)
    return int(limit if isinstance(limit, int) and limit > 0 else model.spec.max_length)


def _prompt(query: str, documents: Sequence[str]) -> str:
    listed = "\n".join(f"[{i}] {d}" for i, d in enumerate(documents, start=1))
    return f"{TASK}\nDocuments:\n{listed}\nSearch Query: {query}"


def _tokenize(model: Any, texts: list[str], prompt: str | None) -> list[Any]:
    if not callable(getattr(model, "tokenize", None)):
        raise InvalidArgumentError(f"model {model.spec.name!r} does not expose its tokenizer: the listwise reranker "
                                   "needs it to fit the feedback documents to the window", "model")
    try:
        return model.tokenize(texts, prompt_name=prompt)
    except InvalidArgumentError as e:  # a family without offsets: say what needed them
        raise InvalidArgumentError(f"the listwise reranker fits the feedback documents to the window with the "
                                   f"model's tokenizer: {e}", e.param or "model") from e


def _cut(text: str, view: Any, tokens: int) -> str:
    """The longest start of ``text`` of at most ``tokens`` of its tokens (``view``), ending at a word boundary
    where one is in reach (a word cut in two tokenizes into more pieces than it had)."""
    offs = [o for o in view.offsets if o is not None and o[1] > o[0]]
    if len(offs) <= tokens and not view.truncated:
        return text
    if tokens < 1 or not offs:
        return ""
    k = min(tokens, len(offs) - 1)
    while k > 1 and offs[k][0] == offs[k - 1][1] and text[offs[k][0] - 1: offs[k][0] + 1].isalnum():
        k -= 1  # the next token continues a word: end before that word instead
    return text[:offs[k - 1][1]]


class PseudoQuery(NamedTuple):
    """One listwise prompt: its ``text`` and how many feedback documents it ``held`` (fewer than given only where
    the query leaves less than :data:`MIN_DOC_TOKENS` of the window per document: the best ones are kept)."""

    text: str
    held: int


def _fewer(model: Any, query: str, given: int, prompt: str | None, window: int) -> tuple[int, int]:
    """``(documents, share)``: the most of ``given`` feedback documents that get :data:`MIN_DOC_TOKENS` each
    beside ``query`` (0 where none does), and their share of the window."""
    views = _tokenize(model, [_prompt(query, [""] * n) for n in range(given - 1, 0, -1)], prompt)
    for n, view in zip(range(given - 1, 0, -1), views):
        if not view.truncated and (window - view.count) // n >= MIN_DOC_TOKENS:
            return n, (window - view.count) // n
    return 0, 0


def pseudo_queries(model: Any, queries: Sequence[str], feedback: Sequence[Sequence[str]]) -> list[PseudoQuery]:
    """The listwise prompt of each query (see the module's text): ``queries[i]`` with its feedback documents
    ``feedback[i]`` (best first), each cut to an equal share of ``model``'s window, as its tokenizer counts under
    the model's query prompt, so that the whole prompt fits. A query too long to leave every document
    :data:`MIN_DOC_TOKENS` keeps the best documents that fit (``held`` says how many); one that leaves room for
    none is its prompt alone."""
    model = model_of(model)
    if len(queries) != len(feedback):
        raise InvalidArgumentError(f"{len(queries)} queries but {len(feedback)} feedback lists", "feedback")
    prompt, _ = _sides(model)
    window = _window(model)
    docs = [[" ".join(d.split()) for d in fb] for fb in feedback]  # one line each, as the paper writes them
    skeletons = _tokenize(model, [_prompt(q, [""] * len(fb)) for q, fb in zip(queries, docs)], prompt)
    held, shares = [], []
    for q, view, fb in zip(queries, skeletons, docs):
        room = window - view.count
        if fb and (view.truncated or room // len(fb) < MIN_DOC_TOKENS):
            n, share = _fewer(model, q, len(fb), prompt, window)  # rare: a query that fills most of the window
        else:
            n, share = len(fb), room // max(1, len(fb))
        held.append(n)
        shares.append(share)
    flat = [d for fb in docs for d in fb]
    views = _tokenize(model, flat, None) if flat else []
    starts = np.cumsum([0] + [len(fb) for fb in docs])
    out: list[str] = [""] * len(queries)
    todo = list(range(len(queries)))
    while todo:
        for i in todo:
            out[i] = _prompt(queries[i], [_cut(flat[j], views[j], shares[i])
                                          for j in range(starts[i], starts[i] + held[i])])
        todo = [i for i in todo if held[i]]  # a prompt with no document is what it is: the query alone
        checked = _tokenize(model, [out[i] for i in todo], prompt) if todo else []
        todo = [i for i, view in zip(todo, checked) if view.truncated]
        for i in todo:  # the pieces tokenize longer together than apart (merges across a line): cut more
            if shares[i] > MIN_DOC_TOKENS:
                shares[i] = max(MIN_DOC_TOKENS, shares[i] - max(1, shares[i] // 8))
            else:
                held[i] -= 1
    return [PseudoQuery(text, n) for text, n in zip(out, held)]


def pseudo_query_vectors(model: Any, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
    """``[len(texts), dim]`` unit float32 vectors of pseudo-query ``texts`` (:func:`pseudo_queries`) embedded
    under the model's query prompt: what the candidates' unit vectors are scored against (cosine)."""
    model = model_of(model)
    prompt, _ = _sides(model)
    vecs = model.encode(list(texts), Modality.TEXT, output="dense", normalize=False, precision="float32",
                        prompt_name=prompt, batch_size=batch_size)
    return pp.normalize(np.asarray(vecs, np.float32))


def scores(model: Any, query: str, documents: Sequence[str], *, feedback: int = DEFAULT_FEEDBACK,
           batch_size: int | None = None) -> np.ndarray:
    """``[len(documents)]`` float32 listwise scores of ``documents`` against ``query``: the model ranks them
    first (cosine of query and documents, each under its prompt); its top ``feedback`` (all, when fewer) and the
    query make the pseudo-query, and every document scores its cosine with the pseudo-query. The result does not
    depend on the order ``documents`` come in (ties aside).

    Args:
        model: a dense text model: a name, a folder, a loaded or a served model (``spec``, ``encode()`` and
            ``tokenize()``).
        feedback: documents written into the pseudo-query (:data:`DEFAULT_FEEDBACK`, the paper's).
    """
    model = model_of(model)
    feedback = check_feedback(feedback)
    check_texts(query, documents)
    q_prompt, d_prompt = _sides(model)
    controls = dict(output="dense", normalize=False, precision="float32", batch_size=batch_size)
    d = pp.normalize(np.asarray(model.encode(list(documents), Modality.TEXT, prompt_name=d_prompt, **controls),
                                np.float32))
    q = pp.normalize(np.asarray(model.encode([query], Modality.TEXT, prompt_name=q_prompt, **controls), np.float32))
    first = np.argsort(-(d @ q[0]), kind="stable")[:feedback]
    (pseudo,) = pseudo_queries(model, [query], [[documents[i] for i in first]])
    p = pseudo_query_vectors(model, [pseudo.text], batch_size=batch_size)
    return (d @ p[0]).astype(np.float32)


def rank(model: Any, query: str, documents: Sequence[str], *, top_k: int | None = None,
         return_documents: bool = False, feedback: int = DEFAULT_FEEDBACK,
         batch_size: int | None = None) -> list[dict[str, Any]]:
    """``documents`` ranked by their listwise :func:`scores`, best first, as :func:`zoo.ranking.ranked` reports:
    ``[{"corpus_id": i, "score": s, "text": document}]`` (``text`` with ``return_documents``; at most
    ``top_k``)."""
    top_k = check_top_k(top_k)
    got = scores(model, query, documents, feedback=feedback, batch_size=batch_size)
    return ranked(got, documents, top_k, return_documents)


__all__ = ["DEFAULT_FEEDBACK", "TASK", "PseudoQuery", "check_feedback", "pseudo_queries", "pseudo_query_vectors",
           "rank", "scores"]
