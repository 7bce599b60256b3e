"""Tiny random LLM rerankers saved in the layouts zoo loads: the Qwen3-Reranker card's folder (a plain
Qwen3ForCausalLM), the same model saved by sentence-transformers' ``CrossEncoder`` (chat template with
``query``/``document`` roles, ``LogitScore(yes, no)``), and bge-reranker-v2-gemma's folder (a plain
GemmaForCausalLM read by FlagEmbedding's ``FlagLLMReranker``). Their tokenizers are trained offline on the
templates' words, so "yes"/"no" (Qwen) and "Yes" (Gemma) are tokens of their own, as in the real vocabularies."""

from __future__ import annotations

import string
from pathlib import Path

from .tiny_models import QWEN_SPECIAL, spread

QWEN3_SYSTEM = ("Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
                'Note that the answer can only be "yes" or "no".')
WEB_SEARCH = "Given a web search query, retrieve relevant passages that answer the query"
GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
                "providing a prediction of either 'Yes' or 'No'.")

#: the Qwen3-Reranker card's layout as a chat template over sentence-transformers' pair roles (flat messages):
#: a system message, when a prompt is given, is the instruction
QWEN3_CHAT_TEMPLATE = (
    "<|im_start|>system\n" + QWEN3_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
    '<Instruct>: {{ messages | selectattr("role", "eq", "system") | map(attribute="content") | first'
    ' | default("' + WEB_SEARCH + '") }}\n'
    '<Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}\n'
    '<Document>: {{ messages | selectattr("role", "eq", "document") | map(attribute="content") | first }}'
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")

#: a stock ChatML template (what a plain Qwen checkpoint ships): it names no pair role
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_WORDS = [QWEN3_SYSTEM, WEB_SEARCH, GEMMA_PROMPT, "<Instruct>: <Query>: <Document>: A: B: yes no Yes No",
          "a red circle two blue squares on the left a green star the big yellow triangle which shape is red"]


def _corpus() -> list[str]:
    from zoo.data import shapes as S

    captions = [t.format(color=c, shape=s, size="small", where="on the left", tone="dark")
                for t in S.TRAIN_TEMPLATES for c in S.COLORS for s in S.SHAPES]
    return captions + _WORDS * 20


def qwen_reranker_tokenizer():
    """A Qwen2 tokenizer (byte-level BPE trained offline, Qwen's special tokens) in which "yes" and "no" are
    tokens, left padding as the card loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=600, special_tokens=list(QWEN_SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = Qwen2Tokenizer(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               unk_token=None)
    vocab = tokenizer.get_vocab()
    assert "yes" in vocab and "no" in vocab, "the tiny vocabulary lost its yes/no tokens"
    return tokenizer


def make_qwen3_reranker(dest: Path, *, seed: int = 0, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """A tiny random Qwen3ForCausalLM with :func:`qwen_reranker_tokenizer`, saved as the Qwen3-Reranker repos
    are (a plain causal LM folder; ``chat_template``: the tokenizer's, a stock ChatML one by default)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_reranker_tokenizer()
    tokenizer.chat_template = chat_template
    vocab = tokenizer.get_vocab()
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                         pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=None,
                         tie_word_embeddings=False)
    model = Qwen3ForCausalLM(config)
    spread(model, 2.0)  # yes/no logits far enough apart that the sigmoid spreads the pairs
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def make_st_llm_reranker(dest: Path, *, seed: int = 0, max_length: int = 160, prompts: dict | None = None,
                         default_prompt_name: str | None = None, chat_template: str = QWEN3_CHAT_TEMPLATE) -> Path:
    """The tiny Qwen3 reranker saved by sentence-transformers' ``CrossEncoder`` (Transformer for text generation,
    ``LogitScore(yes, no)``, sigmoid), its chat template rendering the ``query``/``document`` roles, a
    ``max_length``-token window."""
    import shutil

    from sentence_transformers import CrossEncoder

    raw = make_qwen3_reranker(dest.parent / f"{dest.name}.raw", seed=seed, chat_template=chat_template)
    CrossEncoder(str(raw), max_length=max_length, prompts=prompts, default_prompt_name=default_prompt_name,
                 device="cpu").save(str(dest))
    shutil.rmtree(raw)
    return dest


def gemma_reranker_tokenizer():
    """A Gemma tokenizer (sentencepiece-style BPE trained offline: ``▁`` for spaces, no prefix space, Gemma's
    special tokens) in which "Yes" is a token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    bpe.decoder = decoders.Metaspace(prepend_scheme="never")
    bpe.train_from_iterator(_corpus() + ["\n"] * 20, trainers.BpeTrainer(
        vocab_size=500, special_tokens=special, initial_alphabet=[*string.printable, "▁"]))
    tokenizer = GemmaTokenizer(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                               unk_token="<unk>")
    assert len(tokenizer("Yes", add_special_tokens=False)["input_ids"]) == 1, "'Yes' is not one token"
    return tokenizer


def make_gemma_reranker(dest: Path, *, seed: int = 0) -> Path:
    """A tiny random GemmaForCausalLM with :func:`gemma_reranker_tokenizer`, saved as bge-reranker-v2-gemma's
    repo is (a plain causal LM folder)."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = gemma_reranker_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<bos>", "<eos>")}
    torch.manual_seed(seed)
    config = GemmaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"])
    model = GemmaForCausalLM(config)
    spread(model, 2.0)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
