"""The clients' jobs for long texts, sans IO like :mod:`serving.client_core`'s: tokenize, detokenize and late
chunking, each a :class:`Job` of one plan per chunk of items (:meth:`_Core._spans`) whose requests carry the
:data:`serving.contract.TASK` parameter and come back as :mod:`zoo.long`'s objects. The sync and async clients
drive them like ``encode()``'s (:mod:`serving.client`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo import long as lg
from zoo.spec import Modality

from . import contract
from . import contract_long as wire
from .client_core import Job, Plan, _Core

TEXT = contract.INPUTS[Modality.TEXT]


def _check(core: _Core, task: str) -> None:
    """A model without text refuses here, as in-process; a cross-encoder (its texts are pairs) as its server does."""
    core.check_modality(Modality.TEXT)
    contract.check_text_task(core.spec, task)


def _texts(core: _Core, texts: Sequence[Any]) -> list[bytes]:
    """Texts checked and serialized (a bad one raises its :class:`InputError` before anything is sent)."""
    return core.wire(texts, Modality.TEXT)


def _job(core: _Core, raw: list[bytes], task: str, params: Any, decode: Any, batch_size: int | None,
         priority: str | None, traceparent: str | None) -> Job[list[Any]]:
    """One plan per chunk of ``raw``: a ``task`` request with ``params`` (a dict, or a function of the chunk's
    ``(start, end)`` giving it), its answer turned into per-item results by ``decode``; joined in order."""
    level = core._level(priority)
    names = contract.TASK_OUTPUTS[task]

    def plan(a: int, b: int) -> Plan[list[Any]]:
        sent = params(a, b) if callable(params) else params
        answer = yield from core._send(raw[a:b], TEXT, names, sent, a, level, traceparent)
        return decode({n: answer.as_numpy(n) for n in names})

    return Job([plan(a, b) for a, b in core._spans(raw, batch_size)],
               lambda parts: [x for part in parts for x in part], task)


def tokenize_job(core: _Core, texts: Sequence[Any], prompt_name: str | None = None, truncate: str = "end", *,
                 priority: str | None = None, traceparent: str | None = None) -> Job[list[lg.Tokens]]:
    """``tokenize()``: per text, its :class:`zoo.long.Tokens` as the served model reads it."""
    _check(core, contract.TOKENIZE)
    core.options(prompt_name=prompt_name, truncate=truncate)  # checked here, as in-process (the prompt too)
    params = wire.task_parameters(contract.TOKENIZE, prompt_name=prompt_name, truncate=lg.check_truncate(truncate))
    return _job(core, _texts(core, texts), contract.TOKENIZE, params, wire.tokens_from_wire, None, priority,
                traceparent)


def detokenize_job(core: _Core, ids: Sequence[Sequence[int]], *, priority: str | None = None,
                   traceparent: str | None = None) -> Job[list[str]]:
    """``detokenize()``: each list of token ids as the served model's tokenizer decodes it."""
    _check(core, contract.DETOKENIZE)
    raw = wire.ids_to_wire(lg.check_token_ids(ids))  # as in-process checks them (the vocabulary: the server's)

    def decode(tensors: dict[str, Any]) -> list[str]:
        return [bytes(t).decode("utf-8") for t in tensors[contract.DETOKENIZED].reshape(-1)]

    return _job(core, raw, contract.DETOKENIZE, {contract.TASK: contract.DETOKENIZE}, decode, None, priority,
                traceparent)


def chunks_job(core: _Core, texts: Sequence[Any], *, chunk_tokens: int | None = None,
               spans: Sequence[Sequence[tuple[int, int]]] | None = None, overlap: int | None = None,
               prompt_name: str | None = None, normalize: bool | None = None, dimensions: int | None = None,
               precision: str = "float32", batch_size: int | None = None, priority: str | None = None,
               traceparent: str | None = None) -> Job[list[lg.Chunks]]:
    """``encode_chunks()``: per text, its late chunks (:class:`zoo.long.Chunks`) from the served model."""
    _check(core, contract.LATE_CHUNKS)
    opts = core.options(prompt_name=prompt_name, normalize=normalize, dimensions=dimensions, precision=precision,
                        output="dense")
    raw = _texts(core, texts)
    chunk_tokens, spans, overlap = lg.check_chunking(chunk_tokens, spans, overlap, len(raw))  # as in-process

    def params(a: int, b: int) -> dict[str, Any]:
        return wire.task_parameters(
            contract.LATE_CHUNKS, chunk_tokens=chunk_tokens, overlap=overlap, prompt_name=prompt_name,
            normalize=opts.normalize, dimensions=opts.dimensions, precision=opts.precision,
            chunk_spans=None if spans is None else spans[a:b])

    def decode(tensors: dict[str, Any]) -> list[lg.Chunks]:
        return wire.chunks_from_wire(tensors, opts.precision)

    return _job(core, raw, contract.LATE_CHUNKS, params, decode, batch_size, priority, traceparent)
