"""One embedder for text, image, audio and video and their mixtures: Omni-Embed-Nemotron on the Qwen2.5-Omni
thinker, loaded without its remote code.

The checkpoint is the Qwen2.5-Omni thinker (audio encoder, vision encoder, Qwen2.5 decoder) trained as an
embedder: its own code only swaps the decoder's causal mask for a bidirectional one. Here the stock
transformers thinker is built from the folder's config and weights and its decoder made bidirectional
(:func:`zoo.families.common.bidirectional`); nothing from the hub is executed.

An input is written as one user turn of Qwen2.5-Omni's chat format, the prompt (``query: `` / ``passage: ``)
first, then the item's parts in order::

    <|im_start|>user\\n{prompt}{parts}<|im_end|>\\n

where text is inserted as it is, an image becomes ``<|vision_bos|><|IMAGE|><|vision_eos|>``, audio
``<|audio_bos|><|AUDIO|><|audio_eos|>`` and a video ``<|vision_bos|><|VIDEO|><|vision_eos|>`` followed by
its sound track as an audio part when it has one (the processor expands each placeholder to the item's
tokens). The embedding is the mean of the decoder's final hidden states over the attention mask. Video
frames are sampled by :mod:`zoo.media.sampling`'s policy and handed over with the rate they were sampled at; audio
is read at 16 kHz, 30 s at most (the Whisper front end's window).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..batching import SPECIAL_TOKENS
from ..front import EncodeOptions
from ..media import Part
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import bidirectional, folder_config, pool, token_counts

MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.INTERLEAVED)
OMNI_TYPES = {"nvomniembed", "qwen2_5_omni_thinker"}
SAMPLE_RATE = 16000
MAX_AUDIO_SECONDS = 30.0
MEDIA_TOKENS = {"image": 256, "audio": 750, "video": 1024}  # rough tokens per part: enough to sort batches
PLACEHOLDERS = {"image": "<|vision_bos|><|IMAGE|><|vision_eos|>", "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
                "video": "<|vision_bos|><|VIDEO|><|vision_eos|>"}


def omni_text(parts: list, prompt: str | None) -> str:
    """The chat turn one input is written as (see the module docstring)."""
    body = "".join(p.value if p.is_text else PLACEHOLDERS[p.kind] for p in parts)
    return f"<|im_start|>user\n{prompt or ''}{body}<|im_end|>\n"


class OmniEmbedder(Embedder):
    """The Qwen2.5-Omni thinker with a bidirectional decoder; mean pooling over every token of the turn."""

    claims = frozenset(OMNI_TYPES)

    folder_priority = 15
    interleaved_parts = ("image", "audio", "video")
    reproduces = frozenset({"nvomniembed"})  # its remote code only lifts the causal mask, done here
    # token budgets: the chat turn's markup (ASCII: at most a token a character); the audio front end's 25 tokens
    # a second (Whisper's 100 mel frames a second, halved by its convolution and again by pooling)
    text_extra_tokens = len(omni_text([], None)) + SPECIAL_TOKENS
    audio_tokens_per_second = 25.0

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import (
            Qwen2_5OmniProcessor,
            Qwen2_5OmniThinkerConfig,
            Qwen2_5OmniThinkerForConditionalGeneration,
        )

        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("auto_map", None)  # the remote classes it names are never used
        cfg["model_type"] = "qwen2_5_omni_thinker"
        config = Qwen2_5OmniThinkerConfig.from_dict(cfg)
        thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, config=config,
                                                                             trust_remote_code=False)
        self.model = thinker.model.to(self.device).eval()  # the lm head is never used
        bidirectional(self.model.language_model)
        # never run (nor ask whether to run) the code the folder's auto_map names
        self.processor = Qwen2_5OmniProcessor.from_pretrained(path, trust_remote_code=False)

    @property
    def max_audio_seconds(self) -> float:
        """The Whisper front end's window."""
        return MAX_AUDIO_SECONDS

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A Qwen2.5-Omni thinker folder (an Omni-Embed-Nemotron checkpoint, or a stock thinker)."""
        cfg = folder_config(path, OMNI_TYPES)
        if cfg is None:
            return None
        return EmbedderSpec(name=str(path), family="omni", modalities=MODALITIES, dim=int(cfg["text_config"]
                            ["hidden_size"]), license="see the folder's model card", source=str(path),
                            sample_rate=SAMPLE_RATE, max_length=32768, prompts=dict(PROMPTS),
                            description=f"local {cfg['model_type']} model, omni mean-pooled embeddings")

    def _parts(self, item: Any, modality: Modality) -> list[Part]:
        parts = item if modality is Modality.INTERLEAVED else [Part(modality.value, item)]
        # a video's sound track follows it as an audio part
        out = []
        for p in parts:
            out.append(p)
            if p.kind == "video" and p.value.audio is not None:
                out.append(Part("audio", p.value.audio))
        return out

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        return [sum(len(p.value) if p.is_text else MEDIA_TOKENS[p.kind] for p in self._parts(x, modality))
                for x in items]

    def _token_sizes(self, items: list[Any], modality: Modality, prompt: str | None,
                     exact: bool = False) -> list[int] | None:
        # a sound is one chat turn too: its markup and prompt count besides its tokens
        if modality is Modality.AUDIO:
            return super()._token_sizes([self._parts(x, modality) for x in items], Modality.INTERLEAVED, prompt, exact)
        return super()._token_sizes(items, modality, prompt, exact)

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        return token_counts(self.processor.tokenizer, [omni_text([Part("text", t)], prompt) for t in texts],
                            self.spec.max_length)

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        prompt = opts.prompt
        parts = [self._parts(x, modality) for x in batch]
        # the processor takes one frame rate per call: items are grouped by the rate their videos were sampled at
        groups: dict[Any, list[int]] = {}
        for i, ps in enumerate(parts):
            rates = {round(p.value.fps, 3) for p in ps if p.kind == "video"}
            groups.setdefault(rates.pop() if len(rates) == 1 else (i if rates else None), []).append(i)
        out = np.empty((len(batch), self.spec.dim), dtype=np.float32)
        for idx in groups.values():
            out[idx] = self._forward([parts[i] for i in idx], prompt)
        return out

    def _forward(self, parts: list[list], prompt: str | None) -> np.ndarray:
        import torch

        media: dict[str, list] = {"image": [], "audio": [], "video": []}
        for ps in parts:
            for p in ps:
                if not p.is_text:
                    media[p.kind].append(p.value)
        videos = [[np.asarray(f) for f in v.frames] for v in media["video"]]
        kwargs: dict[str, Any] = {}
        if videos:
            kwargs["videos_kwargs"] = {"fps": media["video"][0].fps, "do_sample_frames": False}
        if media["audio"]:
            kwargs["sampling_rate"] = SAMPLE_RATE
        inputs = self.processor(text=[omni_text(ps, prompt) for ps in parts], images=media["image"] or None,
                                videos=videos or None, audio=media["audio"] or None,
                                padding=True, return_tensors="pt", **kwargs)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            out = pool(hidden, inputs["attention_mask"], "mean")
        return out.float().cpu().numpy()


PROMPTS = {"query": "query: ", "document": "passage: "}
#: registry name (the hub id) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "nvidia/omni-embed-nemotron-3b": dict(
        dim=2048, license="see the model card (NVIDIA open model license)",
        description="Omni-Embed-Nemotron 3B (Qwen2.5-Omni thinker, bidirectional): text, image, audio, video and "
                    "their mixtures in one space; query:/passage: prompts, mean pooling"),
}
register_checkpoints("omni", CHECKPOINTS, modalities=MODALITIES, sample_rate=SAMPLE_RATE, max_length=32768,
                     prompts=PROMPTS, default_prompt_name="query", batch_size=4, max_batch_size=8)
