"""Output kinds: one handler per kind, in one place, and the registry that finds them.

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
score         ``ndarray [N]`` float32: one relevance score per   none (float32, no normalize or dimensions)
              ``(query, document)`` pair (cross-encoders)
============  =================================================  ==========================================

Why a list for multi-vector output: items keep very different counts (a query has a dozen tokens, a page
image a thousand patches), so one padded array would cost memory in proportion to the longest item and
every caller would have to carry its mask. A list is what sentence-transformers and fastembed return too;
on the wire the rows travel flat with their lengths (see ``serving.contract``).

Whether an item is a query or a document matters to late-interaction models (query expansion, skip lists)
and to FDEs (queries sum, documents average): a call is on the query side when its ``prompt_name`` is
``"query"``, on the document side otherwise.

**One handler per kind.** Each kind is an :class:`OutputKind` in its own module (``dense``, ``multivector``,
``sparse``, ``score``, ``fde``), registered here; ``get(name)`` finds it, ``names()`` lists them. A handler owns
everything that differs between kinds, so that no other module compares kind names:

- its name, and the raw kind it is computed from (``fde`` ← ``multivector``; families produce raw kinds);
- its controls check (:meth:`~OutputKind.check_controls`), default normalize, what a spec needs for it;
- the post-processing of one call's raw outputs (``finish``), splitting a result into items and joining
  chunks (``items_of``, ``concat``, ``take``);
- its wire form: named arrays by *role* (``output``, ``lengths``, ``indices``, ``values``);
  ``serving.contract`` keeps the tensor names and maps each role to one;
- one item as JSON for the OpenAI door and the CLI (``to_json``: base64 only where :attr:`~OutputKind.base64`);
- scoring a query result against document results (dot, MaxSim, sparse dot: ``score``), and bytes per item;
- what the demo's index keeps (:attr:`~OutputKind.index_layout`: ``ui.index`` has one storage class per
  layout, and a generic one over the wire form and ``score`` for kinds that need nothing special);
- its vector-database layout (``store_collection``/``store_vector``: Qdrant dense, MaxSim multi-vector,
  sparse) and its Parquet column(s) (``parquet_fields``/``parquet_columns``).

Adding a kind is one new module with its handler and one :func:`register` call (this package's, or a
plugin's at import); a raw kind also needs the family that produces it (its ``forward``). A new wire role
(a tensor no kind has yet) is the one change outside: its name in ``serving.contract``.

The module functions below (``check_output``, ``finish``, ``items_of``, …) are the entry points other modules
call with a kind's name; they delegate to its handler.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import InvalidArgumentError, choices
from .base import (
    ARRAYS,
    DOCUMENT,
    INDICES,
    KIND_CONTROLS,
    LENGTHS,
    MULTIVECTORS,
    OUTPUT,
    QUERY,
    TERMS,
    VALUES,
    VECTORS,
    OutputKind,
    check_count,
    get,
    names,
    raw_names,
    register,
    side_prompt,
    unregister,
    vector_column,
)
from .dense import Dense
from .fde import FDE
from .multivector import MultiVector, pool_vectors, postprocess_multivector, split_rows
from .score import SCORE, Score
from .sparse import SPARSE_PRECISIONS, Sparse, csr_of, heaviest, postprocess_sparse, sparse_rows

for _kind in (Dense(), MultiVector(), Sparse(), Score(), FDE()):  # raw kinds before the kinds derived from them
    register(_kind)

__all__ = [
    "ARRAYS", "DERIVED", "DOCUMENT", "INDICES", "KIND_CONTROLS", "LENGTHS", "MULTIVECTORS", "OUTPUT", "QUERY",
    "SCORE", "SPARSE_PRECISIONS", "TERMS", "VALUES", "VECTORS", "OutputKind", "available", "check_controls",
    "check_count", "check_output", "concat", "csr_of", "default_normalize", "finish", "get", "heaviest",
    "items_of", "names", "pool_vectors", "postprocess_multivector", "postprocess_sparse", "raw_names",
    "register", "side_prompt", "sparse_rows", "split_rows", "unregister", "vector_column",
]


class _Derived(Mapping):
    """Derived kind → the raw kind it is computed from, read from the registry at each use."""

    def __getitem__(self, name: str) -> str:
        raw = get(name).raw if name in names() else None
        if raw is None:
            raise KeyError(name)
        return raw

    def __iter__(self) -> Iterator[str]:
        return iter(n for n in names() if get(n).raw is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


DERIVED: Mapping[str, str] = _Derived()


def available(produced: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds a model producing the raw kinds ``produced`` can give: those, then the kinds derived from them."""
    return (*produced, *(k for k in names() if get(k).raw in produced))


def check_output(output: str | None, produced: tuple[str, ...], model: str) -> str:
    """The output kind a call asks for (``None``: the model's first), or an error naming those it has."""
    if output is None:
        return produced[0]
    given = available(produced)
    if output not in given:
        known = f"; kinds in general: {choices(names())}" if output not in names() else ""
        raise InvalidArgumentError(f"model {model!r} cannot give output {output!r}; it gives "
                                   f"{choices(given)}{known}", "output")
    return output


def check_controls(output: str, *, dimensions: int | None, precision: str, max_vectors: int | None,
                   top_k: int | None) -> None:
    """Refuse output controls that mean nothing for ``output`` (instead of ignoring them)."""
    get(output).check_controls(dimensions=dimensions, precision=precision, max_vectors=max_vectors, top_k=top_k)


def default_normalize(output: str) -> bool:
    """Whether ``encode()`` L2-normalizes when a call does not say: sparse weights are left as the model
    gives them (as sentence-transformers' SparseEncoder does), vectors are normalized."""
    return get(output).normalize_default


def finish(raw: list, opts: Any, spec: Any, *, query: bool) -> Any:
    """Post-process one call's raw per-item outputs into its result (``opts``: its ``EncodeOptions``, whose
    ``output`` names the kind; ``query``: whether the items are queries)."""
    return get(opts.output).finish(raw, opts, spec, query=query)


def items_of(result: Any, kind: str) -> list:
    """One call's result of output ``kind`` as a list with one entry per item (a row, a vector list, a
    ``1 × V`` sparse row)."""
    return get(kind).items_of(result)


def concat(parts: list, kind: str) -> Any:
    """Join the results of output ``kind`` of consecutive chunks of one call into the result of the whole
    call."""
    return get(kind).concat(parts)
