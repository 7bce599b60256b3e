"""Clients with in-process `zoo`'s ``encode()`` signature, over Triton gRPC.

``TritonEmbedder`` subclasses :class:`zoo.base.Embedder`, so argument validation and its errors are the
same code as in-process; only decoding (to wire bytes) and embedding (remote) differ. Inputs are split
into chunks of the server's ``max_batch_size`` (or ``batch_size``) and the chunks are sent concurrently.
Server-side failures raise the same `zoo` error classes, with item indexes counted over the whole call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from zoo.base import Embedder, EncodeOptions, check_batch_size
from zoo.errors import InputError, ServerError, from_wire
from zoo.spec import EmbedderSpec, Modality

from . import contract

MAX_CONCURRENT_CHUNKS = 8


def triton_name(name: str) -> str:
    """Triton model name for a registry name, or the name itself when it already is one."""
    return contract.model_name(name) if "/" in name else name


def fetch_spec(client: grpcclient.InferenceServerClient, triton_name: str) -> EmbedderSpec:
    """The spec the exporter stored in the served model's config."""
    try:
        config = client.get_model_config(triton_name, as_json=True)["config"]
    except InferenceServerException as err:
        raise ServerError(f"cannot get model {triton_name!r} from the server: {err.message()}") from None
    data = json.loads(config["parameters"][contract.CONFIG_SPEC_KEY]["string_value"])
    data["modalities"] = tuple(data["modalities"])
    data["matryoshka_dims"] = tuple(data["matryoshka_dims"])
    return EmbedderSpec(**data)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _raise_remote(err: InferenceServerException, offset: int) -> None:
    zerr = from_wire(err.message() or str(err))
    if isinstance(zerr, InputError):
        raise InputError(zerr.index + offset, zerr.reason) from None
    raise zerr from None


class _Remote(Embedder):
    """What the sync and async clients share: spec from the server, wire encoding, request building."""

    def __init__(self, name: str, url: str = "127.0.0.1:8001") -> None:
        self.url = url
        self.triton_name = triton_name(name)
        self.device = f"triton://{url}"
        self._grpc = grpcclient.InferenceServerClient(url)  # spec look-up; the sync client also infers on it
        try:
            self.spec = fetch_spec(self._grpc, self.triton_name)
        except InferenceServerException as err:  # unreachable server
            raise ServerError(f"cannot reach tritonserver at {url}: {err.message()}") from None

    def _embed(self, batch: list[Any], modality: Modality, prompt: str | None) -> np.ndarray:
        raise NotImplementedError("remote embedders embed on the server")

    def _decode_item(self, item: Any, index: int, modality: Modality) -> bytes:
        """Remote embedders send wire bytes; decoding happens on the server."""
        return contract.encode_item(modality, item, index)

    def _request(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, infer_input):
        tensor = infer_input(contract.INPUTS[modality], [len(raw), 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(raw, dtype=object).reshape(-1, 1))
        params = contract.request_parameters(
            normalize=opts.normalize, dimensions=opts.dimensions, precision=opts.precision,
            prompt_name=opts.prompt_name,
        )
        return [tensor], params

    def _chunk_size(self, batch_size: int | None) -> int:
        return min(check_batch_size(self.spec.max_batch_size if batch_size is None else batch_size),
                   self.spec.max_batch_size)


class TritonEmbedder(_Remote):
    """``encode()`` against a model served by tritonserver over gRPC (thread-safe)."""

    def _infer(self, raw: list[bytes], modality: Modality, opts: EncodeOptions, offset: int) -> np.ndarray:
        inputs, params = self._request(raw, modality, opts, grpcclient.InferInput)
        try:
            result = self._grpc.infer(
                self.triton_name, inputs, outputs=[grpcclient.InferRequestedOutput(contract.OUTPUT)],
                parameters=params,
            )
        except InferenceServerException as err:
            _raise_remote(err, offset)
        return contract.from_wire(result.as_numpy(contract.OUTPUT), opts.precision)

    def embed_decoded(
        self, items: list[bytes], modality: Modality, opts: EncodeOptions, *,
        batch_size: int | None = None, show_progress: bool = False,
    ) -> np.ndarray:
        """Send chunks concurrently and stitch the rows back in order."""
        spans = _chunks(len(items), self._chunk_size(batch_size))
        with ThreadPoolExecutor(min(MAX_CONCURRENT_CHUNKS, len(spans))) as pool:
            futures = [pool.submit(self._infer, items[a:b], modality, opts, a) for a, b in spans]
            if show_progress:
                from tqdm.auto import tqdm

                done = as_completed(futures)
                for _ in tqdm(done, total=len(futures), desc=f"encode {modality.value}", unit="chunk"):
                    pass
            parts = [f.result() for f in futures]
        return np.concatenate(parts)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._grpc.close()


class AsyncTritonEmbedder(_Remote):
    """asyncio variant: ``await encode(...)`` with the same arguments and results."""

    def __init__(self, name: str, url: str = "127.0.0.1:8001") -> None:
        super().__init__(name, url)
        self._client = None

    async def _infer(self, raw, modality, opts, offset) -> np.ndarray:
        import tritonclient.grpc.aio as aioclient

        if self._client is None:  # created inside the running loop
            self._client = aioclient.InferenceServerClient(self.url)
        inputs, params = self._request(raw, modality, opts, aioclient.InferInput)
        try:
            result = await self._client.infer(
                self.triton_name, inputs, outputs=[aioclient.InferRequestedOutput(contract.OUTPUT)],
                parameters=params,
            )
        except InferenceServerException as err:
            _raise_remote(err, offset)
        return contract.from_wire(result.as_numpy(contract.OUTPUT), opts.precision)

    async def encode(  # type: ignore[override]
        self, inputs: Sequence[Any], modality: Modality | str, *, batch_size: int | None = None,
        normalize: bool = True, dimensions: int | None = None, precision: str = "float32",
        prompt_name: str | None = None, show_progress: bool = False,
    ) -> np.ndarray:
        """Same as :meth:`zoo.base.Embedder.encode`, awaited."""
        opts, mod = self._call(modality, normalize, dimensions, precision, prompt_name)
        raw = self.decode(inputs, mod)
        spans = _chunks(len(raw), self._chunk_size(batch_size))
        sem = asyncio.Semaphore(MAX_CONCURRENT_CHUNKS)

        async def run(a: int, b: int) -> np.ndarray:
            async with sem:
                return await self._infer(raw[a:b], mod, opts, a)

        return np.concatenate(await asyncio.gather(*(run(a, b) for a, b in spans)))

    async def close(self) -> None:
        """Close the gRPC channels."""
        if self._client is not None:
            await self._client.close()
        self._grpc.close()
