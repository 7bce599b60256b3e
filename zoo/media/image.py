"""Image items: a path, encoded file ``bytes``, a ``data:`` URI, a ``PIL.Image`` or an ``HxW``/``HxWxC`` numpy
array (uint8, or float in 0..1), decoded to an RGB ``PIL.Image``.

Encoded images are checked from their header before a pixel is decoded (Pillow opens lazily): the format is
one of ``IMAGE_FORMATS``, the declared size within ``MAX_IMAGE_PIXELS``, the bytes every copy costs within
``MAX_IMAGE_BYTES`` (see :func:`decode_cost`), and a JPEG holds at most ``MAX_JPEG_SCANS`` scans. Large JPEGs
are decoded at a DCT scale near ``JPEG_DRAFT_SIDE`` (the towers read 768 px at most).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from ..errors import InputError
from . import budgets as B
from .deadline import Deadline
from .source import file_bytes

#: bytes a pixel takes in Pillow's memory, by mode (Pillow keeps every other mode, RGB included, in 4)
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_RGB_BYTES = 4  # the RGB copy the towers take (Pillow stores RGB as 4 bytes a pixel)


def decode_cost(img: Any, declared: tuple[int, int]) -> int:
    """Bytes decoding an opened, not yet loaded image costs with every copy alive: its pixels in the file's mode
    at the size it decodes to (``img.size``, after any DCT scaling), the RGB copy the towers take, and a
    progressive JPEG's coefficients, which libjpeg keeps at the ``declared`` size (2 bytes a sample)."""
    cost = img.width * img.height * (_PIXEL_BYTES.get(img.mode, 4) + _RGB_BYTES)  # convert("RGB") always copies
    if img.format in ("JPEG", "MPO") and (img.info.get("progressive") or img.info.get("progression")):
        cost += declared[0] * declared[1] * len(img.getbands()) * 2
    return cost


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan (SOS, 0xFFDA) markers in a JPEG's top-level marker stream (an EXIF thumbnail inside an APP
    segment is skipped, as are bytes inside entropy-coded data, where 0xFF is stuffed or a restart marker)."""
    n, pos, size = 0, 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return n  # not a marker where one must be: the decoder will say the file is corrupt
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return n
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker that is not RSTn / stuffing
            n += 1
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return n
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break
    return n


def _open(data: bytes, index: int, max_bytes: int | None) -> Any:
    """``data`` opened by Pillow (header only), after every check that needs no pixel."""
    from PIL import Image

    img = Image.open(io.BytesIO(data), formats=B.IMAGE_FORMATS)
    width, height = img.size
    if width * height > B.MAX_IMAGE_PIXELS:
        raise InputError(index, f"image is {width}x{height}, over the {B.MAX_IMAGE_PIXELS} pixel limit "
                                "(possible decompression bomb)")
    if img.format in ("JPEG", "MPO"):
        scans = jpeg_scans(data)
        if scans > B.MAX_JPEG_SCANS:
            raise InputError(index, f"JPEG has {scans} scans, over the limit of {B.MAX_JPEG_SCANS}")
        if img.mode in ("RGB", "L", "YCbCr", "CMYK") and min(width, height) >= 2 * B.JPEG_DRAFT_SIDE:
            img.draft(img.mode, (B.JPEG_DRAFT_SIDE, B.JPEG_DRAFT_SIDE))  # DCT scaling: decodes less
    cost = decode_cost(img, (width, height))
    if cost > B.MAX_IMAGE_BYTES:
        raise InputError(index, f"image ({width}x{height}, mode {img.mode}) costs {cost} bytes to decode, over "
                                f"the limit of {B.MAX_IMAGE_BYTES}")
    if max_bytes is not None and cost > max_bytes:
        raise InputError(index, f"image ({width}x{height}, mode {img.mode}) costs {cost} bytes to decode, more "
                                f"than the {max(0, max_bytes)} bytes left of the item's {B.MAX_ITEM_BYTES}")
    return img


def decode_image(item: Any, index: int, allow_paths: bool = True, *, max_bytes: int | None = None,
                 deadline: Deadline | None = None) -> Any:
    """An image item as an RGB ``PIL.Image`` (``max_bytes``: a tighter budget than ``MAX_IMAGE_BYTES``, what is
    left of an interleaved item's)."""
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
        data = file_bytes(item, index, "image", allow_paths)
        if data is None:
            raise InputError(index, f"unsupported image input type {type(item).__name__}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = _open(data, index, max_bytes)
                if deadline is not None:
                    deadline.check()
                img.load()
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(index, f"image is larger than {B.MAX_IMAGE_PIXELS} pixels (possible decompression "
                                    "bomb)") from None
        except UnidentifiedImageError:
            raise InputError(index, "bytes are not an image format Pillow can read") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise InputError(index, f"corrupt image: {err}") from None
    if img.width == 0 or img.height == 0:
        raise InputError(index, f"image has zero size ({img.width}x{img.height})")
    return img.convert("RGB")


def nbytes(img: Any) -> int:
    """Bytes a decoded RGB image holds."""
    return img.width * img.height * _RGB_BYTES
