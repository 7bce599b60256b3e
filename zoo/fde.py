"""MUVERA fixed-dimensional encodings (Dhulipala et al., 2024): one vector per multi-vector item whose dot
product approximates the Chamfer (MaxSim) score, so any dense index can find candidates for an exact
MaxSim rerank.

Per repetition, ``k_sim`` random hyperplanes (SimHash) split the space into ``2**k_sim`` buckets (numbered
in Gray code, so neighbouring buckets differ in one bit); every vector is projected to ``d_proj``
dimensions by a random ±1 matrix and added to its bucket's block. A query sums the vectors of each bucket,
a document averages them and fills an empty bucket with the vector nearest to it (fewest differing SimHash
bits). The ``reps`` blocks are concatenated: width ``reps * 2**k_sim * d_proj``.

Defaults (``reps=20, k_sim=5, d_proj=16``: 10,240 dimensions) are the paper's middle setting; the random
matrices come from ``seed``, so queries and documents must use the same :class:`FDEConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class FDEConfig:
    """The parameters of an FDE (documents and queries must share them)."""

    reps: int = 20
    k_sim: int = 5
    d_proj: int = 16
    seed: int = 42

    @property
    def width(self) -> int:
        """Dimensions of one encoding."""
        return self.reps * (2 ** self.k_sim) * self.d_proj

    @cached_property
    def _gray_bits(self) -> np.ndarray:
        """``[2**k_sim, k_sim]``: the SimHash bits of each bucket number."""
        table = np.zeros((2 ** self.k_sim, self.k_sim), bool)
        for bits in range(2 ** self.k_sim):
            b = [(bits >> (self.k_sim - 1 - j)) & 1 for j in range(self.k_sim)]
            table[_bucket(np.array([b], bool))[0]] = b
        return table

    def matrices(self, dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per repetition: the ``[dim, k_sim]`` hyperplanes and the ``[dim, d_proj]`` ±1 projection."""
        rng = np.random.default_rng(self.seed)
        return [(rng.standard_normal((dim, self.k_sim)).astype(np.float32),
                 rng.choice(np.array([-1.0, 1.0], np.float32), size=(dim, self.d_proj)))
                for _ in range(self.reps)]


def _bucket(bits: np.ndarray) -> np.ndarray:
    """Gray-code bucket number of each row of SimHash bits ``[n, k_sim]``."""
    index = np.zeros(len(bits), np.int64)
    for j in range(bits.shape[1]):
        index = (index << 1) + (bits[:, j].astype(np.int64) ^ (index & 1))
    return index


def encode(items: list[np.ndarray], query: bool, config: FDEConfig = FDEConfig()) -> np.ndarray:
    """``[N, config.width]`` float32 FDEs of multi-vector items (float rows ``[n_i, d]``)."""
    if not items:
        return np.zeros((0, config.width), np.float32)
    dim = items[0].shape[1]
    mats = config.matrices(dim)
    buckets, block = 2 ** config.k_sim, 2 ** config.k_sim * config.d_proj
    out = np.zeros((len(items), config.width), np.float32)
    for row, x in enumerate(items):
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            continue
        for r, (planes, proj) in enumerate(mats):
            bits = (x @ planes) > 0
            idx = _bucket(bits)
            projected = x @ proj
            sums = np.zeros((buckets, config.d_proj), np.float32)
            np.add.at(sums, idx, projected)
            if not query:
                counts = np.bincount(idx, minlength=buckets)
                sums /= np.maximum(counts, 1)[:, None]
                empty = np.flatnonzero(counts == 0)
                if len(empty):  # nearest vector by SimHash bits differing from the bucket's
                    distance = (config._gray_bits[empty][:, None, :] != bits[None, :, :]).sum(-1)
                    sums[empty] = projected[distance.argmin(1)]
            out[row, r * block:(r + 1) * block] = sums.reshape(-1)
    return out
