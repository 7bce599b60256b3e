"""Spoken captions: espeak-ng voices, speeds and pitches, plus light noise (deterministic per seed).

    python -m zoo.data.speech --out /tmp/speech --seed 3 "a red circle" "two blue squares"
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # what the aligned model's audio tower expects; espeak's 22.05 kHz is resampled

TRAIN_VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-gb", "en-gb+f4", "en-gb-x-rp+m1", "en-gb-scotland",
                "en-us+f5", "en-gb+m5")
HELDOUT_VOICES = ("en-us+m2", "en-gb+f3", "en-gb-x-rp+f1")  # voices the training never hears


@dataclass(frozen=True)
class Voice:
    """One espeak-ng rendering setting."""

    name: str
    speed: int  # words per minute
    pitch: int  # 0..99
    snr_db: float  # white-noise level added afterwards


def sample_voice(rng: np.random.Generator, voices: tuple[str, ...] = TRAIN_VOICES) -> Voice:
    """A random voice, speed, pitch and noise level."""
    return Voice(str(voices[rng.integers(len(voices))]), int(rng.integers(130, 200)), int(rng.integers(25, 75)),
                 float(rng.uniform(18, 40)))


def espeak_available() -> bool:
    """Whether the espeak-ng program is installed."""
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """``text`` spoken by ``voice`` as mono float32 at :data:`SAMPLE_RATE`, with noise added."""
    import soundfile
    import torch
    import torchaudio.functional as AF

    wav = subprocess.run(
        ["espeak-ng", "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text],
        check=True, capture_output=True, timeout=30,
    ).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    samples = AF.resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy()
    power = float(np.mean(samples**2)) + 1e-12
    noise = rng.standard_normal(samples.shape).astype(np.float32) * np.sqrt(power / 10 ** (voice.snr_db / 10))
    return (samples + noise).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Encode samples as a 16-bit WAV file in memory."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def main() -> None:
    """Speak each text with a random training voice and write WAV files."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", action="store_true", help="use voices the training never hears")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(args.texts):
        voice = sample_voice(rng, HELDOUT_VOICES if args.heldout else TRAIN_VOICES)
        (args.out / f"speech_{i:03d}.wav").write_bytes(wav_bytes(speak(text, voice, rng)))
        print(f"speech_{i:03d}.wav  {voice}  {text!r}")


if __name__ == "__main__":
    main()
