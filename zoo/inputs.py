"""Decode one input item of any modality: the public names of :mod:`zoo.media`, which does the work.

Every decoder takes ``(item, index)`` and raises :class:`zoo.errors.InputError` naming ``index``.

- text: ``str``, or UTF-8 ``bytes``.
- image: a path, encoded file ``bytes``, a ``data:`` URI, a ``PIL.Image`` or an ``HxW``/``HxWxC``
  numpy array (uint8, or float in 0..1). Encoded images are checked from their header (pixels, bytes, JPEG
  scans; see :mod:`zoo.media.budgets`) before they are decoded.
- audio: a path, encoded ``bytes`` (WAV/FLAC/OGG…, whatever libsndfile reads), or an
  ``(array, sample_rate)`` pair; mixed down to mono and resampled to the model's rate.
- video: a path, encoded file ``bytes``, a ``data:`` URI (MP4/MOV, Matroska/WebM, AVI, Ogg, MPEG-TS), a
  ``TxHxWxC`` frame array or a list of images; sampled by the policy of :mod:`zoo.video`.
- interleaved: a list of at most ``MAX_PARTS`` parts, each a ``str`` (text) or an image as above, or a dict
  ``{"text": ...}`` / ``{"image": ...}`` (and, for models that take them, ``{"audio": ...}`` / ``{"video": ...}``);
  decoded to a list of ``str``, ``PIL.Image``, :class:`Audio` and :class:`zoo.video.Video`.

``allow_paths=False`` (what servers pass) refuses file paths: an item from a remote caller is data
(bytes or a ``data:`` URI), never the name of a file on the machine that decodes it.

Audio is read only as far as the model will listen (``max_seconds`` plus a little for resampling),
so the allocation never follows a length the file's header declares; a header that declares more
samples than the data holds is an error.
"""

from __future__ import annotations

from typing import Any

from .media import PART_KINDS, Audio, budgets, decode, decode_audio, decode_image, decode_text, to_wire
from .media.audio import WIRE_CHECK_SECONDS
from .media.interleaved import decode_interleaved as _decode_interleaved
from .media.video import decode_video as _decode_video

__all__ = ["MAX_AUDIO_VALUES", "MAX_IMAGE_PIXELS", "PART_KINDS", "RESAMPLE_MARGIN_S", "WIRE_CHECK_SECONDS", "Audio",
           "decode", "decode_audio", "decode_image", "decode_interleaved", "decode_text", "decode_video", "to_wire"]

# the budgets' values, for reading (change them in zoo.media.budgets: the decoders read them from there)
MAX_IMAGE_PIXELS = budgets.MAX_IMAGE_PIXELS
MAX_AUDIO_VALUES = budgets.MAX_AUDIO_VALUES
RESAMPLE_MARGIN_S = budgets.RESAMPLE_MARGIN_S


def decode_video(item: Any, index: int, sample_rate: int = 0, max_seconds: float | None = None,
                 allow_paths: bool = True):
    """A video item as a :class:`zoo.video.Video`; ``sample_rate`` > 0 also reads its audio track (at most
    ``max_seconds`` of it) for models that listen."""
    return _decode_video(item, index, sample_rate, max_seconds, allow_paths)


def decode_interleaved(item: Any, index: int, allow_paths: bool = True, kinds: tuple[str, ...] = ("image",),
                       sample_rate: int = 16000, max_seconds: float | None = None) -> list:
    """An interleaved item as an ordered list of ``str``, ``PIL.Image``, :class:`Audio` and
    :class:`zoo.video.Video` parts; ``kinds``: the media parts the model takes (others are refused)."""
    return _decode_interleaved(item, index, allow_paths, kinds, sample_rate, max_seconds)
