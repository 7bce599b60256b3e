"""LLM rerankers: a causal language model reads a ``(query, document)`` pair under its card's template, and the
pair's score is read from the logits of the answer tokens at the last position.

Three layouts, each reproduced token for token (the template chooses which; ``spec.options["template"]``):

- ``qwen3-reranker`` (Qwen/Qwen3-Reranker-0.6B, -4B, -8B; the card's ``format_instruction`` and
  ``process_inputs``): ``prefix + tokens("<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}") +
  suffix``, the body cut at its end so the whole fits the card's 8,192 tokens; score = softmax over the [no, yes]
  logits = sigmoid(logit_yes - logit_no). The instruction is the prompt (default: the card's web-search one).
- ``bge-gemma`` (BAAI/bge-reranker-v2-gemma, FlagEmbedding's ``FlagLLMReranker``): ``bos + tokens("A: {query}")``
  (at most 3/4 of ``max_length``), ``tokens("\\n") + tokens("B: {passage}")`` (the passage at most ``max_length``,
  the pair cut on the passage's side to ``max_length`` + the separator and prompt), then ``tokens("\\n") +
  tokens(prompt)``; score = the raw logit of "Yes" (FlagEmbedding's ``normalize=True`` is the sigmoid of it).
- ``chat-template``: a folder saved by sentence-transformers' ``CrossEncoder`` from a causal LM (a Transformer
  for text generation and ``LogitScore``): the pair rendered by the tokenizer's chat template as the messages
  ``query`` and ``document`` (a prompt as a ``system`` message before them), cut at the window's end with the
  template's suffix written back over the last tokens, as sentence-transformers 6 does; score =
  ``logit[true] - logit[false]`` (or ``logit[true]``) through the folder's activation.

A plain causal LM folder (Qwen3ForCausalLM, GemmaForCausalLM) is not a reranker by itself: the card layouts load by
their registered hub ids (or a spec naming the template), a local folder only with sentence-transformers'
``CrossEncoder`` marker. Every pad is on the left, so the last position is each pair's own last token. The layouts
themselves are in :mod:`zoo.families.rerank_layouts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import truncation
from ..batching import text_bound
from ..errors import InvalidArgumentError
from ..kinds import SCORE
from ..long import too_long_message
from ..media.text import is_cut
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality, derived_batch_tokens
from .common import read_json
from .cross import DEFAULT_ACTIVATION, CrossEncoder, Pair, cross_spec, folder_activation
from .rerank_layouts import GEMMA_PROMPT, QWEN3_INSTRUCTION, BgeGemma, ChatTemplate, Layout, Qwen3Card, st_reranker

QWEN3, BGE_GEMMA, CHAT = "qwen3-reranker", "bge-gemma", "chat-template"
TEMPLATES = (QWEN3, BGE_GEMMA, CHAT)


class LLMReranker(CrossEncoder):
    """An LLM reranker (Qwen3-Reranker, bge-reranker-v2-gemma, a sentence-transformers CrossEncoder of a causal
    LM): ``predict(pairs)`` / ``rank(query, documents)`` give the card's (or sentence-transformers') scores; the
    prompt is the instruction (``predict(pairs, prompt_name=...)``)."""

    folder_priority = 24  # before the text fallback, which would mean-pool the language model

    def _load(self, spec: EmbedderSpec, path: Path) -> None:
        """The causal LM and its tokenizer (stock transformers classes, left padding) and the template's layout."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        template = spec.options.get("template")
        if template not in TEMPLATES:
            raise InvalidArgumentError(f"{spec.name}: options['template'] must be one of {list(TEMPLATES)}, got "
                                       f"{template!r}")
        st = st_reranker(path) if template == CHAT else None
        if template == CHAT and st is None:
            raise InvalidArgumentError(f"{spec.name}: the {CHAT!r} template reads a sentence-transformers "
                                       f"CrossEncoder folder; {path.name} is not one")
        home = st["home"] if st else path
        config = read_json(home / "config.json") or {}
        architectures = config.get("architectures") or []
        if not (architectures and str(architectures[0]).endswith("ForCausalLM")):
            raise InvalidArgumentError(f"{spec.name}: the {template!r} template scores a *ForCausalLM's answer "
                                       f"logits; {path.name} holds {architectures[:1] or 'no architecture'}")
        self.tokenizer = AutoTokenizer.from_pretrained(home, trust_remote_code=False)
        if not self.tokenizer.is_fast:  # what was cut is read from the fast tokenizer's encodings
            raise InvalidArgumentError(f"{spec.name}: an LLM reranker needs a fast (tokenizers) tokenizer")
        self.tokenizer.padding_side = "left"  # the last position is every pair's own last token
        self.model, info = AutoModelForCausalLM.from_pretrained(home, trust_remote_code=False,
                                                                output_loading_info=True)
        if info.get("missing_keys"):
            raise InvalidArgumentError(f"{spec.name}: {path.name} lacks weights of the language model's head or body "
                                       f"({sorted(info['missing_keys'])[:3]}...); refusing random ones")
        self.model = self.model.to(self.device).eval()
        prompts = [None, *spec.prompts.values()]
        if template == QWEN3:
            self.layout: Layout = Qwen3Card(self.tokenizer, int(spec.max_length))
        elif template == BGE_GEMMA:
            self.layout = BgeGemma(self.tokenizer, int(spec.max_length))
        else:
            if st["true_token_id"] is None:  # a CrossEncoder built on the LM alone: sentence-transformers' defaults
                st |= {"true_token_id": self.tokenizer.convert_tokens_to_ids("yes"),
                       "false_token_id": self.tokenizer.convert_tokens_to_ids("no")}
            self.layout = ChatTemplate(self.tokenizer, min(int(spec.max_length), st["window"]), st,
                                        str(config.get("model_type")), spec.name)
        vocab = len(self.tokenizer)
        if not all(isinstance(t, int) and 0 <= t < vocab for t in (self.layout.yes, self.layout.no) if t is not None):
            raise InvalidArgumentError(f"{spec.name}: its answer tokens ({self.layout.yes}, {self.layout.no}) are not "
                                       "in the tokenizer's vocabulary")
        self.max_length = max(self.layout.window(p) for p in prompts)

    def _pair_batch(self, pairs: Sequence[Pair], prompt: str | None) -> Any:
        """The left-padded batch the model reads for ``pairs``, fitted to the window as the template's reference
        fits them (pairs cut only by tokens are noted here; the forward pass notes those cut by characters)."""
        rows, cuts = self.layout.ids(pairs, prompt, cut=True)
        truncation.note(truncation.TruncationWarning, f"pairs exceed {self.max_length} tokens and were cut",
                        sum(c and not (is_cut(q) or is_cut(d)) for c, (q, d) in zip(cuts, pairs)))
        return self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt").to(self.device)

    def _pair_lengths(self, pairs: Sequence[Pair], prompt: str | None, cut: bool = True) -> list[int]:
        """Tokens the model reads for each pair, the template's included (``cut=False``: before fitting)."""
        return [len(x) for x in self.layout.ids(pairs, prompt, cut)[0]]

    def _logits(self, batch: Any) -> Any:
        """``[B]`` float32 raw scores: ``logit(yes) - logit(no)`` at the last position (``logit(yes)`` where the
        layout has no "no")."""
        last = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          logits_to_keep=1).logits[:, -1, :].float()
        yes = last[:, self.layout.yes]
        return yes if self.layout.no is None else yes - last[:, self.layout.no]

    def _token_sizes(self, items: list[Any], modality: Modality, prompt: str | None,
                     exact: bool = False) -> list[int] | None:
        if exact:
            return self._pair_lengths(items, prompt)
        window = self.layout.window(prompt)
        return [text_bound(self.layout.text(pair, prompt), window) for pair in items]

    def _pair_refusals(self, pairs: Sequence[Pair], prompt: str | None) -> list[str | None]:
        """Where the template's reference would cut any of a pair, why (bge-reranker-v2-gemma cuts a query or a
        document on its own, under the window); a pair cut by characters is over the window all the same."""
        limit = self.layout.window(prompt)
        return [why or (too_long_message(limit + 1, limit, at_least=True) if is_cut(q) or is_cut(d) else None)
                for (q, d), why in zip(pairs, self.layout.refusals(pairs, prompt))]

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Describe a sentence-transformers ``CrossEncoder`` folder of a causal LM; a plain LM folder is None."""
        st = st_reranker(path)
        if st is None:
            return None
        config = st["config"]
        spec = cross_spec(path, config, "llm-reranker", f"local {config.get('model_type', 'causal LM')} LLM reranker",
                          template=CHAT, activation=folder_activation(path, config) or DEFAULT_ACTIVATION)
        return dataclasses.replace(spec, max_length=st["window"],
                                   max_batch_tokens=derived_batch_tokens(int(config.get("hidden_size") or 1024)))


_QWEN3_ROWS = {  # hub id → (parameters, hidden width)
    "Qwen/Qwen3-Reranker-0.6B": ("0.6B", 1024), "Qwen/Qwen3-Reranker-4B": ("4B", 2560),
    "Qwen/Qwen3-Reranker-8B": ("8B", 4096)}
# the registry: the card's template in options; a pass holds the tokens a model of its width is given
register_checkpoints("llm-reranker", {
    name: dict(license="apache-2.0", max_length=8192, max_batch_tokens=derived_batch_tokens(width),
               prompts={"web_search": QWEN3_INSTRUCTION}, default_prompt_name="web_search",
               options={"template": QWEN3, "activation": "sigmoid"},
               description=(f"Qwen3 reranker {size}: yes/no logits of a Qwen3 LM under the card's template, 8k "
                            "tokens, instructions as prompts"))
    for name, (size, width) in _QWEN3_ROWS.items()
} | {
    "BAAI/bge-reranker-v2-gemma": dict(
        license="gemma", max_length=512, max_batch_tokens=derived_batch_tokens(2048),
        prompts={"contains_answer": GEMMA_PROMPT}, default_prompt_name="contains_answer",
        options={"template": BGE_GEMMA, "activation": "identity"},
        description="BGE reranker v2 on Gemma 2B: the 'Yes' logit as FlagEmbedding gives it (raw), multilingual"),
}, modalities=(Modality.TEXT,), dim=1, outputs=(SCORE,), batch_size=8, max_batch_size=16)
