"""Items in the form that travels to a server, checked here first (with the same decoders and budgets the
server applies) so that a bad item fails on the caller's side."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from ..errors import InputError
from ..spec import Modality
from .audio import WIRE_CHECK_SECONDS, decode_audio, read_audio
from .image import decode_image
from .interleaved import Part, split_interleaved
from .source import file_bytes
from .text import decode_text
from .video import decode_frames, frames_in_memory, probe


def video_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """A video as encoded file bytes: files as they are (after checking they open with a video stream), frames
    in memory as a lossless FFV1 file."""
    if frames_in_memory(item):
        from .sampling import encode_frames

        return encode_frames(decode_frames(item, index).frames)
    data = file_bytes(item, index, "video", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported video input type {type(item).__name__}")
    probe(data, index)
    return data


def image_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """An image as encoded file bytes: files as they are (after checking they decode), others as PNG."""
    data = file_bytes(item, index, "image", allow_paths) if not isinstance(item, np.ndarray) else None
    if data is not None:
        decode_image(data, index)
        return data
    buf = io.BytesIO()
    decode_image(item, index).save(buf, format="PNG")  # lossless, so the far side sees the same pixels
    return buf.getvalue()


def image_data_uri(item: Any, index: int, allow_paths: bool = True) -> str:
    """An image as a ``data:image/<type>;base64,`` URI with its real MIME type."""
    from PIL import Image

    data = image_wire(item, index, allow_paths)
    with Image.open(io.BytesIO(data)) as img:
        mime = Image.MIME.get(img.format or "", "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def audio_wire(item: Any, index: int, allow_paths: bool = True) -> bytes:
    """Audio as encoded file bytes: files as they are (after checking they decode), arrays as float WAV."""
    if isinstance(item, tuple) and len(item) == 2:
        import soundfile

        samples = decode_audio(item, index, int(item[1]))  # validated, mono, at its own rate
        buf = io.BytesIO()
        soundfile.write(buf, samples, int(item[1]), format="WAV", subtype="FLOAT")
        return buf.getvalue()
    data = file_bytes(item, index, "audio", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported audio input type {type(item).__name__}")
    read_audio(data, index, WIRE_CHECK_SECONDS)
    return data


def media_data_uri(part: Part, index: int, allow_paths: bool) -> str:
    """A media part as the ``data:`` URI it travels in (images with their real MIME type)."""
    if part.kind == "image":
        return image_data_uri(part.value, index, allow_paths)
    wire = audio_wire if part.kind == "audio" else video_wire
    return f"data:{part.kind}/octet-stream;base64," + base64.b64encode(wire(part.value, index, allow_paths)).decode()


def to_wire(item: Any, index: int, modality: Modality, allow_paths: bool = True) -> bytes | list[dict[str, str]]:
    """One item in the form that travels to a server, checked here first so a bad item fails on this side:
    text as UTF-8 bytes, images and audio as encoded file bytes, interleaved as a list of ``{"text": …}`` /
    ``{"image": "data:image/…;base64,…"}`` parts. Paths are read here, on the caller's machine, unless
    ``allow_paths=False`` (a gateway forwarding a remote caller's items)."""
    if modality is Modality.TEXT:
        return decode_text(item, index).encode("utf-8")
    if modality is Modality.IMAGE:
        return image_wire(item, index, allow_paths)
    if modality is Modality.AUDIO:
        return audio_wire(item, index, allow_paths)
    if modality is Modality.VIDEO:
        return video_wire(item, index, allow_paths)
    return [{"text": p.value} if p.is_text else {p.kind: media_data_uri(p, index, allow_paths)}
            for p in split_interleaved(item, index)]
