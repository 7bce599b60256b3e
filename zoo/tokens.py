"""What a model's tokenizer offers callers: ``tokenize()``/``detokenize()``, the window a text must fit, and late
chunking (``encode_chunks()``); the hooks a family implements to offer them. :class:`TokenizerTools` is a base
of :class:`zoo.base.Embedder`; the work is done in :mod:`zoo.long`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import long as lg
from . import truncation
from .errors import InvalidArgumentError
from .front import check_batch_size, check_items
from .late import late_chunks
from .long import Chunks, Fitted, Span, Tokens
from .spec import Modality

if TYPE_CHECKING:
    from .front import EncodeOptions


class TokenizerTools:
    """Tokenizing, fitting texts to the window and late chunking, for families whose tokenizer gives character
    offsets (they implement :meth:`_token_views` and :meth:`text_limit`; late chunking also
    :meth:`_token_states` and :attr:`late_pooling`). Other families refuse these with a clear error."""

    spec: Any
    #: how late chunking pools a chunk's token states: "mean", "max" or "last" (None: the family cannot)
    late_pooling: str | None = None

    # ---- what families implement ---------------------------------------------------------------------
    def text_limit(self, prompt: str | None) -> int | None:
        """The most tokens a text under ``prompt`` may hold (prompt and special tokens included), or None where
        the family does not expose its tokenizer."""
        return None

    def _token_views(self, texts: list[str], prompt: str | None, cut: bool = False) -> list[Tokens]:
        """Each text as the model reads it under ``prompt``: untruncated (``cut=False``; ``truncated`` says
        whether it is over the window) or cut at the end as the forward pass cuts it (``cut=True``)."""
        raise InvalidArgumentError(f"model {self.spec.name!r} does not expose its tokenizer's offsets "
                                   "(tokenize, truncate='start'/'none', long='chunk' and late chunking need them)")

    def _token_states(self, texts: list[str], prompt: str | None) -> list[tuple[Any, list[Span | None]]]:
        """For texts that fit the window: each text's last hidden states ``[T, H]`` (float32 numpy) with each
        token's character span in the text (None for the prompt's and special tokens)."""
        raise InvalidArgumentError(f"model {self.spec.name!r} does not give token states: late chunking needs a "
                                   "dense text model that pools tokens (mean, max or last)")

    def _filled_window(self, texts: list[str], prompt: str | None) -> list[bool]:
        """Where the family gives no offsets: whether each text filled the window (cut, or exactly as long)."""
        from .media.text import is_cut

        limit = self.spec.max_length
        try:
            counts = self._text_tokens(texts, prompt)  # type: ignore[attr-defined]
        except NotImplementedError:
            return [is_cut(t) for t in texts]
        return [is_cut(t) or n >= limit for t, n in zip(texts, counts)]

    # ---- what callers use ----------------------------------------------------------------------------
    @property
    def max_input_tokens(self) -> int:
        """The most tokens a text may hold, prompt and special tokens included."""
        limit = self.text_limit(None)
        return int(limit if limit is not None else self.spec.max_length)

    def fit_texts(self, texts: list[str], opts: EncodeOptions, indices: list[int] | None = None,
                  report: bool = True) -> Fitted:
        """Decoded texts fitted to the window as ``opts.truncate`` says, and which were cut (``report=False``:
        not told for ``truncate="end"``, which then costs no tokenizing; see :func:`zoo.long.fit`)."""
        return lg.fit(self, texts, opts, indices, report)  # type: ignore[arg-type]

    def _texts(self, texts: Sequence[Any], opts: EncodeOptions) -> list[str]:
        check_items(texts)
        return self.decode(texts, Modality.TEXT, opts=opts)  # type: ignore[attr-defined]

    def tokenize(self, texts: Sequence[Any], prompt_name: str | None = None, truncate: str = "end") -> list[Tokens]:
        """Per text, the ids the model reads (prompt and special tokens included, after truncation), their
        tokens and character offsets in the text (see :class:`zoo.long.Tokens`); ``truncate="none"`` raises
        :class:`InputError` for a text over the window."""
        opts, _ = self._call(Modality.TEXT, prompt_name=prompt_name, truncate=truncate)  # type: ignore[attr-defined]
        quiet = truncation.begin()  # the result says which texts were cut: no warning besides
        try:
            fitted = self.fit_texts(self._texts(texts, opts), opts)
        finally:
            truncation.end(quiet)
        if fitted.errors:
            raise fitted.errors[min(fitted.errors)]
        views = self._token_views(fitted.texts, opts.prompt, cut=True)
        for view, cut in zip(views, fitted.truncated):
            view.truncated = cut
        if opts.truncate == "start":  # offsets into the text the caller sent, not the suffix kept of it
            for view, sent, kept in zip(views, self._texts(texts, opts), fitted.texts):
                shift = len(sent) - len(kept)
                view.offsets = [None if o is None else (o[0] + shift, o[1] + shift) for o in view.offsets]
        return views

    def detokenize(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """Each list of token ids as text, as the model's tokenizer decodes it."""
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is None or self.text_limit(None) is None:
            self._token_views([], None)  # raises the family's refusal
        return [tokenizer.decode(row, skip_special_tokens=skip_special_tokens)
                for row in lg.check_token_ids(ids, len(tokenizer))]

    def encode_chunks(
        self,
        texts: Sequence[Any],
        *,
        chunk_tokens: int | None = None,
        spans: Sequence[Sequence[Span]] | None = None,
        overlap: int | None = None,
        prompt_name: str | None = None,
        normalize: bool | None = None,
        dimensions: int | None = None,
        precision: str = "float32",
        batch_size: int | None = None,
    ) -> list[Chunks]:
        """Late chunking: per text, one vector per chunk, each the model's pooling over that chunk's tokens in
        one pass over the whole text (special and prompt tokens left out), post-processed like ``encode()``'s
        dense rows; chunks of ``chunk_tokens`` text tokens or the caller's character ``spans`` (one list per
        text; exactly one of the two). A text longer than the window is read in overlapping macro-windows
        (``overlap`` tokens shared; default a quarter of one), each chunk pooled from the window that holds it
        with the most context. See :mod:`zoo.long`."""
        check_items(texts)
        chunk_tokens, checked, overlap = lg.check_chunking(chunk_tokens, spans, overlap, len(texts))
        if self.late_pooling is None:
            self._token_states([], None)  # raises the family's refusal
        opts, _ = self._call(Modality.TEXT, prompt_name=prompt_name, normalize=normalize,  # type: ignore[attr-defined]
                             dimensions=dimensions, precision=precision, output="dense")
        opts = dataclasses.replace(opts, long="chunk")  # read whole texts (up to MAX_LONG_CHARS)
        size = check_batch_size(batch_size if batch_size is not None else self.spec.batch_size)
        return late_chunks(self, self._texts(texts, opts), opts, chunk_tokens=chunk_tokens,  # type: ignore[arg-type]
                           spans=checked, overlap=overlap, batch_size=size)
