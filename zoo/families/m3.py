"""BGE-M3: dense, sparse and multi-vector output from one encoder (Chen et al., 2024), as FlagEmbedding's
``BGEM3FlagModel`` computes them.

The folder holds the encoder (any transformers ``AutoModel``, XLM-RoBERTa for the real checkpoint) and two
heads saved beside it, ``colbert_linear.pt`` and ``sparse_linear.pt``:

- dense: the CLS token's final state (unit vector);
- sparse: per token ``relu(sparse_linear(h))``; a term's weight is its largest over the item's tokens, the
  CLS, EOS, pad and unknown tokens left out;
- multivector: ``colbert_linear(h)`` of every real token after CLS (EOS included), unit vectors.

Each call gives the kind it asks for (``output=``, default dense); the three share one forward pass's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import Embedder
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import (
    SparseTerms,
    TokenizedText,
    read_json,
    sparse_rows_of,
    tokenizer_max_length,
)

HEADS = ("colbert_linear.pt", "sparse_linear.pt")
OUTPUTS = ("dense", "sparse", "multivector")


def _linear(path: Path):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    out_features, in_features = state["weight"].shape
    layer = torch.nn.Linear(in_features, out_features)
    layer.load_state_dict(state)
    return layer.eval()


class M3Embedder(SparseTerms, TokenizedText, Embedder):
    """An encoder with BGE-M3's ColBERT and sparse heads."""

    tokenized_in_forward = True  # its forward() takes a batch tokenized ahead (zoo.ahead)

    folder_priority = 15

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.colbert, self.sparse = (_linear(path / name).to(self.device) for name in HEADS)
        if self.colbert.out_features != spec.dim:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(f"{path.name}: colbert_linear.pt gives {self.colbert.out_features}-d vectors, "
                                       f"the encoder {spec.dim}-d; BGE-M3 keeps them equal")
        self.max_length = tokenizer_max_length(spec.max_length, path, self.tokenizer)
        special = (self.tokenizer.cls_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id,
                   self.tokenizer.unk_token_id)
        self.unused = torch.tensor(sorted({i for i in special if i is not None}), device=self.device)

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A transformers encoder folder with ``colbert_linear.pt`` and ``sparse_linear.pt`` beside it."""
        config = read_json(path / "config.json")
        if not config or not all((path / name).is_file() for name in HEADS):
            return None
        return EmbedderSpec(
            name=str(path), family="m3", modalities=(Modality.TEXT,), dim=int(config["hidden_size"]),
            vocab_size=int(config["vocab_size"]), license="see the folder's model card", source=str(path),
            max_length=int(config.get("max_position_embeddings", 514)) - 2, outputs=OUTPUTS,
            description=f"local {config.get('model_type', 'transformers')} BGE-M3-style encoder: dense, sparse "
                        "and multi-vector",
        )

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> Any:
        import torch

        enc = self._tokenized(batch, opts.prompt)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            if kind == "dense":
                return hidden[:, 0].float().cpu().numpy()
            if kind == "multivector":
                vecs = torch.nn.functional.normalize(self.colbert(hidden[:, 1:]), dim=-1).float().cpu()
                counts = enc["attention_mask"].sum(1).cpu() - 1
                return [v[: int(n)].numpy() for v, n in zip(vecs, counts)]
            weights = torch.relu(self.sparse(hidden)).squeeze(-1)
            ids = enc["input_ids"]
            weights = (weights * enc["attention_mask"] * ~torch.isin(ids, self.unused)).float()
            best = torch.zeros(len(ids), self.spec.vocab_size, device=ids.device)  # a term's weight: its largest
            return sparse_rows_of(best.scatter_reduce(1, ids, weights, reduce="amax"))  # over the item's tokens


#: registry name (the hub id) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "BAAI/bge-m3": dict(
        dim=1024, vocab_size=250002, license="mit", max_length=8192, batch_size=8, max_batch_size=16,
        description="BGE-M3 (XLM-RoBERTa large, 100+ languages, 8k tokens): dense, sparse and multi-vector"),
}
register_checkpoints("m3", CHECKPOINTS, modalities=(Modality.TEXT,), outputs=OUTPUTS)
