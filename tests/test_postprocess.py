"""Post-processing: every precision round-trips through dequantize/similarity."""

import numpy as np
import pytest

from zoo import InvalidArgumentError
from zoo import postprocess as pp


@pytest.fixture
def unit_vectors():
    rng = np.random.default_rng(0)
    return pp.normalize(rng.standard_normal((50, 384)).astype(np.float32))


@pytest.mark.parametrize("precision", sorted(pp.PRECISIONS))
def test_roundtrip_and_dtype(unit_vectors, precision):
    q = pp.quantize(unit_vectors, precision)
    assert q.dtype == pp.PRECISIONS[precision]
    assert q.shape == (50, pp.output_width(384, precision))
    back = pp.normalize(pp.dequantize(q, precision))
    cos = (back * unit_vectors).sum(1)
    # sign-only codes keep ~sqrt(2/pi) of the direction; every other code is nearly lossless
    assert cos.min() > (0.7 if precision in pp.PACKED else 0.999)


@pytest.mark.parametrize("precision", sorted(pp.PRECISIONS))
def test_similarity_ranks_like_float(unit_vectors, precision):
    queries = pp.normalize(unit_vectors[:10] + 0.1 * np.random.default_rng(1).standard_normal((10, 384)))
    exact = queries @ unit_vectors.T
    approx = pp.similarity(pp.quantize(queries, precision), pp.quantize(unit_vectors, precision), precision)
    assert (approx.argmax(1) == exact.argmax(1)).all()


def test_binary_similarity_is_hamming(unit_vectors):
    a, b = pp.quantize(unit_vectors[:2], "ubinary"), pp.quantize(unit_vectors[2:4], "ubinary")
    hamming = np.unpackbits(a[:, None] ^ b[None], axis=-1).sum(-1)
    assert np.allclose(pp.similarity(a, b, "ubinary"), 1 - 2 * hamming / 384, atol=1e-6)
    assert np.array_equal(pp.quantize(unit_vectors, "binary").view(np.uint8) ^ 0x80,
                          pp.quantize(unit_vectors, "ubinary"))


def test_float8_is_e4m3_bits(unit_vectors):
    q = pp.quantize(unit_vectors * 1e5, "float8")
    assert np.abs(q.astype(np.float32)).max() == pp.FLOAT8_MAX  # clipped, never NaN
    assert np.array_equal(pp.dequantize(q.view(np.uint8), "float8"), q.astype(np.float32))


def test_calibrated_ranges_for_raw_vectors():
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((200, 16)).astype(np.float32) * 5 + 3
    ranges = pp.calibrate(raw)
    for precision in ("int8", "uint8"):
        back = pp.dequantize(pp.quantize(raw, precision, ranges), precision, ranges)
        assert np.abs(back - raw).max() < (ranges[1] - ranges[0]).max() / 250
    with pytest.raises(InvalidArgumentError, match="unit vectors"):
        pp.postprocess(raw, normalize_output=False, dimensions=None, precision="int8")


def test_truncate_then_normalize(unit_vectors):
    out = pp.postprocess(unit_vectors, normalize_output=True, dimensions=64, precision="float32")
    assert out.shape == (50, 64)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out, pp.normalize(unit_vectors[:, :64]))


def test_zero_vector_stays_finite():
    assert np.all(pp.normalize(np.zeros((2, 8))) == 0)


@pytest.mark.parametrize(("dims", "precision", "match"), [
    (0, "float32", "outside"), (385, "float32", "outside"), (12, "binary", "multiple of 8"),
    ("8", "float32", "integer"), (None, "float64", "unknown precision"),
])
def test_bad_arguments(dims, precision, match):
    with pytest.raises(InvalidArgumentError, match=match):
        pp.check_precision(precision)
        pp.check_dimensions(dims, 384, precision)
