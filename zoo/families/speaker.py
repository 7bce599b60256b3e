"""GE2E speaker encoder (Resemblyzer's weights): who is speaking, not what is said. Modality audio only.

The model is defined here (3-layer LSTM over 40-band mel power frames → linear → ReLU → L2) and loads the
``pretrained.pt`` state dict that ships inside the ``resemblyzer`` package with ``weights_only=True``;
resemblyzer itself is not imported. An utterance is cut into 1.6 s partial windows (1.3 per second, a
last window kept when 75 % covered) whose embeddings are averaged and re-normalized, as Resemblyzer's
``embed_utterance`` does. Input is volume-normalized (raised, never lowered, to -30 dBFS); Resemblyzer's
optional long-silence trimming (webrtcvad) is not applied. Input longer than ``max_seconds`` (60 s) is
truncated (counted in one ``AudioTruncationWarning`` per call).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import cut_audio

SAMPLE_RATE = 16000
N_MELS, HOP, N_FFT = 40, 160, 400  # 40 bands, 10 ms step, 25 ms window
PARTIAL_FRAMES = 160  # 1.6 s windows
RATE, MIN_COVERAGE = 1.3, 0.75
TARGET_DBFS = -30
MAX_SECONDS = 60


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame windows of one utterance (the last one may extend past the end: zero-padded)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / RATE) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise quiet audio to -30 dBFS; never lower loud audio."""
    rms = np.sqrt(np.mean(wav.astype(np.float64) ** 2))
    if rms == 0:
        return wav
    change = TARGET_DBFS - 20 * np.log10(rms)
    return wav if change < 0 else (wav * 10 ** (change / 20)).astype(np.float32)


class SpeakerEmbedder(Embedder):
    """The GE2E LSTM speaker encoder on torchaudio mel features."""

    folder_priority = 30

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        import torch
        import torchaudio
        from torch import nn

        state = torch.load(path / "pretrained.pt", map_location="cpu", weights_only=True)["model_state"]
        hidden = state["linear.weight"].shape[0]
        self.lstm = nn.LSTM(N_MELS, hidden, 3, batch_first=True)
        self.linear = nn.Linear(hidden, hidden)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.to(self.device).eval()
        self.linear.to(self.device).eval()
        # librosa's melspectrogram defaults (Slaney scale and norm, centred frames, zero padding)
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0, center=True, pad_mode="constant",
            norm="slaney", mel_scale="slaney",
        )
        self._torch = torch

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A folder holding Resemblyzer's ``pretrained.pt`` (and no ``config.json``)."""
        if not (path / "pretrained.pt").is_file() or (path / "config.json").is_file():
            return None
        return EmbedderSpec(name=str(path), family="speaker", source=str(path), **SPEC_FIELDS)

    @property
    def max_audio_seconds(self) -> float:
        """Utterances are cut at ``MAX_SECONDS``."""
        return float(MAX_SECONDS)

    def _windows(self, wav: np.ndarray):
        """The 1.6 s mel windows ``[n, 160, 40]`` of one utterance."""
        wav = normalize_volume(np.asarray(wav, np.float32))
        slices = partial_slices(len(wav))
        need = slices[-1].stop * HOP
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        mel = self.mel(self._torch.from_numpy(wav).to(self.device)).T  # [frames, 40]
        return self._torch.stack([mel[s] for s in slices])

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            windows = [self._windows(w) for w in cut_audio(batch, MAX_SECONDS * SAMPLE_RATE, SAMPLE_RATE)]
            # every window has the same length: one LSTM pass for the whole batch
            _, (h, _) = self.lstm(torch.cat(windows))
            partial = torch.relu(self.linear(h[-1]))
            partial = partial / partial.norm(dim=1, keepdim=True)
            means = torch.stack([p.mean(0) for p in partial.split([len(w) for w in windows])])
        return (means / means.norm(dim=1, keepdim=True)).cpu().numpy()


#: the fields every GE2E checkpoint shares (a folder with ``pretrained.pt`` gets them too)
SPEC_FIELDS: dict[str, Any] = dict(
    modalities=(Modality.AUDIO,), dim=256, license="apache-2.0", sample_rate=SAMPLE_RATE, batch_size=8,
    description="GE2E speaker encoder (Resemblyzer weights): voice identity, not content",
)
#: registry name → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {"resemblyzer/ge2e-speaker": dict(source="package:resemblyzer/")}
register_checkpoints("speaker", CHECKPOINTS, **SPEC_FIELDS)
