"""Pure functions of an embedding, shared by in-process `zoo`, the Triton backend and the client.

Order inside ``encode()``: Matryoshka :func:`truncate` → L2 :func:`normalize` → :func:`quantize`.

Precisions and how to get float vectors (or scores) back:

============  ===============  ====================================================================
precision     numpy dtype      encoding (``d`` = output width)
============  ===============  ====================================================================
float32       float32          as computed
float16       float16          IEEE half
float8        float8_e4m3fn    ``ml_dtypes.float8_e4m3fn`` (1 byte; on the wire: its uint8 bits),
                               values clipped to ±448
int8          int8             ``round(clip(x / c, -1, 1) * 127)``
uint8         uint8            ``round((clip(x / c, -1, 1) + 1) / 2 * 255)``
binary        int8             ``packbits(x > 0) - 128`` (d/8 bytes, sentence-transformers layout)
ubinary       uint8            ``packbits(x > 0)`` (d/8 bytes)
============  ===============  ====================================================================

``c`` is the calibration range of int8/uint8. By default it is ``min(1, 8 / sqrt(d))``, which suits
L2-normalized vectors (a unit vector's components have spread about ``1/sqrt(d)``; larger values are
clipped). That is why int8/uint8 need ``normalize=True`` unless explicit per-dimension ranges from
:func:`calibrate` are passed. :func:`dequantize` inverts each encoding (binary → ``±1/sqrt(d)``), so
:func:`similarity` on quantized vectors approximates cosine similarity on the floats.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from .errors import InvalidArgumentError, choices

FLOAT8 = np.dtype(ml_dtypes.float8_e4m3fn)
FLOAT8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)

#: precision name → dtype of the array ``encode()`` returns
PRECISIONS: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "float8": FLOAT8,
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "binary": np.dtype(np.int8),
    "ubinary": np.dtype(np.uint8),
}
PACKED = frozenset({"binary", "ubinary"})  # one bit per dimension
CALIBRATED = frozenset({"int8", "uint8"})  # need a value range


def check_precision(precision: str) -> str:
    """Return ``precision`` if known, else raise naming the valid ones."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"unknown precision {precision!r}; choose one of {choices(PRECISIONS)}", "precision"
        )
    return precision


def output_width(dim: int, precision: str) -> int:
    """Number of array columns ``encode()`` returns for ``dim`` dimensions at ``precision``."""
    return dim // 8 if precision in PACKED else dim


def check_dimensions(dimensions: int | None, full_dim: int, precision: str = "float32") -> int:
    """Validate a Matryoshka width request and return the effective width."""
    if dimensions is None:
        dimensions = full_dim
    elif isinstance(dimensions, bool) or not isinstance(dimensions, (int, np.integer)):
        raise InvalidArgumentError(f"dimensions must be an integer, got {dimensions!r}", "dimensions")
    elif not 1 <= dimensions <= full_dim:
        raise InvalidArgumentError(
            f"dimensions={dimensions} is outside 1..{full_dim} (the model's embedding width)", "dimensions"
        )
    if precision in PACKED and dimensions % 8:
        raise InvalidArgumentError(
            f"precision {precision!r} packs 8 dimensions per byte; dimensions={dimensions} "
            "is not a multiple of 8", "dimensions"
        )
    return int(dimensions)


def check_calibration(precision: str, normalized: bool, ranges: np.ndarray | None = None) -> None:
    """int8/uint8 default ranges assume unit vectors: refuse raw vectors without explicit ranges."""
    if precision in CALIBRATED and not normalized and ranges is None:
        raise InvalidArgumentError(
            f"precision {precision!r} assumes unit vectors (normalize=True); to quantize raw "
            "vectors, compute ranges with zoo.postprocess.calibrate() and call quantize() yourself"
        )


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalize rows; an all-zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def truncate(x: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first ``dimensions`` columns (Matryoshka); ``None`` keeps all."""
    return x if dimensions is None else x[..., :dimensions]


def default_range(dim: int) -> float:
    """Default int8/uint8 calibration half-range ``c`` for unit vectors of width ``dim``."""
    return min(1.0, 8.0 / math.sqrt(dim))


def calibrate(sample: np.ndarray) -> np.ndarray:
    """Per-dimension ``[2, d]`` (min, max) ranges from a sample of float embeddings.

    Pass the result as ``ranges`` to :func:`quantize` / :func:`dequantize` to quantize vectors that
    are not unit-norm, as sentence-transformers does with calibration embeddings.
    """
    sample = np.asarray(sample, dtype=np.float32)
    return np.stack([sample.min(axis=0), sample.max(axis=0)])


def _bounds(dim: int, ranges: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if ranges is None:
        c = default_range(dim)
        return np.full(dim, -c, np.float32), np.full(dim, c, np.float32)
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, dim):
        raise InvalidArgumentError(f"ranges must have shape (2, {dim}), got {ranges.shape}")
    lo, hi = ranges
    return lo, np.maximum(hi, lo + 1e-12)


def quantize(x: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Encode float rows at ``precision`` (see the module table)."""
    check_precision(precision)
    x = np.asarray(x, dtype=np.float32)
    if precision == "float32":
        return x
    if precision == "float16":
        return x.astype(np.float16)
    if precision == "float8":
        return np.clip(x, -FLOAT8_MAX, FLOAT8_MAX).astype(FLOAT8)
    if precision in PACKED:
        bits = np.packbits(x > 0, axis=-1)
        return (bits.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else bits
    lo, hi = _bounds(x.shape[-1], ranges)
    unit = np.clip((x - lo) / (hi - lo), 0.0, 1.0)  # 0..1 inside the calibration range
    if precision == "uint8":
        return np.rint(unit * 255).astype(np.uint8)
    return np.rint(unit * 254 - 127).astype(np.int8)


def dequantize(q: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Map quantized rows back to float32 approximations of the vectors :func:`quantize` saw."""
    check_precision(precision)
    q = np.asarray(q)
    if precision in ("float32", "float16"):
        return q.astype(np.float32)
    if precision == "float8":
        return (q if q.dtype == FLOAT8 else q.view(FLOAT8)).astype(np.float32)
    if precision in PACKED:
        raw = (q.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else q
        bits = np.unpackbits(raw.astype(np.uint8), axis=-1).astype(np.float32)
        return (bits * 2 - 1) / math.sqrt(bits.shape[-1])
    lo, hi = _bounds(q.shape[-1], ranges)
    unit = (q.astype(np.float32) / 255) if precision == "uint8" else (q.astype(np.float32) + 127) / 254
    return lo + unit * (hi - lo)


def similarity(
    a: np.ndarray, b: np.ndarray, precision: str = "float32", ranges: np.ndarray | None = None
) -> np.ndarray:
    """Score matrix ``[len(a), len(b)]``: dot products of the dequantized rows.

    For unit vectors this approximates cosine similarity; for binary it equals
    ``1 - 2 * hamming / d``.
    """
    return dequantize(a, precision, ranges) @ dequantize(b, precision, ranges).T


def postprocess(
    x: np.ndarray,
    *,
    normalize_output: bool,
    dimensions: int | None,
    precision: str,
    ranges: np.ndarray | None = None,
) -> np.ndarray:
    """Truncate → normalize → quantize, the one place encode() and the server do it."""
    check_calibration(precision, normalize_output, ranges)
    x = truncate(np.asarray(x, dtype=np.float32), dimensions)
    if normalize_output:
        x = normalize(x)
    return quantize(x, precision, ranges)


class PCA:
    """A linear projection onto the top principal components of a sample (e.g. a corpus's embeddings).

    Fit it once on the stored vectors, keep it with them (:meth:`save` / :meth:`load`), and apply the same
    :meth:`transform` to queries, then :func:`postprocess` as usual (normalize → quantize). Centring uses the
    sample mean, as scikit-learn's ``PCA`` does; components are sign-fixed (largest loading positive) so a
    refit on the same sample gives the same vectors.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained_variance: np.ndarray) -> None:
        self.mean = np.asarray(mean, np.float32)
        self.components = np.asarray(components, np.float32)  # [k, d]
        self.explained_variance = np.asarray(explained_variance, np.float32)
        if self.components.ndim != 2 or self.mean.shape != (self.components.shape[1],):
            raise InvalidArgumentError(f"PCA: components {self.components.shape} do not match mean {self.mean.shape}")

    @property
    def n_components(self) -> int:
        """Width of the projected vectors."""
        return self.components.shape[0]

    @classmethod
    def fit(cls, sample: np.ndarray, n_components: int) -> PCA:
        """The first ``n_components`` principal axes of ``sample`` ``[n, d]`` (eigenvectors of its covariance,
        largest variance first)."""
        x = np.asarray(sample, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise InvalidArgumentError(f"PCA needs a [n >= 2, d] sample, got shape {x.shape}")
        if not 1 <= n_components <= min(x.shape):
            raise InvalidArgumentError(
                f"n_components={n_components} is outside 1..{min(x.shape)} (min of samples and width)", "n_components")
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)  # [d, d]: cheaper than an SVD of the sample when n >> d
        values, vectors = np.linalg.eigh(np.atleast_2d(cov))
        order = np.argsort(values)[::-1][:n_components]
        comps = vectors[:, order].T
        comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
        return cls(mean, comps, values[order])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``[n, k]`` coordinates of rows ``x`` ``[n, d]`` on the components."""
        x = np.asarray(x, np.float32)
        if x.shape[-1] != self.mean.shape[0]:
            raise InvalidArgumentError(f"PCA was fitted on width {self.mean.shape[0]}, got vectors of width "
                                       f"{x.shape[-1]}")
        return (x - self.mean) @ self.components.T

    def save(self, path) -> None:
        """Store as safetensors (mean, components, explained variance)."""
        from safetensors.numpy import save_file

        save_file({"mean": self.mean, "components": self.components,
                   "explained_variance": self.explained_variance}, str(path))

    @classmethod
    def load(cls, path) -> PCA:
        """The PCA :meth:`save` stored at ``path``."""
        from safetensors.numpy import load_file

        t = load_file(str(path))
        return cls(t["mean"], t["components"], t["explained_variance"])
