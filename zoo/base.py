"""The one ``encode()`` every family shares: validation, prompts, length-sorted batching, order."""

from __future__ import annotations

import functools
from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ahead, batching, kinds, media, truncation
from . import long as lg
from .batching import LENGTH_GAP, LENGTH_SPREAD, length_batches  # noqa: F401  (their home before zoo.batching)
from .errors import InputError
from .front import EncodeFront, EncodeOptions, check_batch_size, check_items
from .runtime import RuntimeTowers
from .spec import EmbedderSpec, Modality
from .tokens import TokenizerTools

if TYPE_CHECKING:
    pass

LARGE_INPUT = 1000  # a progress bar appears by itself from this many items on
MAX_AUDIO_SECONDS = 600.0  # audio read at most, for models that declare no shorter window


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Encoded:
    """What :meth:`Embedder.encode_items` returns: the good items' post-processed ``result`` (one call's result
    type, see :meth:`Embedder.encode`; None when no item was good), their positions ``good`` in the input, the
    bad items' errors by position, each good item's text ``tokens`` when counted, and whether each good text
    was cut to fit the window (``truncated``; None for other modalities)."""

    errors: dict[int, InputError]
    good: list[int]
    result: Any
    tokens: list[int] | None = None
    truncated: list[bool] | None = None


class Embedder(TokenizerTools, batching.TokenCounting, RuntimeTowers, EncodeFront, ABC):
    """Base class of every model, and the whole family contract.

    A family subclasses it, is listed under the ``zoo.families`` entry-point group (its name there is the
    family key its specs name), and implements ``__init__(spec, path, device)``, :meth:`spec_from_folder` (to
    load local folders) and the one forward hook :meth:`forward`. Every attribute the registry reads is
    declared here with its default; the optional hooks (:meth:`_lengths`, :meth:`_text_tokens`,
    :meth:`_token_sizes`, :meth:`_media_tokens`, :meth:`_towers`) have working defaults too."""

    device: str
    weights_path: Path | None = None  # the folder the weights were loaded from (set by zoo.create)
    #: the family key (the family's ``zoo.families`` entry-point name; set when the registry loads it)
    family: str = ""
    #: local folders are offered to families in ascending priority (ties in key order); the first claim wins
    #: (the plain text family, which takes any transformers encoder, is the fallback at 100)
    folder_priority: int = 50
    #: config ``model_type``s this family owns: no family after it (a fallback) is offered such a folder
    claims: frozenset[str] = frozenset()
    #: the media an interleaved input may hold besides text (see :data:`zoo.media.PART_KINDS`)
    interleaved_parts: tuple[str, ...] = ("image",)
    #: model_types whose own modelling code (a folder's ``auto_map``) the family reproduces without running it
    reproduces: frozenset[str] = frozenset()

    def __init__(self, spec: EmbedderSpec, device: str | None = None) -> None:
        self.spec = spec
        self.device = pick_device(device)

    # ---- what families implement -------------------------------------------------------------
    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe a local model folder this family can load, or None (the default: it loads none)."""
        return None

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> Any:
        """Raw outputs of one batch of decoded items (:meth:`decode`), longest first.

        Args:
            batch: decoded items of ``modality`` (a ``str``, a PIL image, a waveform, a
                :class:`zoo.media.sampling.Video`, a list of :class:`zoo.media.Part`).
            modality: the call's modality, one the spec lists.
            opts: the call's checked controls; ``opts.prompt_name`` names the prompt and ``opts.prompt`` is
                its text (None: no prompt).
            kind: the raw output kind the call needs, one the spec lists in ``outputs``.

        Returns:
            ``dense``: float32 ``[len(batch), spec.dim]``; ``multivector``: a list of float32 ``[n_i, dim]``;
            ``sparse``: a list of ``(indices, values)``. :meth:`encode` does the rest (order, output
            controls, derived kinds).
        """
        raise NotImplementedError(f"{type(self).__name__} implements no forward()")

    def prepare_ahead(self, batch: list[Any], modality: Modality, opts: EncodeOptions) -> None:
        """Start preparing the inputs of ``batch``, the next :meth:`forward` of this call, on a thread (see
        :mod:`zoo.ahead`), while the batch before it runs. The default prepares nothing."""

    def is_query(self, modality: Modality, opts: EncodeOptions) -> bool:
        """Whether a call's items are queries (see :mod:`zoo.kinds`): ``prompt_name == "query"`` unless the
        family knows better (page retrievers: texts are queries, images documents)."""
        return opts.prompt_name == kinds.QUERY

    @functools.cached_property
    def weights_fingerprint(self) -> str:  # type: ignore[override]
        """The fingerprint of the loaded weights, read on first use (loading a model reads no extra bytes)."""
        from .weights import fingerprint

        return fingerprint(self.weights_path) if self.weights_path is not None else ""

    @classmethod
    def load(cls, spec: EmbedderSpec, path: Any, device: str | None) -> Embedder:
        """Build the embedder from weights in folder ``path`` (families take ``(spec, path, device)``)."""
        return cls(spec, path, device)

    @property
    def sample_rate(self) -> int:
        """Audio rate the model expects (only meaningful for audio models)."""
        return int(self.spec.sample_rate or 0)

    @property
    def max_audio_seconds(self) -> float:
        """The longest audio the model uses; decoding reads no further (audio families narrow it)."""
        return MAX_AUDIO_SECONDS

    @property
    def max_text_chars(self) -> int:
        """Characters of a text (or text part) the model's tokenizer ever sees: its max tokens times
        ``TOKENIZE_CHARS_PER_TOKEN`` (see :mod:`zoo.media.text`); the rest is cut before tokenizing."""
        tokens = getattr(self, "max_length", None)
        return media.text.max_chars(max(self.spec.max_length, tokens if isinstance(tokens, int) else 0))

    # ---- encoding ------------------------------------------------------------------------------
    def _decode_item(self, item: Any, index: int, modality: Modality, allow_paths: bool = True,
                     opts: EncodeOptions | None = None) -> Any:
        """What :meth:`embed_decoded` takes for one raw item (decoded by :func:`zoo.media.decode`; a text kept
        as far as ``opts`` needs, see :func:`zoo.long.text_chars`)."""
        chars = lg.text_chars(self, opts) if modality is Modality.TEXT else self.max_text_chars
        return media.decode(item, index, modality, self.sample_rate, self.max_audio_seconds, allow_paths,
                            self.interleaved_parts, text_chars=chars)

    def decode(self, items: Sequence[Any], modality: Modality | str, *, allow_paths: bool = True,
               opts: EncodeOptions | None = None) -> list[Any]:
        """Decode raw inputs; raises :class:`InputError` naming the first bad item's index.

        ``allow_paths=False`` (servers) refuses items that name files instead of carrying data; ``opts``: the
        call's options (texts are kept as far as its ``truncate`` and ``long`` need)."""
        mod = self.check_modality(modality)
        check_items(items)
        with truncation.gathered(len(items)):  # decoding cuts too (video past its window): one warning per call
            return [self._decode_item(x, i, mod, allow_paths, opts) for i, x in enumerate(items)]

    def encode_items(
        self,
        raw: Sequence[Any],
        modality: Modality,
        opts: EncodeOptions,
        *,
        allow_paths: bool = True,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
        stop_on_error: bool = False,
        tokens: bool = False,
    ) -> Encoded:
        """Decode and embed raw items a window at a time, so that decoded media are never all held at once.

        Text is decoded in one window (cut texts are small; the whole call is then sorted by length). Other
        modalities are decoded in arrival order into windows of at most ``batch_size`` items and
        ``MAX_HELD_BYTES`` decoded bytes; each window is embedded (sorted by length within it) and dropped
        before the next is decoded. A bad item's :class:`InputError` (naming ``indices[k]``, default ``k``) is
        kept in :attr:`Encoded.errors`, or raised at once with ``stop_on_error``; the good items are
        post-processed together, as one call.

        Args:
            raw: items as :meth:`encode` takes them.
            modality: a checked modality; ``opts``: checked output controls (:meth:`options`).
            allow_paths: False for servers: a path is refused, never opened.
            indices: the index each item's error names (a server's index within its request).
            tokens: also count each good item's text tokens (:meth:`count_tokens`) and tell which texts were cut
                (:attr:`Encoded.truncated`; without it, a ``truncate="end"`` call tells only the texts cut by
                characters, to spare tokenizing them twice).
        """
        if batch_size is None:
            batch_size = self.spec.batch_size
        batch_size = check_batch_size(batch_size)
        kind = kinds.get(opts.output).produced_from
        limit = len(raw) if modality is Modality.TEXT else batch_size
        errors: dict[int, InputError] = {}
        good: list[int] = []
        outputs: list[Any] = []  # raw outputs of the good items, in order
        counts: list[int] = []
        cuts: list[bool] = []
        window: list[Any] = []
        at: list[int] = []  # each window item's position in raw
        held = 0
        progress = None
        if show_progress or len(raw) >= LARGE_INPUT:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(raw), desc=f"encode {modality.value}", unit="item")

        def flush() -> None:
            nonlocal window, held, at, good
            if window and modality is Modality.TEXT:  # fitted to the window as the call's truncate says
                fitted = self.fit_texts(window, opts, [k if indices is None else indices[k] for k in at], tokens)
                for p, err in fitted.errors.items():
                    if stop_on_error:
                        raise err
                    errors[at[p]] = err
                dropped = {at[p] for p in fitted.errors}
                good = [k for k in good if k not in dropped]
                window = [t for p, t in enumerate(fitted.texts) if p not in fitted.errors]
                cuts.extend(c for p, c in enumerate(fitted.truncated) if p not in fitted.errors)
            if window:
                outputs.extend(self._embed_texts_or_items(window, modality, opts, kind, batch_size))
                if tokens:
                    counts.extend(self.count_tokens(window, modality, opts.prompt, opts))
            if progress is not None:
                progress.update(len(at))
            window, held, at = [], 0, []

        with truncation.gathered(len(raw)):  # decoding and the batches note what they cut; one warning per call
            for k, item in enumerate(raw):
                try:
                    decoded = self._decode_item(item, k if indices is None else indices[k], modality, allow_paths,
                                                opts)
                except InputError as err:
                    if stop_on_error:
                        raise
                    errors[k] = err
                    continue
                good.append(k)
                window.append(decoded)
                at.append(k)
                held += media.nbytes(decoded)
                if len(window) >= limit or held >= media.budgets.MAX_HELD_BYTES:
                    flush()
            flush()
        if progress is not None:
            progress.close()
        result = self._finish(outputs, modality, opts, kind) if outputs else None
        return Encoded(errors=errors, good=good, result=result, tokens=counts if tokens else None,
                       truncated=cuts if modality is Modality.TEXT else None)

    def _embed_texts_or_items(self, items: list[Any], modality: Modality, opts: EncodeOptions, kind: str,
                              batch_size: int, show_progress: bool = False) -> list[Any]:
        """Raw outputs of decoded items: :meth:`_embed_raw`, or for ``long="chunk"`` the chunked means of
        :func:`zoo.long.chunked_raw`."""
        if opts.long:
            return lg.chunked_raw(self, items, opts, kind, batch_size)
        return self._embed_raw(items, modality, opts, kind, batch_size, show_progress)

    def _embed_raw(self, items: list[Any], modality: Modality, opts: EncodeOptions, kind: str,
                   batch_size: int, show_progress: bool = False) -> list[Any]:
        """Raw outputs (before post-processing) of decoded items, one per item in their order, computed in
        length-sorted batches (longest first) of at most ``batch_size`` items and ``spec.batch_tokens`` tokens
        counted as items × padded length (:meth:`_token_sizes`; an item over the budget runs alone). Every
        forward pass, in-process and served, is cut here."""
        lengths = self._lengths(items, modality, opts.prompt)
        order = np.argsort([-n for n in lengths], kind="stable")
        out: list[Any] = [None] * len(items)
        batches: Any = batching.budget_batches(
            [lengths[i] for i in order], batch_size, self.spec.batch_tokens,
            self._token_sizes([items[i] for i in order], modality, opts.prompt),
            lambda at: self._token_sizes([items[order[k]] for k in at], modality, opts.prompt, exact=True))
        pairs: Any = ahead.with_next(batches)
        if show_progress:
            from tqdm.auto import tqdm

            pairs = tqdm(pairs, total=len(batches), desc=f"encode {modality.value}", unit="batch")
        with ahead.call():
            for (start, end), upcoming in pairs:
                if upcoming is not None:
                    self.prepare_ahead([items[i] for i in order[upcoming[0]:upcoming[1]]], modality, opts)
                idx = order[start:end]
                got = self.forward([items[i] for i in idx], modality, opts, kind)
                for i, one in zip(idx, got):
                    out[i] = one
        return out

    def _finish(self, outputs: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> Any:
        """One call's post-processed result from its raw per-item outputs (by its output kind's handler)."""
        return kinds.finish(outputs, opts, self.spec, query=self.is_query(modality, opts))

    def embed_decoded(
        self,
        items: list[Any],
        modality: Modality,
        opts: EncodeOptions,
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed already-decoded items with length-sorted batches, then post-process."""
        if batch_size is None:
            batch_size = self.spec.batch_size
        batch_size = check_batch_size(batch_size)
        kind = kinds.get(opts.output).produced_from
        with truncation.gathered(len(items)):  # the batches note what they cut; one warning per call follows
            outputs = self._embed_texts_or_items(items, modality, opts, kind, batch_size,
                                                 show_progress or len(items) >= LARGE_INPUT)
        return self._finish(outputs, modality, opts, kind)

    def count_tokens(self, items: list[Any], modality: Modality, prompt: str | None,
                     opts: EncodeOptions | None = None) -> list[int]:
        """Text tokens of each decoded item, as its model's tokenizer makes them (what servers report as
        usage): a text counts its tokens with the prompt and special tokens (all of them with ``opts.long``),
        an interleaved item the tokens of its text parts; image and audio content counts 0."""
        if modality is Modality.TEXT:
            if opts is not None and opts.long:
                return [v.count for v in self._token_views(items, prompt)]
            return self._text_tokens(items, prompt)
        counts = [0] * len(items)
        if modality is Modality.INTERLEAVED:
            owners = [i for i, parts in enumerate(items) for p in parts if p.is_text]
            texts = [p.value for parts in items for p in parts if p.is_text]
            for i, n in zip(owners, self._text_tokens(texts, None) if texts else []):
                counts[i] += n
        return counts

    def encode(
        self,
        inputs: Sequence[Any],
        modality: Modality | str,
        *,
        batch_size: int | None = None,
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
        show_progress: bool = False,
    ) -> Any:
        """Embed ``inputs`` of one ``modality``: an ``[N, d]`` numpy array for dense output (see
        :mod:`zoo.kinds` for the other kinds' types).

        Args:
            inputs: items of the modality (see :mod:`zoo.media` for accepted forms).
            modality: ``"text"``, ``"image"``, ``"audio"`` or ``"interleaved"``.
            batch_size: items per forward pass (default from the spec).
            normalize: L2-normalize (after Matryoshka truncation); default: the output kind's.
            dimensions: keep the first ``dimensions`` components (Matryoshka).
            precision: output encoding, see :mod:`zoo.postprocess`.
            prompt_name: a key of ``spec.prompts`` (e.g. ``"query"``); default ``spec.default_prompt_name``.
            output: ``"dense"``, ``"multivector"``, ``"sparse"`` or ``"fde"``; default ``spec.outputs[0]``.
            max_vectors: multivector output: at most this many vectors per item.
            top_k: sparse output: at most this many terms per item.
            truncate: a text over the window is cut at the ``"end"``, at the ``"start"``, or ``"none"``: refused
                (:class:`InputError`); see :mod:`zoo.long`.
            long: ``"chunk"``: a long text is embedded as windows of ``chunk_tokens`` text tokens sharing
                ``overlap``, averaged by their tokens (dense output).
            max_tokens_per_doc: ``score`` output (cross-encoders, whose items are pairs): each document is cut
                to that many tokens first.
            show_progress: show a progress bar (shown anyway for large inputs).

        Returns:
            dense and fde: ``[len(inputs), d]`` array, dtype and ``d`` following ``precision`` (packed for
            binary); multivector: a list of ``[n_i, d]`` arrays; sparse: a ``scipy.sparse.csr_matrix``; score:
            ``[len(inputs)]`` float32.
        """
        opts, mod = self._call(modality, normalize=normalize, dimensions=dimensions, precision=precision,
                               prompt_name=prompt_name, output=output, max_vectors=max_vectors, top_k=top_k,
                               truncate=truncate, long=long, chunk_tokens=chunk_tokens, overlap=overlap,
                               max_tokens_per_doc=max_tokens_per_doc)
        check_items(inputs)
        return self.encode_items(inputs, mod, opts, batch_size=batch_size, show_progress=show_progress,
                                 stop_on_error=True).result

    def encode_per_item(
        self,
        inputs: Sequence[Any],
        modality: Modality | str,
        *,
        batch_size: int | None = None,
        **controls: Any,
    ) -> list[Any]:
        """Like :meth:`encode` (``controls``: its output controls), but a bad item becomes its
        :class:`InputError` in the result list instead of failing the call: every good item still gets its
        result (its row, vectors or sparse row), computed in the same batched passes as :meth:`encode`'s."""
        opts, mod = self._call(modality, **controls)
        check_items(inputs)
        done = self.encode_items(inputs, mod, opts, batch_size=batch_size)
        results: list[Any] = [None] * len(inputs)
        for k, err in done.errors.items():
            results[k] = err
        if done.good:
            for k, row in zip(done.good, kinds.items_of(done.result, opts.output)):
                results[k] = row
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={self.device!r})"
