"""``fde``: a MUVERA fixed-dimensional encoding of the multi-vector output, ``ndarray [N, fde_width]``
(:mod:`zoo.fde`): one vector per item whose dot product approximates MaxSim, searched as a dense vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import postprocess as pp
from ..errors import InvalidArgumentError
from .base import OutputKind
from .multivector import postprocess_multivector


class FDE(OutputKind):
    """Computed from the multi-vector output: its vectors normalized/truncated as asked, then encoded (queries
    sum, documents average), then quantized at the call's precision."""

    name = "fde"
    raw = "multivector"
    sided = True  # queries sum their vectors per bucket, documents average them
    store_as = "dense"  # one vector per item: a vector database searches it as a dense one

    def check_controls(self, *, dimensions: int | None, precision: str, max_vectors: int | None,
                       top_k: int | None) -> None:
        """Besides the kind controls: no calibrated precision (they assume unit vectors)."""
        super().check_controls(dimensions=dimensions, precision=precision, max_vectors=max_vectors, top_k=top_k)
        if precision in pp.CALIBRATED:
            raise InvalidArgumentError(f"precision {precision!r} assumes unit vectors and an FDE is not one; use "
                                       "float16, float8 or binary", "precision")

    def width(self, spec: Any, opts: Any) -> int:
        """The FDE's own width (``dimensions`` narrow the vectors it is built from, not it)."""
        from .. import fde

        return fde.FDEConfig().width

    def vector_width(self, result: Any, dim: int) -> int:
        """The FDE's own width."""
        return self.width(None, None)

    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> np.ndarray:
        """The item's vectors post-processed at float32, encoded, then quantized."""
        from .. import fde

        vectors = postprocess_multivector(raw, normalize_output=opts.normalize, dimensions=opts.dimensions,
                                          precision="float32", max_vectors=None)
        return pp.quantize(fde.encode(vectors, query=query), opts.precision)

    def bytes_per_item(self, result: Any, dim: int, dimensions: int | None = None,
                       precision: str = "float32") -> float:
        """One FDE at ``precision`` (``dimensions`` do not change its width)."""
        return super().bytes_per_item(None, dim, None, precision)
