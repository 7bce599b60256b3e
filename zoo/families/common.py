"""Helpers the family modules share: folder configs, prompts, pooling, projected features, token counts and
cutting audio to a model's window."""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any

from .. import ahead, truncation
from ..media.text import is_cut, marked_like
from ..spec import Modality


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when the file does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def folder_config(path: Path, model_types: set[str] | frozenset[str]) -> dict[str, Any] | None:
    """A folder's ``config.json`` if its ``model_type`` is one of ``model_types``, else None."""
    cfg = read_json(path / "config.json")
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    return cfg if isinstance(kind, str) and kind in model_types else None


def with_prompt(texts: list[str], prompt: str | None) -> list[str]:
    """Texts with the named prompt's text put in front (what sentence-transformers does with prompts); a text
    cut before tokenizing stays marked as cut (see :mod:`zoo.media.text`)."""
    return [marked_like(t, prompt + t) for t in texts] if prompt else list(texts)


def pool(hidden, mask, mode: str):
    """Pool token states ``[B, T, H]`` with attention ``mask`` ``[B, T]`` into ``[B, H]``
    (``mean``, ``cls``, ``max`` or ``last``)."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    # last real token, whichever side the tokenizer pads on
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).max(1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def bidirectional(model: Any) -> Any:
    """``model`` (a transformers decoder) with its causal mask lifted, so every token sees the whole input: how
    embedders trained with bidirectional attention on a decoder (KaLM-Embedding-V2, Omni-Embed-Nemotron) read
    text. transformers builds a full padding mask for a config with ``is_causal=False``; the attention modules'
    own flag covers the unpadded case, where no mask is built at all."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(module, "layers"):
            config.is_causal = False
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


def pooled_encoder(model: Any, pooling: str) -> Any:
    """``model`` and its pooling as one module from token tensors to ``[B, H]`` rows: the text tower another
    runtime stands in for (see :mod:`zoo.runtime`)."""
    import torch

    from ..packed import packable, packed_hidden

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            # padding-free batches (zoo.packed), opted into by setting this; never in an export. Not the default
            # yet: a served stub running them grew its memory past the overload test's bound
            self.packed = False
            self.packable = packable(model)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            if self.packed and self.packable and not (torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()):
                hidden = packed_hidden(self.model, input_ids, attention_mask, token_type_ids)
            else:
                extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            return pool(hidden, attention_mask, pooling)

    return PooledEncoder()


def projected(out: Any):
    """The projected features of a transformers ``get_*_features`` call: transformers ≥ 5 returns an output
    whose ``pooler_output`` holds them, older versions the tensor itself."""
    return getattr(out, "pooler_output", out)


def token_counts(tokenizer: Any, texts: list[str], max_length: int, firsts: list[str] | None = None) -> list[int]:
    """How many tokens a transformers tokenizer feeds the model for each text (special tokens included,
    truncated to ``max_length``, no padding); ``firsts``: each text is the second of a pair after these."""
    args = (list(texts),) if firsts is None else (list(firsts), list(texts))
    ids = tokenizer(*args, truncation=True, max_length=max_length, verbose=False)["input_ids"]
    return [len(x) for x in ids]


def note_truncated_texts(tokenizer: Any, texts: list[str], enc: Any, max_length: int,
                         firsts: list[str] | None = None) -> None:
    """Note (see :mod:`zoo.truncation`) the texts that a truncating tokenizer call (``enc``, its output) cut, or
    that were cut by characters before it (:func:`zoo.media.text.cut_text`). A fast tokenizer keeps what it
    cut, so no text is read twice; with a slow one, only the texts that filled ``max_length`` are tokenized
    again, whole (after their ``firsts``, for pairs), to tell a cut from an exact fit."""
    if enc.encodings:
        cut = [bool(e.overflowing) for e in enc.encodings]
    else:
        lengths = enc["attention_mask"].sum(1).tolist()
        full = [i for i, n in enumerate(lengths) if n >= max_length and not is_cut(texts[i])]
        again = token_counts(tokenizer, [texts[i] for i in full], 1 << 30,
                             None if firsts is None else [firsts[i] for i in full]) if full else []
        cut = [False] * len(texts)
        for i, n in zip(full, again):
            cut[i] = n > max_length
    count = sum(c or is_cut(t) for c, t in zip(cut, texts))
    truncation.note(truncation.TruncationWarning, f"inputs exceed {max_length} tokens and were truncated", count)


def cut_audio(waves: list, max_samples: int, rate: int) -> list:
    """Waveforms cut to the model's window of ``max_samples``, noting how many were longer."""
    over = sum(len(w) > max_samples for w in waves)
    truncation.note(truncation.AudioTruncationWarning,
                    f"audio inputs exceed {max_samples / rate:g} s and were truncated", over)
    return [w[:max_samples] for w in waves]


def st_modules(path: Path) -> list[tuple[str, Path]]:
    """A sentence-transformers folder's pipeline from ``modules.json``: each module's class name (the last
    part of its dotted type) and its folder; empty for a plain transformers folder."""
    entries = read_json(path / "modules.json") or []
    return [(str(m["type"]).rsplit(".", 1)[-1], path / m.get("path", "")) for m in entries]


def st_model_type(path: Path) -> str | None:
    """The sentence-transformers class that saved the folder (``SentenceTransformer``, ``SparseEncoder``,
    ``MultiVectorEncoder``, …) as its ``config_sentence_transformers.json`` says, if it says."""
    return (read_json(path / "config_sentence_transformers.json") or {}).get("model_type")


def refuse_modules(path: Path, modules: list[tuple[str, Path]], known: set[str], what: str) -> None:
    """Refuse a folder whose pipeline holds a module this loader does not reproduce (loading it anyway would
    give silently different vectors)."""
    from ..errors import InvalidArgumentError

    extra = sorted({name for name, _ in modules} - known)
    if extra:
        raise InvalidArgumentError(f"{path.name}: its sentence-transformers pipeline has {extra}, which the {what} "
                                   f"loader does not reproduce (it reproduces {sorted(known)}); refusing it rather "
                                   "than giving different vectors")


def st_prompts(path: Path, prefixes: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """Named prompts and the default prompt name a sentence-transformers folder declares, each of
    ``prefixes`` (a legacy save's per-side prefix) put in front of its side's prompt. Empty prompts are kept
    only under the names ``query``/``document``, which also choose the side of asymmetric models."""
    st_model = read_json(path / "config_sentence_transformers.json") or {}
    prompts = dict(st_model.get("prompts") or {})
    for side, prefix in (prefixes or {}).items():
        prompts[side] = prefix + (prompts.get(side) or "").removeprefix(prefix)
    prompts = {k: v for k, v in prompts.items() if v or k in ("query", "document")}
    default = st_model.get("default_prompt_name")
    return prompts, default if default in prompts else None


def declared_max_length(path: Path, config: dict[str, Any]) -> int:
    """The text length a folder declares: sentence-transformers' ``max_seq_length``, else the positions."""
    st_cfg = read_json(path / "sentence_bert_config.json") or {}
    return int(st_cfg.get("max_seq_length") or config.get("max_position_embeddings", 512))


def tokenizer_max_length(spec_max: int, path: Path, tokenizer: Any, spec_rules: bool = False) -> int:
    """Tokens a text keeps: the least of the spec's, the folder's ``max_seq_length`` and the tokenizer's
    (``spec_rules``: the spec's alone, where the card sets the length over what the folder saved)."""
    if spec_rules:
        return int(spec_max)
    st_cfg = read_json(path / "sentence_bert_config.json") or {}
    limits = [spec_max, st_cfg.get("max_seq_length"), tokenizer.model_max_length]
    return min(int(x) for x in limits if x and x < 10**9)


CHECK_ITEMS = 256  # rows an exported tower is checked on
#: one lock per tokenizer object, for the padded batches of :meth:`TokenizedText._tokenized_on`
_TOKENIZER_LOCKS: collections.defaultdict[int, threading.Lock] = collections.defaultdict(threading.Lock)


class TokenizedText:
    """For families whose text goes through a transformers tokenizer (they set ``tokenizer``, ``max_length``
    and ``device``): the token count the base class asks for, and the padded batch the model reads."""

    tokenizer: Any
    max_length: int
    device: str

    def _text_args(self, texts: list[str], prompt: str | None) -> tuple[list[str], list[str] | None, int]:
        """What the tokenizer reads for ``texts`` under ``prompt``: the texts, the first texts of pairs (None
        when the prompt goes in front instead) and the most tokens kept. Families whose card reads a prompt
        as the first text of a pair, or cuts each side at its own length, override this."""
        return with_prompt(texts, prompt), None, self.max_length

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        texts, firsts, limit = self._text_args(texts, prompt)
        return token_counts(self.tokenizer, texts, limit, firsts)

    def text_limit(self, prompt: str | None) -> int | None:
        """The most tokens a text under ``prompt`` holds (see :meth:`zoo.tokens.TokenizerTools.text_limit`);
        None for a slow tokenizer, which gives no offsets (SigLIP's SentencePiece one)."""
        return self._text_args([], prompt)[2] if getattr(self.tokenizer, "is_fast", False) else None

    def _token_views(self, texts: list[str], prompt: str | None, cut: bool = False) -> list[Any]:
        """Each text as the model reads it (see :meth:`zoo.tokens.TokenizerTools._token_views`), from the tokenizer's
        offsets: a token from the prompt (put in front, or the first text of a pair) or a special token has
        none."""
        from ..errors import InvalidArgumentError
        from ..long import Tokens

        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidArgumentError(f"model {getattr(self, 'spec', None) and self.spec.name!r} has a slow "
                                       "tokenizer, which gives no character offsets")
        if not texts:
            return []
        full, firsts, limit = self._text_args(texts, prompt)
        args = (full,) if firsts is None else (firsts, full)
        enc = self.tokenizer(*args, truncation=cut, max_length=limit if cut else None, verbose=False,
                             return_offsets_mapping=True, return_special_tokens_mask=True)
        views = []
        for i, text in enumerate(texts):
            ids = enc["input_ids"][i]
            special, sequence = enc["special_tokens_mask"][i], enc.sequence_ids(i)
            shift = len(full[i]) - len(text) if firsts is None else 0  # the prompt's characters in front
            offsets = [None if special[j] or (firsts is not None and sequence[j] != 1) or s < shift
                       else (s - shift, e - shift) for j, (s, e) in enumerate(enc["offset_mapping"][i])]
            views.append(Tokens(list(ids), self.tokenizer.convert_ids_to_tokens(ids), offsets,
                                len(ids) > limit or is_cut(text)))
        return views

    #: whether forward() reads its text batch through :meth:`_tokenized` (``_tokenized(batch, opts.prompt)``),
    #: so that a batch tokenized ahead is taken; families that tokenize otherwise leave it False
    tokenized_in_forward = False
    #: tokenize a call's next batch on a thread while the current one runs (:mod:`zoo.ahead`); None: on CUDA
    #: only, where the CPU waits for the device (on the CPU the cores are the model's)
    tokenize_ahead: bool | None = None

    def prepare_ahead(self, batch: list[Any], modality: Modality, opts: Any) -> None:
        """Text batches are tokenized ahead (into host memory) where :attr:`tokenize_ahead` says so."""
        on = self.tokenize_ahead if self.tokenize_ahead is not None else str(self.device).startswith("cuda")
        if on and self.tokenized_in_forward and modality is Modality.TEXT:
            ahead.submit((opts.prompt, tuple(batch)), lambda: self._tokenized_on(batch, opts.prompt, "cpu"))

    def _tokenized(self, texts: list[str], prompt: str | None):
        """``texts`` under ``prompt``, tokenized on the model's device (see :func:`tokenize_texts`), or taken
        from what :meth:`prepare_ahead` made of them."""
        ready = ahead.take((prompt, tuple(texts)))
        return ready.to(self.device) if ready is not None else self._tokenized_on(texts, prompt, self.device)

    def _tokenized_on(self, texts: list[str], prompt: str | None, device: str):
        """:meth:`_tokenized` on ``device``, one thread at a time: a fast tokenizer's padding and truncation
        are settings of the one Rust object, set by each call."""
        texts, firsts, limit = self._text_args(texts, prompt)
        with _TOKENIZER_LOCKS[id(self.tokenizer)]:
            return tokenize_texts(self.tokenizer, texts, limit, device, firsts)

    def _check_batches(self, n: int = CHECK_ITEMS, batch_size: int = 32) -> list[dict[str, Any]]:
        """Batches of the benchmark corpus (:mod:`zoo.data.sentences`), longest first, that a text tower
        exported to another runtime is checked on."""
        from ..data.sentences import mixed_sentences

        texts = sorted(mixed_sentences(n), key=len, reverse=True)
        return [dict(self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device))
                for i in range(0, len(texts), batch_size)]


def sparse_rows_of(weights) -> list[tuple[Any, Any]]:
    """Each row of a ``[B, V]`` tensor of term weights as ``(indices, values)`` of its non-zero terms."""
    import torch

    weights = weights.float().cpu()
    rows, cols = torch.nonzero(weights, as_tuple=True)
    counts = torch.bincount(rows, minlength=len(weights)).tolist()
    return [(c.numpy(), v.numpy()) for c, v in zip(cols.split(counts), weights[rows, cols].split(counts))]


class SparseTerms:
    """For families with sparse output over their tokenizer's vocabulary: what a sparse row means."""

    tokenizer: Any

    def terms(self, matrix, top_k: int | None = None) -> list[dict[str, float]]:
        """Each sparse row as ``{token: weight}``, heaviest first (``top_k``: at most that many)."""
        import scipy.sparse as sps

        from ..kinds import heaviest

        return [{t: float(v) for t, v in zip(self.tokenizer.convert_ids_to_tokens(cols.tolist()), vals)}
                for cols, vals in heaviest(sps.csr_matrix(matrix), top_k)]


def tokenize_texts(tokenizer: Any, texts: list[str], max_length: int, device: str, firsts: list[str] | None = None):
    """A padded, truncated batch on ``device`` (texts cut to ``max_length`` are noted, see
    :func:`note_truncated_texts`); ``firsts``: each text is the second of a pair after these."""
    args = (texts,) if firsts is None else (firsts, texts)
    enc = tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt", verbose=False)
    note_truncated_texts(tokenizer, texts, enc, max_length, firsts)
    return enc.to(device)
