"""Decode one input item of any modality; the only module that knows input formats.

Every decoder takes ``(item, index)`` and raises :class:`zoo.errors.InputError` naming ``index``.

- text: ``str``, or UTF-8 ``bytes``.
- image: a path, encoded file ``bytes``, a ``data:`` URI, a ``PIL.Image`` or an ``HxW``/``HxWxC``
  numpy array (uint8, or float in 0..1). Images over :data:`MAX_IMAGE_PIXELS` are refused
  (decompression bombs).
- audio: a path, encoded ``bytes`` (WAV/FLAC/OGG…, whatever libsndfile reads), or an
  ``(array, sample_rate)`` pair; mixed down to mono and resampled to the model's rate.
- video: a path, encoded file ``bytes``, a ``data:`` URI (what FFmpeg reads), a ``TxHxWxC`` frame array or a
  list of images; decoded by :mod:`zoo.video` (frame sampling, bounds, the audio track).
- interleaved: a list of parts, each a ``str`` (text) or an image as above, or a dict ``{"text": ...}`` /
  ``{"image": ...}`` (and, for models that take them, ``{"audio": ...}`` / ``{"video": ...}``); decoded to a
  list of ``str``, ``PIL.Image``, :class:`Audio` and :class:`zoo.video.Video`.

``allow_paths=False`` (what servers pass) refuses file paths: an item from a remote caller is data
(bytes or a ``data:`` URI), never the name of a file on the machine that decodes it.

Audio is read only as far as the model will listen (``max_seconds`` plus a little for resampling),
so the allocation never follows a length the file's header declares; a header that declares more
samples than the data holds is an error.
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
MAX_AUDIO_VALUES = 1 << 25  # samples x channels read at most (128 MiB of float32), whatever the window
RESAMPLE_MARGIN_S = 0.05  # read this much past the window: resampling filters look a few samples ahead
WIRE_CHECK_SECONDS = 1.0  # audio a client decodes to check a file before sending it
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports about SF_COUNT_MAX when a stream's length is unknown


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


def _file_bytes(item: Any, index: int, kind: str, allow_paths: bool = True) -> bytes | None:
    """Bytes of a path / bytes / data: URI item, or None when the item is another type."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, str) and item.startswith("data:"):
        data = _data_uri(item, index)
    elif isinstance(item, (str, os.PathLike)):
        if not allow_paths:  # the string is not echoed: it may name a file of this machine
            raise InputError(index, f"{kind} must be sent as bytes or a data: URI; file paths are not accepted here")
        path = Path(item)
        if not path.is_file():
            raise InputError(index, f"{kind} file not found: {path}")
        data = path.read_bytes()
    else:
        return None
    if not data:
        raise InputError(index, f"empty {kind} data (0 bytes)")
    return data


def decode_image(item: Any, index: int, allow_paths: bool = True):
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
        data = _file_bytes(item, index, "image", allow_paths)
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


def _frames_to_read(seconds: float | None, rate: int) -> int | None:
    """Samples at ``rate`` that cover ``seconds`` plus the resampling margin (None: all)."""
    return None if seconds is None else int(np.ceil((seconds + RESAMPLE_MARGIN_S) * rate))


def _read_audio(data: bytes, index: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode encoded audio, reading no further than ``max_seconds`` (plus margin) into the stream."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            rate, channels, declared = int(f.samplerate), int(f.channels), int(f.frames)
            if rate <= 0:
                raise InputError(index, f"invalid sample rate {rate}")
            known = 0 <= declared < _UNKNOWN_FRAMES
            limit = _frames_to_read(max_seconds, rate)
            if limit is None and not known:
                raise InputError(index, "audio stream of unknown length")
            want = declared if limit is None else (min(declared, limit) if known else limit)
            if want * channels > MAX_AUDIO_VALUES:
                raise InputError(index, f"audio too large: {want} samples x {channels} channels is over the "
                                        f"{MAX_AUDIO_VALUES} value limit")
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


def decode_audio(
    item: Any, index: int, sample_rate: int, max_seconds: float | None = None, allow_paths: bool = True
) -> np.ndarray:
    """An audio item as mono float32 samples at ``sample_rate``.

    Only the first ``max_seconds`` (plus a small resampling margin) are read and resampled: the model
    uses no more, and decoding stays bounded whatever length the file declares.
    """
    if isinstance(item, tuple) and len(item) == 2:
        samples, rate = np.asarray(item[0], dtype=np.float32), int(item[1])
        if samples.ndim == 2:  # (channels, time) or (time, channels): the shorter axis is channels
            samples = samples.mean(axis=int(np.argmin(samples.shape)))
        elif samples.ndim != 1:
            raise InputError(index, f"audio array must be 1-D or 2-D, got shape {samples.shape}")
        if rate <= 0:
            raise InputError(index, f"invalid sample rate {rate}")
        limit = _frames_to_read(max_seconds, rate)
        if limit is not None:
            samples = samples[:limit]
    else:
        data = _file_bytes(item, index, "audio", allow_paths)
        if data is None:
            raise InputError(index, f"unsupported audio input type {type(item).__name__}")
        samples, rate = _read_audio(data, index, max_seconds)
    if samples.size == 0:
        raise InputError(index, "audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise InputError(index, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        samples = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, sample_rate).numpy()
    return samples


def _frames_in_memory(item: Any) -> bool:
    """Whether a video item is frames already decoded (an array, or a list of images), not a file."""
    return isinstance(item, (np.ndarray, list, tuple))


def decode_video(item: Any, index: int, sample_rate: int = 0, max_seconds: float | None = None,
                 allow_paths: bool = True):
    """A video item as a :class:`zoo.video.Video`; ``sample_rate`` > 0 also reads its audio track (at most
    ``max_seconds`` of it) for models that listen."""
    from . import video

    if _frames_in_memory(item):
        return video.decode_frames(item, index)
    data = _file_bytes(item, index, "video", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported video input type {type(item).__name__}")
    return video.decode_file(data, index, sample_rate=sample_rate or None, audio_seconds=max_seconds)


def _video_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """A video as encoded file bytes: files as they are (after checking they hold a video stream), frames in
    memory as a lossless FFV1 file."""
    from . import video

    if _frames_in_memory(item):
        return video.encode_frames(video.decode_frames(item, index).frames)
    data = _file_bytes(item, index, "video", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported video input type {type(item).__name__}")
    video.probe(data, index)
    return data


PART_KINDS = ("image", "audio", "video")  # what an interleaved part may be besides text


class _MediaPart:
    """An interleaved part that is media of ``kind`` (see :data:`PART_KINDS`), not yet decoded (it may be a
    string: a path or a data: URI)."""

    def __init__(self, kind: str, item: Any) -> None:
        self.kind, self.item = kind, item


class Audio:
    """A decoded audio part of an interleaved input: mono float32 ``samples`` at the model's rate."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples


def _split_interleaved(item: Any, index: int) -> list[str | _MediaPart]:
    """An interleaved item's parts in order: text as ``str``, media as undecoded :class:`_MediaPart`."""
    if isinstance(item, (str, bytes)) or not hasattr(item, "__iter__"):
        raise InputError(index, "interleaved input must be a list of text and media parts")
    parts = []
    for part in item:
        if isinstance(part, dict):
            key, value = next(iter(part.items())) if len(part) == 1 else (None, None)
            if key == "text":
                part = decode_text(value, index)
            elif key in PART_KINDS:
                part = _MediaPart(key, value)
            else:
                raise InputError(index, f"an interleaved part is one of {{'text'}}, {{'image'}}, {{'audio'}}, "
                                        f"{{'video'}}, got keys {sorted(part)}")
        elif not isinstance(part, str):
            part = _MediaPart("image", part)
        elif part.startswith("data:"):  # a bare str is text unless it is a media data: URI
            kind = part[5:].partition("/")[0]
            part = _MediaPart(kind if kind in PART_KINDS else "image", part)
        parts.append(part)
    if not parts:
        raise InputError(index, "interleaved input has no parts")
    return parts


def decode_interleaved(item: Any, index: int, allow_paths: bool = True, kinds: tuple[str, ...] = ("image",),
                       sample_rate: int = 16000, max_seconds: float | None = None) -> list:
    """An interleaved item as an ordered list of ``str``, ``PIL.Image``, :class:`Audio` and
    :class:`zoo.video.Video` parts; ``kinds``: the media parts the model takes (others are refused)."""
    out = []
    for p in _split_interleaved(item, index):
        if isinstance(p, str):
            out.append(p)
        elif p.kind not in kinds:
            raise InputError(index, f"this model takes text and {' / '.join(kinds)} parts in an interleaved "
                                    f"input, not {p.kind}")
        elif p.kind == "image":
            out.append(decode_image(p.item, index, allow_paths))
        elif p.kind == "audio":
            out.append(Audio(decode_audio(p.item, index, sample_rate, max_seconds, allow_paths)))
        else:
            out.append(decode_video(p.item, index, sample_rate, max_seconds, allow_paths))
    return out


def _image_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """An image as encoded file bytes: files as they are (after checking they decode), others as PNG."""
    data = _file_bytes(item, index, "image", allow_paths) if not isinstance(item, np.ndarray) else None
    if data is not None:
        decode_image(data, index)
        return data
    buf = io.BytesIO()
    decode_image(item, index).save(buf, format="PNG")  # lossless, so the far side sees the same pixels
    return buf.getvalue()


def _image_data_uri(item: Any, index: int, allow_paths: bool = True) -> str:
    """An image as a ``data:image/<type>;base64,`` URI with its real MIME type."""
    from PIL import Image

    data = _image_wire(item, index, allow_paths)
    with Image.open(io.BytesIO(data)) as img:
        mime = Image.MIME.get(img.format or "", "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _audio_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """Audio as encoded file bytes: files as they are (after checking they decode), arrays as float WAV."""
    if isinstance(item, tuple) and len(item) == 2:
        import soundfile

        samples = decode_audio(item, index, int(item[1]))  # validated, mono, at its own rate
        buf = io.BytesIO()
        soundfile.write(buf, samples, int(item[1]), format="WAV", subtype="FLOAT")
        return buf.getvalue()
    data = _file_bytes(item, index, "audio", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported audio input type {type(item).__name__}")
    _read_audio(data, index, WIRE_CHECK_SECONDS)
    return data


def to_wire(item: Any, index: int, modality: Modality, allow_paths: bool = True) -> bytes | list[dict[str, str]]:
    """One item in the form that travels to a server, checked here first so a bad item fails on this side:
    text as UTF-8 bytes, images and audio as encoded file bytes, interleaved as a list of ``{"text": …}`` /
    ``{"image": "data:image/…;base64,…"}`` parts. Paths are read here, on the caller's machine, unless
    ``allow_paths=False`` (a gateway forwarding a remote caller's items)."""
    if modality is Modality.TEXT:
        return decode_text(item, index).encode("utf-8")
    if modality is Modality.IMAGE:
        return _image_wire(item, index, allow_paths)
    if modality is Modality.AUDIO:
        return _audio_wire(item, index, allow_paths)
    if modality is Modality.VIDEO:
        return _video_wire(item, index, allow_paths)
    return [{"text": p} if isinstance(p, str) else {p.kind: _media_data_uri(p, index, allow_paths)}
            for p in _split_interleaved(item, index)]


def _media_data_uri(part: _MediaPart, index: int, allow_paths: bool) -> str:
    """A media part as the ``data:`` URI it travels in (images with their real MIME type)."""
    if part.kind == "image":
        return _image_data_uri(part.item, index, allow_paths)
    wire = _audio_wire if part.kind == "audio" else _video_wire
    return f"data:{part.kind}/octet-stream;base64," + base64.b64encode(wire(part.item, index, allow_paths)).decode()


def decode(
    item: Any, index: int, modality: Modality, sample_rate: int = 16000, max_seconds: float | None = None,
    allow_paths: bool = True, parts: tuple[str, ...] = ("image",),
) -> Any:
    """Decode one item of ``modality`` (audio: at most ``max_seconds`` of it; video: its audio track too when
    ``sample_rate`` is given, i.e. the model listens; interleaved: the media ``parts`` the model takes)."""
    if modality is Modality.TEXT:
        return decode_text(item, index)
    if modality is Modality.IMAGE:
        return decode_image(item, index, allow_paths)
    if modality is Modality.AUDIO:
        return decode_audio(item, index, sample_rate, max_seconds, allow_paths)
    if modality is Modality.VIDEO:
        return decode_video(item, index, sample_rate, max_seconds, allow_paths)
    return decode_interleaved(item, index, allow_paths, parts, sample_rate, max_seconds)
