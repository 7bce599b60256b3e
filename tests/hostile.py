"""Hostile and oversized inputs, made on the fly (nothing stored): lying audio headers, hour-long audio."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def lying_flac(declared: int = (1 << 36) - 1, samples: int = 800) -> bytes:
    """A valid FLAC of ``samples`` at 16 kHz (0.05 s) whose STREAMINFO claims ``declared`` (2^36 - 1 by default)."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.sin(np.arange(samples, dtype=np.float32) * 0.05) * 0.3, 16000, format="FLAC")
    data = bytearray(buf.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO: 10 bytes of sizes, then 64 bits holding
    # rate (20) | channels-1 (3) | bits-1 (5) | total samples (36)
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (declared & ((1 << 36) - 1))
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def long_flac(path: Path, seconds: int = 3600, rate: int = 16000) -> Path:
    """A real, honest FLAC: a one-second tone, then silence up to ``seconds`` (compresses to about 200 KB)."""
    import soundfile

    tone = (np.sin(np.arange(rate) * 0.05) * 8000).astype(np.int16)
    silence = np.zeros(rate * 60, np.int16)
    with soundfile.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        f.write(tone)
        for _ in range(seconds // 60):
            f.write(silence)
    return path
