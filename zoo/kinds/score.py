"""``score``: one relevance score per item, ``ndarray [N]`` float32: what a cross-encoder gives a ``(query,
document)`` pair (its card's activation applied), and the one kind every ranking in zoo reports
(:func:`zoo.rerank`, in :mod:`zoo.ranking`, scores bi-encoders with their own kind's
:meth:`~zoo.kinds.OutputKind.score` and reports those scores as this kind).

A score is a number, not a vector: it has no width to cut, nothing to normalize and no quantized form, and
scores are not scored against each other, indexed or stored in a vector database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .base import OUTPUT, OutputKind

SCORE = "score"


class Score(OutputKind):
    """One float32 per item (a pair's relevance)."""

    name = SCORE
    normalize_default = False
    normalizable = False
    pairs = True
    base64 = False

    def check_spec(self, spec: Any) -> None:
        """A scoring model gives one number per item: its spec's ``dim`` is 1."""
        if spec.dim != 1:
            raise ValueError(f"{spec.name}: a model giving {SCORE!r} output has dim 1 (one score per pair), "
                             f"got {spec.dim}")

    def check_controls(self, *, dimensions: int | None, precision: str, max_vectors: int | None,
                       top_k: int | None) -> None:
        """Scores take no width (``dimensions``) and no precision but float32."""
        super().check_controls(dimensions=dimensions, precision=precision, max_vectors=max_vectors, top_k=top_k)
        if dimensions is not None:
            raise InvalidArgumentError(f"dimensions does not apply to {SCORE!r} output (one number per pair)",
                                       "dimensions")
        if precision != "float32":
            raise InvalidArgumentError(f"{SCORE!r} output is float32 only, got precision {precision!r}",
                                       "precision")

    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> np.ndarray:
        """The items' scores as one float32 array ``[N]`` (``normalize`` is refused before: a score has no
        length to normalize)."""
        return np.asarray([np.asarray(r, np.float32).reshape(()) for r in raw], np.float32).reshape(len(raw))

    def of_items(self, items: list) -> np.ndarray:
        """The result holding ``items`` (scalars), in order."""
        return np.asarray(items, np.float32).reshape(len(items))

    def shape(self, result: Any) -> list:
        """``[N]``."""
        return [len(result)]

    def to_arrays(self, result: Any) -> dict[str, np.ndarray]:
        """The scores as one ``[N, 1]`` float32 column."""
        return {OUTPUT: np.asarray(result, np.float32).reshape(-1, 1)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray], vocab_size: int | None = None) -> np.ndarray:
        """Undo :meth:`to_arrays`: ``[N]`` float32."""
        return np.asarray(arrays[OUTPUT], np.float32).reshape(-1)

    def to_json(self, item: Any, encoding_format: str = "float") -> Any:
        """One score as a JSON number (``encoding_format`` changes nothing: a number has no bytes to send)."""
        return float(item)

    def describe(self, item: Any) -> str:
        """A score in a line of the CLI's output."""
        return f"{float(item):.6g}"

    def score(self, queries: Any, documents: Any, precision: str = "float32") -> np.ndarray:
        """Refused: a score is the end of a comparison, not something to compare."""
        raise InvalidArgumentError(f"{SCORE!r} output is already a score; it is not scored against other items "
                                   "(use zoo.rerank)", "output")

    def bytes_per_item(self, result: Any, dim: int, dimensions: int | None = None,
                       precision: str = "float32") -> float:
        """Four bytes: one float32."""
        return 4.0

    def vector_width(self, result: Any, dim: int) -> int:
        """One number."""
        return 1

    def store_collection(self, dim: int, precision: str = "float32") -> Any:
        """Refused: scores are not stored in a vector database."""
        raise InvalidArgumentError(f"{SCORE!r} output is not stored in a vector database: a cross-encoder scores "
                                   "pairs, it does not embed items", "output")

    def parquet_fields(self, width: int, precision: str) -> list:
        """The Arrow column of a shard: ``score: float32``."""
        import pyarrow as pa

        return [pa.field(SCORE, pa.float32())]

    def parquet_columns(self, items: list, schema: Any) -> dict[str, Any]:
        """The items' scores as the ``score`` column."""
        import pyarrow as pa

        return {SCORE: pa.array(np.asarray(items, np.float32).reshape(-1), pa.float32())}

    def parquet_rows(self, columns: Mapping[str, list]) -> list:
        """A shard's scores read back."""
        return [np.float32(v) for v in columns[SCORE]]
