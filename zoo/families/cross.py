"""Cross-encoders: rerankers that read a ``(query, document)`` pair together and give one relevance score.

**Sequence-classification rerankers** (this module): a transformers ``*ForSequenceClassification`` model with one
label (the ms-marco MiniLM cross-encoders, bge-reranker-base/large/v2-m3, mxbai-rerank), the pair tokenized as
the tokenizer's text pair (``[CLS] query [SEP] document [SEP]``), cut longest-first to the window, its one logit
put through the card's activation: what sentence-transformers' ``CrossEncoder.predict`` gives. The activation
is read as sentence-transformers reads it: ``config_sentence_transformers.json``'s ``activation_fn``, else
``config.json``'s ``sentence_transformers.activation_fn`` (older saves: ``sbert_ce_default_activation_function``),
else the registry's (the card's), else the sigmoid. A folder with more than one label (an NLI classifier) is
refused, never loaded as a reranker or, as it once was, as a mean-pooled text encoder.

LLM rerankers scored by yes/no logits (Qwen3-Reranker, bge-reranker-v2-gemma) build on :class:`CrossEncoder`
in :mod:`zoo.families.cross_llm`.

The items of a cross-encoder are pairs: ``encode(pairs, "text")`` gives the ``score`` output kind
(:mod:`zoo.kinds.score`), :meth:`CrossEncoder.predict` and :meth:`CrossEncoder.rank` are sentence-transformers'
names for it. Every pass goes through :meth:`zoo.base.Embedder.encode_items`, so pairs are decoded within the
text budgets, sorted by length and batched under the token budget in-process and served alike; a served pair is
one text element (:func:`zoo.ranking.pair_to_wire`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import truncation
from ..base import Embedder
from ..batching import SPECIAL_TOKENS, text_bound
from ..errors import InputError, InvalidArgumentError
from ..front import EncodeOptions, check_items
from ..kinds import SCORE
from ..long import Fitted, too_long_message
from ..media.budgets import MAX_TEXT_CHARS
from ..media.text import decode_text, is_cut
from ..ranking import pair_from_wire, ranked
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import declared_max_length, read_json, st_model_type, st_modules, st_prompts, tokenizer_max_length

Pair = tuple[str, str]

#: activations a card or folder may name (sentence-transformers stores the torch class's path), by zoo's name
ACTIVATIONS = {"sigmoid": "torch.nn.modules.activation.Sigmoid", "identity": "torch.nn.modules.linear.Identity",
               "tanh": "torch.nn.modules.activation.Tanh"}
DEFAULT_ACTIVATION = "sigmoid"  # sentence-transformers' for one label


def folder_activation(path: Path, config: dict[str, Any]) -> str | None:
    """The activation a folder names, read as sentence-transformers reads it (see the module's text); None where
    it names none, or names code outside torch (which sentence-transformers does not run either). A torch
    activation zoo does not reproduce is refused."""
    st_model = read_json(path / "config_sentence_transformers.json") or {}
    named = st_model.get("activation_fn")
    if named is None:
        named = (config.get("sentence_transformers") or {}).get("activation_fn")
    if named is None:
        named = config.get("sbert_ce_default_activation_function")
    if not isinstance(named, str) or not named.startswith("torch."):
        return None
    for name, full in ACTIVATIONS.items():
        if named == full or named.rsplit(".", 1)[-1] == full.rsplit(".", 1)[-1]:
            return name
    raise InvalidArgumentError(f"{path.name}: its activation {named} is not one zoo reproduces ("
                               f"{', '.join(ACTIVATIONS)}); refusing it rather than giving different scores")


def check_st_pipeline(path: Path) -> None:
    """Refuse a sentence-transformers ``CrossEncoder`` folder whose pipeline is more than the one sequence
    classifier zoo reproduces: another module after it (a Dense head on the scores), another task, lower-casing,
    or processing settings that change the tokenizer's call would each give other scores."""
    names = [name for name, _ in st_modules(path)]
    st_cfg = read_json(path / "sentence_bert_config.json") or {}
    task = st_cfg.get("transformer_task", "sequence-classification")
    settings = [k for k, v in (st_cfg.get("processing_kwargs") or {}).items() if v]
    if names not in ([], ["Transformer"]) or task != "sequence-classification" or st_cfg.get("do_lower_case") \
            or settings:
        raise InvalidArgumentError(f"{path.name}: its sentence-transformers pipeline ({names or ['Transformer']}, "
                                   f"{task}, processing {settings or 'default'}, lower case "
                                   f"{bool(st_cfg.get('do_lower_case'))}) is not the sequence classifier zoo "
                                   "reproduces; refusing it rather than giving different scores")


def labels_of(config: dict[str, Any]) -> int:
    """How many labels a sequence-classification config has (``id2label`` as transformers reads it)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    return int(config.get("num_labels", 2))


def cross_spec(path: Path, config: dict[str, Any], family: str, description: str, **options: Any) -> EmbedderSpec:
    """The spec of a local cross-encoder folder (one score per pair; its sentence-transformers prompts)."""
    prompts, default = st_prompts(path)
    saved = (read_json(path / "tokenizer_config.json") or {}).get("model_max_length")
    window = declared_max_length(path, config)
    if isinstance(saved, int) and not isinstance(saved, bool) and 0 < saved < window:
        window = saved  # sentence-transformers saves a cross-encoder's max_length with its tokenizer
    return EmbedderSpec(name=str(path), family=family, modalities=(Modality.TEXT,), dim=1,
                        license="see the folder's model card", source=str(path),
                        max_length=window, prompts=prompts, default_prompt_name=default,
                        description=description, outputs=(SCORE,), options=options)


class CrossEncoder(Embedder):
    """A sequence-classification reranker: ``predict(pairs)`` and ``rank(query, documents)`` as
    sentence-transformers' ``CrossEncoder``; ``encode(pairs, "text")`` gives the same scores (``score`` output).

    Subclasses (LLM rerankers) replace :meth:`_load`, :meth:`_pair_batch`, :meth:`_pair_lengths`,
    :meth:`_logits` and :meth:`_pair_refusals`; the decoding, fitting, batching and ranking here are shared."""

    folder_priority = 25  # before the text fallback, which would mean-pool the classifier's encoder

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        self._load(spec, path)
        config = read_json(path / "config.json") or {}
        self.activation = folder_activation(path, config) or spec.options.get("activation", DEFAULT_ACTIVATION)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{spec.name}: activation {self.activation!r} not in {sorted(ACTIVATIONS)}")

    # ---- what subclasses replace -------------------------------------------------------------------
    def _load(self, spec: EmbedderSpec, path: Path) -> None:
        """Load the tokenizer and model from ``path`` (the stock transformers classes; no folder code is run)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False)
        self.model = self.model.to(self.device).eval()
        labels = int(self.model.config.num_labels)
        if labels != 1:
            raise InvalidArgumentError(f"{spec.name}: a reranker has one label; this model classifies into "
                                       f"{labels}, which zoo does not load")
        self.max_length = tokenizer_max_length(spec.max_length, path, self.tokenizer,
                                               spec.options.get("card_max_length", False))

    def _sides(self, pairs: Sequence[Pair], prompt: str | None) -> tuple[list[str], list[str]]:
        """The two texts the tokenizer reads for each pair (a prompt goes in front of the query, as
        sentence-transformers puts it)."""
        return [(prompt or "") + q for q, _ in pairs], [d for _, d in pairs]

    def _pair_batch(self, pairs: Sequence[Pair], prompt: str | None) -> Any:
        """The padded batch the model reads for ``pairs``, cut longest-first to the window, on the device."""
        firsts, seconds = self._sides(pairs, prompt)
        enc = self.tokenizer(firsts, seconds, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", verbose=False)
        return enc.to(self.device)

    def _pair_lengths(self, pairs: Sequence[Pair], prompt: str | None, cut: bool = True) -> list[int]:
        """Tokens the model reads for each pair (``cut=False``: before cutting to the window)."""
        if not pairs:
            return []
        firsts, seconds = self._sides(pairs, prompt)
        enc = self.tokenizer(firsts, seconds, truncation=cut, max_length=self.max_length if cut else None,
                             verbose=False)
        return [len(x) for x in enc["input_ids"]]

    def _logits(self, batch: Any) -> Any:
        """``[B]`` float32 raw scores (the one logit of each pair)."""
        return self.model(**batch).logits[:, 0].float()

    def _pair_refusals(self, pairs: Sequence[Pair], prompt: str | None) -> list[str | None]:
        """Why each pair is over the window where its token count does not show it (a template that cuts a side
        by itself, under the total), None elsewhere; :meth:`fit_texts` counts such a pair as cut and, with
        ``truncate="none"``, refuses it with that reason. A text pair's count says it all: all None."""
        return [None] * len(pairs)

    def _document_cut(self, document: str, tokens: int) -> str:
        """``document`` cut to its first ``tokens`` tokens (special tokens left out), at a token's end."""
        enc = self.tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        return document if len(offsets) <= tokens else document[: offsets[tokens - 1][1]]

    # ---- what the base class asks of a family --------------------------------------------------------
    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe a sequence-classification folder (sentence-transformers' ``CrossEncoder.save`` or a plain
        transformers save); one of more than one label is refused."""
        config = read_json(path / "config.json")
        if not isinstance(config, dict):
            return None
        architectures = config.get("architectures") or []
        if not (architectures and str(architectures[0]).endswith("ForSequenceClassification")):
            return None
        labels = labels_of(config)
        if labels != 1:
            raise InvalidArgumentError(f"{path.name}: a {architectures[0]} with {labels} labels is a classifier, not a "
                                       "reranker (one label); zoo does not load it (as a reranker or as a text "
                                       "encoder of its encoder)")
        activation = folder_activation(path, config) or DEFAULT_ACTIVATION
        if st_model_type(path) not in (None, "CrossEncoder"):
            return None
        check_st_pipeline(path)
        return cross_spec(path, config, "cross-encoder", f"local {config.get('model_type', 'transformers')} "
                          "cross-encoder (reranker)", activation=activation)

    @property
    def max_input_tokens(self) -> int:
        """The most tokens a pair may hold (query, document and special tokens)."""
        return int(self.max_length)

    @property
    def max_text_chars(self) -> int:
        """Characters of each side of a pair the tokenizer ever sees (the window's worth)."""
        from ..media.text import max_chars

        return max_chars(self.max_length)

    def _decode_item(self, item: Any, index: int, modality: Modality, allow_paths: bool = True,
                     opts: EncodeOptions | None = None) -> Pair:
        """A pair (two strings in-process, a :func:`zoo.ranking.pair_to_wire` element served), each side cut to
        the characters the window could read."""
        query, document = pair_from_wire(item, index, MAX_TEXT_CHARS)
        limit = self.max_text_chars
        return decode_text(query, index, limit), decode_text(document, index, limit)

    def fit_texts(self, texts: list[Any], opts: EncodeOptions, indices: list[int] | None = None,
                  report: bool = True) -> Fitted:
        """Pairs fitted to the window: documents cut to ``opts.max_tokens_per_doc`` tokens first; a pair over the
        window (its token count, or a reason from :meth:`_pair_refusals`) is cut by the forward pass
        (``truncate="end"``) or refused (``"none"``); ``"start"`` is refused (it keeps one text's end; a pair has
        two)."""
        if opts.truncate == "start":
            raise InvalidArgumentError("truncate='start' keeps the end of one text; a pair is cut longest-first "
                                       "('end') or refused ('none')", "truncate")
        pairs = list(texts)
        if opts.max_tokens_per_doc is not None:
            pairs = [(q, self._document_cut(d, opts.max_tokens_per_doc)) for q, d in pairs]
        cut_chars = [is_cut(q) or is_cut(d) for q, d in pairs]
        if not report and opts.truncate == "end":
            return Fitted(pairs, cut_chars, {})
        counts = self._pair_lengths(pairs, opts.prompt, cut=False)
        reasons = self._pair_refusals(pairs, opts.prompt)
        over = [c or n > self.max_length or why is not None for c, n, why in zip(cut_chars, counts, reasons)]
        errors: dict[int, InputError] = {}
        if opts.truncate == "none":
            for p, (bad, n, chars, why) in enumerate(zip(over, counts, cut_chars, reasons)):
                if bad:
                    errors[p] = InputError(p if indices is None else indices[p],
                                           why or too_long_message(n, self.max_length, at_least=chars))
        return Fitted(pairs, over, errors)

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        return [len(q) + len(d) for q, d in items]

    def _text_tokens(self, texts: list[Any], prompt: str | None) -> list[int]:
        return self._pair_lengths(texts, prompt)

    def _token_sizes(self, items: list[Any], modality: Modality, prompt: str | None,
                     exact: bool = False) -> list[int] | None:
        if exact:
            return self._pair_lengths(items, prompt)
        return [text_bound((prompt or "") + q + d, self.max_length, 2 * SPECIAL_TOKENS) for q, d in items]

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> list[np.ndarray]:
        """The pairs' scores, the card's activation applied."""
        import torch

        enc = self._pair_batch(batch, opts.prompt)
        cut = [bool(e.overflowing) for e in enc.encodings] if getattr(enc, "encodings", None) else [False] * len(batch)
        truncation.note(truncation.TruncationWarning, f"pairs exceed {self.max_length} tokens and were cut",
                        sum(c or is_cut(q) or is_cut(d) for c, (q, d) in zip(cut, batch)))
        with torch.inference_mode():
            logits = self._logits(enc)
            if self.activation == "sigmoid":
                logits = torch.sigmoid(logits)
            elif self.activation == "tanh":
                logits = torch.tanh(logits)
        return list(logits.cpu().numpy().astype(np.float32))

    # ---- sentence-transformers' names ---------------------------------------------------------------------
    def predict(self, pairs: Sequence[Any], *, batch_size: int | None = None, max_tokens_per_doc: int | None = None,
                prompt_name: str | None = None, truncate: str = "end", show_progress: bool = False) -> np.ndarray:
        """``[len(pairs)]`` float32 scores of ``(query, document)`` pairs, as sentence-transformers'
        ``CrossEncoder.predict`` gives them (``max_tokens_per_doc``: documents cut to that many tokens first;
        ``truncate="none"``: a pair over the window is an :class:`InputError`)."""
        check_items(pairs)
        return self.encode(list(pairs), Modality.TEXT, batch_size=batch_size, max_tokens_per_doc=max_tokens_per_doc,
                           prompt_name=prompt_name, truncate=truncate, show_progress=show_progress)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             *, batch_size: int | None = None, max_tokens_per_doc: int | None = None,
             prompt_name: str | None = None) -> list[dict[str, Any]]:
        """``documents`` ranked against ``query``, best first, as sentence-transformers' ``CrossEncoder.rank``:
        ``[{"corpus_id": i, "score": s, "text": document}]`` (``text`` with ``return_documents``)."""
        from ..ranking import cross_pairs

        got = self.predict(cross_pairs(query, documents), batch_size=batch_size,
                           max_tokens_per_doc=max_tokens_per_doc, prompt_name=prompt_name)
        return ranked(got, documents, top_k, return_documents)


# the registry: sequence-classification rerankers by hub id (activation: the card's, where the folder names none)
register_checkpoints("cross-encoder", {
    "cross-encoder/ms-marco-MiniLM-L6-v2": dict(license="apache-2.0", description=(
        "MiniLM-L6 cross-encoder trained on MS MARCO passage ranking (sentence-transformers)")),
    "cross-encoder/ms-marco-MiniLM-L12-v2": dict(license="apache-2.0", description=(
        "MiniLM-L12 cross-encoder trained on MS MARCO passage ranking (sentence-transformers)")),
    "cross-encoder/ms-marco-TinyBERT-L2-v2": dict(license="apache-2.0", description=(
        "TinyBERT-L2 cross-encoder trained on MS MARCO passage ranking: the fastest of the family")),
    "BAAI/bge-reranker-base": dict(license="mit", options={"activation": "identity"}, description=(
        "BGE reranker base (XLM-RoBERTa): Chinese and English; raw logits as FlagEmbedding gives them")),
    "BAAI/bge-reranker-large": dict(license="mit", options={"activation": "identity"}, description=(
        "BGE reranker large (XLM-RoBERTa): Chinese and English; raw logits as FlagEmbedding gives them")),
    "BAAI/bge-reranker-v2-m3": dict(license="apache-2.0", max_length=8192, options={"activation": "identity"},
                                    description="BGE reranker v2 on BGE-M3: multilingual, 8k tokens; raw logits"),
    "mixedbread-ai/mxbai-rerank-xsmall-v1": dict(license="apache-2.0", description=(
        "mxbai rerank xsmall (DeBERTa-v3): English")),
    "mixedbread-ai/mxbai-rerank-base-v1": dict(license="apache-2.0", description=(
        "mxbai rerank base (DeBERTa-v3): English")),
    "mixedbread-ai/mxbai-rerank-large-v1": dict(license="apache-2.0", description=(
        "mxbai rerank large (DeBERTa-v3): English")),
}, modalities=(Modality.TEXT,), dim=1, outputs=(SCORE,), max_length=512)
