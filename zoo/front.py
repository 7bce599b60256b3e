"""What every ``encode()`` shares, in-process or remote: the checks of a call's items and output controls,
made once before any work is done, and :class:`EncodeOptions`, the checked controls.

:class:`EncodeFront` is the base of :class:`zoo.base.Embedder` (in-process) and of the serving clients, so a
call is refused the same way wherever the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kinds
from . import postprocess as pp
from .errors import InvalidArgumentError, UnknownPromptError, UnsupportedModalityError, choices
from .spec import EmbedderSpec, Modality


def check_items(items: Any) -> None:
    """Refuse anything but a non-empty sequence of items (a bare string is one item, not a list)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidArgumentError(
            f"inputs must be a list of items, got {type(items).__name__}; wrap a single item in a list"
        )
    if len(items) == 0:
        raise InvalidArgumentError("inputs is empty: pass at least one item")


def check_batch_size(batch_size: Any) -> int:
    """A positive integer, or an error naming the bad value."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


@dataclass(frozen=True)
class EncodeOptions:
    """Validated per-call output controls; hashable so the server can group requests by them."""

    normalize: bool = True
    dimensions: int | None = None
    precision: str = "float32"
    prompt_name: str | None = None  # as asked for (the server needs the name)
    prompt: str | None = None  # the resolved prompt text the model sees
    output: str = "dense"  # the output kind (see zoo.kinds)
    max_vectors: int | None = None  # multivector: at most this many vectors per item
    top_k: int | None = None  # sparse: at most this many terms per item
    truncate: str = "end"  # a text over the window: cut at the "end", at the "start", or "none" (refused)
    long: str | None = None  # "chunk": a long text is embedded as windows whose vectors are averaged
    chunk_tokens: int | None = None  # long="chunk": text tokens per window (default: as many as fit)
    overlap: int | None = None  # long="chunk": tokens neighbouring windows share (default: a quarter of one)
    max_tokens_per_doc: int | None = None  # pairs (score output): a document's tokens kept before the pair is read


class EncodeFront:
    """What every ``encode()`` shares, in-process or remote: the spec, and the validation of the modality
    and the output controls before any work is done. :class:`Embedder` and the serving clients build on it."""

    spec: EmbedderSpec
    #: id of the loaded weights (:func:`zoo.weights.fingerprint`): vectors stored for reuse are keyed by it
    #: with the model name, so retrained weights never meet stale vectors ("" when unknown)
    weights_fingerprint: str = ""

    # ---- shared machinery ----------------------------------------------------------------------
    def check_modality(self, modality: Modality | str) -> Modality:
        """Return ``modality`` as an enum if this model embeds it, else raise."""
        try:
            mod = Modality(modality)
        except ValueError:
            mod = None
        if mod is None or mod not in self.spec.modalities:
            raise UnsupportedModalityError(
                f"model {self.spec.name!r} does not embed modality {str(modality)!r}; it supports "
                f"{choices(m.value for m in self.spec.modalities)}"
            )
        return mod

    def options(
        self,
        *,
        normalize: bool | None = None,
        dimensions: int | None = None,
        precision: str = "float32",
        prompt_name: str | None = None,
        output: str | None = None,
        max_vectors: int | None = None,
        top_k: int | None = None,
        truncate: str = "end",
        long: str | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> EncodeOptions:
        """Validate output controls once, before any work is done (``normalize=None``: the output kind's
        default, see :func:`zoo.kinds.default_normalize`; ``truncate``, ``long``, ``chunk_tokens`` and
        ``overlap``: see :mod:`zoo.long`; ``max_tokens_per_doc``: pairs only, each document is cut to that many
        tokens before its pair is read, as Cohere's rerank does)."""
        from . import long as lg

        pp.check_precision(precision)
        truncate = lg.check_truncate(truncate)
        long, chunk_tokens, overlap = lg.check_long(long, chunk_tokens, overlap)
        if long and truncate != "end":
            raise InvalidArgumentError(f"long={long!r} reads the whole text; truncate={truncate!r} does not apply",
                                       "truncate")
        output = kinds.check_output(output, self.spec.outputs, self.spec.name)
        if long and not kinds.get(output).poolable:
            raise InvalidArgumentError(f"long={long!r} averages one vector an item; {output!r} output has no such "
                                       "vector", "long")
        max_vectors, top_k = kinds.check_count(max_vectors, "max_vectors"), kinds.check_count(top_k, "top_k")
        kinds.check_controls(output, dimensions=dimensions, precision=precision, max_vectors=max_vectors,
                             top_k=top_k)
        if normalize is None:
            normalize = kinds.default_normalize(output)
        if not isinstance(normalize, (bool, np.bool_)):
            raise InvalidArgumentError(f"normalize must be true or false, got {normalize!r}", "normalize")
        if normalize and not kinds.get(output).normalizable:
            raise InvalidArgumentError(f"normalize does not apply to {output!r} output", "normalize")
        max_tokens_per_doc = kinds.check_count(max_tokens_per_doc, "max_tokens_per_doc")
        if max_tokens_per_doc is not None and not kinds.get(output).pairs:
            raise InvalidArgumentError(f"max_tokens_per_doc applies to (query, document) pairs, not {output!r} "
                                       "output", "max_tokens_per_doc")
        dims = pp.check_dimensions(dimensions, self.spec.dim, precision)
        pp.check_calibration(precision, bool(normalize))
        name = prompt_name if prompt_name is not None else self.spec.default_prompt_name
        if name is not None and name not in self.spec.prompts:
            known = choices(self.spec.prompts) if self.spec.prompts else "none (this model has no prompts)"
            raise UnknownPromptError(f"unknown prompt_name {name!r} for {self.spec.name!r}; valid: {known}",
                                     "prompt_name")
        return EncodeOptions(
            normalize=bool(normalize),
            dimensions=None if dims == self.spec.dim else dims,
            precision=precision,
            prompt_name=name,
            prompt=self.spec.prompts[name] if name is not None else None,
            output=output,
            max_vectors=max_vectors,
            top_k=top_k,
            truncate=truncate,
            long=long,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            max_tokens_per_doc=max_tokens_per_doc,
        )

    def _call(self, modality, **controls: Any) -> tuple[EncodeOptions, Modality]:
        """Validate everything about a call but its inputs (``controls``: :meth:`options`' keywords),
        before any work is done."""
        opts, mod = self.options(**controls), self.check_modality(modality)
        if mod is not Modality.TEXT and (opts.truncate != "end" or opts.long):
            what = "truncate" if opts.truncate != "end" else "long"
            raise InvalidArgumentError(f"{what} applies to text inputs; this call embeds {mod.value}", what)
        return opts, mod
