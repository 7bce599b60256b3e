"""``dense``: one vector per item, ``ndarray [N, d]`` (d after ``dimensions``, packed for binary)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import postprocess as pp
from .base import VECTORS, OutputKind


class Dense(OutputKind):
    """One vector per item: Matryoshka truncation → normalize → quantize (:func:`zoo.postprocess.postprocess`)."""

    name = "dense"
    poolable = True
    index_layout = VECTORS  # FAISS views per dimensions/precision, or the vector database (ui.store_index)

    @property
    def index_suffix(self) -> str:
        """Nothing: a model's dense index folder is named after the model alone, as it was before other kinds had
        indexes, so the indexes already on disk are found again."""
        return ""

    def finish(self, raw: list, opts: Any, spec: Any, *, query: bool) -> np.ndarray:
        """The rows stacked and post-processed like every dense row."""
        return pp.postprocess(np.stack(raw).astype(np.float32, copy=False), normalize_output=opts.normalize,
                              dimensions=opts.dimensions, precision=opts.precision)
