"""The registry: model specs by name, families by key, and ``create()`` for names or folders.

Families are found through the ``zoo.families`` entry-point group (:data:`zoo.plugins.FAMILIES`), zoo's own
included: each entry names an :class:`~zoo.base.Embedder` subclass, and the entry's name is the family key.
Loading the class imports its module, which registers the family's known checkpoints (one table of spec
fields) with :func:`register_checkpoints`. A separate package adds a family by declaring the entry point in
its own ``pyproject.toml``; zoo is not edited.
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import (
    InvalidArgumentError,
    RemoteCodeRefusedError,
    UnknownFamilyError,
    UnknownModelError,
    UnsupportedModalityError,
    choices,
)
from .plugins import FAMILIES, named
from .spec import EmbedderSpec, Modality

if TYPE_CHECKING:
    from .base import Embedder

_MODELS: dict[str, EmbedderSpec] = {}
_REFUSED: dict[str, str] = {}  # hub ids that need remote code → why, and what to use instead
_FAMILIES: dict[str, type[Embedder]] = {}
_loaded = False  # the entry points are read once per process (importing a family registers its catalog)
_loading = False
_load_lock = threading.RLock()

F = TypeVar("F", bound=type)


def register_family(key: str, cls: F | None = None) -> Any:
    """Make the :class:`~zoo.base.Embedder` subclass ``cls`` the family ``key`` (what the entry-point loader
    does; also usable as a decorator, for a family defined in a notebook or a test)."""

    def deco(family: F) -> F:
        from .base import Embedder

        if not (isinstance(family, type) and issubclass(family, Embedder)):
            raise TypeError(f"family {key!r} must be a subclass of zoo.base.Embedder, got {family!r}")
        if _FAMILIES.get(key, family) is not family:
            raise ValueError(f"family {key!r} is registered twice, by {_FAMILIES[key]!r} and {family!r}")
        taken = {t: k for k, f in _FAMILIES.items() if k != key for t in f.claims}
        clash = sorted(t for t in family.claims if t in taken)
        if clash:
            raise ValueError(f"family {key!r} claims model_type {clash[0]!r}, which family {taken[clash[0]]!r} "
                             "already claims")
        _FAMILIES[key] = family
        family.family = key
        return family

    return deco if cls is None else deco(cls)


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
    global _loaded, _loading
    if _loaded:
        return
    with _load_lock:  # another thread (a server's) waits here until every family is in, never sees a part
        if _loaded or _loading:  # _loading: a family's own import asked for the registry (same thread)
            return
        _loading = True
        try:
            for key, entry in named(FAMILIES).items():
                try:
                    register_family(key, entry.load())
                except Exception as err:  # one broken plugin must not take every other family down with it
                    warnings.warn(f"the family {key!r} ({entry.value}) could not be loaded and is skipped: "
                                  f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
            if not _FAMILIES:
                warnings.warn(f"no {FAMILIES!r} entry points are installed, so no model can load: install the "
                              "project (`pip install -e .`, or run scripts/run.sh once)", RuntimeWarning,
                              stacklevel=2)
            _loaded = True
        finally:
            _loading = False


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


def _folder_config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not config.is_file():
        return {}
    try:
        cfg = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        cfg = None
    if not isinstance(cfg, dict):
        raise InvalidArgumentError(f"the config.json of the folder {path.name} is not a JSON object")
    return cfg


def _spec_for_folder(path: Path) -> EmbedderSpec:
    cfg = _folder_config(path)
    model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
    owner = next((f for f in _FAMILIES.values() if model_type in f.claims), None)
    # folders are offered in ascending priority (ties: in family-key order); a claimed model_type is kept
    # from every family after its owner (the fallbacks), not from the ones before it that know their own marks
    for family in sorted(_FAMILIES.values(), key=lambda f: (f.folder_priority, f.family)):
        if owner is not None and family is not owner and family.folder_priority >= owner.folder_priority:
            continue
        spec = family.spec_from_folder(path)
        if spec is None:
            continue
        if cfg.get("auto_map") and model_type not in family.reproduces:
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


def family_of(spec: EmbedderSpec) -> type[Embedder]:
    """The family class that builds ``spec``."""
    _load_families()
    try:
        return _FAMILIES[spec.family]
    except KeyError:
        raise UnknownFamilyError(spec.family, _FAMILIES, spec.name) from None


def create(name_or_path: str, device: str | None = None, runtime: str | None = None,
           threads: int | None = None) -> Embedder:
    """Load a model by registry name (hub id) or local folder; ``device`` defaults to CUDA if present.

    ``runtime``: ``auto`` (the default, unless ``$ZOO_RUNTIME`` says otherwise: the fastest exact runtime the
    family offers on the device; a default the family does not offer means torch), ``torch``, ``torch-fp16``,
    or ``onnx`` / ``onnx-int8`` for families that offer them (see :mod:`zoo.runtime`; ``threads`` sets ONNX
    Runtime's intra-op threads). ``model.runtime`` is the one that runs."""
    from .runtime import check_offered, check_runtime
    from .settings import settings
    from .weights import resolve

    spec = get_spec(name_or_path)
    family = family_of(spec)
    if runtime is None:  # the default ($ZOO_RUNTIME, else auto) applies where the family offers it, else torch
        runtime = check_runtime(settings().runtime)
        runtime = runtime if runtime in (*family.runtimes, "auto") else "torch"
    check_offered(runtime, family.runtimes, spec)
    path = Path(name_or_path) if os.path.isdir(name_or_path) else resolve(spec)
    model = family.load(spec, path, device)
    model.weights_path = path
    model.use_runtime(runtime, threads)
    return model
