"""Decode one input item of any modality; the only module that knows input formats.

Every decoder takes ``(item, index)`` and raises :class:`zoo.errors.InputError` naming ``index``.

- text: ``str``, or UTF-8 ``bytes``.
- image: a path, encoded file ``bytes``, a ``data:`` URI, a ``PIL.Image`` or an ``HxW``/``HxWxC``
  numpy array (uint8, or float in 0..1). Images over :data:`MAX_IMAGE_PIXELS` are refused
  (decompression bombs).
- audio: a path, encoded ``bytes`` (WAV/FLAC/OGG…, whatever libsndfile reads), or an
  ``(array, sample_rate)`` pair; mixed down to mono and resampled to the model's rate.
- interleaved: a list of parts, each a ``str`` (text) or an image as above, or a dict
  ``{"text": ...}`` / ``{"image": ...}``; decoded to a list of ``str`` and ``PIL.Image``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .spec import Modality

MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000; larger files are almost always bombs or mistakes


def decode_text(item: Any, index: int) -> str:
    """A text item as ``str``."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(index, f"text is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    raise InputError(index, f"text input must be str or UTF-8 bytes, got {type(item).__name__}")


def _data_uri(uri: str, index: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InputError(index, "malformed data: URI (no comma)")
    try:
        return base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
    except binascii.Error:
        raise InputError(index, "data: URI payload is not valid base64") from None


def _file_bytes(item: Any, index: int, kind: str) -> bytes | None:
    """Bytes of a path / bytes / data: URI item, or None when the item is another type."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, str) and item.startswith("data:"):
        data = _data_uri(item, index)
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InputError(index, f"{kind} file not found: {path}")
        data = path.read_bytes()
    else:
        return None
    if not data:
        raise InputError(index, f"empty {kind} data (0 bytes)")
    return data


def decode_image(item: Any, index: int):
    """An image item as an RGB ``PIL.Image``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, np.ndarray):
        arr = item
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise InputError(index, f"image array must be HxW or HxWx(1|3|4), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        data = _file_bytes(item, index, "image")
        if data is None:
            raise InputError(index, f"unsupported image input type {type(item).__name__}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                index, f"image is larger than {MAX_IMAGE_PIXELS} pixels (possible decompression bomb)"
            ) from None
        except UnidentifiedImageError:
            raise InputError(index, "bytes are not an image format Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(index, f"corrupt image: {err}") from None
    if img.width == 0 or img.height == 0:
        raise InputError(index, f"image has zero size ({img.width}x{img.height})")
    return img.convert("RGB")


def decode_audio(item: Any, index: int, sample_rate: int) -> np.ndarray:
    """An audio item as mono float32 samples at ``sample_rate``."""
    if isinstance(item, tuple) and len(item) == 2:
        samples, rate = np.asarray(item[0], dtype=np.float32), int(item[1])
        if samples.ndim == 2:  # (channels, time) or (time, channels): the shorter axis is channels
            samples = samples.mean(axis=int(np.argmin(samples.shape)))
        elif samples.ndim != 1:
            raise InputError(index, f"audio array must be 1-D or 2-D, got shape {samples.shape}")
    else:
        data = _file_bytes(item, index, "audio")
        if data is None:
            raise InputError(index, f"unsupported audio input type {type(item).__name__}")
        import soundfile

        try:
            samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
            raise InputError(index, f"cannot decode audio: {err}") from None
        samples = samples.mean(axis=1)
    if rate <= 0:
        raise InputError(index, f"invalid sample rate {rate}")
    if samples.size == 0:
        raise InputError(index, "audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise InputError(index, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        samples = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, sample_rate).numpy()
    return samples


def decode_interleaved(item: Any, index: int) -> list:
    """An interleaved item as an ordered list of ``str`` and ``PIL.Image`` parts."""
    if isinstance(item, (str, bytes)) or not hasattr(item, "__iter__"):
        raise InputError(index, "interleaved input must be a list of text and image parts")
    parts = []
    for part in item:
        if isinstance(part, dict):
            if set(part) == {"text"}:
                part = decode_text(part["text"], index)
            elif set(part) == {"image"}:
                part = decode_image(part["image"], index)
            else:
                raise InputError(
                    index, f"interleaved part keys must be 'text' or 'image', got {sorted(part)}"
                )
        elif isinstance(part, str) and not part.startswith("data:image"):
            pass  # plain text part
        else:
            part = decode_image(part, index)
        parts.append(part)
    if not parts:
        raise InputError(index, "interleaved input has no parts")
    return parts


def decode(item: Any, index: int, modality: Modality, sample_rate: int = 16000) -> Any:
    """Decode one item of ``modality``."""
    if modality is Modality.TEXT:
        return decode_text(item, index)
    if modality is Modality.IMAGE:
        return decode_image(item, index)
    if modality is Modality.AUDIO:
        return decode_audio(item, index, sample_rate)
    return decode_interleaved(item, index)
