"""The one core of the Triton clients (:mod:`serving.client`): every decision a request makes, written once and
without I/O.

Design: a *sans-IO* core. Chunking, the order of replicas and failover, the per-item retry of a chunk with a
bad item, error mapping, stitching rows back in input order all live in :class:`_Core` as plain generators
(:data:`Plan`): a plan yields a :class:`Call` ("infer on replica ``url`` with these tensors") and is sent back
the answer, the response or the :class:`InferenceServerException` it raised. An encode call becomes a
:class:`Job`: one plan per chunk plus how to join their values. The sync and the async client are only
drivers: each answers a plan's calls with its own gRPC channel (blocking, or awaited) and runs a job's plans
concurrently (a thread pool, or ``asyncio.gather``), a few lines each.

Why not the other way round, an async core that the sync client runs on a private event loop in a background
thread: that would add a thread hop to every sync call (latency), a thread and a loop to own, stop and
restart after ``fork`` (Ray workers, the demo's threads), and a deadlock to avoid when the sync client is
called from inside a running loop. Generators keep the sync path exactly what it was (the caller's thread,
the thread-safe blocking channels), start nothing that outlives a call, and make "the same code" literal:
both clients run the very same plan objects.

The spec comes from the served model itself (:func:`fetch_config`, a :data:`contract.DESCRIBE` request),
once, when a client is made: both clients do it in their constructor with the blocking channels.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import socket
import threading
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
from zoo.errors import InputError, ModelUnavailableError, ServerError, ZooError, from_wire, is_wire
from zoo.front import EncodeFront, EncodeOptions, check_batch_size, check_items
from zoo.spec import EmbedderSpec, Modality

from . import contract

MAX_CONCURRENT_CHUNKS = 8
# what Triton says while a model is unloaded for a restart, just before the supervisor notices a dead stub, or
# while the server shuts down (its messages start "[request id: …]", so only zoo's own wire errors are excluded)
_UNAVAILABLE_HINTS = ("has no available versions", "is not healthy", "is not ready",
                      "stopped accepting new inference requests")
Rows = list["np.ndarray | InputError"]
REPLICA_COOLDOWN_S = 5.0  # a replica that just failed is tried after the others for this long
T = TypeVar("T")


class Call(NamedTuple):
    """One gRPC ``infer`` a plan asks its driver to make (the tensors are the same classes sync and async:
    ``tritonclient.grpc.aio`` re-exports ``tritonclient.grpc``'s)."""

    url: str
    inputs: list[Any]
    outputs: list[Any]
    params: dict[str, Any]


#: a request's logic without its I/O: yields :class:`Call` s, is sent each one's response (or the
#: :class:`InferenceServerException` it raised), returns its value
Plan = Generator[Call, Any, T]


@dataclass(frozen=True)
class Job(Generic[T]):
    """One encode call, sans IO: a plan per chunk, which the driver runs concurrently (at most
    :data:`MAX_CONCURRENT_CHUNKS` at once), and ``finish``, the call's result from their values in order."""

    parts: list[Plan[Any]]
    finish: Callable[[list[Any]], T]
    label: str  # what a progress bar says


def replica_urls(url: str | Sequence[str]) -> list[str]:
    """The ``host:port`` of every replica ``url`` names: a comma-separated list or a sequence, each host name
    expanded to every address it resolves to (IPv4 and IPv6, in resolver order, duplicates dropped)."""
    parts = [u.strip() for u in (url.split(",") if isinstance(url, str) else url) if u.strip()]
    if not parts:
        raise ServerError("no server URL given")
    out: list[str] = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ServerError(f"server URL {part!r} is not host:port")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:  # a name: one replica per address it resolves to
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except socket.gaierror as err:
                raise ServerError(f"cannot resolve {host!r}: {err.strerror}") from None
            addresses = list(dict.fromkeys(info[4][0] for info in infos))
        out += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
    return list(dict.fromkeys(out))


class Replicas:
    """Round-robin order over replica URLs, with the ones that recently failed moved to the back."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._turn = itertools.count()
        self._down_until = dict.fromkeys(urls, 0.0)
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """Every replica, in the order to try them for the next request."""
        with self._lock:
            start = next(self._turn) % len(self.urls)
        rotated = self.urls[start:] + self.urls[:start]
        now = time.monotonic()
        return sorted(rotated, key=lambda u: self._down_until[u] > now)  # stable: healthy ones first, in turn

    def failed(self, url: str) -> None:
        """Note that ``url`` just failed as unavailable."""
        self._down_until[url] = time.monotonic() + REPLICA_COOLDOWN_S


def triton_name(name: str) -> str:
    """Triton model name for a registry name, or the name itself when it already is one."""
    return contract.model_name(name) if "/" in name else name


def fetch_config(client: grpcclient.InferenceServerClient, triton_name: str) -> tuple[EmbedderSpec, str, str]:
    """The spec, the weights' fingerprint and the runtime of a served model, asked of the model itself (a
    :data:`contract.DESCRIBE` request: Triton's model-config API is an admin API, closed without its secret)."""
    try:
        first = client.get_model_metadata(triton_name, as_json=True)["inputs"][0]["name"]
        tensor = grpcclient.InferInput(first, [1, 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array([[b""]], dtype=object))
        result = client.infer(triton_name, [tensor], outputs=[grpcclient.InferRequestedOutput(contract.SPEC)],
                              parameters={contract.DESCRIBE: True})
        data = json.loads(bytes(result.as_numpy(contract.SPEC).reshape(-1)[0]))
    except InferenceServerException as err:
        raise ServerError(f"cannot get model {triton_name!r} from the server: {err.message()}") from None
    return EmbedderSpec.from_dict(data["spec"]), data.get("weights", ""), data.get("runtime") or "torch"


def fetch_spec(client: grpcclient.InferenceServerClient, triton_name: str) -> EmbedderSpec:
    """The spec the exporter stored in the served model's config."""
    return fetch_config(client, triton_name)[0]


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _remote_error(err: InferenceServerException, offset: int) -> ZooError:
    """The `zoo` error a server error encodes, item index shifted to the whole call; a replica that is gone
    or a model that is not ready gives :class:`ModelUnavailableError`."""
    text = err.message() or str(err)
    if not is_wire(text) and (err.status() == "StatusCode.UNAVAILABLE" or any(h in text for h in _UNAVAILABLE_HINTS)):
        return ModelUnavailableError(f"model not available right now (retry later): {text}")
    zerr = from_wire(text)
    return InputError(zerr.index + offset, zerr.reason) if isinstance(zerr, InputError) else zerr


def _raise_remote(err: InferenceServerException, offset: int) -> None:
    """Re-raise a server error as the `zoo` error it encodes (:func:`_remote_error`)."""
    raise _remote_error(err, offset) from None


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
    call as a :class:`Job` of :data:`Plan` s (see the module docstring). Subclasses drive the jobs."""

    def __init__(self, name: str, url: str | Sequence[str] = "127.0.0.1:8001") -> None:
        self.url = url if isinstance(url, str) else ",".join(url)
        self.replicas = Replicas(replica_urls(url))
        self.triton_name = triton_name(name)
        self.device = f"triton://{self.url}"
        # one blocking channel per replica (a single keep-alive channel would pin every request to one pod):
        # the spec look-up, and the sync client's requests
        self._channels = {u: grpcclient.InferenceServerClient(u) for u in self.replicas.urls}
        reasons = []
        for u in self.replicas.urls:  # the spec from the first replica that answers
            try:
                self.spec, self.weights_fingerprint, self.runtime = fetch_config(self._channels[u], self.triton_name)
                break
            except (InferenceServerException, ServerError) as err:
                reasons.append(f"{u}: {err.message() if isinstance(err, InferenceServerException) else err}")
        else:
            raise ServerError(f"cannot reach tritonserver at {self.url}: {'; '.join(reasons)}")

    def wire(self, inputs: Sequence[Any], modality: Modality, allow_paths: bool = True) -> list[bytes]:
        """Check and serialize every item; raises the first bad item's :class:`InputError`.
        ``allow_paths=False`` when the items come from someone else (a gateway): only data is accepted."""
        check_items(inputs)
        return [contract.encode_item(modality, x, i, allow_paths) for i, x in enumerate(inputs)]

    def wire_per_item(self, inputs: Sequence[Any], modality: Modality) -> list[bytes | InputError]:
        """Check and serialize every item, a bad one becoming its :class:`InputError` in place."""
        check_items(inputs)
        out: list[bytes | InputError] = []
        for i, x in enumerate(inputs):
            try:
                out.append(contract.encode_item(modality, x, i))
            except InputError as err:
                out.append(err)
        return out

    # ---- the jobs: each public method of both clients is one of these, driven -----------------------
    def _encode_job(self, inputs: Sequence[Any], modality: Modality | str, batch_size: int | None,
                    controls: dict[str, Any]) -> Job[Any]:
        """``encode()``: everything checked and serialized now (a bad call fails before anything is sent)."""
        opts, mod = self._call(modality, **controls)
        job = self._wire_job(self.wire(inputs, mod), mod, opts, batch_size, tokens=False)
        return Job(job.parts, lambda parts: job.finish(parts)[0], job.label)

    def _wire_job(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, batch_size: int | None,
                  tokens: bool) -> Job[tuple[Any, np.ndarray | None]]:
        """Items already serialized: the rows in order and, with ``tokens``, the tokens read per item."""
        spans = _chunks(len(raw), self._chunk_size(batch_size))

        def finish(parts: list[Any]) -> tuple[Any, np.ndarray | None]:
            counts = np.concatenate([p[1] for p in parts]) if tokens else None
            return kinds.concat([p[0] for p in parts], opts.output), counts

        return Job([self._infer(raw[a:b], modality, opts, a, tokens) for a, b in spans], finish, modality.value)

    def _per_item_job(self, inputs: Sequence[Any], modality: Modality | str, batch_size: int | None,
                      controls: dict[str, Any]) -> Job[Rows]:
        """``encode_per_item()``: the good items sent, the bad ones keeping their errors, stitched in order."""
        opts, mod = self._call(modality, **controls)
        wired = self.wire_per_item(inputs, mod)  # looked up on the instance: tests swap it for a hostile one
        good = [w for w in wired if not isinstance(w, InputError)]
        spans = _chunks(len(good), self._chunk_size(batch_size))
        return Job([self._infer_per_item(good[a:b], mod, opts) for a, b in spans],
                   lambda parts: self._stitch(wired, [r for part in parts for r in part]), mod.value)

    # ---- the plans ------------------------------------------------------------------------------------
    def _infer(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, offset: int,
               tokens: bool = False) -> Plan[tuple[Any, np.ndarray | None]]:
        """One chunk, tried on each replica in turn until one answers: its rows and, with ``tokens``, the
        tokens read per item. A server error other than "unavailable" is raised at once, item index shifted
        by ``offset`` (the chunk's start in the call)."""
        tensor = grpcclient.InferInput(contract.INPUTS[modality], [len(raw), 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(raw, dtype=object).reshape(-1, 1))
        names = contract.KIND_OUTPUTS[opts.output]
        outputs = [grpcclient.InferRequestedOutput(n) for n in names + ((contract.TOKENS,) if tokens else ())]
        params = contract.request_parameters(opts)
        unavailable = None
        for url in self.replicas.order():
            answer = yield Call(url, [tensor], outputs, params)
            if isinstance(answer, InferenceServerException):
                unavailable = self._unavailable(url, answer, offset)
                continue
            counts = answer.as_numpy(contract.TOKENS).reshape(-1) if tokens else None
            rows = contract.result_from_wire({n: answer.as_numpy(n) for n in names}, opts, self.spec.vocab_size)
            return rows, counts
        raise unavailable  # every replica said so

    def _infer_per_item(self, raw: list[bytes], modality: Modality, opts: EncodeOptions) -> Plan[Rows]:
        """One chunk of a per-item call: an item the server refuses keeps its error, the rest are sent again."""
        plan = _PerItem(len(raw), opts.output)
        while sent := plan.pending(raw):
            try:
                plan.feed((yield from self._infer(sent, modality, opts, 0))[0])
            except InputError as err:
                plan.feed(err)
        return plan.results

    def _unavailable(self, url: str, err: InferenceServerException, offset: int) -> ModelUnavailableError:
        """The error of a request to replica ``url``: raised as its `zoo` error, unless it says the replica
        is unavailable, which is noted and returned (the caller tries the next replica)."""
        zerr = _remote_error(err, offset)
        if not isinstance(zerr, ModelUnavailableError):
            raise zerr from None
        self.replicas.failed(url)
        return zerr

    def _chunk_size(self, batch_size: int | None) -> int:
        return min(check_batch_size(self.spec.max_batch_size if batch_size is None else batch_size),
                   self.spec.max_batch_size)

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
        return f"{type(self).__name__}({self.triton_name!r}, url={self.url!r})"
