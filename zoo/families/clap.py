"""CLAP (transformers ``ClapModel``): text and audio in one space.

Audio is resampled to the feature extractor's rate (48 kHz for LAION CLAP) and cut to its window
(``max_length_s``, 10 s) before feature extraction: the extractor would otherwise crop longer input at
random, and embeddings must be deterministic (counted in one ``AudioTruncationWarning`` per call).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import cut_audio, folder_config, projected, read_json, token_counts, with_prompt

TEXT_AUDIO = (Modality.TEXT, Modality.AUDIO)


class ClapEmbedder(Embedder):
    """``get_text_features`` / ``get_audio_features`` with the folder's tokenizer and feature extractor."""

    claims = frozenset({"clap"})

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        self.model = ClapModel.from_pretrained(path).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.features = AutoFeatureExtractor.from_pretrained(path)
        self.rate = int(self.features.sampling_rate)
        self.max_samples = int(self.features.nb_max_samples)

    @property
    def sample_rate(self) -> int:
        """The feature extractor's rate: inputs are resampled to it."""
        return self.rate

    @property
    def max_audio_seconds(self) -> float:
        """The feature extractor's window (10 s for LAION CLAP)."""
        return self.max_samples / self.rate

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A transformers CLAP folder."""
        cfg = folder_config(path, {"clap"})
        if cfg is None:
            return None
        rate = (read_json(path / "preprocessor_config.json") or {}).get("sampling_rate", 48000)
        return EmbedderSpec(
            name=str(path), family="clap", modalities=TEXT_AUDIO, dim=int(cfg.get("projection_dim", 512)),
            license="see the folder's model card", source=str(path),
            max_length=int(cfg.get("text_config", {}).get("max_position_embeddings", 514)) - 2,
            description="local transformers CLAP model", sample_rate=int(rate),
        )

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        return token_counts(self.tokenizer, with_prompt(texts, prompt), self.spec.max_length)

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        import torch

        prompt = opts.prompt
        with torch.inference_mode():
            if modality is Modality.TEXT:
                tokens = self.tokenizer(with_prompt(batch, prompt), padding=True, truncation=True,
                                        max_length=self.spec.max_length, return_tensors="pt").to(self.device)
                out = projected(self.model.get_text_features(**tokens))
            else:
                feats = self.features(cut_audio(batch, self.max_samples, self.rate), sampling_rate=self.rate,
                                      return_tensors="pt").to(self.device)
                out = projected(self.model.get_audio_features(**feats))
        return out.float().cpu().numpy()


#: registry name (the hub id) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "laion/clap-htsat-unfused": dict(description="LAION CLAP HTSAT (unfused)"),
    "laion/larger_clap_general": dict(description="LAION larger CLAP, general audio"),
}
register_checkpoints("clap", CHECKPOINTS, modalities=TEXT_AUDIO, dim=512, license="apache-2.0", max_length=512,
                     sample_rate=48000, batch_size=8, max_batch_size=16)
