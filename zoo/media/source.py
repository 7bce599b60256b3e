"""Where an item's bytes come from: bytes as they are, ``data:`` URIs, and (in-process only) file paths.

``allow_paths=False`` (what servers pass) refuses every path with one text that does not echo it, so a
remote caller learns nothing about the server's files, whether the path exists or not.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from ..errors import InputError


def data_uri(uri: str, index: int) -> bytes:
    """The payload of a ``data:`` URI (base64 or plain)."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InputError(index, "malformed data: URI (no comma)")
    try:
        return base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
    except binascii.Error:
        raise InputError(index, "data: URI payload is not valid base64") from None


def file_bytes(item: Any, index: int, kind: str, allow_paths: bool = True) -> bytes | None:
    """Bytes of a path / bytes / data: URI item, or None when the item is another type."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, str) and item.startswith("data:"):
        data = data_uri(item, index)
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
