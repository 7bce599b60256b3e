"""Late-interaction page retrieval on vision-language models: ColPali (PaliGemma) and ColQwen2 (Qwen2-VL).

An image (a document page) becomes one unit vector per image patch and prompt token, a text query one per
token, scored by MaxSim (:func:`zoo.scoring.maxsim`). Loading, pre-processing and the forward pass are
transformers' own ``ColPaliForRetrieval`` / ``ColQwen2ForRetrieval`` and their processors
(``process_images`` for pages, ``process_queries`` for texts, which adds the query prefix and the
augmentation tokens); this family keeps each item's rows where the attention mask is set. Text is always
the query side, images the document side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..batching import SPECIAL_TOKENS
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality, derived_batch_tokens
from .common import folder_config

MODALITIES = (Modality.TEXT, Modality.IMAGE)
ARCHITECTURES = {"colpali": ("ColPaliForRetrieval", "ColPaliProcessor"),
                 "colqwen2": ("ColQwen2ForRetrieval", "ColQwen2Processor")}


class ColVisionEmbedder(Embedder):
    """A transformers ColPali / ColQwen2 folder: multi-vector pages and queries."""

    claims = frozenset(ARCHITECTURES)

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        import transformers

        cfg = folder_config(path, set(ARCHITECTURES))
        if cfg is None:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(f"{path.name}: not a transformers ColPali / ColQwen2 folder (config.json "
                                       f"model_type must be one of {sorted(ARCHITECTURES)})")
        model_cls, processor_cls = (getattr(transformers, n) for n in ARCHITECTURES[cfg["model_type"]])
        self.processor = processor_cls.from_pretrained(path)
        self.model = model_cls.from_pretrained(path).to(self.device).eval()
        # a query is written BOS + prefix + text + 10 augmentation tokens + "\n" (all markup ASCII: a token or
        # more a character), so that markup is what its row holds besides the text (token budgets)
        p = self.processor
        self.text_extra_tokens = (len(f"{p.tokenizer.bos_token or ''}{p.query_prefix}\n")
                                  + 10 * len(p.query_augmentation_token or "") + SPECIAL_TOKENS)

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A ColPali / ColQwen2 folder in transformers' layout."""
        cfg = folder_config(path, set(ARCHITECTURES))
        if cfg is None:
            return None
        text = cfg.get("vlm_config", {}).get("text_config", {})
        width = text.get("hidden_size")
        return EmbedderSpec(
            name=str(path), family="colvision", modalities=MODALITIES, dim=int(cfg.get("embedding_dim", 128)),
            license="see the folder's model card", source=str(path),
            max_length=int(text.get("max_position_embeddings", 8192)), outputs=("multivector",),
            batch_size=4, max_batch_size=8, description=f"local {cfg['model_type']} late-interaction page retriever",
            # the 128-d rows are a projection: the budget follows the language model's width
            max_batch_tokens=derived_batch_tokens(int(width)) if width else None,
        )

    def is_query(self, modality: Modality, opts: EncodeOptions) -> bool:
        """Texts are queries, page images documents."""
        return modality is Modality.TEXT

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        return [len(x) if isinstance(x, str) else 0 for x in items]

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        # what the model reads: the query prefix and augmentation tokens included
        return self.processor.process_queries(list(texts), return_tensors="pt")["attention_mask"].sum(1).tolist()

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> list[np.ndarray]:
        import torch

        if modality is Modality.TEXT:
            inputs = self.processor.process_queries(list(batch), return_tensors="pt")
        else:
            inputs = self.processor.process_images([im.convert("RGB") for im in batch], return_tensors="pt")
        inputs.pop("labels", None)  # training targets the processor adds; not a model input here
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            emb = self.model(**inputs).embeddings
        mask = inputs["attention_mask"].bool().cpu()
        return [e[m].numpy() for e, m in zip(emb.float().cpu(), mask)]


#: registry name (the hub id: the transformers-native conversions) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    # token budgets from the language models' widths (Gemma 2B: 2,048; Qwen2-VL 2B: 1,536), not the 128-d rows
    "vidore/colpali-v1.3-hf": dict(
        license="gemma", max_length=8192, max_batch_tokens=derived_batch_tokens(2048),
        description="ColPali v1.3 (PaliGemma 3B): multi-vector page-image retrieval, 128-d patch vectors"),
    "vidore/colqwen2-v1.0-hf": dict(
        license="apache-2.0", max_length=32768, max_batch_tokens=derived_batch_tokens(1536),
        description="ColQwen2 v1.0 (Qwen2-VL 2B): multi-vector page-image retrieval, 128-d patch vectors"),
}
register_checkpoints("colvision", CHECKPOINTS, modalities=MODALITIES, dim=128, outputs=("multivector",),
                     batch_size=4, max_batch_size=8)
