"""A fixed, mixed-length English corpus made on the machine from the standard library's docstrings: what
``zoo bench`` times text paths on and what the ONNX Runtime path is checked on when it is exported.

Items are 5–60 words, drawn from docstring summaries and from windows of the longer docstrings, with one
item in 25 a run of several docstrings long enough to pass 256 tokens (so truncation is part of what is
timed). The same Python gives the same corpus; ``corpus_id`` names it in reports.
"""

from __future__ import annotations

import hashlib
import random

LONG_EVERY = 25  # one item in this many is a long one (> 256 tokens for BERT-like tokenizers)
LONG_WORDS = 320


def mixed_sentences(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` items, 5–60 words each but one in :data:`LONG_EVERY` (about :data:`LONG_WORDS` words)."""
    from .docstrings import docstring_pairs

    pairs = docstring_pairs()
    words = [w for _, body in pairs for w in body.split()]
    rng = random.Random(seed)
    out: list[str] = []
    heads = [h for h, _ in pairs if 5 <= len(h.split()) <= 60]
    while len(out) < n:
        k = len(out)
        if k % LONG_EVERY == LONG_EVERY - 1:
            start = rng.randrange(len(words) - LONG_WORDS)
            out.append(" ".join(words[start : start + LONG_WORDS]))
        elif k % 3 == 0 and heads:
            out.append(heads[rng.randrange(len(heads))])
        else:
            size = rng.randint(5, 60)
            start = rng.randrange(len(words) - size)
            out.append(" ".join(words[start : start + size]))
    return out


def short_sentences(n: int = 1000, seed: int = 0, words: tuple[int, int] = (6, 16)) -> list[str]:
    """``n`` short items of ``words`` words each (windows of the docstrings): the one-sentence queries a
    search serves, where padding costs nothing and per-call overhead shows."""
    from .docstrings import docstring_pairs

    pool = [w for _, body in docstring_pairs() for w in body.split()]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.randint(*words)
        start = rng.randrange(len(pool) - size)
        out.append(" ".join(pool[start : start + size]))
    return out


def corpus_id(texts: list[str]) -> str:
    """A short hash of a corpus, to tell in a report which one was measured."""
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:12]
