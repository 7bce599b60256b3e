"""Every registered family, driven by the tiny-model table in tests/tiny_models.py (the serving parity test
runs over the same table): a new family that forgets its tiny model fails here."""

import numpy as np
import pytest

import zoo
from zoo.registry import list_families
from zoo.weights import fingerprint

from .tiny_models import TINY_MODELS, assert_tells_apart, sample_inputs


def test_every_registered_family_has_a_tiny_model():
    assert set(TINY_MODELS) == set(list_families())


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_family_contract(family, tmp_path):
    """The tiny folder is claimed by its own family and loads through the real path; every modality of the
    spec embeds to unit rows of the spec's width that do not depend on batching or order."""
    folder = TINY_MODELS[family](tmp_path / family)
    spec = zoo.get_spec(str(folder))
    assert spec.family == family
    model = zoo.create(str(folder), device="cpu")
    assert model.weights_fingerprint == fingerprint(folder) != ""
    for modality, items in sample_inputs(spec).items():
        for output in spec.outputs:
            emb = model.encode(items, modality, output=output)
            single = model.encode(items[::-1], modality, batch_size=1, output=output)
            check_output(emb, single, output, spec, len(items))
        tokens = model.count_tokens(model.decode(items, modality), modality, spec.prompts.get(spec.default_prompt_name))
        assert len(tokens) == len(items) and all(n >= 0 for n in tokens), modality
        assert (min(tokens) > 0) == (modality is zoo.Modality.TEXT), modality


def test_fingerprint_follows_the_weights(tmp_path):
    make = TINY_MODELS["text"]
    a, b = make(tmp_path / "a"), make(tmp_path / "b")
    assert fingerprint(a) == fingerprint(b)  # the same weights, wherever they are
    retrained = TINY_MODELS["speaker"](tmp_path / "s")
    before = fingerprint(retrained)
    import torch

    state = torch.load(retrained / "pretrained.pt", weights_only=True)
    state["model_state"]["linear.bias"] += 1  # same files, same sizes, new weights
    torch.save(state, retrained / "pretrained.pt")
    assert fingerprint(retrained) != before


def check_output(emb, reversed_single, output: str, spec: zoo.EmbedderSpec, n: int) -> None:
    """An encode() result of ``output`` kind has its documented type and shape, unit vectors (non-negative
    weights for sparse), and rows that do not depend on batching or order (``reversed_single``: the items
    reversed, one per batch), which tell the items apart (else an item swapped for another would pass)."""
    if output == "dense":
        assert emb.shape == (n, spec.dim) and emb.dtype == np.float32
        assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
        assert_tells_apart(reversed_single)
        assert np.abs(reversed_single[::-1] - emb).max() < 1e-4
    elif output == "multivector":
        assert isinstance(emb, list) and len(emb) == n
        assert_tells_apart(np.stack([b.mean(0) for b in reversed_single]))
        for a, b in zip(emb, reversed_single[::-1]):
            assert a.ndim == 2 and a.shape[1] == spec.dim and a.dtype == np.float32 and len(a) > 0
            assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    elif output == "score":  # one float32 per pair, whatever the batching
        assert isinstance(emb, np.ndarray) and emb.shape == (n,) and emb.dtype == np.float32
        assert np.ptp(reversed_single) > 1e-3, "every pair got nearly one score: a swapped pair would pass"
        assert np.abs(reversed_single[::-1] - emb).max() < 1e-4
    else:
        import scipy.sparse as sps

        assert sps.issparse(emb) and emb.shape == (n, spec.vocab_size) and emb.dtype == np.float32
        assert emb.nnz > 0 and emb.data.min() > 0
        assert_tells_apart(reversed_single.toarray())
        assert abs(emb - reversed_single[::-1]).max() < 1e-4
