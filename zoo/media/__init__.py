"""Decoding of every media input with budgets checked before allocation (see :mod:`zoo.media.budgets`).

The one place zoo decodes an item, whoever asks: a model in-process (``encode``), the Triton backend, the
OpenAI-style door and the demo (through :func:`to_wire` and :func:`decode`), and ``zoo embed``. Every decoder
takes ``(item, index)`` and raises :class:`zoo.errors.InputError` naming ``index``; its text never echoes a
path, and is the same whether a path exists or not when paths are refused (``allow_paths=False``, servers).

- :mod:`.text`: ``str`` / UTF-8 bytes, cut by characters before tokenizing;
- :mod:`.image`: header checks (format, pixels, bytes, JPEG scans) before decoding;
- :mod:`.audio`: bounded sample rates and resampler, read only as far as the model listens;
- :mod:`.video`: allow-listed containers, every frame's size, frames, pixels and sound samples counted;
- :mod:`.interleaved`: at most ``MAX_PARTS`` parts sharing one item's byte budget and deadline;
- :mod:`.deadline`: the wall-clock deadline per item; :mod:`.wire`: what a client sends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spec import Modality
from . import budgets
from .audio import decode_audio
from .deadline import Deadline
from .image import decode_image
from .interleaved import PART_KINDS, Part, decode_interleaved
from .text import CutText, decode_text, is_cut
from .video import decode_video
from .wire import to_wire

__all__ = ["PART_KINDS", "CutText", "Deadline", "budgets", "decode", "decode_audio", "decode_image",
           "decode_interleaved", "decode_text", "decode_video", "is_cut", "nbytes", "Part", "to_wire"]


def decode(item: Any, index: int, modality: Modality, sample_rate: int = 16000, max_seconds: float | None = None,
           allow_paths: bool = True, parts: tuple[str, ...] = ("image",), *, text_chars: int | None = None) -> Any:
    """Decode one item of ``modality`` within its budgets and one deadline (audio: at most ``max_seconds`` of
    it; video: its sound track too when ``sample_rate`` is given, i.e. the model listens; interleaved: the media
    ``parts`` the model takes; text and text parts: cut to ``text_chars`` characters when given)."""
    if modality is Modality.TEXT:
        return decode_text(item, index, text_chars)
    if modality is Modality.IMAGE:
        return decode_image(item, index, allow_paths, deadline=Deadline(index))
    if modality is Modality.AUDIO:
        return decode_audio(item, index, sample_rate, max_seconds, allow_paths)
    if modality is Modality.VIDEO:
        return decode_video(item, index, sample_rate, max_seconds, allow_paths, deadline=Deadline(index))
    return decode_interleaved(item, index, allow_paths, parts, sample_rate, max_seconds, text_chars=text_chars,
                              deadline=Deadline(index))


def nbytes(decoded: Any) -> int:
    """Bytes a decoded item holds (what an encode window counts against ``MAX_HELD_BYTES``)."""
    from PIL import Image

    from .image import nbytes as image_nbytes
    from .video import nbytes as video_nbytes

    if isinstance(decoded, str):
        return len(decoded)
    if isinstance(decoded, np.ndarray):
        return int(decoded.nbytes)
    if isinstance(decoded, Image.Image):
        return image_nbytes(decoded)
    if isinstance(decoded, Part):
        return nbytes(decoded.value)
    if isinstance(decoded, (list, tuple)):  # interleaved parts; a cross-encoder's (query, document) pair
        return sum(nbytes(p) for p in decoded)
    if hasattr(decoded, "frames"):
        return video_nbytes(decoded)
    return 0
