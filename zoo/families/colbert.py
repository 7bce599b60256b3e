"""Late-interaction text encoders (ColBERT style): one vector per token, scored by MaxSim.

Loads folders saved by sentence-transformers' ``MultiVectorEncoder`` (and hub checkpoints in that layout):
the transformer's token states go through the folder's ``Dense`` projections; the scoring mask of its
``MultiVectorMask`` picks the rows each item keeps (real tokens; on the query side the query-expansion
positions too; on the document side minus the skip list and, with ``keep_only_token_ids``, only those
tokens); ``Normalize`` makes them unit vectors. ``query_length`` / ``document_length`` cap each side and
ColBERT's query expansion (``fixed`` or ``min``: pads swapped for ``[MASK]``, scored but, unless
``attend``, not attended to) is reproduced. A call is on the query side when its ``prompt_name`` is
``"query"`` (what ``encode_query`` does), else on the document side. PyLate saves (``model_type:
ColBERT``, the layout of most published ColBERT checkpoints) are read as ``MultiVectorEncoder`` reads them:
their top-level prefixes, lengths and expansion flags, the implied punctuation skip list and Normalize, and
a ``[unused0]``-style prefix kept one token. A pipeline with any other module is refused rather than loaded
differently.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..errors import InvalidArgumentError
from ..front import EncodeOptions
from ..registry import register_checkpoints
from ..spec import EmbedderSpec, Modality
from .common import (
    TokenizedText,
    declared_max_length,
    note_truncated_texts,
    read_json,
    refuse_modules,
    st_model_type,
    st_modules,
    st_prompts,
    tokenizer_max_length,
    with_prompt,
)

MODULES = {"Transformer", "Dense", "MultiVectorMask", "Normalize"}
MODEL_TYPES = ("MultiVectorEncoder", "ColBERT")  # sentence-transformers' own saves, PyLate's (v3 and before)
PYLATE_KNOBS = ("query_length", "document_length", "query_expansion")
ACTIVATIONS = {"torch.nn.modules.linear.Identity": "Identity", "torch.nn.modules.activation.Tanh": "Tanh",
               "torch.nn.modules.activation.ReLU": "ReLU"}  # the Dense configs' names → torch.nn classes


def load_dense(folder: Path):
    """One sentence-transformers ``Dense`` module as torch ``Linear`` → activation."""
    import torch
    from safetensors.torch import load_file

    cfg = read_json(folder / "config.json") or {}
    act = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if act not in ACTIVATIONS:
        raise InvalidArgumentError(f"{folder}: Dense activation {act!r} is not supported")
    layer = torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    weights = folder / "model.safetensors"
    state = load_file(weights) if weights.is_file() else torch.load(folder / "pytorch_model.bin", weights_only=True)
    layer.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return torch.nn.Sequential(layer, getattr(torch.nn, ACTIVATIONS[act])()).eval()


def folder_settings(path: Path) -> dict[str, Any]:
    """What a folder says about its pipeline, the way ``MultiVectorEncoder`` reads it: the Dense folders,
    the scoring mask settings (``None``: no mask), Normalize, the transformer's length and expansion knobs,
    the prompts and the legacy prefix tokens. PyLate saves (``model_type: ColBERT``) keep their knobs at the
    top level (``query_prefix``/``document_prefix`` become prompts, ``query_length`` the expansion length,
    expansion on unless ``do_query_expansion`` is false) and imply a punctuation skip list and Normalize."""
    modules = st_modules(path)
    refuse_modules(path, modules, MODULES, "multi-vector")
    top = read_json(path / "config_sentence_transformers.json") or {}
    st_cfg = read_json(path / "sentence_bert_config.json") or {}
    if st_cfg.get("processing_kwargs"):
        raise InvalidArgumentError(f"{path.name}: processing_kwargs in sentence_bert_config.json are not "
                                   "reproduced; refusing the folder rather than tokenizing differently")
    prefixes = {side: top[key] or "" for key, side in (("query_prefix", "query"), ("document_prefix", "document"))
                if key in top}
    prompts, default = st_prompts(path, prefixes)
    legacy = {k: top[k] for k in PYLATE_KNOBS if k in top and (top[k] is not None or k == "query_expansion")}
    markers = PYLATE_KNOBS + ("do_query_expansion", "attend_to_expansion_tokens", "attend_to_mask_tokens",
                              "query_prefix", "document_prefix", "skiplist_words")
    if "query_expansion" not in legacy and any(k in top for k in markers):
        if top.get("do_query_expansion") is False:
            legacy["query_expansion"] = None
        else:
            attend = top.get("attend_to_expansion_tokens", top.get("attend_to_mask_tokens"))
            length = legacy.pop("query_length", None) or top.get("query_length") or 32
            legacy["query_expansion"] = {"strategy": "fixed", "attend": bool(attend), "length": length}
    transformer = legacy | {k: st_cfg[k] for k in PYLATE_KNOBS if k in st_cfg}  # the saved module config wins
    mask_dir = next((folder for name, folder in modules if name == "MultiVectorMask"), None)
    mask = (read_json(mask_dir / "config.json") or {}) if mask_dir else None
    normalize = any(name == "Normalize" for name, _ in modules)
    if top.get("model_type") == "ColBERT":  # PyLate v3 listed only [Transformer, Dense]
        skip = top.get("skiplist_words")
        mask, normalize = {"skiplist_words": list(string.punctuation) if skip is None else skip}, True
    return {"dense": [folder for name, folder in modules if name == "Dense"], "mask": mask, "normalize": normalize,
            "transformer": transformer, "prompts": prompts, "prefixes": prefixes, "default_prompt_name": default}


def register_prefix_tokens(tokenizer: Any, prefixes: dict[str, str]) -> None:
    """A legacy checkpoint's prefix (``[unused0]``, ``[Q] ``) that its tokenizer knows but splits is made a
    special token, so prepending it as text gives the one token the model was trained with (what
    ``MultiVectorEncoder`` does for such checkpoints)."""
    from transformers import AddedToken

    added, vocab, register = set(getattr(tokenizer, "added_tokens_encoder", None) or {}), tokenizer.get_vocab(), []
    for value in prefixes.values():
        if not value or not value.split():
            continue
        for prefix in (value, value.split(None, 1)[0]):
            if prefix not in added and prefix not in vocab:
                continue
            if tokenizer.tokenize(prefix) != [prefix]:
                register.append(AddedToken(prefix, normalized=False, special=True))
            break
    if register:
        tokenizer.add_special_tokens({"additional_special_tokens": register})


class ColbertEmbedder(TokenizedText, Embedder):
    """A ``MultiVectorEncoder`` folder: transformer → Dense projections → scoring mask → unit token vectors."""

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        cfg = folder_settings(path)
        if cfg["prompts"] != dict(spec.prompts):  # the folder is the truth about the text its model was trained on
            spec = dataclasses.replace(spec, prompts=cfg["prompts"], default_prompt_name=cfg["default_prompt_name"])
        super().__init__(spec, device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        register_prefix_tokens(self.tokenizer, cfg["prefixes"])
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.dense = torch.nn.Sequential(*(load_dense(folder) for folder in cfg["dense"])).to(self.device)
        self.normalize_vectors, self.scored_expansion = cfg["normalize"], cfg["mask"] is not None
        mask_cfg = cfg["mask"] or {}
        words = mask_cfg.get("skiplist_words") or []
        unk = self.tokenizer.unk_token_id
        ids = [self.tokenizer.convert_tokens_to_ids(w) for w in words]
        self.skiplist = torch.tensor([i for i, w in zip(ids, words) if i != unk or w == self.tokenizer.unk_token],
                                     dtype=torch.long)
        tasks = mask_cfg.get("skiplist_tasks", ["document"])
        self.skiplist_tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        keep_only = mask_cfg.get("keep_only_token_ids")
        self.keep_only = torch.as_tensor(keep_only, dtype=torch.long) if keep_only else None
        transformer = cfg["transformer"]
        self.expansion = transformer.get("query_expansion")
        self.max_length = tokenizer_max_length(spec.max_length, path, self.tokenizer)
        self.lengths = {"query": transformer.get("query_length"), "document": transformer.get("document_length")}

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """Claim folders saved by sentence-transformers' ``MultiVectorEncoder`` or by PyLate (``ColBERT``)."""
        if st_model_type(path) not in MODEL_TYPES:
            return None
        config = read_json(path / "config.json") or {}
        cfg = folder_settings(path)
        dims = [(read_json(folder / "config.json") or {}).get("out_features") for folder in cfg["dense"]]
        return EmbedderSpec(
            name=str(path), family="colbert", modalities=(Modality.TEXT,),
            dim=int(dims[-1] if dims else config["hidden_size"]), license="see the folder's model card",
            source=str(path), max_length=declared_max_length(path, config),
            prompts=cfg["prompts"], default_prompt_name=cfg["default_prompt_name"], outputs=("multivector",),
            description=f"local {config.get('model_type', 'transformers')} late-interaction (multi-vector) encoder",
        )

    def _text_args(self, texts: list[str], prompt: str | None) -> tuple[list[str], list[str] | None, int]:
        """The side's cap is the window (the fixed query expansion's length where the folder pads queries to it);
        the side is the prompt's (a query prompt the same text as the document prompt cannot tell: the smaller
        cap, so that a text fitting it fits either side)."""
        caps = {}
        for side in ("query", "document"):
            expansion = self.expansion if side == "query" else None
            fixed = expansion and expansion.get("strategy") == "fixed"
            caps[side] = expansion["length"] if fixed else (self.lengths[side] or self.max_length)
        prompts = self.spec.prompts
        if prompt is not None and prompt == prompts.get("query") and prompt != prompts.get("document"):
            cap = caps["query"]
        elif prompt is not None and prompt == prompts.get("query"):
            cap = min(caps.values())
        else:
            cap = caps["document"]
        return with_prompt(texts, prompt), None, cap

    def _tokenize(self, texts: list[str], side: str):
        """Token ids and masks as ``MultiVectorEncoder`` makes them: the side's length cap, and on the query
        side the expansion (pads within the floor become the expansion token and are scored)."""
        import torch

        expansion = self.expansion if side == "query" else None
        cap = self.lengths[side] or self.max_length
        if expansion and expansion.get("strategy") == "fixed":
            enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=expansion["length"],
                                 return_tensors="pt", verbose=False)
        else:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=cap, return_tensors="pt",
                                 verbose=False)
        extra = None
        if expansion:  # (pads within the floor are scored only when the folder has a scoring mask)
            floor = expansion["length"]
            ids, mask = enc["input_ids"], enc["attention_mask"]
            if ids.shape[1] < floor:
                pad = (0, floor - ids.shape[1])
                for key in list(enc.keys()):
                    enc[key] = torch.nn.functional.pad(enc[key], pad, value=0)
                ids, mask = enc["input_ids"], enc["attention_mask"]
            extra = (mask == 0) & (torch.arange(ids.shape[1]) < floor)
            token = expansion.get("token")
            fill = (self.tokenizer.convert_tokens_to_ids(token) if token is not None
                    else self.tokenizer.mask_token_id if self.tokenizer.mask_token_id is not None
                    else self.tokenizer.eos_token_id)
            if fill is not None:
                enc["input_ids"] = ids.masked_fill(extra, fill)
            if expansion.get("attend"):
                enc["attention_mask"] = mask.masked_fill(extra, 1)
        return enc, extra, cap

    def _scoring_mask(self, enc, extra, side: str):
        import torch

        keep = enc["attention_mask"].bool()
        if extra is not None and self.scored_expansion:
            keep = keep | extra
        ids = enc["input_ids"]
        if side in self.skiplist_tasks and len(self.skiplist):
            keep = keep & ~torch.isin(ids, self.skiplist)
        if side != "query" and self.keep_only is not None:
            keep = keep & torch.isin(ids, self.keep_only)
        return keep

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> list[np.ndarray]:
        import torch

        side = "query" if self.is_query(modality, opts) else "document"
        texts = with_prompt(batch, opts.prompt)
        enc, extra, cap = self._tokenize(texts, side)
        if extra is None:
            note_truncated_texts(self.tokenizer, texts, enc, cap)
        keep = self._scoring_mask(enc, extra, side)
        enc = enc.to(self.device)
        with torch.inference_mode():
            hidden = self.dense(self.model(**enc).last_hidden_state)  # the folder's Dense projections in order
            if self.normalize_vectors:
                hidden = torch.nn.functional.normalize(hidden, dim=-1)
        hidden = hidden.float().cpu()
        return [h[m].numpy() for h, m in zip(hidden, keep)]


#: registry name (the hub id, PyLate layout) → spec fields; the folder's own prompts and lengths govern
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "lightonai/colbertv2.0": dict(
        license="mit", max_length=512, prompts={"query": "[unused0]", "document": "[unused1]"},
        description="ColBERTv2 (BERT base) in PyLate's layout: 128-d token vectors, query expansion to 32"),
    "lightonai/GTE-ModernColBERT-v1": dict(
        license="apache-2.0", max_length=8192, prompts={"query": "[Q] ", "document": "[D] "},
        description="GTE-ModernColBERT v1 (ModernBERT): 128-d token vectors, long documents"),
}
register_checkpoints("colbert", CHECKPOINTS, modalities=(Modality.TEXT,), dim=128, outputs=("multivector",))
