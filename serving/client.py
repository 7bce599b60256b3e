"""Clients with in-process `zoo`'s ``encode()`` / ``encode_per_item()`` signatures, over Triton gRPC.

Both clients build on :class:`zoo.front.EncodeFront`, so the validation of modality and output controls and
its errors are the same code as in-process. Items are checked and serialized on the caller's side with
:func:`zoo.media.to_wire` (a bad item fails before anything is sent; ``encode_per_item`` keeps it as its
error and still embeds the others). Inputs are split into chunks of the server's ``max_batch_size`` (or
``batch_size``), sent concurrently; rows come back in order. Server-side failures raise the same `zoo`
error classes, with item indexes counted over the whole call; a model that is being reloaded raises
:class:`zoo.errors.ModelUnavailableError` (retrying later works).

Replicas: ``url`` may name several servers (``"host1:8001,host2:8001"``, a list, or one DNS name that
resolves to several addresses, as a Kubernetes headless Service does). Requests go round-robin over them,
one channel each (a single keep-alive channel would pin every request to one pod), and a request that fails
as unavailable (connection refused or lost, model not ready) is sent again to the next replica; a replica
that failed is tried last for :data:`REPLICA_COOLDOWN_S`. Embedding is idempotent, so a retry is safe.

Overload and priority: a server that refuses a request before any work (its queue is full, or the request
waited past its queue timeout) raises :class:`zoo.errors.OverloadedError`, and the request goes to the next
replica; when every replica refused, a client made with ``retries=N`` waits (0.1 s doubling up to 5 s, with
jitter) and tries again, at most N times, while one with ``retries=0`` (the default: interactive callers decide
themselves) raises at once. Each request carries a priority (``"high"``, ``"normal"``, ``"low"``: Triton's
priority levels, :data:`serving.contract.PRIORITIES`), the client's own or the call's ``priority=``.
Bulk work (``zoo embed --triton``) opens its client with :func:`open_backend` ``(bulk=True)``: low priority,
retries, and small requests (``max_chunk`` items, ``max_chunk_bytes`` bytes) one at a time (``concurrency``), so
that a bulk request never holds the model long (:data:`BULK`).

Cross-encoders: a served model whose items are ``(query, document)`` pairs gets ``predict()`` and ``rank()``
(:mod:`serving.client_rank`), as in-process, and its ``encode()`` takes pairs too; so :func:`zoo.rerank` and
:func:`zoo.ranking.score_pairs` take a client of any served model.

All of that is written once, without I/O, in :mod:`serving.client_core` (why so: its docstring); the two
classes here only drive it, one with blocking gRPC calls, the other with awaited ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from zoo.front import EncodeOptions
from zoo.long import Chunks, Tokens
from zoo.spec import Modality

from . import client_long as cl
from . import client_rank as cr
from .client_core import (
    MAX_CONCURRENT_CHUNKS,
    REPLICA_COOLDOWN_S,
    InferenceServerException,
    Job,
    Plan,
    Replicas,
    Rows,
    Served,
    Sleep,
    T,
    _Core,
    fetch_config,
    fetch_spec,
    replica_urls,
    triton_name,
)
from .client_core import _raise_remote as _raise_remote  # noqa: F401  (the tests' way to map one error)
from .client_core import _remote_error as _remote_error  # noqa: F401

# what callers import from here: the clients, and the helpers that lived here before the core moved out
__all__ = ["BULK", "MAX_CONCURRENT_CHUNKS", "REPLICA_COOLDOWN_S", "AsyncTritonEmbedder", "Replicas", "Served",
           "TritonEmbedder", "fetch_config", "fetch_spec", "open_backend", "replica_urls", "triton_name"]


class TritonEmbedder(_Core):
    """``encode()`` against a model served by tritonserver over gRPC (thread-safe)."""

    def encode(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        show_progress: bool = False, priority: str | None = None, **controls: Any,
    ) -> Any:
        """Same arguments (``controls``: the output controls) and result as :meth:`zoo.base.Embedder.encode`,
        embedded on the server; ``priority``: this call's (default: the client's)."""
        return self._wait(self._encode_job(inputs, modality, batch_size, controls, priority), show_progress)

    def encode_per_item(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        priority: str | None = None, **controls: Any,
    ) -> Rows:
        """Like :meth:`encode`, but each bad item becomes its :class:`InputError` in the result list (whether
        it failed the local check or the server's) and every good item still gets its row."""
        return self._wait(self._per_item_job(inputs, modality, batch_size, controls, priority))

    def infer_wire(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, *, batch_size: int | None = None,
                   tokens: bool = False, truncated: bool = False, priority: str | None = None,
                   traceparent: str | None = None) -> Served:
        """Blocking :meth:`AsyncTritonEmbedder.infer_wire`."""
        return self._wait(self._wire_job(raw, modality, opts, batch_size, tokens, self._level(priority), traceparent,
                                         truncated))

    def tokenize(self, texts: Sequence[Any], prompt_name: str | None = None, truncate: str = "end", *,
                 priority: str | None = None, traceparent: str | None = None) -> list[Tokens]:
        """Same as :meth:`zoo.tokens.TokenizerTools.tokenize`, by the served model's tokenizer."""
        return self._wait(cl.tokenize_job(self, texts, prompt_name, truncate, priority=priority,
                                          traceparent=traceparent))

    def detokenize(self, ids: list[list[int]], *, priority: str | None = None,
                   traceparent: str | None = None) -> list[str]:
        """Same as :meth:`zoo.tokens.TokenizerTools.detokenize`, by the served model's tokenizer."""
        return self._wait(cl.detokenize_job(self, ids, priority=priority, traceparent=traceparent))

    def encode_chunks(
        self, texts: Sequence[Any], *, chunk_tokens: int | None = None,
        spans: list[list[tuple[int, int]]] | None = None, overlap: int | None = None,
        prompt_name: str | None = None, normalize: bool | None = None,
        dimensions: int | None = None, precision: str = "float32", batch_size: int | None = None,
        priority: str | None = None, traceparent: str | None = None,
    ) -> list[Chunks]:
        """Same arguments and result as :meth:`zoo.tokens.TokenizerTools.encode_chunks` (late chunking), served."""
        return self._wait(cl.chunks_job(
            self, texts, chunk_tokens=chunk_tokens, spans=spans, overlap=overlap, prompt_name=prompt_name,
            normalize=normalize, dimensions=dimensions, precision=precision, batch_size=batch_size, priority=priority,
            traceparent=traceparent))

    def predict(self, pairs: Sequence[Any], *, batch_size: int | None = None, max_tokens_per_doc: int | None = None,
                prompt_name: str | None = None, truncate: str = "end", show_progress: bool = False,
                priority: str | None = None) -> np.ndarray:
        """A served cross-encoder's ``[len(pairs)]`` float32 scores of ``(query, document)`` pairs: same arguments
        and result as :meth:`zoo.families.cross.CrossEncoder.predict` (``priority``: this call's); a model that
        does not score pairs refuses with :class:`InvalidArgumentError`."""
        return self._wait(cr.predict_job(self, pairs, batch_size=batch_size, max_tokens_per_doc=max_tokens_per_doc,
                                         prompt_name=prompt_name, truncate=truncate, priority=priority),
                          show_progress)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             *, batch_size: int | None = None, max_tokens_per_doc: int | None = None,
             priority: str | None = None) -> list[dict[str, Any]]:
        """``documents`` ranked against ``query`` by a served cross-encoder: same arguments and result as
        :meth:`zoo.families.cross.CrossEncoder.rank` (``[{"corpus_id", "score", "text"?}]``, best first)."""
        return self._wait(cr.rank_job(self, query, documents, top_k, return_documents, batch_size=batch_size,
                                      max_tokens_per_doc=max_tokens_per_doc, priority=priority))

    def close(self) -> None:
        """Close the gRPC channels."""
        for channel in self._channels.values():
            channel.close()

    # ---- the driver ---------------------------------------------------------------------------------
    def _run(self, plan: Plan[T]) -> T:
        """Answer a plan's calls with the blocking channels (thread-safe: one may serve many threads)."""
        answer: Any = None
        while True:
            try:
                call = plan.send(answer)
            except StopIteration as done:
                return done.value
            if isinstance(call, Sleep):
                time.sleep(call.seconds)
                answer = None
                continue
            try:
                answer = self._channels[call.url].infer(self.triton_name, call.inputs, **call.infer_args())
            except InferenceServerException as err:
                answer = err

    def _wait(self, job: Job[T], show_progress: bool = False) -> T:
        """Run a job's plans on a few threads; one alone runs on the caller's (no pool to start and join)."""
        if not job.parts or (len(job.parts) == 1 and not show_progress):
            return job.finish([self._run(p) for p in job.parts])
        with ThreadPoolExecutor(min(self.concurrency or MAX_CONCURRENT_CHUNKS, len(job.parts))) as pool:
            futures = [pool.submit(self._run, p) for p in job.parts]
            if show_progress:
                from tqdm.auto import tqdm

                for _ in tqdm(as_completed(futures), total=len(futures), desc=f"encode {job.label}", unit="chunk"):
                    pass
            return job.finish([f.result() for f in futures])


class AsyncTritonEmbedder(_Core):
    """asyncio variant: ``await encode(...)`` / ``await encode_per_item(...)`` with the same arguments."""

    def __init__(self, name: str, url: str | Sequence[str] = "127.0.0.1:8001", **options: Any) -> None:
        """``options``: the keyword options of :class:`TritonEmbedder` (``priority``, ``retries``, ``max_chunk``,
        ``max_chunk_bytes``, ``concurrency``)."""
        super().__init__(name, url, **options)
        self._clients: dict[str, Any] = {}  # replica URL → its asyncio channel, made inside the running loop

    async def encode(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        show_progress: bool = False, priority: str | None = None, **controls: Any,
    ) -> Any:
        """Same as :meth:`TritonEmbedder.encode`, awaited (``show_progress`` is accepted and ignored)."""
        return await self._wait(self._encode_job(inputs, modality, batch_size, controls, priority))

    async def infer_wire(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, *,
                         batch_size: int | None = None, tokens: bool = False, truncated: bool = False,
                         priority: str | None = None, traceparent: str | None = None) -> Served:
        """Embed items already serialized by :meth:`wire` with options from :meth:`options`: a :class:`Served`
        of the rows in order, with ``tokens`` the text tokens the model read per item (the server's ``TOKENS``)
        and with ``truncated`` whether each item was cut (``TRUNCATED``), else None. A server-side
        :class:`InputError` names the item's index in ``raw``. ``priority``: this call's (default: the
        client's); ``traceparent``: the caller's W3C trace context, sent as the gRPC header
        :data:`serving.contract.TRACE_HEADER` (which tritonserver's OpenTelemetry tracing continues), its trace id
        as Triton's request id."""
        level = self._level(priority)
        return await self._wait(self._wire_job(raw, modality, opts, batch_size, tokens, level, traceparent,
                                               truncated))

    async def tokenize(self, texts: Sequence[Any], prompt_name: str | None = None, truncate: str = "end", *,
                       priority: str | None = None, traceparent: str | None = None) -> list[Tokens]:
        """Same as :meth:`TritonEmbedder.tokenize`, awaited."""
        return await self._wait(cl.tokenize_job(self, texts, prompt_name, truncate, priority=priority,
                                                traceparent=traceparent))

    async def detokenize(self, ids: list[list[int]], *, priority: str | None = None,
                         traceparent: str | None = None) -> list[str]:
        """Same as :meth:`TritonEmbedder.detokenize`, awaited."""
        return await self._wait(cl.detokenize_job(self, ids, priority=priority, traceparent=traceparent))

    async def encode_chunks(
        self, texts: Sequence[Any], *, chunk_tokens: int | None = None,
        spans: list[list[tuple[int, int]]] | None = None, overlap: int | None = None,
        prompt_name: str | None = None, normalize: bool | None = None,
        dimensions: int | None = None, precision: str = "float32", batch_size: int | None = None,
        priority: str | None = None, traceparent: str | None = None,
    ) -> list[Chunks]:
        """Same as :meth:`TritonEmbedder.encode_chunks`, awaited."""
        return await self._wait(cl.chunks_job(
            self, texts, chunk_tokens=chunk_tokens, spans=spans, overlap=overlap, prompt_name=prompt_name,
            normalize=normalize, dimensions=dimensions, precision=precision, batch_size=batch_size, priority=priority,
            traceparent=traceparent))

    async def encode_per_item(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        priority: str | None = None, **controls: Any,
    ) -> Rows:
        """Same as :meth:`TritonEmbedder.encode_per_item`, awaited."""
        return await self._wait(self._per_item_job(inputs, modality, batch_size, controls, priority))

    async def predict(self, pairs: Sequence[Any], *, batch_size: int | None = None,
                      max_tokens_per_doc: int | None = None, prompt_name: str | None = None, truncate: str = "end",
                      show_progress: bool = False, priority: str | None = None) -> np.ndarray:
        """Same as :meth:`TritonEmbedder.predict`, awaited (``show_progress`` is accepted and ignored)."""
        return await self._wait(cr.predict_job(self, pairs, batch_size=batch_size,
                                               max_tokens_per_doc=max_tokens_per_doc, prompt_name=prompt_name,
                                               truncate=truncate, priority=priority))

    async def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
                   return_documents: bool = False, *, batch_size: int | None = None,
                   max_tokens_per_doc: int | None = None, priority: str | None = None) -> list[dict[str, Any]]:
        """Same as :meth:`TritonEmbedder.rank`, awaited."""
        return await self._wait(cr.rank_job(self, query, documents, top_k, return_documents, batch_size=batch_size,
                                            max_tokens_per_doc=max_tokens_per_doc, priority=priority))

    async def close(self) -> None:
        """Close the gRPC channels."""
        for client in self._clients.values():
            await client.close()
        for channel in self._channels.values():
            channel.close()

    # ---- the driver ---------------------------------------------------------------------------------
    def _channel(self, url: str) -> Any:
        """The asyncio channel to a replica, made on first use (it must be made inside the running loop)."""
        if url not in self._clients:
            from .channels import aio_client

            self._clients[url] = aio_client(url)
        return self._clients[url]

    async def _run(self, plan: Plan[T]) -> T:
        """Answer a plan's calls with the asyncio channels."""
        answer: Any = None
        while True:
            try:
                call = plan.send(answer)
            except StopIteration as done:
                return done.value
            if isinstance(call, Sleep):
                await asyncio.sleep(call.seconds)
                answer = None
                continue
            try:
                answer = await self._channel(call.url).infer(self.triton_name, call.inputs, **call.infer_args())
            except InferenceServerException as err:
                answer = err

    async def _wait(self, job: Job[T]) -> T:
        """Run a job's plans concurrently, at most :data:`MAX_CONCURRENT_CHUNKS` (or the client's
        ``concurrency``) at once."""
        sem = asyncio.Semaphore(self.concurrency or MAX_CONCURRENT_CHUNKS)

        async def run(plan: Plan[Any]) -> Any:
            async with sem:
                return await self._run(plan)

        return job.finish(await asyncio.gather(*(run(p) for p in job.parts)))


#: how a bulk job's client sends (:func:`open_backend`; measured with ``scripts/bench_priority.py``): low priority,
#: so that waiting interactive requests go first; retries with backoff, so that an overloaded server slows the job
#: down instead of failing it; requests of a few short texts at most (a long one goes alone), one at a time, so that
#: an execute holding bulk rows is short. Triton's priority queue only orders waiting requests: the execute already
#: running, and the bulk rows batched with an interactive request, are waited for in full.
BULK = {"priority": "low", "retries": 8, "max_chunk": 8, "max_chunk_bytes": 256, "concurrency": 1}


def open_backend(name: str, url: str, *, bulk: bool = False) -> TritonEmbedder:
    """The ``zoo.backends`` entry point ``triton`` (``zoo eval --backend triton``, ``zoo embed --triton``): a
    client of ``name`` served at ``url``; ``bulk`` for work that must not slow interactive requests down
    (:data:`BULK`)."""
    return TritonEmbedder(name, url, **(BULK if bulk else {}))
