"""The backend's answers to requests that ask a text model for something else than embeddings (the request
parameter :data:`serving.contract.TASK`): tokenize, detokenize and late chunking, each by the in-process
method of the same name (:mod:`zoo.tokens`), so served and in-process agree by construction. Each request is
answered alone (they are cheap next to embedding, and have no rows to share a batch with). A model without text,
or whose items are pairs (a cross-encoder), refuses them (:func:`serving.contract.check_text_task`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.spec import Modality

from . import contract
from . import contract_long as wire

TEXT = contract.INPUTS[Modality.TEXT]


def answer_task(embedder: Any, task: str, params: dict[str, Any], inputs: dict[str, list[bytes]]
                ) -> dict[str, np.ndarray]:
    """The output tensors of one ``task`` request (``params``: its parameters but :data:`contract.TASK`); raises
    the :class:`zoo.errors.ZooError` the request gets."""
    contract.check_text_task(embedder.spec, task)
    if list(inputs) != [TEXT]:
        raise InvalidArgumentError(f"{contract.TASK} {task!r} takes one input, {TEXT}; got {sorted(inputs)}",
                                   contract.TASK)
    kwargs = contract.parse_parameters(params, task)
    raw = inputs[TEXT]
    if not raw:
        raise InvalidArgumentError("the request holds no item")
    if task == contract.DETOKENIZE:
        texts = embedder.detokenize([wire.ids_from_wire(x, i) for i, x in enumerate(raw)])
        return {contract.DETOKENIZED: np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(-1, 1)}
    # the UTF-8 elements as a caller in-process may pass them: the method decodes them itself, kept only as far as
    # its truncate and long modes read (never a whole multi-megabyte element as one string), and offsets and spans
    # count the characters sent, exactly as in-process
    if task == contract.TOKENIZE:
        return wire.tokens_to_wire(embedder.tokenize(raw, **kwargs))
    spans = kwargs.pop(contract.CHUNK_SPANS, None)
    chunks = embedder.encode_chunks(raw, spans=None if spans is None else wire.parse_spans(spans, len(raw)), **kwargs)
    return wire.chunks_to_wire(chunks, kwargs.get("precision", "float32"))
