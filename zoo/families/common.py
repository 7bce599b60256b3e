"""Small helpers the family modules share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when the file does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def folder_config(path: Path, model_types: set[str] | frozenset[str]) -> dict[str, Any] | None:
    """A folder's ``config.json`` if its ``model_type`` is one of ``model_types``, else None."""
    cfg = read_json(path / "config.json")
    return cfg if cfg and cfg.get("model_type") in model_types else None


class AudioTruncationWarning(UserWarning):
    """Some audio inputs were longer than the model's window and were truncated."""


def audio_lengths(waves: list, max_samples: int, rate: int) -> list[int]:
    """Sort keys of audio items, warning once per call about items longer than ``max_samples``."""
    import warnings

    over = sum(len(w) > max_samples for w in waves)
    if over:
        warnings.warn(f"{over} of {len(waves)} audio inputs exceed {max_samples / rate:g} s and were truncated",
                      AudioTruncationWarning, stacklevel=5)
    return [len(w) for w in waves]


def token_counts(tokenizer: Any, texts: list[str], max_length: int) -> list[int]:
    """How many tokens a transformers tokenizer feeds the model for each text (special tokens included,
    truncated to ``max_length``, no padding)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]
    return [len(x) for x in ids]
