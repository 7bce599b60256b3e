"""Prompt layouts of LLM rerankers (:mod:`zoo.families.cross_llm`). A layout is how one reranker's reference
code turns a ``(query, document)`` pair and a prompt into the token ids a causal LM reads (template, separators,
where and how a pair over the window is cut) and which answer tokens' logits at the last position score it:
:class:`Qwen3Card` (the Qwen3-Reranker card), :class:`BgeGemma` (FlagEmbedding's ``FlagLLMReranker``) and
:class:`ChatTemplate` (sentence-transformers' ``CrossEncoder`` of a causal LM, whose folder :func:`st_reranker`
reads). Each reproduces its reference token for token; the family loads the model and reads the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..long import too_long_message
from .common import read_json, st_model_type, st_modules
from .cross import Pair

QWEN3_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
                'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
QWEN3_BODY = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
                "providing a prediction of either 'Yes' or 'No'.")

ST_MODULES = ("Transformer", "LogitScore")
PAIR_ROLES = ("query", "document")
#: sentence-transformers' probes of a chat template: a baseline pair, then each role's content varied alone
PAIR_PROBES = (("alpha", "bravo"), ("charlie", "bravo"), ("alpha", "foxtrot"))
FLAT_MODEL_TYPES = frozenset({"apertus", "deepseek_v3", "gpt_oss", "seed_oss"})  # flat messages whatever the template
STRUCTURED_MARKS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")
SIZE_KEYS = frozenset({"padding", "truncation", "max_length", "return_tensors"})


def _fast_cuts(enc: Any, count: int) -> list[bool]:
    """Which rows a truncating call of a fast tokenizer cut (it keeps what it cut)."""
    return [bool(e.overflowing) for e in enc.encodings[:count]]


class Layout:
    """How one template turns pairs into the token ids the model reads, and which answer tokens score them."""

    yes: int
    no: int | None

    def ids(self, pairs: Sequence[Pair], prompt: str | None, cut: bool) -> tuple[list[list[int]], list[bool]]:
        """Each pair's token ids (``cut``: fitted to the window as the reference fits them) and whether it was cut."""
        raise NotImplementedError

    def text(self, pair: Pair, prompt: str | None) -> str:
        """Everything the pair reads as one string (a token bound: one token per ASCII character at most)."""
        raise NotImplementedError

    def window(self, prompt: str | None) -> int:
        """The most tokens a pair under ``prompt`` is given."""
        raise NotImplementedError

    def refusals(self, pairs: Sequence[Pair], prompt: str | None) -> list[str | None]:
        """Why each pair would be cut (the message of ``truncate="none"``), None where it is read whole."""
        counts = [len(x) for x in self.ids(pairs, prompt, cut=False)[0]]
        limit = self.window(prompt)
        return [too_long_message(n, limit) if n > limit else None for n in counts]


class Qwen3Card(Layout):
    """The Qwen3-Reranker card's ``format_instruction`` + ``process_inputs``."""

    def __init__(self, tokenizer: Any, window: int) -> None:
        self.tokenizer, self.limit = tokenizer, window
        self.prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
        self.suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
        self.body_limit = window - len(self.prefix) - len(self.suffix)
        if self.body_limit < 1:
            raise InvalidArgumentError(f"a {window}-token window leaves no room for a pair between the template's "
                                       f"{len(self.prefix) + len(self.suffix)} tokens")
        self.yes, self.no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")

    def _body(self, pair: Pair, prompt: str | None) -> str:
        return QWEN3_BODY.format(instruction=QWEN3_INSTRUCTION if prompt is None else prompt, query=pair[0],
                                 doc=pair[1])

    def ids(self, pairs: Sequence[Pair], prompt: str | None, cut: bool) -> tuple[list[list[int]], list[bool]]:
        bodies = [self._body(p, prompt) for p in pairs]
        if not bodies:
            return [], []
        enc = self.tokenizer(bodies, padding=False, truncation="longest_first" if cut else False,
                             max_length=self.body_limit if cut else None, return_attention_mask=False, verbose=False)
        rows = [self.prefix + list(x) + self.suffix for x in enc["input_ids"]]
        return rows, _fast_cuts(enc, len(rows)) if cut else [False] * len(rows)

    def text(self, pair: Pair, prompt: str | None) -> str:
        return QWEN3_PREFIX + self._body(pair, prompt) + QWEN3_SUFFIX

    def window(self, prompt: str | None) -> int:
        return self.limit


class BgeGemma(Layout):
    """FlagEmbedding's ``FlagLLMReranker.compute_score`` (query instruction ``"A: "``, passage ``"B: "``)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length, self.query_max = tokenizer, max_length, max_length * 3 // 4
        self.sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
        bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
        self.bos = [bos] if bos is not None and bos != pad else []
        self.yes, self.no = tokenizer("Yes", add_special_tokens=False)["input_ids"][0], None
        self._prompts: dict[str | None, list[int]] = {}

    def _prompt(self, prompt: str | None) -> list[int]:
        if prompt not in self._prompts:
            text = GEMMA_PROMPT if prompt is None else prompt
            self._prompts[prompt] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompts[prompt]

    def _pair_cap(self, prompt: str | None) -> int:
        return self.max_length + len(self.sep) + len(self._prompt(prompt))

    def _sides(self, pairs: Sequence[Pair], cut: bool) -> tuple[Any, Any]:
        queries = self.tokenizer([f"A: {q}" for q, _ in pairs], add_special_tokens=False, truncation=cut,
                                 max_length=self.query_max if cut else None, verbose=False)
        passages = self.tokenizer([f"B: {d}" for _, d in pairs], add_special_tokens=False, truncation=cut,
                                  max_length=self.max_length if cut else None, verbose=False)
        return queries, passages

    def ids(self, pairs: Sequence[Pair], prompt: str | None, cut: bool) -> tuple[list[list[int]], list[bool]]:
        if not pairs:
            return [], []
        queries, passages = self._sides(pairs, cut)
        tail, cap = self.sep + self._prompt(prompt), self._pair_cap(prompt)
        cuts = ([a or b for a, b in zip(_fast_cuts(queries, len(pairs)), _fast_cuts(passages, len(pairs)))]
                if cut else [False] * len(pairs))
        rows = []
        for k, (q, p) in enumerate(zip(queries["input_ids"], passages["input_ids"])):
            first, second = self.bos + list(q), self.sep + list(p)
            remove = len(first) + len(second) - cap
            # the pair cut on the passage's side only, and only where the passage can give that much (as
            # FlagEmbedding's prepare_for_model_compat): an oversized query is left whole
            if cut and 0 < remove < len(second):
                second = second[remove:] if self.tokenizer.truncation_side == "left" else second[:-remove]
                cuts[k] = True
            rows.append(first + second + tail)
        return rows, cuts

    def text(self, pair: Pair, prompt: str | None) -> str:
        return f"A: {pair[0]}\nB: {pair[1]}\n{GEMMA_PROMPT if prompt is None else prompt}"

    def window(self, prompt: str | None) -> int:
        longest_pair = min(self._pair_cap(prompt), len(self.bos) + self.query_max + len(self.sep) + self.max_length)
        return longest_pair + len(self.sep) + len(self._prompt(prompt))

    def refusals(self, pairs: Sequence[Pair], prompt: str | None) -> list[str | None]:
        if not pairs:
            return []
        queries, passages = self._sides(pairs, cut=False)
        cap, out = self._pair_cap(prompt), []
        for q, p in zip(queries["input_ids"], passages["input_ids"]):
            pair = len(self.bos) + len(q) + len(self.sep) + len(p)
            if len(q) > self.query_max:
                out.append(f"the query has {len(q)} tokens ('A: ' included); the model reads at most "
                           f"{self.query_max} of a query: shorten it, or set truncate to 'end'")
            elif len(p) > self.max_length:
                out.append(f"the document has {len(p)} tokens ('B: ' included); the model reads at most "
                           f"{self.max_length} of a document: shorten it, or set truncate to 'end'")
            elif pair > cap:
                out.append(too_long_message(pair + len(self.sep) + len(self._prompt(prompt)), self.window(prompt)))
            else:
                out.append(None)
        return out


class ChatTemplate(Layout):
    """sentence-transformers 6's ``Transformer.preprocess`` of a text pair for a causal LM with a chat template
    (``pair_to_messages``, ``prepend_prompt_to_messages``, ``apply_chat_template``, the suffix restored)."""

    def __init__(self, tokenizer: Any, window: int, st: dict[str, Any], model_type: str, name: str) -> None:
        self.tokenizer, self.limit = tokenizer, window
        self.kwargs = dict(st["chat_kwargs"])
        self.restore = bool(self.kwargs.pop("restore_suffix", True))
        template = tokenizer.chat_template
        fmt = st["message_format"]
        if fmt == "auto":  # sentence-transformers' InputFormatter._infer_format
            plain = isinstance(template, str) and template and not any(m in template for m in STRUCTURED_MARKS)
            fmt = "flat" if model_type in FLAT_MODEL_TYPES or plain else "structured"
        self.flat = fmt == "flat"
        self.yes, self.no = st["true_token_id"], st["false_token_id"]
        self._suffixes: dict[str | None, list[int]] = {}
        renders = [tokenizer.apply_chat_template(self._messages(p, None), tokenize=False, **self.kwargs)
                   for p in PAIR_PROBES]
        dropped = [role for role, render in zip(PAIR_ROLES, renders[1:]) if render == renders[0]]
        if dropped:
            raise InvalidArgumentError(f"{name}: its chat template leaves out the {' and '.join(dropped)} of a pair; "
                                       "sentence-transformers refuses to score with it, and so does zoo")

    def _content(self, text: str) -> Any:
        return text if self.flat else [{"type": "text", "text": text}]

    def _messages(self, pair: Pair, prompt: str | None) -> list[dict[str, Any]]:
        messages = [{"role": role, "content": self._content(text)} for role, text in zip(PAIR_ROLES, pair)]
        return ([{"role": "system", "content": self._content(prompt)}] if prompt else []) + messages

    def _tokens(self, conversations: list[Any], cut: bool) -> Any:
        return self.tokenizer.apply_chat_template(
            conversations, tokenize=True, return_dict=True, padding=False,
            truncation="longest_first" if cut else False, max_length=self.limit if cut else None,
            tokenizer_kwargs={"verbose": False}, **self.kwargs)

    def _suffix(self, prompt: str | None) -> list[int]:
        """The template's tail: the longest common token suffix of two renders with different contents (a
        system prompt kept whole), as sentence-transformers derives it."""
        if prompt not in self._suffixes:
            first, second = self._tokens([self._messages(("0", "0"), prompt),
                                          self._messages(("1 2 3 4", "1 2 3 4"), prompt)], cut=False)["input_ids"]
            shortest = min(len(first), len(second))
            count = next((k for k in range(shortest) if first[-1 - k] != second[-1 - k]), shortest)
            self._suffixes[prompt] = list(first[len(first) - count:]) if 0 < count < shortest else []
        return self._suffixes[prompt]

    def ids(self, pairs: Sequence[Pair], prompt: str | None, cut: bool) -> tuple[list[list[int]], list[bool]]:
        if not pairs:
            return [], []
        enc = self._tokens([self._messages(p, prompt) for p in pairs], cut)
        rows = [list(x) for x in enc["input_ids"]]
        if not cut:
            return rows, [False] * len(rows)
        suffix = self._suffix(prompt) if self.restore else []
        for row in rows:
            keep = min(len(suffix), len(row))
            if len(row) >= self.limit and keep:
                row[-keep:] = suffix[-keep:]
        return rows, _fast_cuts(enc, len(rows))

    def text(self, pair: Pair, prompt: str | None) -> str:
        return str(self.tokenizer.apply_chat_template(self._messages(pair, prompt), tokenize=False, **self.kwargs))

    def window(self, prompt: str | None) -> int:
        return self.limit


def st_reranker(path: Path) -> dict[str, Any] | None:
    """What a sentence-transformers ``CrossEncoder`` folder of a causal LM says (its Transformer's folder,
    ``LogitScore`` tokens, message format, chat-template kwargs, window), checked; None for any other folder.
    A folder zoo cannot read as sentence-transformers does is refused."""
    if st_model_type(path) != "CrossEncoder":
        return None
    modules = st_modules(path)
    names = [name for name, _ in modules]
    config = read_json((modules[0][1] if modules else path) / "config.json") or {}
    architectures = config.get("architectures") or []
    causal = bool(architectures) and str(architectures[0]).endswith("ForCausalLM")
    if "LogitScore" not in names and not causal:
        return None  # a sequence-classification cross-encoder (zoo.families.cross)
    if tuple(names) not in (ST_MODULES, ()):
        raise InvalidArgumentError(f"{path.name}: its sentence-transformers pipeline is {names}; zoo reads an LLM "
                                   f"reranker saved as {list(ST_MODULES)}, and refuses this one rather than "
                                   "giving different scores")
    if not causal:
        raise InvalidArgumentError(f"{path.name}: a LogitScore reranker on a {architectures[:1] or 'model'} "
                                   "architecture; zoo reads LLM rerankers of a *ForCausalLM (text only)")
    home = modules[0][1] if modules else path
    st_cfg = read_json(home / "sentence_bert_config.json") or {}
    score = read_json(modules[1][1] / "config.json") if modules else None
    if st_cfg.get("transformer_task", "text-generation") != "text-generation" or st_cfg.get("do_lower_case"):
        raise InvalidArgumentError(f"{path.name}: its Transformer ({st_cfg.get('transformer_task')}, lower case: "
                                   f"{bool(st_cfg.get('do_lower_case'))}) is not one zoo reproduces for an LLM "
                                   "reranker")
    processing = st_cfg.get("processing_kwargs") or {}
    chat_kwargs = dict(processing.get("chat_template") or {})
    if any(v for k, v in processing.items() if k != "chat_template") or SIZE_KEYS & set(chat_kwargs):
        raise InvalidArgumentError(f"{path.name}: its processing_kwargs {sorted(processing)} change the tokenizer's "
                                   "call, which zoo does not reproduce; refusing it rather than giving different "
                                   "scores")
    modality = st_cfg.get("modality_config")
    tokenizer_cfg = read_json(home / "tokenizer_config.json") or {}
    templated = bool(tokenizer_cfg.get("chat_template")) or (home / "chat_template.jinja").is_file() or (
        home / "chat_template.json").is_file()
    if not (("message" in modality) if isinstance(modality, dict) else templated):
        raise InvalidArgumentError(f"{path.name}: a causal-LM reranker read without a chat template (text pairs); "
                                   "zoo reads such rerankers through the chat template's query/document roles")
    declared = st_cfg.get("max_seq_length")
    if declared is None:
        limits = [tokenizer_cfg.get("model_max_length"), config.get("max_position_embeddings")]
        declared = min((int(x) for x in limits if isinstance(x, int) and 0 < x < 10**9), default=None)
    if declared is None:
        raise InvalidArgumentError(f"{path.name}: neither its tokenizer nor its config bounds a pair's tokens")
    message = (modality or {}).get("message") or {}
    return {"home": home, "config": config, "window": int(declared), "chat_kwargs": chat_kwargs,
            "message_format": message.get("format", "auto"),
            "true_token_id": None if score is None else score.get("true_token_id"),
            "false_token_id": None if score is None else score.get("false_token_id")}
