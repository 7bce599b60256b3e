"""The base of every output kind's handler, and the registry of handlers (see :mod:`zoo.kinds`).

:class:`OutputKind`'s defaults describe the most common layout, one fixed-width vector per item (an
``ndarray [N, w]``): a kind of that layout (dense, fde, a plugin's) writes only its name, the raw kind it is
computed from and :meth:`OutputKind.finish`; other layouts (multivector, sparse) override what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import postprocess as pp
from ..errors import InvalidArgumentError, choices

QUERY = "query"  # the prompt name that puts a call on the query side (see zoo.kinds)
DOCUMENT = "document"  # the prompt name a retrieval's documents use where the model defines it
#: the wire form's roles (:meth:`OutputKind.to_arrays`); ``serving.contract`` names the tensor of each
OUTPUT, LENGTHS, INDICES, VALUES = "output", "lengths", "indices", "values"
#: what the demo's index keeps per item: ``ui.index`` has one storage class per layout and picks it by
#: :attr:`OutputKind.index_layout`; ARRAYS is the generic one (the wire form on disk, brute-force scoring)
VECTORS, MULTIVECTORS, TERMS, ARRAYS = "vectors", "multivectors", "terms", "arrays"
#: the kind-specific controls of ``encode()``; a kind accepts those in its :attr:`OutputKind.controls`
KIND_CONTROLS = ("max_vectors", "top_k")

_REGISTRY: dict[str, OutputKind] = {}


def side_prompt(prompts: Any, query: bool) -> str | None:
    """The prompt a retrieval side uses: ``query`` / ``document`` when the model defines it, else its default."""
    name = QUERY if query else DOCUMENT
    return name if name in prompts else None


def check_count(value: int | None, name: str) -> int | None:
    """``None`` or a positive integer, else an error naming the argument."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}", name)
    return None if value is None else int(value)


class OutputKind:
    """Everything about one output kind, in one place. Subclasses set :attr:`name` (and :attr:`raw` for a
    kind computed from another) and implement :meth:`finish`; the defaults fit one vector per item."""

    name: str = ""
    #: the raw kind it is computed from (fde ← multivector); None: families produce it (their ``forward``)
    raw: str | None = None
    #: kind-specific controls it takes (of :data:`KIND_CONTROLS`); the others are refused for it
    controls: frozenset[str] = frozenset()
    #: whether ``encode()`` L2-normalizes when a call does not say
    normalize_default: bool = True
    #: whether a call may ask for L2-normalized output at all (a score has no length to normalize)
    normalizable: bool = True
    #: whether an item is a ``(query, document)`` pair (cross-encoders' scores; ``max_tokens_per_doc`` applies)
    pairs: bool = False
    #: whether the query/document side changes the result (late interaction, FDE, sparse expansion): the
    #: demo then encodes its queries with the ``query`` prompt
    sided: bool = False
    #: whether one item may travel as base64 bytes of its array (the OpenAI door's ``encoding_format``)
    base64: bool = True
    #: whether an item's raw output is one vector that pools like the model's own (averaged over chunks for
    #: ``long="chunk"``, pooled per chunk by late chunking, see :mod:`zoo.long`)
    poolable: bool = False
    #: the roles of its wire form, in order (see :meth:`to_arrays`)
    wire_roles: tuple[str, ...] = (OUTPUT,)
    #: the storage the demo's index keeps it in (see :data:`VECTORS` …)
    index_layout: str = ARRAYS
    #: another kind whose vector-database layout it uses (fde: searched as one dense vector); None: its own
    store_as: str | None = None

    # ---- identity and checks -----------------------------------------------------------------------
    @property
    def produced_from(self) -> str:
        """The raw kind a family computes for it (itself unless derived)."""
        return self.raw or self.name

    @property
    def index_suffix(self) -> str:
        """What the demo appends to a model's index folder for this kind."""
        return f".{self.name}"

    def check_spec(self, spec: Any) -> None:
        """Refuse a spec that cannot produce this kind (raises ``ValueError``)."""

    def check_controls(self, *, dimensions: int | None, precision: str, max_vectors: int | None,
                       top_k: int | None) -> None:
        """Refuse output controls that mean nothing for this kind (instead of ignoring them)."""
        for control, value in (("max_vectors", max_vectors), ("top_k", top_k)):
            if value is not None and control not in self.controls:
                owners = " or ".join(h.name for h in _REGISTRY.values() if control in h.controls) or "no"
                raise InvalidArgumentError(f"{control} applies to {owners} output, not {self.name!r}", control)

    def width(self, spec: Any, opts: Any) -> int:
        """Full width of one vector of a call's result (before a packed precision's 8 bits per byte)."""
        return opts.dimensions or spec.dim

    # ---- one call's result -------------------------------------------------------------------------
    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> Any:
        """Post-process one call's raw per-item outputs (of kind :attr:`produced_from`) into its result
        (``opts``: its ``EncodeOptions``; ``query``: whether the items are queries)."""
        raise NotImplementedError(f"output kind {self.name!r} has no post-processing")

    def items_of(self, result: Any) -> list:
        """One call's result as a list with one entry per item."""
        return list(result)

    def of_items(self, items: list) -> Any:
        """The result holding ``items`` (entries of :meth:`items_of`), in order."""
        return np.stack(items) if items else np.zeros((0, 0), np.float32)

    def concat(self, parts: list) -> Any:
        """Join the results of consecutive chunks of one call into the result of the whole call."""
        return np.concatenate(parts)

    def take(self, result: Any, rows: Iterable[int]) -> Any:
        """The result of the items at positions ``rows`` of ``result``."""
        return result[np.asarray(list(rows), np.int64)]

    def count(self, result: Any) -> int:
        """How many items ``result`` holds."""
        return len(result)

    def shape(self, result: Any) -> list:
        """The result's shape as the CLI prints it."""
        return list(np.shape(result))

    # ---- wire form (serving.contract maps each role to its tensor name) -----------------------------
    def to_arrays(self, result: Any) -> dict[str, np.ndarray]:
        """The result as named arrays by role (:attr:`wire_roles`); ``output`` keeps the result's precision."""
        return {OUTPUT: result}

    def from_arrays(self, arrays: Mapping[str, np.ndarray], vocab_size: int | None = None) -> Any:
        """Undo :meth:`to_arrays` (each array as it was given; ``vocab_size``: a sparse row's width)."""
        return arrays[OUTPUT]

    # ---- one item as JSON, and as a line ----------------------------------------------------------
    def to_json(self, item: Any, encoding_format: str = "float") -> list | str | dict:
        """One item as JSON values. ``float``: numbers (quantized precisions as their integer values,
        float16/float8 as the floats they hold); ``base64`` (where :attr:`base64`): those numbers as little-endian
        float32 bytes, as OpenAI's clients decode them whatever the precision; ``bytes`` (where :attr:`base64`):
        the raw little-endian bytes in the precision's own dtype (:data:`zoo.postprocess.PRECISIONS`), in base64. A kind
        without :attr:`base64` answers in its float form."""
        if encoding_format in ("base64", "bytes") and self.base64:
            import base64

            values = np.asarray(item)
            if encoding_format == "base64":
                values = values.astype("<f4")
            return base64.b64encode(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
                                    ).decode()
        if item.dtype.kind == "f" or item.dtype == pp.FLOAT8:
            return item.astype(np.float32).tolist()
        return item.tolist()

    def describe(self, item: Any) -> str:
        """One item in a line of the CLI's output."""
        return str(item)

    # ---- scoring, storage and its cost -------------------------------------------------------------
    def score(self, queries: Any, documents: Any, precision: str = "float32") -> np.ndarray:
        """``[queries, documents]`` scores between two results of this kind (dot products of the dequantized
        vectors; quantized inputs approximate the float32 scores)."""
        return pp.similarity(np.asarray(queries), np.asarray(documents), precision)

    def bytes_per_item(self, result: Any, dim: int, dimensions: int | None = None,
                       precision: str = "float32") -> float:
        """Mean bytes one item of ``result`` (full-width float32; None where every item costs the same) takes
        stored at this output setting; ``dim``: the model's full width."""
        width = self.vector_width(result, dim)
        return float(pp.output_width(dimensions or width, precision) * pp.PRECISIONS[precision].itemsize)

    def vector_width(self, result: Any, dim: int) -> int:
        """Full width of one stored vector of ``result`` (the model's ``dim`` unless the result says)."""
        return int(np.shape(result)[-1]) if result is not None and np.ndim(result) == 2 else dim

    # ---- vector database (zoo.store: Qdrant) ----------------------------------------------------------
    def stored(self) -> OutputKind:
        """The handler whose vector-database layout this kind uses (see :attr:`store_as`)."""
        return get(self.store_as) if self.store_as else self

    def store_collection(self, dim: int, precision: str = "float32") -> Any:
        """The :class:`zoo.store.layout.Layout` of a collection for this kind: a vector named by the kind,
        ``dim`` wide, scored by inner product (zoo's rows are unit length by default, so this is cosine, and it
        stays exact on rows a caller chose not to normalize), quantized by Qdrant as ``precision`` asks."""
        from ..store.layout import Layout, quantization

        return Layout(self.name, int(dim), quantization=quantization(precision))

    def store_fits(self, existing: Mapping[str, Any], dim: int) -> bool:
        """Whether an existing collection (its :class:`~zoo.store.layout.Layout` per vector name) holds this
        kind at width ``dim``."""
        want = self.store_collection(dim)
        return want.fits(existing.get(want.name))

    def store_vector(self, row: Any) -> Any:
        """One item (or query) as the array the database takes (float32; each backend converts it)."""
        return np.asarray(row, dtype=np.float32)

    def row_width(self, row: Any) -> int:
        """The width a collection needs for ``row`` (0 where the width is not fixed)."""
        return int(np.shape(row)[-1])

    # ---- Parquet (zoo.batch.dest) ----------------------------------------------------------------------
    def parquet_fields(self, width: int, precision: str) -> list:
        """The Arrow column(s) of this kind in a shard: ``embedding: fixed_size_list<T>[w]``."""
        import pyarrow as pa

        value = pa.from_numpy_dtype(pp.PRECISIONS[precision])
        return [pa.field("embedding", pa.list_(value, pp.output_width(width, precision)))]

    def parquet_columns(self, items: list, schema: Any) -> dict[str, Any]:
        """Items (entries of :meth:`items_of`) as the Arrow arrays of their column(s) in ``schema``; items of
        another shape or type than the schema's are refused (a shard fails, never a mixed dataset)."""
        return {"embedding": vector_column(items, schema.field("embedding").type)}

    def parquet_rows(self, columns: Mapping[str, list]) -> list:
        """A shard's column(s) read back (``to_pydict``) as the rows :meth:`store_vector` takes."""
        return [np.asarray(v, dtype=np.float32) for v in columns["embedding"]]


def vector_column(items: list, vector: Any) -> Any:
    """Arrays ``[w]`` (or ``[n, w]`` for a ``list<fixed_size_list>`` column) as one Arrow column of type
    ``vector``, refusing any of another width or dtype."""
    import pyarrow as pa

    ragged = pa.types.is_list(vector)
    inner = vector.value_type if ragged else vector
    width, dtype = inner.list_size, inner.value_type.to_pandas_dtype()
    bad = [x.shape for x in items if x.shape[-1] != width or x.dtype != dtype]
    if bad:  # the model gave other vectors than its settings promise
        raise ValueError(f"the model returned vectors of shape {bad[0]} and type {items[0].dtype}; "
                         f"the job's schema wants {width} × {inner.value_type}")
    flat = np.concatenate([x.reshape(-1, width) for x in items])
    out = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), inner.value_type), width)
    if ragged:  # one list of vectors per row
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in items])]).astype(np.int32)
        out = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), out, type=vector)
    return out


# ---- the registry -------------------------------------------------------------------------------------
def register(kind: OutputKind) -> OutputKind:
    """Add a handler (replacing one of the same name); returns it. Its raw kind must be registered first."""
    if not kind.name:
        raise ValueError(f"{type(kind).__name__} has no name")
    if kind.raw is not None and (kind.raw not in _REGISTRY or _REGISTRY[kind.raw].raw is not None):
        raise ValueError(f"output kind {kind.name!r} is computed from {kind.raw!r}, which is no raw kind")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a handler (what a test that registered one does afterwards)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> OutputKind:
    """The handler of output kind ``name``, or an error naming the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown output kind {name!r}; kinds: {choices(_REGISTRY)}", "output") from None


def names() -> tuple[str, ...]:
    """Every registered kind, raw kinds first, in registration order (what ``--output`` offers)."""
    return raw_names() + tuple(n for n, h in _REGISTRY.items() if h.raw is not None)


def raw_names() -> tuple[str, ...]:
    """The kinds families produce (what a spec's ``outputs`` may list)."""
    return tuple(n for n, h in _REGISTRY.items() if h.raw is None)
