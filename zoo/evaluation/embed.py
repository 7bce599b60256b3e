"""Embedding a set's corpus and queries once: full-width raw float32 vectors, cached per (model, data, options).

The cache key holds the model's whole spec, the backend, the set's fingerprint (its files' contents), the side
and the prompt, so a change to any of them embeds afresh. Files are written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..kinds import side_prompt  # noqa: F401  (its home before zoo.kinds; the eval modules import it here)
from ..settings import settings
from .data import Side

CHUNK = 256  # items read (media files) and sent per encode() call: bounds memory, paces the progress bar


def default_cache_dir() -> Path:
    """``<zoo cache>/eval`` (:attr:`zoo.settings.Settings.eval_cache_dir`)."""
    return settings().eval_cache_dir


class Cache:
    """``.npy`` arrays (and other files) under one folder, named by a hash of what produced them."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = 0

    @staticmethod
    def key(**parts: Any) -> str:
        """A stable name for ``parts`` (JSON-serializable)."""
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def path(self, key: str, suffix: str = ".npy") -> Path | None:
        """Where ``key`` lives (None when caching is off)."""
        return None if self.folder is None else self.folder / f"{key}{suffix}"

    def load(self, key: str) -> np.ndarray | None:
        """The array stored under ``key``, or None."""
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a damaged file is recomputed, not trusted
            return None
        self.hits += 1
        return array

    def save(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` atomically (a crash never leaves half a file)."""
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)


def _load_item(item: Any) -> Any:
    return item.read_bytes() if isinstance(item, Path) else item


def embed_side(model: Any, side: Side, *, query: bool, batch_size: int | None = None, label: str = "",
               cache: Cache | None = None, key: dict | None = None) -> np.ndarray:
    """``[len(side), dim]`` raw (unnormalized) float32 dense vectors of ``side`` from ``model`` (anything with
    zoo's ``encode()`` and ``spec``); modalities are embedded group by group and put back in row order."""
    from tqdm.auto import tqdm

    spec = model.spec
    if "dense" not in spec.outputs:
        raise InvalidArgumentError(f"zoo eval measures dense vectors; {spec.name} gives {', '.join(spec.outputs)}")
    missing = sorted({m.value for m in side.modalities if not spec.supports(m)})
    if missing:
        raise InvalidArgumentError(f"{spec.name} does not embed {', '.join(missing)} (the set's "
                                   f"{'queries' if query else 'corpus'} hold it); it embeds "
                                   f"{', '.join(m.value for m in spec.modalities)}")
    prompt = side_prompt(spec.prompts, query)
    name = Cache.key(**(key or {}), side="queries" if query else "corpus", prompt=prompt)
    cached = cache.load(name) if cache else None
    if cached is not None and cached.shape == (len(side), spec.dim):
        return cached
    out = np.zeros((len(side), spec.dim), np.float32)
    controls = {} if spec.output == "dense" else {"output": "dense"}
    with tqdm(total=len(side), desc=label or ("queries" if query else "corpus"), unit="item", disable=None) as bar:
        for modality in dict.fromkeys(side.modalities):
            rows = [i for i, m in enumerate(side.modalities) if m == modality]
            for s in range(0, len(rows), CHUNK):
                part = rows[s:s + CHUNK]
                out[part] = model.encode([_load_item(side.items[i]) for i in part], modality, normalize=False,
                                         precision="float32", prompt_name=prompt, batch_size=batch_size, **controls)
                bar.update(len(part))
    if cache:
        cache.save(name, out)
    return out
