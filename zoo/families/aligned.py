"""Locked-text aligned towers: a frozen text model plus small image and audio towers trained (LiT-style)
to map into its embedding space. The shipped instance, ``zoo/shapes-aligned-minilm``, is trained by
``scripts/train_aligned.py`` on generated shapes and spoken captions: a small model for offline demos and
tests, not a general-purpose image or audio encoder.

Folder layout: ``config.json`` (tower sizes, text model, fusion weights), ``model.safetensors`` (image
and audio towers only; the text tower is the registered text model, unchanged) and ``card.json``.

Interleaved input is a documented fusion of its parts: each text part is embedded by the text tower and
each image part by the image tower, each is L2-normalized, and the result is their weighted sum
``text_weight * Σ text + image_weight * Σ image`` (normalized afterwards when ``normalize=True``), weights
from ``config.json`` (2.5 and 1 for the shipped model), so ``[image of a red circle, "but blue"]`` lands
near a blue circle.

Video is a documented fusion too: each sampled frame (see :mod:`zoo.media.sampling` for the policy) is embedded by
the image tower and L2-normalized, the frames are averaged, and when the clip has an audio track its
normalized audio-tower embedding is added with weight :data:`VIDEO_AUDIO_WEIGHT`; so a clip of a moving red
circle lands near "a red circle", and a spoken caption in its sound track pulls it toward what is said.

Audio longer than ``max_seconds`` is truncated to its first ``max_seconds`` (counted in one
``AudioTruncationWarning`` per call).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..front import EncodeOptions
from ..registry import create, register_checkpoints
from ..runtime import TOWER_RUNTIMES, Tower
from ..spec import EmbedderSpec, Modality
from .common import cut_audio, folder_config

VIDEO_AUDIO_WEIGHT = 1.0  # a clip's sound track against the mean of its frames (each normalized)
CHECK_SEED = 7  # the rendered scenes an exported image tower is checked on
IMAGE_SIZE = 64
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25


def build_image_tower(dim: int, width: int = 32):
    """CNN from a 64×64 RGB image to a ``dim`` vector (keeps a 4×4 map so position survives)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *block(3, w, 2), *block(w, w, 1),  # 32×32: a strided stem keeps full-resolution work small
        *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1),  # 16
        *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),  # 8
        *block(4 * w, 4 * w, 2),  # 4
        nn.Flatten(), nn.Linear(4 * w * 16, 512), nn.ReLU(inplace=True), nn.Linear(512, dim),
    )


def _audio_tower_cls():
    import torch
    from torch import nn

    class AudioTower(nn.Module):
        """Log-mel frames → strided 1-D convolutions → masked mean+max pooling → ``dim`` vector."""

        def __init__(self, dim: int, sample_rate: int = 16000, n_mels: int = 64, width: int = 128) -> None:
            super().__init__()
            import torchaudio

            self.hop = 160
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=400, hop_length=self.hop,
                                                            n_mels=n_mels)
            chans = [n_mels, width, width, int(1.5 * width), 2 * width]
            layers = []
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
                stride = 1 if i == 0 else 2
                layers += [nn.Conv1d(cin, cout, 5, stride, 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU(True)]
            self.convs = nn.Sequential(*layers)
            self.strides = 8
            self.head = nn.Sequential(nn.Linear(4 * width, 512), nn.ReLU(True), nn.Linear(512, dim))

        def features(self, wave: torch.Tensor) -> torch.Tensor:
            """Per-utterance normalized log-mel ``[B, n_mels, T]``."""
            shortest = self.mel.n_fft // 2 + 1  # centred frames reflect-pad by n_fft/2: shorter input has no frame
            if wave.shape[-1] < shortest:
                wave = torch.nn.functional.pad(wave, (0, shortest - wave.shape[-1]))
            spec = torch.log(self.mel(wave) + 1e-6)
            return (spec - spec.mean(dim=(1, 2), keepdim=True)) / (spec.std(dim=(1, 2), keepdim=True) + 1e-5)

        def forward(self, wave: torch.Tensor, lengths: torch.Tensor, spec_hook=None) -> torch.Tensor:
            """``wave`` ``[B, S]`` zero-padded, ``lengths`` real sample counts → ``[B, dim]``."""
            feats = self.features(wave)
            if spec_hook is not None:  # training-time SpecAugment
                feats = spec_hook(feats)
            h = self.convs(feats)
            frames = torch.div(lengths, self.hop * self.strides, rounding_mode="floor") + 1
            mask = torch.arange(h.shape[-1], device=h.device)[None, :] < frames.clamp(max=h.shape[-1])[:, None]
            m = mask[:, None, :].to(h.dtype)
            mean = (h * m).sum(-1) / m.sum(-1).clamp(min=1)
            peak = h.masked_fill(m == 0, -1e4).max(-1).values
            return self.head(torch.cat([mean, peak], dim=1))

    return AudioTower


def build_audio_tower(dim: int, **kw):
    """The audio tower module (torchaudio's mel frontend + convolutions)."""
    return _audio_tower_cls()(dim, **kw)


def image_pixels(image) -> np.ndarray:
    """A PIL image as the tower sees it: squashed to 64×64 RGB uint8 (training stores exactly this)."""
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.uint8)


def pixels_to_tensor(pixels: np.ndarray) -> Any:
    """``[B, 64, 64, 3]`` uint8 → normalized ``[B, 3, 64, 64]`` float tensor."""
    import torch

    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - IMAGE_MEAN) / IMAGE_STD


def image_batch(images: list) -> Any:
    """PIL images → the normalized tensor the image tower takes."""
    return pixels_to_tensor(np.stack([image_pixels(im) for im in images]))


def audio_batch(waves: list[np.ndarray]) -> tuple[Any, Any]:
    """Mono waveforms → zero-padded ``[B, S]`` tensor and lengths."""
    import torch

    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return out, lengths


class AlignedEmbedder(Embedder):
    """Frozen text model + trained image/audio towers in its space; interleaved = fusion of parts."""

    claims = frozenset({"zoo-aligned"})

    folder_priority = 10
    runtimes = TOWER_RUNTIMES

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        import torch
        from safetensors.torch import load_file

        cfg = json.loads((path / "config.json").read_text())
        self.config = cfg
        # on torch here: the model's own use_runtime moves the text model with its image tower (and threads)
        self.text = create(cfg["text_model"], device=self.device, runtime="torch")
        dim = self.text.spec.dim
        state = load_file(path / "model.safetensors")
        self.image_tower = build_image_tower(dim, cfg["image_width"])
        self.audio_tower = build_audio_tower(dim, sample_rate=cfg["sample_rate"], width=cfg["audio_width"])
        self.image_tower.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("image.")})
        self.audio_tower.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("audio.")},
                                         strict=False)  # the mel filterbank is rebuilt, not stored
        self.image_tower.to(self.device).eval()
        self.audio_tower.to(self.device).eval()
        self.max_samples = int(cfg["max_seconds"] * cfg["sample_rate"])
        self._torch = torch

    @property
    def max_audio_seconds(self) -> float:
        """The audio tower's window (``max_seconds`` of the config)."""
        return float(self.config["max_seconds"])

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A folder written by ``scripts/train_aligned.py``."""
        cfg = folder_config(path, {"zoo-aligned"})
        if cfg is None:
            return None
        return EmbedderSpec(name=str(path), family="aligned", source=str(path), **spec_fields(cfg))

    def _towers(self) -> list[Tower]:
        return [Tower("image", self.image_tower, self._check_images)]

    def _check_images(self, n: int = 256, batch_size: int = 32) -> list[dict[str, Any]]:
        """Batches of held-out rendered scenes that an exported image tower is checked on."""
        from ..data import shapes

        rng = np.random.default_rng(CHECK_SEED)
        images = [shapes.render(shapes.sample_scene(rng, int(rng.integers(1, 3))), rng) for _ in range(n)]
        return [{"input": image_batch(images[i : i + batch_size]).to(self.device)} for i in range(0, n, batch_size)]

    def use_runtime(self, runtime: str, threads: int | None = None) -> None:
        """The image tower and the text model both run on ``runtime`` (the audio tower stays on torch: its
        mel front end is an FFT that the exporters do not take)."""
        super().use_runtime(runtime, threads)
        self.text.use_runtime(runtime, threads)

    def embed_images(self, images: list) -> np.ndarray:
        """Raw image-tower embeddings of PIL images."""
        with self._torch.inference_mode():
            pixels = image_batch(images).to(self.device)
            return self.run_tower("image", self.image_tower, {"input": pixels}).float().cpu().numpy()

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray:
        """Raw audio-tower embeddings of mono waveforms at the model's rate, one utterance per pass: the
        tower normalizes each spectrogram over its whole (padded) length, so in a padded batch a row would
        depend on the longest waveform beside it."""
        rows = []
        with self._torch.inference_mode():
            for w in cut_audio(waves, self.max_samples, self.sample_rate):
                wave, lengths = audio_batch([w])
                rows.append(self.audio_tower(wave.to(self.device), lengths.to(self.device)))
        return self._torch.cat(rows).float().cpu().numpy()

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        return self.text._text_tokens(texts, prompt)

    def _embed_text(self, texts: list[str], prompt: str | None) -> np.ndarray:
        return self.text.forward(texts, Modality.TEXT, EncodeOptions(prompt=prompt), "dense")

    def _fuse(self, batch: list[list]) -> np.ndarray:
        """Weighted sums of each item's normalized part embeddings; the batch's text parts, then its image
        parts, go through their tower ``batch_size`` at a time (a batch of items may hold many parts each)."""
        from ..postprocess import normalize

        total = np.zeros((len(batch), self.spec.dim), dtype=np.float32)
        step = self.spec.batch_size
        for is_text, embed, weight in ((True, lambda xs: self._embed_text(xs, None), self.config["text_weight"]),
                                       (False, self.embed_images, self.config["image_weight"])):
            owners = [i for i, parts in enumerate(batch) for p in parts if p.is_text == is_text]
            parts = [p.value for item in batch for p in item if p.is_text == is_text]
            for k in range(0, len(parts), step):
                np.add.at(total, owners[k : k + step], weight * normalize(embed(parts[k : k + step])))
        return total

    def embed_videos(self, videos: list) -> np.ndarray:
        """Decoded videos (:class:`zoo.media.sampling.Video`): the mean of each clip's normalized frame embeddings,
        plus its normalized sound-track embedding times :data:`VIDEO_AUDIO_WEIGHT` where it has one. All
        frames of the batch go through the image tower together, all sound tracks through the audio tower."""
        from ..postprocess import normalize

        owners = np.repeat(np.arange(len(videos)), [len(v.frames) for v in videos])
        frames = normalize(self.embed_images([f for v in videos for f in v.frames]))
        total = np.zeros((len(videos), self.spec.dim), dtype=np.float32)
        np.add.at(total, owners, frames)
        total = normalize(total / np.bincount(owners, minlength=len(videos))[:, None])
        heard = [i for i, v in enumerate(videos) if v.audio is not None]
        if heard:
            total[heard] += VIDEO_AUDIO_WEIGHT * normalize(self.embed_audio([videos[i].audio for i in heard]))
        return total

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        prompt = opts.prompt
        if modality is Modality.VIDEO:
            return self.embed_videos(batch)
        if modality is Modality.TEXT:
            return self._embed_text(batch, prompt)
        if modality is Modality.IMAGE:
            return self.embed_images(batch)
        if modality is Modality.AUDIO:
            return self.embed_audio(batch)
        return self._fuse(batch)


def spec_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """Spec fields of an aligned model, read from its ``config.json`` (which training writes)."""
    return dict(
        modalities=(Modality.TEXT, Modality.IMAGE, Modality.AUDIO, Modality.INTERLEAVED, Modality.VIDEO),
        dim=int(cfg["dim"]), license="apache-2.0", max_length=int(cfg.get("max_length", 256)),
        description=cfg.get("description", "text model with aligned image and audio towers"),
        sample_rate=int(cfg["sample_rate"]), batch_size=32, max_batch_size=32,
    )


_SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "models" / "shapes-aligned-minilm" / "config.json"
#: registry name → spec fields: the shipped model's come from the config.json that ships with its weights
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "zoo/shapes-aligned-minilm": dict(source="package:zoo/models/shapes-aligned-minilm",
                                      **spec_fields(json.loads(_SHIPPED_CONFIG.read_text()))),
}
register_checkpoints("aligned", CHECKPOINTS)
