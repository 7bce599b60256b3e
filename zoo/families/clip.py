"""Image–text contrastive models: open_clip checkpoints and transformers CLIP / SigLIP folders.

- ``open_clip``: any folder in open_clip's hub layout (``open_clip_config.json`` + weights), loaded by
  open_clip's own factory (``local-dir:``) with the model's own preprocessing transform and tokenizer.
  Registered checkpoints are the open_clip hub repositories, resolved like every other model (local
  override, HF cache, hub); they also record open_clip's ``(arch, tag)``, so a folder holding just a
  checkpoint file (e.g. OpenAI's ``ViT-L-14.pt`` in ``$ZOO_MODELS_DIR/<name>/``) loads as
  ``create_model_and_transforms(arch, pretrained=file)`` with that tag's preprocessing.
- ``hf_clip``: ``CLIPModel`` / ``SiglipModel`` folders or hub ids, with the folder's tokenizer and image
  processor. SigLIP text is padded to its fixed length, as SigLIP was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import TokenizedText, folder_config, projected, read_json, with_prompt

TEXT_IMAGE = (Modality.TEXT, Modality.IMAGE)
HF_TYPES = {"clip", "siglip"}


class OpenClipEmbedder(Embedder):
    """open_clip model: ``encode_text`` / ``encode_image`` with its own tokenizer and transform."""

    folder_priority = 19  # an open_clip folder may also hold a transformers config.json of type clip

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        import open_clip

        if (path / "open_clip_config.json").is_file():
            name, kwargs = f"local-dir:{path}", {}
        else:
            name, kwargs = _checkpoint_file_args(spec, path)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, device=self.device, **kwargs)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        # every text is padded to the context length: what a text costs a pass (token budgets)
        self.min_text_tokens = int(getattr(self.tokenizer, "context_length", spec.max_length))

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A folder with ``open_clip_config.json``."""
        cfg = read_json(path / "open_clip_config.json")
        if cfg is None:
            return None
        model_cfg = cfg.get("model_cfg", cfg)
        return EmbedderSpec(
            name=str(path), family="open_clip", modalities=TEXT_IMAGE, dim=int(model_cfg["embed_dim"]),
            license="see the folder's model card", source=str(path),
            max_length=int(model_cfg.get("text_cfg", {}).get("context_length", 77)),
            description="local open_clip model",
        )

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        tokens = self.tokenizer(with_prompt(texts, prompt))  # padded to the context length
        hf = getattr(self.tokenizer, "tokenizer", None)  # open_clip's wrapper of a transformers tokenizer
        pad = hf.pad_token_id if hf is not None and hf.pad_token_id is not None else 0
        return (tokens != pad).sum(dim=1).tolist()

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        import torch

        prompt = opts.prompt
        with torch.inference_mode():
            if modality is Modality.TEXT:
                tokens = self.tokenizer(with_prompt(batch, prompt)).to(self.device)
                out = self.model.encode_text(tokens)
            else:
                pixels = torch.stack([self.preprocess(im) for im in batch]).to(self.device)
                out = self.model.encode_image(pixels)
        return out.float().cpu().numpy()


CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _checkpoint_file_args(spec: EmbedderSpec, path: Path) -> tuple[str, dict[str, Any]]:
    """open_clip arguments for a folder that holds one checkpoint file of a registered (arch, tag)."""
    import open_clip

    from ..errors import WeightsUnavailableError

    arch = spec.options.get("arch")
    files = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    if not arch or len(files) != 1:
        raise WeightsUnavailableError(
            f"{path} has no open_clip_config.json; a folder with a bare checkpoint needs exactly one "
            f"{'/'.join(CHECKPOINT_SUFFIXES)} file and a registered model (found {len(files)} file(s)"
            + ("" if arch else f", and {spec.name!r} records no open_clip arch") + ")"
        )
    kwargs: dict[str, Any] = {"pretrained": str(files[0])}
    tag_cfg = open_clip.get_pretrained_cfg(arch, spec.options.get("tag", "")) if spec.options.get("tag") else {}
    for ours, theirs in (("image_mean", "mean"), ("image_std", "std"), ("image_interpolation", "interpolation"),
                         ("image_resize_mode", "resize_mode")):
        if tag_cfg.get(theirs) is not None:  # a file carries no preprocessing: take the tag's
            kwargs[ours] = tag_cfg[theirs]
    if tag_cfg.get("quick_gelu"):
        kwargs["force_quick_gelu"] = True
    return arch, kwargs


class HFClipEmbedder(TokenizedText, Embedder):
    """transformers ``CLIPModel`` / ``SiglipModel``: ``get_text_features`` / ``get_image_features``."""

    claims = frozenset(HF_TYPES)

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.siglip = self.model.config.model_type.startswith("siglip")
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        if self.siglip:  # SigLIP pads every text to its length: what a text costs a pass (token budgets)
            self.min_text_tokens = self.max_length

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A transformers CLIP or SigLIP folder."""
        cfg = folder_config(path, HF_TYPES)
        if cfg is None:
            return None
        text = cfg.get("text_config", {})
        dim = cfg.get("projection_dim") if cfg["model_type"] == "clip" else text.get("projection_size")
        dim = dim or text.get("hidden_size") or cfg.get("vision_config", {}).get("hidden_size")
        return EmbedderSpec(
            name=str(path), family="hf_clip", modalities=TEXT_IMAGE, dim=int(dim),
            license="see the folder's model card", source=str(path),
            max_length=int(text.get("max_position_embeddings", 77)),
            description=f"local transformers {cfg['model_type']} model",
        )

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        import torch

        prompt = opts.prompt
        with torch.inference_mode():
            if modality is Modality.TEXT:
                tokens = self.tokenizer(
                    with_prompt(batch, prompt), truncation=True, max_length=self.max_length,
                    padding="max_length" if self.siglip else True, return_tensors="pt",
                ).to(self.device)
                if self.siglip:
                    tokens.pop("attention_mask", None)  # SigLIP attends over its fixed-length padding
                out = projected(self.model.get_text_features(**tokens))
            else:
                pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                out = projected(self.model.get_image_features(pixel_values=pixels))
        return out.float().cpu().numpy()


#: registry name (the open_clip hub repository) → spec fields; ``options`` records open_clip's (arch, tag)
OPEN_CLIP_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": dict(
        dim=512, license="mit", options={"arch": "ViT-B-32", "tag": "laion2b_s34b_b79k"},
        description="open_clip ViT-B-32, LAION-2B"),
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K": dict(
        dim=768, license="mit", options={"arch": "ViT-L-14", "tag": "laion2b_s32b_b82k"},
        description="open_clip ViT-L-14, LAION-2B"),
    "timm/vit_large_patch14_clip_224.openai": dict(
        dim=768, license="mit", options={"arch": "ViT-L-14", "tag": "openai"},
        description="OpenAI CLIP ViT-L-14 via open_clip"),
    "timm/ViT-B-16-SigLIP": dict(
        dim=768, license="apache-2.0", max_length=64, options={"arch": "ViT-B-16-SigLIP", "tag": "webli"},
        description="SigLIP ViT-B-16 (WebLI) via open_clip"),
    "apple/MobileCLIP-S2-OpenCLIP": dict(
        dim=512, license="apple-amlr", options={"arch": "MobileCLIP-S2", "tag": "datacompdr"},
        description="MobileCLIP-S2 (DataCompDR) via open_clip"),
}
#: registry name (the hub id) → spec fields
HF_CLIP_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-base-patch32": dict(
        dim=512, license="mit", description="OpenAI CLIP ViT-B/32 (transformers CLIPModel)"),
    "google/siglip-base-patch16-224": dict(
        dim=768, license="apache-2.0", max_length=64, description="SigLIP base (transformers SiglipModel)"),
}
_SHARED = dict(modalities=TEXT_IMAGE, max_length=77, max_batch_size=32)
register_checkpoints("open_clip", OPEN_CLIP_CHECKPOINTS, **_SHARED)
register_checkpoints("hf_clip", HF_CLIP_CHECKPOINTS, **_SHARED)
