"""Pure data describing models: importable without torch, shared by zoo, serving and ui."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from . import kinds as _kinds  # numpy only at import (scipy lazily): spec stays importable without torch

#: the tokens a forward pass may hold when a spec sets no ``max_batch_tokens``, for models up to
#: ``BATCH_TOKENS_WIDTH`` wide: text-embeddings-inference's default ``--max-batch-tokens``
DEFAULT_BATCH_TOKENS = 16384
BATCH_TOKENS_WIDTH = 1024


def derived_batch_tokens(width: int) -> int:
    """The token budget of a model ``width`` wide when its spec sets none (see :attr:`EmbedderSpec.batch_tokens`)."""
    return max(1, round(DEFAULT_BATCH_TOKENS * min(1.0, BATCH_TOKENS_WIDTH / width)))


class Modality(str, Enum):
    """What kind of input an encode() call carries."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    INTERLEAVED = "interleaved"  # an ordered list of text and image parts
    VIDEO = "video"  # a clip: sampled frames, and its audio track where the model listens (see zoo.media.sampling)

    def __str__(self) -> str:
        return self.value


def __getattr__(name: str) -> Any:
    """``OUTPUT_KINDS``: the output kinds a model can produce (what ``outputs`` may list), read from the
    registry of :mod:`zoo.kinds` at each use, so that a kind registered later counts (``dense`` one vector per
    item, ``multivector`` one per token or patch, ``sparse`` term weights, and any a plugin adds; derived
    kinds such as ``fde`` are computed from these, see :mod:`zoo.kinds` for the types and controls)."""
    if name == "OUTPUT_KINDS":
        return _kinds.raw_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything `zoo` and the server need to know about one model, without loading it."""

    name: str  # registry name: the upstream hub id where one exists
    family: str  # key of the family that builds it (see zoo.families)
    modalities: tuple[Modality, ...]  # inputs the model can embed, all into one space
    dim: int  # width of the full embedding
    license: str  # SPDX id or upstream licence name
    source: str  # hub id, "package:<module>/<subdir>" or a local folder
    max_length: int = 512  # text: max tokens per item (longer input is truncated, counted)
    matryoshka_dims: tuple[int, ...] = ()  # widths the model was trained to be truncated to
    prompts: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    default_prompt_name: str | None = None  # prompt used when a call names none
    description: str = ""  # one line for `zoo list` / `zoo info`
    sample_rate: int | None = None  # audio models: the rate inputs are resampled to (required for them)
    batch_size: int = 32  # in-process: items per forward pass when a call names none
    max_batch_size: int = 64  # serving: largest batch one execute() gets
    queue_delay_us: int = 0  # serving: how long the dynamic batcher waits to fill a batch (see serving/export.py)
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # family-private knobs
    outputs: tuple[str, ...] = ("dense",)  # output kinds it produces; the first is the default
    vocab_size: int | None = None  # sparse models: width of a sparse row (required for them)
    max_batch_tokens: int | None = None  # tokens per forward pass (items × padded length); None: see batch_tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(Modality(m) for m in self.modalities))
        object.__setattr__(self, "prompts", MappingProxyType(dict(self.prompts)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        produced = _kinds.raw_names()
        bad_kinds = [k for k in self.outputs if k not in produced]
        if not self.outputs or bad_kinds or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"{self.name}: outputs {list(self.outputs)} must be distinct kinds of {produced}")
        for kind in self.outputs:  # what a kind needs of the spec (sparse: vocab_size)
            _kinds.get(kind).check_spec(self)
        if Modality.AUDIO in self.modalities and not self.sample_rate:
            raise ValueError(f"{self.name}: an audio model needs sample_rate")
        if self.dim <= 0:
            raise ValueError(f"{self.name}: dim must be positive, got {self.dim}")
        if self.max_batch_tokens is not None and (isinstance(self.max_batch_tokens, bool)
                                                  or not isinstance(self.max_batch_tokens, int)
                                                  or self.max_batch_tokens < 1):
            raise ValueError(f"{self.name}: max_batch_tokens must be a positive integer or None, "
                             f"got {self.max_batch_tokens!r}")
        bad = [d for d in self.matryoshka_dims if not 0 < d <= self.dim]
        if bad:
            raise ValueError(f"{self.name}: matryoshka_dims {bad} outside 1..{self.dim}")
        if self.default_prompt_name and self.default_prompt_name not in self.prompts:
            raise ValueError(f"{self.name}: default prompt {self.default_prompt_name!r} not in prompts")

    def supports(self, modality: Modality | str) -> bool:
        """Whether the model embeds this modality."""
        return Modality(modality) in self.modalities

    @property
    def output(self) -> str:
        """The output kind ``encode()`` returns when a call names none."""
        return self.outputs[0]

    @property
    def batch_tokens(self) -> int:
        """Tokens one forward pass may hold, counted as items × padded length (see :mod:`zoo.batching`):
        ``max_batch_tokens`` when set, else derived from the width: TEI's default of 16,384 tokens for models
        up to 1,024 wide, scaled down in proportion above, never below 1. Why: what a pass holds per token
        (hidden states, the feed-forward's 4× wider states) grows with the width, so the budget keeps a wide
        model's pass near a 1,024-wide one's (a 3,584-wide 7B model gets 4,681). ``dim`` stands for the width;
        a family whose vectors are a narrow projection of a wide model (ColPali's 128-d rows on Gemma 2B) sets
        ``max_batch_tokens`` itself."""
        return self.max_batch_tokens if self.max_batch_tokens is not None else derived_batch_tokens(self.dim)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for `zoo info --json` and the model cards)."""
        return {
            "name": self.name,
            "family": self.family,
            "modalities": [m.value for m in self.modalities],
            "dim": self.dim,
            "matryoshka_dims": list(self.matryoshka_dims),
            "max_length": self.max_length,
            "license": self.license,
            "source": self.source,
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
            "description": self.description,
            "sample_rate": self.sample_rate,
            "batch_size": self.batch_size,
            "max_batch_size": self.max_batch_size,
            "queue_delay_us": self.queue_delay_us,
            "options": dict(self.options),
            "outputs": list(self.outputs),
            "vocab_size": self.vocab_size,
            "max_batch_tokens": self.max_batch_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderSpec:
        """The spec :meth:`to_dict` describes (what a served model's config carries to clients; a dict written
        before a field existed takes its default, and one written by a newer version keeps the fields known here)."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}  # a newer server's fields: unknown here, left out
        fields["modalities"] = tuple(fields["modalities"])
        fields["matryoshka_dims"] = tuple(fields.get("matryoshka_dims", ()))
        fields["outputs"] = tuple(fields.get("outputs", ("dense",)))
        return cls(**fields)
