"""Every registered family, driven by the tiny-model table in tests/tiny_models.py (the serving parity test
runs over the same table): a new family that forgets its tiny model fails here."""

import numpy as np
import pytest

import zoo
from zoo.registry import list_families
from zoo.weights import fingerprint

from .tiny_models import TINY_MODELS, sample_inputs


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
        emb = model.encode(items, modality)
        assert emb.shape == (len(items), spec.dim) and emb.dtype == np.float32, modality
        assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5), modality
        single = model.encode(items[::-1], modality, batch_size=1)[::-1]
        assert np.abs(single - emb).max() < 1e-4, modality
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
