"""Interleaved items: a list of at most ``MAX_PARTS`` parts, each a ``str`` (text) or an image, or a dict
``{"text": ...}`` / ``{"image": ...}`` (and, for models that take them, ``{"audio": ...}`` / ``{"video": ...}``);
decoded to a list of :class:`Part`, the one type a family reads a part as (its ``kind`` and decoded ``value``).

The parts of one item share its deadline and its ``MAX_ITEM_BYTES``: an image part is refused from its header
when it would not fit in what the parts before it left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from . import budgets as B
from .audio import decode_audio
from .deadline import Deadline, deadline_for
from .image import decode_image
from .image import nbytes as image_nbytes
from .text import decode_text

PART_KINDS = ("image", "audio", "video")  # what an interleaved part may be besides text


@dataclass(frozen=True)
class Part:
    """One part of an interleaved item: its ``kind`` (``"text"`` or one of :data:`PART_KINDS`) and its ``value``.

    Split (:func:`split_interleaved`), a text part's value is its ``str`` and a media part's what the caller gave
    (it may be a path or a ``data:`` URI). Decoded (:func:`decode_interleaved`), the value is a ``str``, an RGB
    ``PIL.Image``, mono float32 samples at the model's rate (``np.ndarray``), or a
    :class:`zoo.media.sampling.Video`."""

    kind: str
    value: Any

    @property
    def is_text(self) -> bool:
        """Whether the part is text."""
        return self.kind == "text"


def split_interleaved(item: Any, index: int, text_chars: int | None = None) -> list[Part]:
    """An interleaved item's parts in order: text decoded (cut to ``text_chars``), media undecoded; more than
    ``MAX_PARTS`` parts are refused before any is looked at."""
    if isinstance(item, (str, bytes)) or not hasattr(item, "__iter__"):
        raise InputError(index, "interleaved input must be a list of text and media parts")
    if hasattr(item, "__len__") and len(item) > B.MAX_PARTS:
        raise InputError(index, f"interleaved input has {len(item)} parts, over the limit of {B.MAX_PARTS}")
    parts: list[Part] = []
    for part in item:
        if len(parts) == B.MAX_PARTS:  # an iterator without a length
            raise InputError(index, f"interleaved input has more than {B.MAX_PARTS} parts, over the limit")
        if isinstance(part, dict):
            key, value = next(iter(part.items())) if len(part) == 1 else (None, None)
            if key == "text":
                part = Part("text", decode_text(value, index, text_chars))
            elif key in PART_KINDS:
                part = Part(key, value)
            else:
                raise InputError(index, f"an interleaved part is one of {{'text'}}, {{'image'}}, {{'audio'}}, "
                                        f"{{'video'}}, got keys {sorted(part)}")
        elif not isinstance(part, str):
            part = Part("image", part)
        elif part.startswith("data:"):  # a bare str is text unless it is a media data: URI
            kind = part[5:].partition("/")[0]
            part = Part(kind if kind in PART_KINDS else "image", part)
        else:
            part = Part("text", decode_text(part, index, text_chars))
        parts.append(part)
    if not parts:
        raise InputError(index, "interleaved input has no parts")
    return parts


def decode_interleaved(item: Any, index: int, allow_paths: bool = True, kinds: tuple[str, ...] = ("image",),
                       sample_rate: int = 16000, max_seconds: float | None = None, *, text_chars: int | None = None,
                       deadline: Deadline | None = None) -> list[Part]:
    """An interleaved item as its ordered list of decoded :class:`Part`; ``kinds``: the media parts the model
    takes (others are refused)."""
    from .video import decode_video, nbytes

    deadline = deadline_for(index, deadline)
    out: list[Part] = []
    held = 0
    for p in split_interleaved(item, index, text_chars):
        deadline.check()
        if p.is_text:
            out.append(p)
            held += len(p.value)
            continue
        if p.kind not in kinds:
            raise InputError(index, f"this model takes text and {' / '.join(kinds)} parts in an interleaved "
                                    f"input, not {p.kind}")
        if p.kind == "image":
            value = decode_image(p.value, index, allow_paths, max_bytes=B.MAX_ITEM_BYTES - held, deadline=deadline)
            held += image_nbytes(value)
        elif p.kind == "audio":
            value = decode_audio(p.value, index, sample_rate, max_seconds, allow_paths)
            held += value.nbytes
        else:
            value = decode_video(p.value, index, sample_rate, max_seconds, allow_paths, deadline=deadline)
            held += nbytes(value)
        if held > B.MAX_ITEM_BYTES:
            raise InputError(index, f"interleaved input holds more than {B.MAX_ITEM_BYTES} bytes decoded")
        out.append(Part(p.kind, value))
    return out
