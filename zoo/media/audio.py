"""Audio items: a path, encoded ``bytes`` (WAV/FLAC/OGG…, whatever libsndfile reads), or an
``(array, sample_rate)`` pair; mixed down to mono and resampled to the model's rate.

Audio is read only as far as the model will listen (``max_seconds`` plus ``RESAMPLE_MARGIN_S``), so the
allocation never follows a length the file's header declares; a header that declares more samples than the
data holds is an error. Sample rates outside ``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE`` are refused, and the
resampler's kernel is bounded whatever the rate (see :func:`resample`).
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InputError
from . import budgets as B
from .source import file_bytes

WIRE_CHECK_SECONDS = 1.0  # audio a client decodes to check a file before sending it
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports about SF_COUNT_MAX when a stream's length is unknown


def check_rate(rate: int, index: int) -> int:
    """``rate`` if it is a sample rate zoo resamples from, else an :class:`InputError`."""
    if not B.MIN_SAMPLE_RATE <= rate <= B.MAX_SAMPLE_RATE:
        raise InputError(index, f"invalid sample rate {rate} Hz (accepted: {B.MIN_SAMPLE_RATE} to "
                                f"{B.MAX_SAMPLE_RATE} Hz)")
    return rate


def frames_to_read(seconds: float | None, rate: int) -> int | None:
    """Samples at ``rate`` that cover ``seconds`` plus the resampling margin (None: all)."""
    return None if seconds is None else int(np.ceil((seconds + B.RESAMPLE_MARGIN_S) * rate))


def ratio(orig: int, new: int) -> tuple[int, int] | None:
    """The resampling ratio ``new/orig`` as reduced ``(p, q)`` when both terms are at most ``MAX_RESAMPLE_TERMS``
    (every common pair of rates: 16000/44100 = 160/441), else None."""
    r = Fraction(new, orig)
    return (r.numerator, r.denominator) if max(r.numerator, r.denominator) <= B.MAX_RESAMPLE_TERMS else None


def resample(samples: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Mono float32 ``samples`` from ``orig`` Hz to ``new`` Hz, with a kernel bounded whatever the rates.

    A ratio with small terms (:func:`ratio`) goes through torchaudio's windowed sinc, whose kernel holds
    ``p * (q + 2 * ceil(6 q / (0.99 min(p, q))))`` values, at most ``N**2 + 16 N`` for
    ``N = MAX_RESAMPLE_TERMS``. Any other ratio (19997 Hz to 16 kHz would make torchaudio build a
    16000 x 20000 kernel, 2.4 GiB) goes through FFmpeg's swresample: a fixed bank of 1024 filter phases,
    interpolated, each ``32 x max(1, orig / new)`` taps long (at most ~1.6 M values from 768 kHz to 16 kHz),
    exact in rate."""
    if orig == new:
        return samples
    terms = ratio(orig, new)
    if terms is not None:
        import torch
        import torchaudio.functional as AF

        p, q = terms
        return AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), q, p).numpy()
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None], format="flt",
                                       layout="mono")
    frame.sample_rate = orig
    resampler = av.AudioResampler(format="flt", layout="mono", rate=new)
    chunks = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def read_audio(data: bytes, index: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode encoded audio to mono, reading no further than ``max_seconds`` (plus margin) into the stream."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            rate, channels, declared = int(f.samplerate), int(f.channels), int(f.frames)
            check_rate(rate, index)
            known = 0 <= declared < _UNKNOWN_FRAMES
            limit = frames_to_read(max_seconds, rate)
            if limit is None and not known:
                raise InputError(index, "audio stream of unknown length")
            want = declared if limit is None else (min(declared, limit) if known else limit)
            if want * channels > B.MAX_AUDIO_VALUES:
                raise InputError(index, f"audio too large: {want} samples x {channels} channels is over the "
                                        f"{B.MAX_AUDIO_VALUES} value limit")
            samples = f.read(want, dtype="float32", always_2d=True)
    except InputError:
        raise
    except soundfile.LibsndfileError as err:
        raise InputError(index, f"cannot decode audio: {err.error_string}") from None
    except (RuntimeError, TypeError, ValueError, EOFError) as err:
        raise InputError(index, f"cannot decode audio ({type(err).__name__})") from None
    if known and len(samples) < 0.9 * want:  # the header promised samples that the data does not hold
        raise InputError(index, f"audio header declares {declared} samples but the data ends after {len(samples)}")
    return samples.mean(axis=1), rate


def decode_audio(item: Any, index: int, sample_rate: int, max_seconds: float | None = None,
                 allow_paths: bool = True) -> np.ndarray:
    """An audio item as mono float32 samples at ``sample_rate``.

    Only the first ``max_seconds`` (plus a small resampling margin) are read and resampled: the model uses no
    more, and decoding stays bounded whatever length the file declares.
    """
    if isinstance(item, tuple) and len(item) == 2:
        samples, rate = np.asarray(item[0], dtype=np.float32), int(item[1])
        if samples.ndim == 2:  # (channels, time) or (time, channels): the shorter axis is channels
            samples = samples.mean(axis=int(np.argmin(samples.shape)))
        elif samples.ndim != 1:
            raise InputError(index, f"audio array must be 1-D or 2-D, got shape {samples.shape}")
        check_rate(rate, index)
        limit = frames_to_read(max_seconds, rate)
        if limit is not None:
            samples = samples[:limit]
    else:
        data = file_bytes(item, index, "audio", allow_paths)
        if data is None:
            raise InputError(index, f"unsupported audio input type {type(item).__name__}")
        samples, rate = read_audio(data, index, max_seconds)
    if samples.size == 0:
        raise InputError(index, "audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise InputError(index, "audio contains NaN or infinite samples")
    return resample(samples, rate, sample_rate).astype(np.float32, copy=False)
