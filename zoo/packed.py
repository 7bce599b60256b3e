"""Padding-free text batches for BERT-architecture encoders: every layer computes on the real tokens only.

A padded batch of texts of different lengths computes its linear layers, the bulk of an encoder's work, on the
pad positions too. Packed, the batch's real tokens are one ``[tokens, hidden]`` matrix: the embeddings are
read at the real positions (with the same position ids as the padded batch), each layer's projections and
feed-forward run on that matrix, and attention runs per text over its own tokens (variable-length attention:
on CUDA PyTorch's jagged nested tensors, whose scaled-dot-product attention takes each text at its own length;
on the CPU a loop over the texts). The
result is put back in the padded layout (zeros at the pads), so pooling and everything after it are unchanged.
It equals the padded forward pass up to float rounding (``tests/test_packed.py`` compares them).

Only ``transformers``' ``BertModel`` with absolute positions (MiniLM, BGE, E5, GTE-base and the other BERT
checkpoints) is packed; :func:`packable` says which models are.
"""

from __future__ import annotations

import warnings
from typing import Any


def packable(model: Any) -> bool:
    """Whether :func:`packed_hidden` can stand in for ``model``'s forward pass."""
    try:
        from transformers.models.bert.modeling_bert import BertLayer, BertModel
    except ImportError:  # pragma: no cover - transformers without BERT
        return False
    config = getattr(model, "config", None)
    return (type(model) is BertModel and config is not None and not config.is_decoder
            and getattr(config, "position_embedding_type", "absolute") in (None, "absolute")
            and all(type(layer) is BertLayer and not layer.add_cross_attention for layer in model.encoder.layer))


def _attention(q: Any, k: Any, v: Any, offsets: Any, scale: float) -> Any:
    """Each text's attention over its own tokens: ``q``, ``k``, ``v`` are ``[tokens, heads, head_dim]``, text ``i``
    the rows ``offsets[i]:offsets[i + 1]``. On CUDA one call on jagged nested tensors (variable-length kernels);
    on the CPU, where PyTorch computes those one text at a time through a slow fallback, a loop over the texts
    (6x faster here)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if q.is_cuda:
        return _jagged_attention(q, k, v, offsets, scale)
    bounds = offsets.tolist()
    parts = [F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v)), scale=scale)
             for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat([p.transpose(0, 1) for p in parts])


def _jagged_attention(q: Any, k: Any, v: Any, offsets: Any, scale: float) -> Any:
    """:func:`_attention` as one scaled-dot-product attention over jagged nested tensors."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    with warnings.catch_warnings():  # the nested-tensor API announces itself as a prototype
        warnings.simplefilter("ignore", UserWarning)
        q, k, v = (torch.nested.nested_tensor_from_jagged(x, offsets).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return out.transpose(1, 2).values()


def packed_hidden(model: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
    """``model(input_ids, attention_mask, token_type_ids).last_hidden_state`` computed on the real tokens only
    (``attention_mask`` marks them), as a padded ``[batch, length, hidden]`` tensor with zeros at the pads."""
    import torch

    mask = attention_mask.bool()
    embedded = model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # position ids as when padded
    x = embedded[mask]  # [tokens, hidden], text after text
    lengths = mask.sum(1)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    tokens = x.shape[0]
    for layer in model.encoder.layer:
        attn = layer.attention.self
        q, k, v = (proj(x).view(tokens, attn.num_attention_heads, attn.attention_head_size)
                   for proj in (attn.query, attn.key, attn.value))
        context = _attention(q, k, v, offsets, attn.scaling).reshape(tokens, -1)
        x = layer.attention.output(context, x)  # dense, residual, LayerNorm: per token
        x = layer.output(layer.intermediate(x), x)
    out = embedded.new_zeros(*mask.shape, x.shape[-1])
    out[mask] = x
    return out
