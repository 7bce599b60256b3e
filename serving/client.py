"""Clients with in-process `zoo`'s ``encode()`` / ``encode_per_item()`` signatures, over Triton gRPC.

Both clients build on :class:`zoo.base.EncodeFront`, so the validation of modality and output controls and
its errors are the same code as in-process. Items are checked and serialized on the caller's side with
:func:`zoo.inputs.to_wire` (a bad item fails before anything is sent; ``encode_per_item`` keeps it as its
error and still embeds the others). Inputs are split into chunks of the server's ``max_batch_size`` (or
``batch_size``), sent concurrently; rows come back in order. Server-side failures raise the same `zoo`
error classes, with item indexes counted over the whole call; a model that is being reloaded raises
:class:`zoo.errors.ModelUnavailableError` (retrying later works).

Replicas: ``url`` may name several servers (``"host1:8001,host2:8001"``, a list, or one DNS name that
resolves to several addresses, as a Kubernetes headless Service does). Requests go round-robin over them,
one channel each (a single keep-alive channel would pin every request to one pod), and a request that fails
as unavailable (connection refused or lost, model not ready) is sent again to the next replica; a replica
that failed is tried last for :data:`REPLICA_COOLDOWN_S`. Embedding is idempotent, so a retry is safe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

try:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
except ImportError:  # without the 'serve' extra: an error that names it
    from zoo.extras import require

    require("serve", "the Triton client (serving.client)")
    raise

from zoo import kinds
from zoo.base import EncodeFront, EncodeOptions, check_batch_size, check_items
from zoo.errors import InputError, ModelUnavailableError, ServerError, ZooError, from_wire, is_wire
from zoo.spec import EmbedderSpec, Modality

from . import contract

MAX_CONCURRENT_CHUNKS = 8
# what Triton says while a model is unloaded for a restart, just before the supervisor notices a dead stub, or
# while the server shuts down (its messages start "[request id: …]", so only zoo's own wire errors are excluded)
_UNAVAILABLE_HINTS = ("has no available versions", "is not healthy", "is not ready",
                      "stopped accepting new inference requests")
Rows = list["np.ndarray | InputError"]
REPLICA_COOLDOWN_S = 5.0  # a replica that just failed is tried after the others for this long


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

    def __init__(self, n: int) -> None:
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
        for position, row in zip(self.alive, kinds.items_of(answer)):
            self.results[position] = row
        self.alive = []


class _Remote(EncodeFront):
    """What the sync and async clients share: the spec from the server, checks, request building."""

    def __init__(self, name: str, url: str | Sequence[str] = "127.0.0.1:8001") -> None:
        self.url = url if isinstance(url, str) else ",".join(url)
        self.replicas = Replicas(replica_urls(url))
        self.triton_name = triton_name(name)
        self.device = f"triton://{self.url}"
        # one channel per replica: spec look-up, and the sync client's requests
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

    def _request(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, infer_input):
        tensor = infer_input(contract.INPUTS[modality], [len(raw), 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(raw, dtype=object).reshape(-1, 1))
        return [tensor], contract.request_parameters(opts)

    def _result(self, response, opts: EncodeOptions) -> Any:
        """A response's tensors as what in-process ``encode()`` returns for its items."""
        names = contract.KIND_OUTPUTS[opts.output]
        return contract.result_from_wire({n: response.as_numpy(n) for n in names}, opts, self.spec.vocab_size)

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


class TritonEmbedder(_Remote):
    """``encode()`` against a model served by tritonserver over gRPC (thread-safe)."""

    def _infer(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, offset: int) -> Any:
        inputs, params = self._request(raw, modality, opts, grpcclient.InferInput)
        outputs = [grpcclient.InferRequestedOutput(n) for n in contract.KIND_OUTPUTS[opts.output]]
        unavailable = None
        for url in self.replicas.order():
            try:
                result = self._channels[url].infer(self.triton_name, inputs, outputs=outputs, parameters=params)
            except InferenceServerException as err:
                unavailable = self._unavailable(url, err, offset)
                continue
            return self._result(result, opts)
        raise unavailable

    def _infer_per_item(self, raw: list[bytes], modality: Modality, opts: EncodeOptions) -> Rows:
        plan = _PerItem(len(raw))
        while sent := plan.pending(raw):
            try:
                plan.feed(self._infer(sent, modality, opts, 0))
            except InputError as err:
                plan.feed(err)
        return plan.results

    def _map_chunks(self, fn, raw: list, batch_size: int | None, show_progress: bool, label: str) -> list:
        spans = _chunks(len(raw), self._chunk_size(batch_size))
        if not spans:
            return []
        with ThreadPoolExecutor(min(MAX_CONCURRENT_CHUNKS, len(spans))) as pool:
            futures = [pool.submit(fn, raw[a:b], a) for a, b in spans]
            if show_progress:
                from tqdm.auto import tqdm

                for _ in tqdm(as_completed(futures), total=len(futures), desc=f"encode {label}", unit="chunk"):
                    pass
            return [f.result() for f in futures]

    def encode(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        show_progress: bool = False, **controls: Any,
    ) -> Any:
        """Same arguments (``controls``: the output controls) and result as :meth:`zoo.base.Embedder.encode`,
        embedded on the server."""
        opts, mod = self._call(modality, **controls)
        raw = self.wire(inputs, mod)
        parts = self._map_chunks(lambda chunk, a: self._infer(chunk, mod, opts, a), raw, batch_size,
                                 show_progress, mod.value)
        return kinds.concat(parts)

    def encode_per_item(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None, **controls: Any,
    ) -> Rows:
        """Like :meth:`encode`, but each bad item becomes its :class:`InputError` in the result list (whether
        it failed the local check or the server's) and every good item still gets its row."""
        opts, mod = self._call(modality, **controls)
        wired = self.wire_per_item(inputs, mod)
        good = [w for w in wired if not isinstance(w, InputError)]
        parts = self._map_chunks(lambda chunk, _a: self._infer_per_item(chunk, mod, opts), good, batch_size, False,
                                 mod.value)
        return self._stitch(wired, [r for part in parts for r in part])

    def close(self) -> None:
        """Close the gRPC channels."""
        for channel in self._channels.values():
            channel.close()


class AsyncTritonEmbedder(_Remote):
    """asyncio variant: ``await encode(...)`` / ``await encode_per_item(...)`` with the same arguments."""

    def __init__(self, name: str, url: str | Sequence[str] = "127.0.0.1:8001") -> None:
        super().__init__(name, url)
        self._clients: dict[str, Any] = {}  # replica URL → its asyncio channel, made inside the running loop

    async def _infer(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, offset: int,
                     tokens: bool = False) -> tuple[Any, np.ndarray | None]:
        import tritonclient.grpc.aio as aioclient

        inputs, params = self._request(raw, modality, opts, aioclient.InferInput)
        names = contract.KIND_OUTPUTS[opts.output] + ((contract.TOKENS,) if tokens else ())
        outputs = [aioclient.InferRequestedOutput(name) for name in names]
        unavailable = None
        for url in self.replicas.order():
            if url not in self._clients:
                self._clients[url] = aioclient.InferenceServerClient(url)
            try:
                result = await self._clients[url].infer(self.triton_name, inputs, outputs=outputs,
                                                        parameters=params)
                break
            except InferenceServerException as err:
                unavailable = self._unavailable(url, err, offset)
        else:
            raise unavailable
        counts = result.as_numpy(contract.TOKENS).reshape(-1) if tokens else None
        return self._result(result, opts), counts

    async def _infer_per_item(self, raw: list[bytes], modality: Modality, opts: EncodeOptions) -> Rows:
        plan = _PerItem(len(raw))
        while sent := plan.pending(raw):
            try:
                plan.feed((await self._infer(sent, modality, opts, 0))[0])
            except InputError as err:
                plan.feed(err)
        return plan.results

    async def _map_chunks(self, fn, raw: list, batch_size: int | None) -> list:
        sem = asyncio.Semaphore(MAX_CONCURRENT_CHUNKS)

        async def run(a: int, b: int):
            async with sem:
                return await fn(raw[a:b], a)

        return await asyncio.gather(*(run(a, b) for a, b in _chunks(len(raw), self._chunk_size(batch_size))))

    async def encode(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        show_progress: bool = False, **controls: Any,
    ) -> Any:
        """Same as :meth:`zoo.base.Embedder.encode`, awaited (``show_progress`` is accepted and ignored)."""
        opts, mod = self._call(modality, **controls)
        return (await self.infer_wire(self.wire(inputs, mod), mod, opts, batch_size=batch_size))[0]

    async def infer_wire(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, *,
                         batch_size: int | None = None, tokens: bool = False) -> tuple[Any, np.ndarray | None]:
        """Embed items already serialized by :meth:`wire` with options from :meth:`options`: the rows in
        order and, with ``tokens``, the text tokens the model read per item (the server's ``TOKENS``).
        A server-side :class:`InputError` names the item's index in ``raw``."""
        parts = await self._map_chunks(lambda chunk, a: self._infer(chunk, modality, opts, a, tokens), raw,
                                       batch_size)
        rows = kinds.concat([p[0] for p in parts])
        return rows, (np.concatenate([p[1] for p in parts]) if tokens else None)

    async def encode_per_item(
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None, **controls: Any,
    ) -> Rows:
        """Same as :meth:`TritonEmbedder.encode_per_item`, awaited."""
        opts, mod = self._call(modality, **controls)
        wired = self.wire_per_item(inputs, mod)
        good = [w for w in wired if not isinstance(w, InputError)]
        parts = await self._map_chunks(lambda chunk, _a: self._infer_per_item(chunk, mod, opts), good, batch_size)
        return self._stitch(wired, [r for part in parts for r in part])

    async def close(self) -> None:
        """Close the gRPC channels."""
        for client in self._clients.values():
            await client.close()
        for channel in self._channels.values():
            channel.close()
