"""Padding-free text batches (zoo.packed): equal to the padded forward pass, used where it can be, routed by auto."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from tests.tiny_models import TEXTS, make_tiny_text_folder
from zoo import packed


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return str(make_tiny_text_folder(tmp_path_factory.mktemp("tiny-packed"), pooling="mean"))


def _batch(model, texts):
    return model.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")


@pytest.mark.parametrize("attention", ["loop", "jagged"])
def test_packed_hidden_states_equal_the_padded_ones(tiny_text, attention, monkeypatch):
    """Every real token's state as the padded forward pass gives it (texts of very different lengths, token type
    ids given), zeros at the pads; both ways of computing the attention (the CPU's loop, CUDA's jagged)."""
    if attention == "jagged":
        monkeypatch.setattr(packed, "_attention", packed._jagged_attention)
    model = zoo.create(tiny_text, runtime="torch")
    bert = model.model
    assert packed.packable(bert)
    texts = ["one", "a somewhat longer text with more words in it than the first", *TEXTS]
    enc = _batch(model, texts)
    enc["token_type_ids"] = (torch.arange(enc["input_ids"].shape[1]) % 2).expand_as(enc["input_ids"]).clone()
    lengths = enc["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() // 3  # really padded
    with torch.inference_mode():
        want = bert(**enc).last_hidden_state
        got = packed.packed_hidden(bert, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
    assert not got[~mask].any()


def test_the_text_encoder_packs_and_gives_what_padded_batches_give(tiny_text):
    model = zoo.create(tiny_text, runtime="torch")
    assert model.encoder.packable and not model.encoder.packed  # opt-in
    model.encoder.packed = True
    got = model.encode(TEXTS, "text", batch_size=4)
    model.encoder.packed = False
    np.testing.assert_allclose(got, model.encode(TEXTS, "text", batch_size=4), atol=1e-5)


def test_only_bert_encoders_are_packed():
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    small = dict(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert packed.packable(BertModel(BertConfig(**small)))
    assert not packed.packable(BertModel(BertConfig(**small, is_decoder=True)))
    assert not packed.packable(DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2,
                                                                hidden_dim=32)))
    assert not packed.packable(object())
