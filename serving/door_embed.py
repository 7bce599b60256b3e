"""One embedding request's model calls at the door, shared by the routes of every API it speaks (OpenAI's
``/v1/embeddings``, Cohere's ``/v2/embed``): the served model found (a reranker refused), its items grouped by
modality, checked and serialized, one Triton request per modality sent concurrently with the request's priority and
trace context, and the rows put back in input order with the tokens the model read and whether each item was cut.

Each route renders the rows in its own API's shape; an item the model refuses is named by the route's own field
(``input[3]``, ``texts[3]``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from zoo import kinds
from zoo.errors import ZooError
from zoo.spec import Modality

from . import contract
from .client import triton_name
from .door_metrics import Exchange, failure_reason
from .openai_api import TRUNCATE_CUTS, ApiError, api_error, bad_request
from .openai_catalog import Catalog, public_name

INLINE_TEXT_CHARS = 1 << 16  # text requests this small are serialized on the event loop (cheaper than a thread)

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """A request's answer before it is rendered: one row per item in input order (an entry of
    :func:`zoo.kinds.items_of`), whether each item was cut to the model's window, and the text tokens read."""

    rows: list[Any]
    cut: list[bool]
    tokens: int


async def served_embedder(catalog: Catalog, model: str, exchange: Exchange) -> Any:
    """The client of served ``model`` (404 when it is not served, 503 when not ready), its public name written to
    ``exchange``; a reranker is refused (400): its items are pairs and its answer a number, not a vector."""
    try:
        embedder = await catalog.get(model)
    except ApiError as err:
        if err.code == "model_not_ready":  # it is in Triton's repository, so a served name
            exchange.model = public_name(triton_name(catalog.aliases.get(model, model)))
        raise
    exchange.model = public_name(embedder.triton_name)
    if contract.reads_pairs(embedder.spec.outputs):
        raise bad_request(f"model `{model}` is a reranker: it scores (query, document) pairs and embeds "
                          "nothing; use /v1/rerank or /v1/score", param="model")
    return embedder


async def embed_items(embedder: Any, model: str, items: list[tuple[Modality, Any]], opts: Any, exchange: Exchange,
                      *, field: str = "input", cuts: str = TRUNCATE_CUTS) -> Embedded:
    """Embed ``items`` (``(modality, item)`` as :func:`zoo.media.to_wire` takes them) with ``opts`` (the model's
    :meth:`options`): grouped by modality, one Triton request per group, concurrently, with ``exchange``'s priority
    and trace context; the items and tokens are written back to ``exchange``. ``model``: the name the caller used;
    ``field`` and ``cuts``: how the route names an item and its truncate values (see :func:`api_error`)."""
    groups: dict[Modality, list[int]] = {}
    for i, (modality, _) in enumerate(items):
        groups.setdefault(modality, []).append(i)
    for modality, positions in groups.items():
        if modality not in embedder.spec.modalities:
            raise bad_request(f"{field}[{positions[0]}]: model `{model}` does not embed {modality.value}; it "
                              f"embeds {', '.join(m.value for m in embedder.spec.modalities)}", param=field)

    def wire() -> dict[Modality, list[bytes]]:  # checks and serializes; never reads a path
        return {m: [contract.encode_item(m, items[i][1], i, allow_paths=False) for i in positions]
                for m, positions in groups.items()}

    # decoding images and audio to check them is CPU work: off the event loop; so is much text
    inline = list(groups) == [Modality.TEXT] and sum(len(text) for _, text in items) <= INLINE_TEXT_CHARS
    try:
        wired = wire() if inline else await asyncio.to_thread(wire)
    except ZooError as err:
        raise api_error(err, None, field=field, cuts=cuts) from None

    async def one(modality: Modality) -> Any:
        try:
            return await embedder.infer_wire(wired[modality], modality, opts, tokens=True, truncated=True,
                                             priority=exchange.priority, traceparent=exchange.traceparent)
        except Exception as err:  # the model's or tritonserver's doing: counted as the model's failure
            if not isinstance(err, ZooError):
                log.exception("a model call failed")  # the caller gets a fixed message; the details stay here
            answer = api_error(err if isinstance(err, ZooError) else RuntimeError(), groups[modality], field=field,
                               cuts=cuts)
            answer.failure = failure_reason(err)
            raise answer from None

    answers = await asyncio.gather(*(one(m) for m in groups), return_exceptions=True)
    rows: list[Any] = [None] * len(items)
    cut = [False] * len(items)  # media items are never cut (no truncated output: none)
    tokens = 0
    for positions, answer in zip(groups.values(), answers):
        if isinstance(answer, BaseException):
            raise answer
        result, read = answer  # Served: a (result, tokens) pair, with whether each item was cut as an attribute
        for position, row in zip(positions, kinds.items_of(result, opts.output)):
            rows[position] = row
        flags = getattr(answer, "truncated", None)  # an array: never read as a truth value
        for position, flag in zip(positions, flags if flags is not None else ()):
            cut[position] = bool(flag)
        tokens += int(read.sum())
    exchange.items, exchange.tokens = len(rows), tokens
    return Embedded(rows, cut, tokens)
