"""Shared fixtures: offline everywhere, the real default model once per session, tiny random models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import zoo  # noqa: E402
from zoo.defaults import default_model  # noqa: E402
from zoo.weights import resolve  # noqa: E402


@pytest.fixture(scope="session")
def minilm():
    """The real shipped default text model, loaded once."""
    return zoo.create(default_model("text"), device="cpu")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder of the real shipped MiniLM weights."""
    return resolve(zoo.get_spec(default_model("text")))


def make_tiny_text_folder(dest: Path, *, pooling: str | None = None, prompts: dict | None = None) -> Path:
    """Save a tiny random BERT (real MiniLM tokenizer) in sentence-transformers layout."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    src = resolve(zoo.get_spec(default_model("text")))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dest / name)
    if pooling:
        (dest / "1_Pooling").mkdir()
        modes = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "max": "pooling_mode_max_tokens", "last": "pooling_mode_lasttoken"}
        (dest / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, **{v: k == pooling for k, v in modes.items()}}))
        (dest / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]))
        (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    if prompts:
        (dest / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts, "default_prompt_name": None}))
    return dest


from tests.serving_fixtures import triton  # noqa: E402,F401  (session fixture for serving tests)
