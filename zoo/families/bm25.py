"""BM25 as a lexical model of the sparse kind: corpus statistics fitted with ``bm25s``, term weights as sparse rows.

A BM25 model is a folder made by :func:`fit` from a corpus, and loaded like any model (``zoo.create(folder)``):

- ``bm25.json``: what encoding needs, the **fitted statistics**: ``k1``, ``b``, ``delta``, ``method``,
  ``num_docs``, ``avgdl`` (mean document length in terms), the analyzer (``lower``, the ``splitter`` regex, the
  ``stopwords`` list, the PyStemmer ``stemmer`` language or null) and the vocabulary (``terms``, in bm25s' id
  order, so a term's id is its column) with each term's document frequency ``df``;
- ``bm25s/``: bm25s' own index of the fitted corpus (``bm25s.BM25.load``) and tokenizer files, for bm25s users.
  Encoding reads only ``bm25.json``: bm25s is needed to fit, not to encode or serve.

**Sides.** A call on the ``query`` prompt gives query rows, any other call document rows (``document`` is the
default prompt, so ``zoo embed`` of a corpus writes document rows); retrieval code passes the prompt names
(:func:`zoo.kinds.side_prompt`). Both prompts are empty texts: they only choose the side.

- a **document** row holds, per known term ``t`` of the text, ``idf(t) · tfc(tf, dl)``, bm25s' precomputed weight
  for ``method`` (lucene, the default: ``idf = ln(1 + (N − df + 0.5)/(df + 0.5))`` and
  ``tfc = tf / (tf + k1·(1 − b + b·dl/avgdl))``; bm25s leaves the constant ``k1 + 1`` out of the lucene and
  robertson numerators, which changes no ranking; atire keeps it). ``dl`` counts every term of the text, known
  or not; a text with no terms is bm25s' empty document, its one ``""`` term. Documents outside the fitted corpus
  are weighted with the fitted ``num_docs``, ``df`` and ``avgdl``; their unknown terms have no column (no query
  can name them).
- a **query** row holds 1.0 per occurrence of each known term (a repeated term weighs its count, as bm25s'
  ``get_scores`` counts it); unknown terms are dropped.

So the sparse kind's score (a dot product) of a query row and a fitted document's row is bm25s' ``get_scores``
for that document. For ``bm25l`` and ``bm25+``, bm25s adds to every document a per-query constant (its terms'
weight at ``tf = 0``) and stores the weights less it; the rows are bm25s' stored weights, so scores are
``get_scores`` less that constant: the same ranking.

Sparse output only, float32, no ``dimensions`` (the kind refuses them by name), text only; ``truncate`` is
``"end"`` only (there is no window: a text is read up to the core's character cap).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..errors import InvalidArgumentError, choices
from ..front import EncodeOptions
from ..media.budgets import MAX_TEXT_CHARS, TOKENIZE_CHARS_PER_TOKEN
from ..spec import EmbedderSpec, Modality

FORMAT = "zoo-bm25"
VERSION = 1
STATS = "bm25.json"  # the fitted statistics: what encoding reads
BM25S_DIR = "bm25s"  # bm25s' own files of the fitted corpus
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")  # bm25s' variants
OFFSET_METHODS = ("bm25l", "bm25+")  # scores are get_scores less a per-query constant (module notes)
SPLITTER = r"(?u)\b\w\w+\b"  # bm25s' default: words of two characters or more
EMPTY = ""  # bm25s' term of a document with no terms
#: "tokens" a text may hold: the core's character cap over its characters per token, so no text is cut sooner
MAX_TERMS = MAX_TEXT_CHARS // TOKENIZE_CHARS_PER_TOKEN
BATCH = 256  # texts per forward call: weighting is plain Python, batches only bound what one call holds


@dataclass(frozen=True)
class Stats:
    """The fitted statistics and analyzer settings of a BM25 model (``bm25.json``)."""

    k1: float
    b: float
    delta: float
    method: str
    num_docs: int
    avgdl: float
    lower: bool
    splitter: str
    stopwords: tuple[str, ...]
    stemmer: str | None
    terms: tuple[str, ...]  # id → term (bm25s' ids)
    df: tuple[int, ...]  # id → documents of the fitted corpus holding the term

    def __post_init__(self) -> None:
        check_params(self.k1, self.b, self.delta, self.method)
        if self.num_docs < 1 or not self.avgdl > 0 or len(self.terms) != len(self.df) or not self.terms:
            raise InvalidArgumentError(f"BM25 statistics are inconsistent: {self.num_docs} documents, mean length "
                                       f"{self.avgdl}, {len(self.terms)} terms and {len(self.df)} frequencies")

    def to_json(self) -> dict[str, Any]:
        """The ``bm25.json`` object."""
        return {"format": FORMAT, "version": VERSION, "k1": self.k1, "b": self.b, "delta": self.delta,
                "method": self.method, "num_docs": self.num_docs, "avgdl": self.avgdl, "lower": self.lower,
                "splitter": self.splitter, "stopwords": list(self.stopwords), "stemmer": self.stemmer,
                "terms": list(self.terms), "df": list(self.df)}

    @classmethod
    def load(cls, folder: Path) -> Stats:
        """The statistics of a fitted folder, or an error naming what is wrong with its ``bm25.json``."""
        path = Path(folder) / STATS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidArgumentError(f"{path} cannot be read as BM25 statistics: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise InvalidArgumentError(f"{path} is not {FORMAT} version {VERSION} statistics")
        try:
            return cls(float(data["k1"]), float(data["b"]), float(data["delta"]), str(data["method"]),
                       int(data["num_docs"]), float(data["avgdl"]), bool(data["lower"]), str(data["splitter"]),
                       tuple(data["stopwords"]), data["stemmer"], tuple(data["terms"]),
                       tuple(int(x) for x in data["df"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgumentError(f"{path}: BM25 statistics lack or garble {err}") from None


def check_params(k1: float, b: float, delta: float, method: str) -> None:
    """Refuse BM25 parameters bm25s would compute nonsense with."""
    if method not in METHODS:
        raise InvalidArgumentError(f"BM25 method {method!r} is not one of {choices(METHODS)}", "method")
    if not (isinstance(k1, (int, float)) and k1 >= 0 and math.isfinite(k1)):
        raise InvalidArgumentError(f"BM25 k1 must be a finite number >= 0, got {k1!r}", "k1")
    if not (isinstance(b, (int, float)) and 0 <= b <= 1):
        raise InvalidArgumentError(f"BM25 b must be within 0..1, got {b!r}", "b")
    if not (isinstance(delta, (int, float)) and delta >= 0 and math.isfinite(delta)):
        raise InvalidArgumentError(f"BM25 delta must be a finite number >= 0, got {delta!r}", "delta")


def idf(df: np.ndarray, n: int, method: str) -> np.ndarray:
    """Each term's inverse document frequency as bm25s computes it for ``method`` (0 where ``df`` is 0)."""
    df = np.asarray(df, np.float64)
    seen = df > 0
    d = np.where(seen, df, 1.0)
    if method == "lucene":
        out = np.log(1 + (n - d + 0.5) / (d + 0.5))
    elif method == "robertson":  # bm25s clamps the ratio at 1: no negative idf
        out = np.log(np.maximum((n - d + 0.5) / (d + 0.5), 1.0))
    elif method == "atire":
        out = np.log(n / d)
    elif method == "bm25l":
        out = np.log((n + 1) / (d + 0.5))
    else:  # bm25+
        out = np.log((n + 1) / d)
    return np.where(seen, out, 0.0).astype(np.float32)  # bm25s keeps its idf array in float32


def tfc(tf: np.ndarray, dl: float, stats: Stats) -> np.ndarray:
    """The term-frequency component of ``stats.method`` for term counts ``tf`` in a document of ``dl`` terms."""
    k1, delta, norm = stats.k1, stats.delta, 1 - stats.b + stats.b * dl / stats.avgdl
    tf = np.asarray(tf, np.float64)
    if stats.method in ("lucene", "robertson"):
        return tf / (k1 * norm + tf)
    if stats.method == "atire":
        return tf * (k1 + 1) / (tf + k1 * norm)
    if stats.method == "bm25l":
        c = tf / norm
        return (k1 + 1) * (c + delta) / (k1 + c + delta)
    return (k1 + 1) * tf / (k1 * norm + tf) + delta  # bm25+


class Analyzer:
    """Text → terms, as bm25s' ``Tokenizer`` makes them: lower-cased (``lower``), split by the ``splitter``
    regex, stopwords dropped, stemmed by PyStemmer (``stemmer``: its language, or None)."""

    def __init__(self, lower: bool, splitter: str, stopwords: Iterable[str], stemmer: str | None) -> None:
        self.lower = lower
        self.split = re.compile(splitter).findall
        self.stopwords = frozenset(stopwords)
        self.stem = _stemmer(stemmer)

    def terms(self, text: str) -> list[str]:
        """The text's terms in order, repeats kept."""
        words = [w for w in self.split(text.lower() if self.lower else text) if w not in self.stopwords]
        return [self.stem(w) for w in words] if self.stem else words


def _stemmer(language: str | None) -> Any:
    """PyStemmer's ``stemWord`` for ``language``, None for none, or an error naming what is missing."""
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError:
        raise InvalidArgumentError(f"BM25 with the {language!r} stemmer needs PyStemmer (pip install PyStemmer)",
                                   "stemmer") from None
    try:
        return Stemmer.Stemmer(language).stemWord
    except KeyError:
        raise InvalidArgumentError(f"PyStemmer has no {language!r} stemmer; it has "
                                   f"{choices(Stemmer.algorithms())}", "stemmer") from None


def fit(texts: Sequence[str], folder: str | Path, *, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
        delta: float = 0.5, stopwords: str | Sequence[str] | None = "en", stemmer: str | None = None,
        lower: bool = True, splitter: str = SPLITTER) -> Path:
    """Fit BM25 on ``texts`` with bm25s and write the model folder ``folder`` (a new or empty folder).

    ``k1``, ``b``, ``method``, ``delta`` are bm25s' (its defaults); ``stopwords``: a bm25s language name ("en",
    "de", …), a list, or None; ``stemmer``: a PyStemmer language ("english") or None; ``lower`` and ``splitter``
    (a regex whose matches are the words) are bm25s' tokenizer settings. Returns the folder, which
    ``zoo.create`` loads."""
    from ..extras import require

    require("sparse", "fitting BM25 (zoo.families.bm25.fit)")
    import bm25s

    check_params(k1, b, delta, method)
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InvalidArgumentError(f"BM25 is fitted on texts; item {bad} is a {type(texts[bad]).__name__}")
    if not texts:
        raise InvalidArgumentError("BM25 needs at least one document to fit on")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidArgumentError(f"{folder} exists and is not an empty folder: fit BM25 into a new one")
    try:
        re.compile(splitter)
    except re.error as err:
        raise InvalidArgumentError(f"splitter {splitter!r} is not a regex: {err}", "splitter") from None
    stem = _stemmer(stemmer)
    tokenizer = bm25s.tokenization.Tokenizer(lower=lower, splitter=splitter, stopwords=stopwords, stemmer=stem)
    tokenized = tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
    if set(tokenized.vocab) <= {EMPTY}:
        raise InvalidArgumentError("the BM25 corpus holds no terms (every text is empty or stopwords)")
    index = bm25s.BM25(k1=k1, b=b, delta=delta, method=method)
    index.index(tokenized, show_progress=False)
    terms = [""] * len(index.vocab_dict)
    for term, i in index.vocab_dict.items():
        terms[i] = term
    df = np.zeros(len(terms), np.int64)
    for ids in tokenized.ids:
        df[np.unique(np.asarray(ids, np.int64))] += 1
    stats = Stats(k1=float(k1), b=float(b), delta=float(delta), method=method, num_docs=len(texts),
                  avgdl=float(np.mean([len(ids) for ids in tokenized.ids])), lower=bool(lower), splitter=splitter,
                  stopwords=tuple(tokenizer.stopwords), stemmer=stemmer, terms=tuple(terms),
                  df=tuple(int(x) for x in df))
    folder.mkdir(parents=True, exist_ok=True)
    index.save(str(folder / BM25S_DIR))
    tokenizer.save_vocab(str(folder / BM25S_DIR))
    tokenizer.save_stopwords(str(folder / BM25S_DIR))
    _write_json(folder / STATS, stats.to_json())  # last: a folder without it is not a model
    return folder


def _write_json(path: Path, data: dict) -> None:
    """``data`` as JSON at ``path``, written whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


def is_fitted(folder: str | Path) -> bool:
    """Whether ``folder`` holds a fitted BM25 model."""
    return (Path(folder) / STATS).is_file()


class BM25Embedder(Embedder):
    """BM25 over fitted corpus statistics: document rows of BM25 term weights, query rows of term counts."""

    folder_priority = 5  # its mark (bm25.json) is its own: looked at before the transformers families

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, "cpu")  # plain Python and numpy: no accelerator to pick
        self.stats = Stats.load(path)
        self.analyzer = Analyzer(self.stats.lower, self.stats.splitter, self.stats.stopwords, self.stats.stemmer)
        self.vocab = {t: i for i, t in enumerate(self.stats.terms)}
        self.idf = idf(np.asarray(self.stats.df), self.stats.num_docs, self.stats.method)
        # bm25l/bm25+: bm25s stores each weight less the term's weight at tf = 0 (see the module notes)
        zero = tfc(np.zeros(1), self.stats.avgdl, self.stats)[0] if self.stats.method in OFFSET_METHODS else 0.0
        self.floor = (self.idf.astype(np.float64) * zero).astype(np.float32)

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Claim folders written by :func:`fit` (a ``bm25.json``)."""
        if not is_fitted(path):
            return None
        s = Stats.load(path)
        vocab = len(s.terms)
        return EmbedderSpec(
            name=str(path), family="bm25", modalities=(Modality.TEXT,), dim=vocab, vocab_size=vocab,
            license="statistics of the fitted corpus (fitted with bm25s, MIT)", source=str(path),
            max_length=MAX_TERMS, prompts={"query": "", "document": ""}, default_prompt_name="document",
            outputs=("sparse",), batch_size=BATCH, max_batch_size=BATCH, max_batch_tokens=BATCH * MAX_TERMS,
            options={"k1": s.k1, "b": s.b, "delta": s.delta, "method": s.method, "num_docs": s.num_docs,
                     "avgdl": s.avgdl, "stemmer": s.stemmer},
            description=f"BM25 ({s.method}, k1={s.k1:g}, b={s.b:g}) fitted on {s.num_docs} documents, {vocab} terms",
        )

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> list:
        """Query rows (``query`` prompt) or document rows (any other) of ``batch``."""
        row = self.query_row if self.is_query(modality, opts) else self.document_row
        return [row(text) for text in batch]

    def query_row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, weights)``: each known term with its count in the query."""
        counts = Counter(self.vocab[t] for t in self.analyzer.terms(text) if t in self.vocab and t != EMPTY)
        return np.fromiter(counts, np.int64, len(counts)), np.fromiter(counts.values(), np.float32, len(counts))

    def document_row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, weights)``: each known term's BM25 weight with the fitted statistics."""
        terms = self.analyzer.terms(text) or [EMPTY]  # bm25s' empty document: one "" term
        counts = Counter(self.vocab[t] for t in terms if t in self.vocab)
        ids = np.fromiter(counts, np.int64, len(counts))
        tf = np.fromiter(counts.values(), np.float64, len(counts))
        weights = self.idf[ids].astype(np.float64) * tfc(tf, len(terms), self.stats) - self.floor[ids]
        return ids, weights.astype(np.float32)

    def terms(self, matrix: Any, top_k: int | None = None) -> list[dict[str, float]]:
        """Each sparse row as ``{term: weight}``, heaviest first (``top_k``: at most that many)."""
        import scipy.sparse as sps

        from ..kinds import heaviest

        return [{self.stats.terms[c]: float(v) for c, v in zip(cols.tolist(), vals)}
                for cols, vals in heaviest(sps.csr_matrix(matrix), top_k)]

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        """Terms of each text (a document's length ``dl``; an empty text is bm25s' one-term document)."""
        return [max(1, len(self.analyzer.terms(t))) for t in texts]

    def _filled_window(self, texts: list[str], prompt: str | None) -> list[bool]:
        """Only texts cut by characters were cut: BM25 has no window."""
        from ..media.text import is_cut

        return [is_cut(t) for t in texts]
