"""Output kinds beyond one dense vector: their types, their output controls and their post-processing.

============  =================================================  ==========================================
output        ``encode()`` returns                               controls
============  =================================================  ==========================================
dense         ``ndarray [N, d]``                                 normalize, dimensions, precision
multivector   ``list`` of N ``ndarray [n_i, d]`` (one row per    normalize, dimensions and precision per
              token or patch)                                    vector; ``max_vectors`` (budget per item)
sparse        ``scipy.sparse.csr_matrix [N, vocab_size]``        ``top_k`` terms per item; normalize (off by
              float32 term weights                               default); precision float32 only
fde           ``ndarray [N, fde_width]``: a MUVERA fixed-        normalize/dimensions of the vectors it is
              dimensional encoding of the multi-vector output    built from; precision of the result
============  =================================================  ==========================================

Why a list for multi-vector output: items keep very different counts (a query has a dozen tokens, a page
image a thousand patches), so one padded array would cost memory in proportion to the longest item and
every caller would have to carry its mask. A list is what sentence-transformers and fastembed return too;
on the wire the rows travel flat with their lengths (see ``serving.contract``).

``max_vectors=k`` keeps at most ``k`` vectors per item. Models trained for it (meta tokens, Matryoshka
multi-vector: ``options["vector_budget"] == "first"``) keep their first ``k``; token-level models
(ColBERT, ColPali) are pooled to ``k`` by Ward hierarchical clustering on cosine distance, each cluster
becoming its mean (the token pooling of PyLate and sentence-transformers, here with a fixed count).

Whether an item is a query or a document matters to late-interaction models (query expansion, skip lists)
and to FDEs (queries sum, documents average): a call is on the query side when its ``prompt_name`` is
``"query"``, on the document side otherwise.
"""

from __future__ import annotations

import numpy as np

from . import postprocess as pp
from .errors import InvalidArgumentError, choices
from .spec import OUTPUT_KINDS

DERIVED = {"fde": "multivector"}  # derived output → the kind it is computed from
SPARSE_PRECISIONS = ("float32",)  # scipy.sparse has no float16
QUERY = "query"


def check_output(output: str | None, produced: tuple[str, ...], model: str) -> str:
    """The output kind a call asks for (``None``: the model's first), or an error naming those it has."""
    if output is None:
        return produced[0]
    available = list(produced) + [k for k, base in DERIVED.items() if base in produced]
    if output not in available:
        known = f"; kinds in general: {choices(list(OUTPUT_KINDS) + list(DERIVED))}" if output not in (
            *OUTPUT_KINDS, *DERIVED) else ""
        raise InvalidArgumentError(f"model {model!r} cannot give output {output!r}; it gives "
                                   f"{choices(available)}{known}", "output")
    return output


def check_count(value: int | None, name: str) -> int | None:
    """``None`` or a positive integer, else an error naming the argument."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}", name)
    return None if value is None else int(value)


def check_controls(output: str, *, dimensions: int | None, precision: str, max_vectors: int | None,
                   top_k: int | None) -> None:
    """Refuse output controls that mean nothing for ``output`` (instead of ignoring them)."""
    if max_vectors is not None and output != "multivector":
        raise InvalidArgumentError(f"max_vectors applies to multivector output, not {output!r}", "max_vectors")
    if top_k is not None and output != "sparse":
        raise InvalidArgumentError(f"top_k applies to sparse output, not {output!r}", "top_k")
    if output == "sparse":
        if dimensions is not None:
            raise InvalidArgumentError("dimensions does not apply to sparse output (its width is the vocabulary); "
                                       "use top_k to keep fewer terms", "dimensions")
        if precision not in SPARSE_PRECISIONS:
            raise InvalidArgumentError(f"sparse output values come as {choices(SPARSE_PRECISIONS)}, not "
                                       f"{precision!r}", "precision")
    if output == "fde" and precision in pp.CALIBRATED:
        raise InvalidArgumentError(f"precision {precision!r} assumes unit vectors and an FDE is not one; use "
                                   "float16, float8 or binary", "precision")


def default_normalize(output: str) -> bool:
    """Whether ``encode()`` L2-normalizes when a call does not say: sparse weights are left as the model
    gives them (as sentence-transformers' SparseEncoder does), vectors are normalized."""
    return output != "sparse"


# ---- multi-vector -----------------------------------------------------------------------------------
def pool_vectors(vectors: np.ndarray, k: int) -> np.ndarray:
    """Pool ``[n, d]`` token vectors to at most ``k`` (Ward clustering on cosine distance, cluster means);
    an item with ``k`` or fewer vectors is returned unchanged."""
    n = len(vectors)
    if n <= k:
        return vectors
    if k == 1:
        return vectors.mean(0, keepdims=True)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    unit = pp.normalize(vectors)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="ward"), t=k, criterion="maxclust")
    return np.stack([vectors[labels == c].mean(0) for c in np.unique(labels)]).astype(np.float32)


def postprocess_multivector(items: list[np.ndarray], *, normalize_output: bool, dimensions: int | None,
                            precision: str, max_vectors: int | None, budget: str = "pool") -> list[np.ndarray]:
    """Per item ``[n_i, d]``: Matryoshka truncation → normalize → the ``max_vectors`` budget (first ``k`` or
    pooled to ``k``, then normalized again) → quantize, each vector like a dense row."""
    if not items:
        return []
    flat = pp.truncate(np.concatenate(items).astype(np.float32, copy=False), dimensions)  # every vector at once
    if normalize_output:
        flat = pp.normalize(flat)
    out = split_rows(flat, [len(x) for x in items])
    if max_vectors is not None:
        def within(x: np.ndarray) -> np.ndarray:  # an item over the budget: its first k, or pooled to k
            x = x[:max_vectors] if budget == "first" else pool_vectors(x, max_vectors)
            return pp.normalize(x) if normalize_output else x

        out = [x if len(x) <= max_vectors else within(x) for x in out]
    if precision == "float32":
        return out
    return split_rows(pp.quantize(np.concatenate(out), precision), [len(x) for x in out])


def split_rows(flat: np.ndarray, lengths) -> list[np.ndarray]:
    """Consecutive items' rows of ``flat``, ``lengths[i]`` rows for item ``i`` (the flat form on the wire)."""
    return np.split(flat, np.cumsum(lengths)[:-1])


# ---- sparse -----------------------------------------------------------------------------------------
def heaviest(matrix, top_k: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row of a ``csr_matrix`` as ``(column ids, weights)``, heaviest first (``top_k``: at most that many;
    ties keep column order)."""
    out = []
    for r in range(matrix.shape[0]):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        order = np.argsort(-matrix.data[lo:hi], kind="stable")[:top_k]
        out.append((matrix.indices[lo:hi][order], matrix.data[lo:hi][order]))
    return out


def postprocess_sparse(matrix, *, normalize_output: bool, top_k: int | None):
    """A float32 ``csr_matrix`` of term weights with at most ``top_k`` terms per row (the largest),
    L2-normalized rows when asked; column indices sorted within each row."""
    import scipy.sparse as sps

    m = sps.csr_matrix(matrix, dtype=np.float32)
    m.eliminate_zeros()
    if top_k is not None:
        kept = heaviest(m, top_k)
        rows = np.repeat(np.arange(m.shape[0]), [len(c) for c, _ in kept])
        m = sps.csr_matrix((np.concatenate([v for _, v in kept]), (rows, np.concatenate([c for c, _ in kept]))),
                           shape=m.shape, dtype=np.float32)
    if normalize_output:
        norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
        m = sps.csr_matrix(sps.diags(1.0 / np.maximum(norms, 1e-12)) @ m, dtype=np.float32)
    m.sort_indices()
    return m


def sparse_rows(rows: list[tuple[np.ndarray, np.ndarray]], vocab_size: int):
    """``(indices, values)`` per item → one ``csr_matrix [N, vocab_size]``."""
    if not rows:
        return csr_of(np.zeros(0, np.int64), np.zeros(0, np.float32), [], vocab_size)
    return csr_of(np.concatenate([i for i, _ in rows]), np.concatenate([v for _, v in rows]),
                  [len(i) for i, _ in rows], vocab_size)


def csr_of(indices: np.ndarray, values: np.ndarray, lengths, vocab_size: int):
    """A float32 ``csr_matrix [len(lengths), vocab_size]`` from every row's terms, row after row."""
    import scipy.sparse as sps

    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return sps.csr_matrix((np.asarray(values, np.float32), np.asarray(indices, np.int64), indptr),
                          shape=(len(lengths), vocab_size))


# ---- results of one call ------------------------------------------------------------------------------
def finish(raw: list, opts, spec, *, query: bool) -> object:
    """Post-process one call's raw per-item outputs of a non-dense kind (``opts``: its ``EncodeOptions``;
    ``query``: whether the items are queries, for FDEs)."""
    from . import fde

    if opts.output == "sparse":
        return postprocess_sparse(sparse_rows(raw, spec.vocab_size), normalize_output=opts.normalize,
                                  top_k=opts.top_k)
    budget = spec.options.get("vector_budget", "pool")
    if opts.output == "fde":
        vectors = postprocess_multivector(raw, normalize_output=opts.normalize, dimensions=opts.dimensions,
                                          precision="float32", max_vectors=None)
        return pp.quantize(fde.encode(vectors, query=query), opts.precision)
    return postprocess_multivector(raw, normalize_output=opts.normalize, dimensions=opts.dimensions,
                                   precision=opts.precision, max_vectors=opts.max_vectors, budget=budget)


def items_of(result) -> list:
    """One call's result as a list with one entry per item (a row, a vector list, a ``1 × V`` sparse row)."""
    if isinstance(result, list):
        return result
    if hasattr(result, "tocsr"):
        return [result[i] for i in range(result.shape[0])]
    return list(result)


def concat(parts: list) -> object:
    """Join the results of consecutive chunks of one call into the result of the whole call."""
    if isinstance(parts[0], list):
        return [x for p in parts for x in p]
    if hasattr(parts[0], "tocsr"):
        import scipy.sparse as sps

        return sps.vstack(parts, format="csr")
    return np.concatenate(parts)
