"""Interleaved items: a list of at most ``MAX_PARTS`` parts, each a ``str`` (text) or an image, or a dict
``{"text": ...}`` / ``{"image": ...}`` (and, for models that take them, ``{"audio": ...}`` / ``{"video": ...}``);
decoded to a list of ``str``, ``PIL.Image``, :class:`Audio` and :class:`zoo.video.Video`.

The parts of one item share its deadline and its ``MAX_ITEM_BYTES``: an image part is refused from its header
when it would not fit in what the parts before it left.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from . import budgets as B
from .audio import decode_audio
from .deadline import Deadline, deadline_for
from .image import decode_image
from .image import nbytes as image_nbytes
from .text import decode_text

PART_KINDS = ("image", "audio", "video")  # what an interleaved part may be besides text


class MediaPart:
    """An interleaved part that is media of ``kind`` (see :data:`PART_KINDS`), not yet decoded (it may be a
    string: a path or a data: URI)."""

    def __init__(self, kind: str, item: Any) -> None:
        self.kind, self.item = kind, item


class Audio:
    """A decoded audio part of an interleaved input: mono float32 ``samples`` at the model's rate."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples


def split_interleaved(item: Any, index: int, text_chars: int | None = None) -> list[str | MediaPart]:
    """An interleaved item's parts in order: text as ``str`` (cut to ``text_chars``), media as undecoded
    :class:`MediaPart`; more than ``MAX_PARTS`` parts are refused before any is looked at."""
    if isinstance(item, (str, bytes)) or not hasattr(item, "__iter__"):
        raise InputError(index, "interleaved input must be a list of text and media parts")
    if hasattr(item, "__len__") and len(item) > B.MAX_PARTS:
        raise InputError(index, f"interleaved input has {len(item)} parts, over the limit of {B.MAX_PARTS}")
    parts: list[str | MediaPart] = []
    for part in item:
        if len(parts) == B.MAX_PARTS:  # an iterator without a length
            raise InputError(index, f"interleaved input has more than {B.MAX_PARTS} parts, over the limit")
        if isinstance(part, dict):
            key, value = next(iter(part.items())) if len(part) == 1 else (None, None)
            if key == "text":
                part = decode_text(value, index, text_chars)
            elif key in PART_KINDS:
                part = MediaPart(key, value)
            else:
                raise InputError(index, f"an interleaved part is one of {{'text'}}, {{'image'}}, {{'audio'}}, "
                                        f"{{'video'}}, got keys {sorted(part)}")
        elif not isinstance(part, str):
            part = MediaPart("image", part)
        elif part.startswith("data:"):  # a bare str is text unless it is a media data: URI
            kind = part[5:].partition("/")[0]
            part = MediaPart(kind if kind in PART_KINDS else "image", part)
        else:
            part = decode_text(part, index, text_chars)
        parts.append(part)
    if not parts:
        raise InputError(index, "interleaved input has no parts")
    return parts


def decode_interleaved(item: Any, index: int, allow_paths: bool = True, kinds: tuple[str, ...] = ("image",),
                       sample_rate: int = 16000, max_seconds: float | None = None, *, text_chars: int | None = None,
                       deadline: Deadline | None = None) -> list:
    """An interleaved item as an ordered list of ``str``, ``PIL.Image``, :class:`Audio` and
    :class:`zoo.video.Video` parts; ``kinds``: the media parts the model takes (others are refused)."""
    from .video import decode_video, nbytes

    deadline = deadline_for(index, deadline)
    out: list = []
    held = 0
    for p in split_interleaved(item, index, text_chars):
        deadline.check()
        if isinstance(p, str):
            out.append(p)
            held += len(p)
            continue
        if p.kind not in kinds:
            raise InputError(index, f"this model takes text and {' / '.join(kinds)} parts in an interleaved "
                                    f"input, not {p.kind}")
        if p.kind == "image":
            part = decode_image(p.item, index, allow_paths, max_bytes=B.MAX_ITEM_BYTES - held, deadline=deadline)
            held += image_nbytes(part)
        elif p.kind == "audio":
            part = Audio(decode_audio(p.item, index, sample_rate, max_seconds, allow_paths))
            held += part.samples.nbytes
        else:
            part = decode_video(p.item, index, sample_rate, max_seconds, allow_paths, deadline=deadline)
            held += nbytes(part)
        if held > B.MAX_ITEM_BYTES:
            raise InputError(index, f"interleaved input holds more than {B.MAX_ITEM_BYTES} bytes decoded")
        out.append(part)
    return out
