"""Interleaved image+text embeddings from a Qwen2-VL-class model, GME style.

An input is an ordered list of parts (text and images). It is written into the chat format GME was trained
on::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{parts}<|im_end|>\\n<|im_start|>assistant\\n<|endoftext|>

where each image part becomes ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands the
pad to the image's patch tokens) and text parts are inserted as they are. The embedding is the last token's
final hidden state (last-token pooling). Here a *prompt* is the system instruction: ``spec.prompts`` maps
names to instructions, and the default instruction applies when none is named. Plain ``text`` and
``image`` inputs are one-part interleaved inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..registry import register_checkpoints, register_family
from ..spec import EmbedderSpec, Modality
from .common import folder_config, pool, token_counts

MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.INTERLEAVED)
VLM_TYPES = {"qwen2_vl", "qwen2_5_vl"}
DEFAULT_INSTRUCTION = "You are a helpful assistant."
IMAGE_PART = "<|vision_start|><|image_pad|><|vision_end|>"


def chat_text(parts: list, instruction: str) -> str:
    """The GME chat string of one interleaved input (images become vision placeholders)."""
    content = "".join(p if isinstance(p, str) else IMAGE_PART for p in parts)
    return (f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
            "<|im_start|>assistant\n<|endoftext|>")


@register_family("vlm")
class VLMEmbedder(Embedder):
    """Qwen2-VL(-class) model + processor; last-token pooling over the GME chat format."""

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoModel, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A Qwen2-VL / Qwen2.5-VL folder."""
        cfg = folder_config(path, VLM_TYPES)
        if cfg is None:
            return None
        text = cfg.get("text_config", cfg)
        return EmbedderSpec(
            name=str(path), family="vlm", modalities=MODALITIES, dim=int(text["hidden_size"]),
            license="see the folder's model card", source=str(path),
            max_length=int(text.get("max_position_embeddings", 32768)),
            prompts={"default": DEFAULT_INSTRUCTION}, default_prompt_name="default",
            description=f"local {cfg['model_type']} model, GME-style embeddings",
        )

    def _parts(self, item: Any, modality: Modality) -> list:
        return item if modality is Modality.INTERLEAVED else [item]

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        # text length plus a rough token count per image: enough to batch similar sizes together
        return [sum(len(p) if isinstance(p, str) else 256 for p in self._parts(x, modality)) for x in items]

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        chats = [chat_text([t], prompt or DEFAULT_INSTRUCTION) for t in texts]
        return token_counts(self.processor.tokenizer, chats, self.spec.max_length)

    def _embed(self, batch: list[Any], modality: Modality, prompt: str | None) -> np.ndarray:
        import torch

        parts = [self._parts(x, modality) for x in batch]
        texts = [chat_text(p, prompt or DEFAULT_INSTRUCTION) for p in parts]
        images = [p for ps in parts for p in ps if not isinstance(p, str)]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            out = pool(hidden, inputs["attention_mask"], "last")
        return out.float().cpu().numpy()


_GME_PROMPTS = {
    "default": DEFAULT_INSTRUCTION,
    "query": "Find an image that matches the given text.",
    "document": DEFAULT_INSTRUCTION,
}
_GME = "GME (Qwen2-VL): universal text / image / interleaved embeddings, instruction prompts"
#: registry name (the hub id) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct": dict(dim=1536, description=_GME),
    "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct": dict(dim=3584, description=_GME),
}
register_checkpoints("vlm", CHECKPOINTS, modalities=MODALITIES, license="apache-2.0", max_length=32768,
                     prompts=_GME_PROMPTS, default_prompt_name="default", batch_size=4, max_batch_size=8)
