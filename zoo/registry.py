"""The registry: model specs by name, families by key, and ``create()`` for names or folders.

A family registers itself with :func:`register_family` and its known checkpoints, one table of spec fields
per family, with :func:`register_checkpoints`. Both happen in the family's own file under
``zoo/families``; the family's module name is listed once, in ``_FAMILY_MODULES``.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import (
    InvalidArgumentError,
    RemoteCodeRefusedError,
    UnknownFamilyError,
    UnknownModelError,
    UnsupportedModalityError,
    choices,
)
from .spec import EmbedderSpec, Modality

if TYPE_CHECKING:
    from .base import Embedder

_MODELS: dict[str, EmbedderSpec] = {}
_REFUSED: dict[str, str] = {}  # hub ids that need remote code → why, and what to use instead
_FAMILIES: dict[str, type[Family]] = {}
# imported lazily so `import zoo` stays light
_FAMILY_MODULES = ("text", "aligned", "clip", "clap", "speaker", "vlm", "colbert", "splade", "colvision", "m3",
                   "omni")


class Family(Protocol):
    """What a family class provides to the registry."""

    #: folders are offered to families in ascending priority order; the first claim wins
    folder_priority: int
    #: the runtimes its towers run on (see zoo.runtime)
    runtimes: tuple[str, ...]
    #: model_types whose remote code (``auto_map``) the family reproduces, so such folders load without it
    reproduces: frozenset[str]

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe a local model folder this family can load, or return None."""

    @classmethod
    def load(cls, spec: EmbedderSpec, path: Path, device: str | None) -> Embedder:
        """Build the embedder from weights found at ``path``."""


F = TypeVar("F", bound=type)


def register_family(key: str) -> Callable[[F], F]:
    """Class decorator: make ``key`` a family name that specs can point at."""

    def deco(cls: F) -> F:
        _FAMILIES[key] = cls
        cls.family = key
        return cls

    return deco


def register_model(spec: EmbedderSpec) -> EmbedderSpec:
    """Add a known checkpoint to the registry (its family must be registered by the same file)."""
    if spec.name in _MODELS and _MODELS[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} is registered twice with different specs")
    _MODELS[spec.name] = spec
    return spec


def register_checkpoints(family: str, table: Mapping[str, Mapping[str, Any]], **defaults: Any) -> list[EmbedderSpec]:
    """Register a family's catalog: ``table`` maps each checkpoint's registry name to its spec fields,
    ``defaults`` are the fields every row shares. A row's ``source`` defaults to its name (the hub id)."""
    return [register_model(EmbedderSpec(name=name, family=family, **({"source": name} | defaults | dict(row))))
            for name, row in table.items()]


def register_refusals(table: Mapping[str, str]) -> None:
    """Checkpoints a family knows but will not load, each with the reason and what to use instead (asked for
    by name they raise :class:`RemoteCodeRefusedError`, never load as a silently different model)."""
    _REFUSED.update(table)


def list_families() -> list[str]:
    """Keys of every registered family."""
    _load_families()
    return sorted(_FAMILIES)


def _load_families() -> None:
    for mod in _FAMILY_MODULES:
        importlib.import_module(f"zoo.families.{mod}")


def list_models(
    modality: Modality | str | None = None, pattern: str | None = None, family: str | None = None
) -> list[str]:
    """Registered model names, optionally filtered by modality, wildcard ``pattern`` and family."""
    _load_families()
    if modality is not None:
        modality = _modality(modality)
    out = []
    for name, spec in _MODELS.items():
        if modality is not None and modality not in spec.modalities:
            continue
        if pattern and not fnmatch.fnmatch(name.lower(), pattern.lower()):
            continue
        if family and spec.family != family:
            continue
        out.append(name)
    return sorted(out)


def _modality(value: Modality | str) -> Modality:
    try:
        return Modality(value)
    except ValueError:
        raise UnsupportedModalityError(
            f"unknown modality {value!r}; choose one of {choices(m.value for m in Modality)}"
        ) from None


def get_spec(name: str) -> EmbedderSpec:
    """The spec of a registered model, or of a local model folder."""
    _load_families()
    if name in _MODELS:
        return _MODELS[name]
    if name in _REFUSED:
        raise RemoteCodeRefusedError(f"{name} is refused: {_REFUSED[name]}")
    if os.path.isdir(name):
        return _spec_for_folder(Path(name))
    raise UnknownModelError(name, _MODELS)


def _spec_for_folder(path: Path) -> EmbedderSpec:
    config = path / "config.json"
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    for family in sorted(_FAMILIES.values(), key=lambda f: f.folder_priority):
        spec = family.spec_from_folder(path)
        if spec is None:
            continue
        if cfg.get("auto_map") and cfg.get("model_type") not in family.reproduces:
            # the folder's own classes would build the model; the stock class could differ silently
            raise RemoteCodeRefusedError(
                f"the folder {path.name} ships its own modelling code (auto_map: {choices(sorted(cfg['auto_map']))}"
                "), which zoo never runs (no trust_remote_code); use a registered name (`zoo list`) whose recipe "
                "zoo reproduces")
        return spec
    raise InvalidArgumentError(
        f"no family can load the folder {path}: expected a Hugging Face model folder "
        "(config.json with a supported model_type)"
    )


def family_of(spec: EmbedderSpec) -> type[Family]:
    """The family class that builds ``spec``."""
    _load_families()
    try:
        return _FAMILIES[spec.family]
    except KeyError:
        raise UnknownFamilyError(spec.family, _FAMILIES, spec.name) from None


def create(name_or_path: str, device: str | None = None, runtime: str = "torch",
           threads: int | None = None) -> Embedder:
    """Load a model by registry name (hub id) or local folder; ``device`` defaults to CUDA if present.

    ``runtime``: ``torch`` (default), ``torch-fp16``, or ``onnx`` / ``onnx-int8`` for families that offer
    them (see :mod:`zoo.runtime`; ``threads`` sets ONNX Runtime's intra-op threads)."""
    from .runtime import check_offered
    from .weights import resolve

    spec = get_spec(name_or_path)
    family = family_of(spec)
    check_offered(runtime, family.runtimes, spec)
    path = Path(name_or_path) if os.path.isdir(name_or_path) else resolve(spec)
    model = family.load(spec, path, device)
    model.weights_path = path
    model.use_runtime(runtime, threads)
    return model
