"""The one core of the Triton clients (:mod:`serving.client`): every decision a request makes, written once and
without I/O.

Design: a *sans-IO* core. Chunking, the order of replicas and failover, the retries of an overloaded server
with backoff, the per-item retry of a chunk with a bad item, error mapping, stitching rows back in input order
all live in :class:`_Core` as plain generators (:data:`Plan`): a plan yields a :class:`Call` ("infer on replica
``url`` with these tensors, at this priority") and is sent back the answer, the response or the
:class:`InferenceServerException` it raised; or it yields a :class:`Sleep` (a pause before it tries again), which
the driver answers after sleeping. An encode call becomes a
:class:`Job`: one plan per chunk plus how to join their values. The sync and the async client are only
drivers: each answers a plan's calls with its own gRPC channel (blocking, or awaited) and runs a job's plans
concurrently (a thread pool, or ``asyncio.gather``), a few lines each.

Why not the other way round, an async core that the sync client runs on a private event loop in a background
thread: that would add a thread hop to every sync call (latency), a thread and a loop to own, stop and
restart after ``fork`` (Ray workers, the demo's threads), and a deadlock to avoid when the sync client is
called from inside a running loop. Generators keep the sync path exactly what it was (the caller's thread,
the thread-safe blocking channels), start nothing that outlives a call, and make "the same code" literal:
both clients run the very same plan objects.

Where a request goes and what a refusal means (replicas, priorities, backoff, error mapping) are pure helpers
in :mod:`serving.client_routing`.

The spec comes from the served model itself (:func:`fetch_config`, a :data:`contract.DESCRIBE` request),
once, when a client is made: both clients do it in their constructor with the blocking channels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

try:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
except ImportError:  # without the 'serve' extra: an error that names it
    from zoo.extras import require

    require("serve", "the Triton client (serving.client)")
    raise

from zoo import kinds
from zoo.errors import (
    InputError,
    InvalidArgumentError,
    ModelUnavailableError,
    OverloadedError,
    ServerError,
)
from zoo.front import EncodeFront, EncodeOptions, check_batch_size, check_items
from zoo.ranking import pair_chars
from zoo.spec import Modality

from . import contract
from .channels import grpc_client
from .client_config import ServedConfig, fetch_config, fetch_spec  # noqa: F401  (their home before client_config)
from .client_routing import (  # noqa: F401  (REPLICA_COOLDOWN_S and the rest: what callers import from here)
    BACKOFF_CAP_S,
    BACKOFF_FIRST_S,
    OVERLOAD_COOLDOWN_S,
    REPLICA_COOLDOWN_S,
    Replicas,
    _raise_remote,
    _remote_error,
    backoff,
    priority_level,
    replica_urls,
)

MAX_CONCURRENT_CHUNKS = 8
Rows = list["np.ndarray | InputError"]
T = TypeVar("T")


class Call(NamedTuple):
    """One gRPC ``infer`` a plan asks its driver to make (the tensors are the same classes sync and async:
    ``tritonclient.grpc.aio`` re-exports ``tritonclient.grpc``'s)."""

    url: str
    inputs: list[Any]
    outputs: list[Any]
    params: dict[str, Any]
    priority: int = 0  # Triton's priority level (1 is served first); 0: the model's default level
    #: gRPC metadata: the W3C ``traceparent`` of the caller's span, which tritonserver's OpenTelemetry tracing
    #: continues (its documented context propagation); empty: none
    headers: dict[str, str] = {}
    request_id: str = ""  # Triton's request id (in its logs and errors): the trace id when there is a trace

    def infer_args(self) -> dict[str, Any]:
        """The keyword arguments of tritonclient's ``infer`` for this call (its sync and aio clients alike)."""
        return {"outputs": self.outputs, "parameters": self.params, "priority": self.priority,
                "headers": self.headers or None, "request_id": self.request_id}


class _ServedPair(NamedTuple):
    result: Any
    tokens: np.ndarray | None


class Served(_ServedPair):
    """What :meth:`AsyncTritonEmbedder.infer_wire` returns: the ``result`` (what ``encode()`` returns), the tokens
    read per item (``tokens``) and whether each item was cut (``truncated``), each None unless asked for. A pair
    ``(result, tokens)`` to index and unpack (as before ``truncated`` came), with ``truncated`` an attribute."""

    def __new__(cls, result: Any, tokens: np.ndarray | None = None, truncated: np.ndarray | None = None) -> Served:
        served = super().__new__(cls, result, tokens)
        served.truncated = truncated
        return served

    def __repr__(self) -> str:
        return f"Served(result={self.result!r}, tokens={self.tokens!r}, truncated={self.truncated!r})"


class Sleep(NamedTuple):
    """A pause a plan asks its driver for before it tries again (answered with ``None`` once slept)."""

    seconds: float


#: a request's logic without its I/O: yields :class:`Call` s, is sent each one's response (or the
#: :class:`InferenceServerException` it raised), and :class:`Sleep` s, is sent ``None`` after each; returns its value
Plan = Generator[Call | Sleep, Any, T]


@dataclass(frozen=True)
class Job(Generic[T]):
    """One encode call, sans IO: a plan per chunk, which the driver runs concurrently (at most
    :data:`MAX_CONCURRENT_CHUNKS` at once), and ``finish``, the call's result from their values in order."""

    parts: list[Plan[Any]]
    finish: Callable[[list[Any]], T]
    label: str  # what a progress bar says


def triton_name(name: str) -> str:
    """Triton model name for a registry name, or the name itself when it already is one."""
    return contract.model_name(name) if "/" in name else name


def _chunks(sizes: Sequence[int], most: int, budget: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive chunks of items whose serialized sizes are ``sizes``: at most ``most``
    items each and, with ``budget``, at most ``budget`` bytes (an item larger than that goes alone)."""
    spans, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= most or (budget is not None and used + size > budget)):
            spans.append((start, i))
            start, used = i, 0
        used += size
    return spans + [(start, len(sizes))] if sizes else []


class _PerItem:
    """Which items of a per-item call still need a row: send :meth:`pending`, then :meth:`feed` back the rows,
    or the :class:`InputError` the server raised (whose index counts within the items sent). That item alone
    keeps its error and the rest are sent again, until every item has a row or its error."""

    def __init__(self, n: int, kind: str) -> None:
        self.kind = kind  # the call's output kind: its handler splits an answer into items
        self.results: Rows = [None] * n  # type: ignore[list-item]
        self.alive = list(range(n))

    def pending(self, raw: list[bytes]) -> list[bytes]:
        """The elements to send next (empty when done)."""
        return [raw[p] for p in self.alive]

    def feed(self, answer: Any) -> None:
        """Take the server's answer to the elements last sent."""
        if isinstance(answer, InputError):
            self.results[self.alive.pop(answer.index)] = answer
            return
        for position, row in zip(self.alive, kinds.items_of(answer, self.kind)):
            self.results[position] = row
        self.alive = []


class _Core(EncodeFront):
    """Everything the sync and async clients do, but the I/O: the spec from the server, checks, and each
    call as a :class:`Job` of :data:`Plan` s (see the module docstring). Subclasses drive the jobs.

    Args:
        name: the registry name of the served model, or its Triton name.
        url: ``host:port`` of the server's gRPC endpoint, or of several replicas (see :func:`replica_urls`).
        priority: the priority name of this client's requests (:data:`contract.PRIORITIES`; a call may name
            another); ``None``: the model's default level.
        retries: how many times a request every replica refused (overloaded or unavailable) is sent again,
            after a growing pause (:func:`backoff`); 0 raises the error at once, for callers who decide themselves.
        max_chunk: the most items one request carries (a call's ``batch_size`` and the server's
            ``max_batch_size`` cap it too).
        max_chunk_bytes: the most bytes of serialized items one request carries (an item larger goes alone):
            with ``max_chunk``, a bound on the work of the execute that holds a request, long texts or short.
        concurrency: the chunks of one call in flight at once (default :data:`MAX_CONCURRENT_CHUNKS`).
    """

    def __init__(self, name: str, url: str | Sequence[str] = "127.0.0.1:8001", *, priority: str | None = None,
                 retries: int = 0, max_chunk: int | None = None, max_chunk_bytes: int | None = None,
                 concurrency: int | None = None) -> None:
        priority_level(priority)  # a bad name fails here, before any connection
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"retries must be an integer ≥ 0, got {retries!r}", "retries")
        self.priority, self.retries = priority, retries
        self.max_chunk = None if max_chunk is None else check_batch_size(max_chunk)
        self.max_chunk_bytes = None if max_chunk_bytes is None else check_batch_size(max_chunk_bytes)
        self.concurrency = None if concurrency is None else check_batch_size(concurrency)
        self.url = url if isinstance(url, str) else ",".join(url)
        self.replicas = Replicas(replica_urls(url))
        self.triton_name = triton_name(name)
        self.device = f"triton://{self.url}"
        # one blocking channel per replica (a single keep-alive channel would pin every request to one pod):
        # the spec look-up, and the sync client's requests
        self._channels = {u: grpc_client(u) for u in self.replicas.urls}
        config = self._first_config(priority_level(priority))
        self.spec, self.weights_fingerprint, self.runtime = config
        self._max_input_tokens = getattr(config, "max_input_tokens", None)

    def _first_config(self, level: int) -> ServedConfig:
        """The served model's config from the first replica that answers; when every replica refused as
        overloaded, asked again after a pause (:func:`backoff`), at most :attr:`retries` times: a bulk client
        started while the queues are full waits its turn like its requests do."""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff(attempt - 1))
            reasons, overloaded = [], True
            for u in self.replicas.urls:
                try:
                    return fetch_config(self._channels[u], self.triton_name, level)
                except (InferenceServerException, ServerError) as err:
                    overloaded &= isinstance(err, OverloadedError)
                    reasons.append(f"{u}: {err.message() if isinstance(err, InferenceServerException) else err}")
            if not overloaded:
                break
        if overloaded:  # the door answers it with 429, like a refused request
            raise OverloadedError(f"every replica at {self.url} is overloaded: {'; '.join(reasons)}")
        raise ServerError(f"cannot reach tritonserver at {self.url}: {'; '.join(reasons)}")

    @property
    def reads_pairs(self) -> bool:
        """Whether the served model's items are ``(query, document)`` pairs (a cross-encoder's)."""
        return contract.reads_pairs(self.spec.outputs)

    def wire(self, inputs: Sequence[Any], modality: Modality, allow_paths: bool = True) -> list[bytes]:
        """Check and serialize every item (a cross-encoder's: pairs, :func:`zoo.ranking.pair_to_wire`); raises the
        first bad item's :class:`InputError`. ``allow_paths=False`` when the items come from someone else (a
        gateway): only data is accepted."""
        check_items(inputs)
        pairs = self.reads_pairs
        limit = pair_chars(self.spec) if pairs else None
        return [contract.encode_item(modality, x, i, allow_paths, pairs, limit) for i, x in enumerate(inputs)]

    def wire_per_item(self, inputs: Sequence[Any], modality: Modality) -> list[bytes | InputError]:
        """Check and serialize every item, a bad one becoming its :class:`InputError` in place."""
        check_items(inputs)
        out: list[bytes | InputError] = []
        pairs = self.reads_pairs
        limit = pair_chars(self.spec) if pairs else None
        for i, x in enumerate(inputs):
            try:
                out.append(contract.encode_item(modality, x, i, pairs=pairs, limit=limit))
            except InputError as err:
                out.append(err)
        return out

    # ---- the jobs: each public method of both clients is one of these, driven -----------------------
    def _encode_job(self, inputs: Sequence[Any], modality: Modality | str, batch_size: int | None,
                    controls: dict[str, Any], priority: str | None = None) -> Job[Any]:
        """``encode()``: everything checked and serialized now (a bad call fails before anything is sent)."""
        level = self._level(priority)
        opts, mod = self._call(modality, **controls)
        job = self._wire_job(self.wire(inputs, mod), mod, opts, batch_size, tokens=False, level=level)
        return Job(job.parts, lambda parts: job.finish(parts)[0], job.label)

    def _wire_job(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, batch_size: int | None,
                  tokens: bool, level: int = 0, traceparent: str | None = None, truncated: bool = False,
                  ) -> Job[Served]:
        """Items already serialized: the rows in order and, with ``tokens``, the tokens read per item, with
        ``truncated`` whether each was cut; sent at priority ``level`` with the trace context ``traceparent``."""
        spans = self._spans(raw, batch_size)

        def finish(parts: list[Any]) -> Served:
            counts = np.concatenate([p[1] for p in parts]) if tokens else None
            cut = np.concatenate([p[2] for p in parts]) if truncated else None
            return Served(kinds.concat([p[0] for p in parts], opts.output), counts, cut)

        return Job([self._infer(raw[a:b], modality, opts, a, tokens, level, traceparent, truncated)
                    for a, b in spans], finish, modality.value)

    def _per_item_job(self, inputs: Sequence[Any], modality: Modality | str, batch_size: int | None,
                      controls: dict[str, Any], priority: str | None = None) -> Job[Rows]:
        """``encode_per_item()``: the good items sent, the bad ones keeping their errors, stitched in order."""
        level = self._level(priority)
        opts, mod = self._call(modality, **controls)
        wired = self.wire_per_item(inputs, mod)  # looked up on the instance: tests swap it for a hostile one
        good = [w for w in wired if not isinstance(w, InputError)]
        spans = self._spans(good, batch_size)
        return Job([self._infer_per_item(good[a:b], mod, opts, level) for a, b in spans],
                   lambda parts: self._stitch(wired, [r for part in parts for r in part]), mod.value)

    # ---- the plans ------------------------------------------------------------------------------------
    def _infer(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, offset: int,
               tokens: bool = False, level: int = 0, traceparent: str | None = None,
               truncated: bool = False) -> Plan[tuple[Any, np.ndarray | None, np.ndarray | None]]:
        """One chunk of an encode call (:meth:`_send`): its rows, with ``tokens`` the tokens read per item and with
        ``truncated`` whether each item was cut (else None)."""
        names = contract.KIND_OUTPUTS[opts.output]
        extra = ((contract.TOKENS,) if tokens else ()) + ((contract.TRUNCATED,) if truncated else ())
        answer = yield from self._send(raw, contract.INPUTS[modality], names + extra,
                                       contract.request_parameters(opts), offset, level, traceparent)
        counts = answer.as_numpy(contract.TOKENS).reshape(-1) if tokens else None
        cut = answer.as_numpy(contract.TRUNCATED).reshape(-1).astype(bool) if truncated else None
        rows = contract.result_from_wire({n: answer.as_numpy(n) for n in names}, opts, self.spec.vocab_size)
        return rows, counts, cut

    def _send(self, raw: list[bytes], input_name: str, output_names: Sequence[str], params: dict[str, Any],
              offset: int = 0, level: int = 0, traceparent: str | None = None) -> Plan[Any]:
        """One request of ``raw`` elements in the input ``input_name``, tried on each replica in turn until one
        answers: that answer. A server error other than "overloaded" or "unavailable" is raised at once, item
        index shifted by ``offset`` (the chunk's start in the call). When every replica refused, the request is
        tried again after a pause (:func:`backoff`), at most :attr:`retries` times; then the last refusal is
        raised."""
        tensor = grpcclient.InferInput(input_name, [len(raw), 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(raw, dtype=object).reshape(-1, 1))
        outputs = [grpcclient.InferRequestedOutput(n) for n in output_names]
        headers = {contract.TRACE_HEADER: traceparent} if traceparent else {}
        request_id = traceparent.split("-")[1] if traceparent and traceparent.count("-") == 3 else ""
        refused = None
        for attempt in range(self.retries + 1):
            if attempt:
                yield Sleep(backoff(attempt - 1, refused))
            for url in self.replicas.order():
                answer = yield Call(url, [tensor], outputs, params, level, headers, request_id)
                if isinstance(answer, InferenceServerException):
                    refused = self._unavailable(url, answer, offset)
                    continue
                return answer
        raise refused  # every replica said so, every time

    def _infer_per_item(self, raw: list[bytes], modality: Modality, opts: EncodeOptions,
                        level: int = 0) -> Plan[Rows]:
        """One chunk of a per-item call: an item the server refuses keeps its error, the rest are sent again."""
        plan = _PerItem(len(raw), opts.output)
        while sent := plan.pending(raw):
            try:
                plan.feed((yield from self._infer(sent, modality, opts, 0, level=level))[0])
            except InputError as err:
                plan.feed(err)
        return plan.results

    def _unavailable(self, url: str, err: InferenceServerException, offset: int) -> ModelUnavailableError:
        """The error of a request to replica ``url``: raised as its `zoo` error, unless it says the replica
        is overloaded or unavailable, which is noted and returned (the caller tries the next replica)."""
        zerr = _remote_error(err, offset)
        if not isinstance(zerr, ModelUnavailableError):
            raise zerr from None
        self.replicas.failed(url, OVERLOAD_COOLDOWN_S if isinstance(zerr, OverloadedError) else REPLICA_COOLDOWN_S)
        return zerr

    @property
    def max_input_tokens(self) -> int:
        """The most tokens a text may hold, prompt and special tokens included: the backend's own figure (the
        tokenizer's), or the served spec's ``max_length`` from a server that does not send it."""
        return int(self._max_input_tokens if self._max_input_tokens is not None else self.spec.max_length)

    def _level(self, priority: str | None) -> int:
        """The priority level of a call naming ``priority`` (``None``: this client's own)."""
        return priority_level(self.priority if priority is None else priority)

    def _spans(self, raw: list[bytes], batch_size: int | None) -> list[tuple[int, int]]:
        """How a call's serialized items go in requests: chunks of at most ``batch_size``, the server's
        ``max_batch_size`` and :attr:`max_chunk` items, and at most :attr:`max_chunk_bytes` bytes."""
        most = min(check_batch_size(self.spec.max_batch_size if batch_size is None else batch_size),
                   self.spec.max_batch_size, self.max_chunk or self.spec.max_batch_size)
        return _chunks([len(r) for r in raw], most, self.max_chunk_bytes)

    @staticmethod
    def _stitch(wired: list[bytes | InputError], rows: list[np.ndarray | InputError]) -> Rows:
        """Per-item results in input order: the rows (or server-side errors) of the items sent, the local
        errors of those that were not; every error carries its index in the whole call."""
        sent, out = iter(rows), []
        for i, w in enumerate(wired):
            r = w if isinstance(w, InputError) else next(sent)
            out.append(InputError(i, r.reason) if isinstance(r, InputError) and r.index != i else r)
        return out

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("priority", self.priority), ("retries", self.retries)) if v)
        return f"{type(self).__name__}({self.triton_name!r}, url={self.url!r}{extra})"
