"""Where the demo's embeddings come from: the Triton client (default) or in-process `zoo`."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from zoo import kinds
from zoo.base import Embedder
from zoo.spec import EmbedderSpec, Modality


class Backend(Protocol):
    """What the app needs: which models exist, and an embedder for one of them."""

    kind: str

    def models(self) -> list[str]:
        """Names of the models this backend can use right now."""

    def spec(self, name: str) -> EmbedderSpec:
        """The spec of ``name``, without loading the model."""

    def embedder(self, name: str) -> Embedder:
        """An object with zoo's ``encode()`` and ``spec`` for ``name``."""


class LocalBackend:
    """In-process `zoo`: registered models whose weights are available offline."""

    kind = "local"

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._cache: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def models(self) -> list[str]:
        """Registered models with weights on this machine."""
        import zoo
        from zoo.weights import available_offline

        return [n for n in zoo.list_models() if available_offline(zoo.get_spec(n))]

    def spec(self, name: str) -> EmbedderSpec:
        """From the registry (or a local folder's files); nothing is loaded."""
        import zoo

        return zoo.get_spec(name)

    def embedder(self, name: str) -> Embedder:
        """Load once, then reuse."""
        import zoo

        with self._lock:
            if name not in self._cache:
                self._cache[name] = zoo.create(name, device=self.device)
            return self._cache[name]


class TritonBackend:
    """Models served by a tritonserver, through :class:`serving.client.TritonEmbedder`."""

    kind = "triton"

    def __init__(self, url: str = "127.0.0.1:8001", admin_headers: dict[str, str] | None = None) -> None:
        from tritonclient.utils import InferenceServerException

        from serving.channels import grpc_client
        from zoo.errors import ServerError

        self.url = url
        self.admin_headers = admin_headers  # the model list is an admin API of Triton's (serving.server)
        self._client = grpc_client(url)
        self._cache: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        try:
            ready = self._client.is_server_ready()
        except InferenceServerException:
            ready = False
        if not ready:  # say so now, not as a gRPC traceback on the first search
            raise ServerError(f"no ready tritonserver at {url}: start one with `zoo serve`, pass --url, or use "
                              "--backend local to embed in-process")

    def models(self) -> list[str]:
        """Registry names of the READY models on the server (one client each, kept for later searches)."""
        index = self._client.get_model_repository_index(as_json=True, headers=self.admin_headers).get("models", [])
        return [self._remote(m["name"]).spec.name for m in index if m.get("state") == "READY"]

    def _remote(self, name: str) -> Embedder:
        from serving.client import TritonEmbedder, triton_name

        key = triton_name(name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = TritonEmbedder(key, self.url)
            return self._cache[key]

    def spec(self, name: str) -> EmbedderSpec:
        """As stored in the served model's config."""
        return self.embedder(name).spec

    def embedder(self, name: str) -> Embedder:
        """The client of the served model whose spec is ``name`` (a registry name or a served folder)."""
        served_folder = next((r for r in list(self._cache.values()) if r.spec.name == name), None)
        return served_folder or self._remote(name)


def searchable(spec: EmbedderSpec) -> bool:
    """Whether a model can index the corpus: it embeds items on their own (a cross-encoder reads pairs, so it
    only reranks)."""
    return not kinds.get(spec.output).pairs


def supporting(backend: Backend, modalities: tuple[Modality, ...]) -> list[str]:
    """Models of ``backend`` that embed every one of ``modalities`` into a corpus index (see :func:`searchable`)."""
    return [name for name in backend.models()
            if searchable(spec := backend.spec(name)) and all(spec.supports(m) for m in modalities)]


def full_vectors(embedder: Embedder, inputs: list, modality: str) -> np.ndarray:
    """Full-width normalized float32 vectors (the index applies dimensions/precision itself)."""
    return embedder.encode(inputs, modality, normalize=True, precision="float32")


def kind_outputs(embedder: Embedder, inputs: list, modality: str, kind: str, query: bool = False):
    """Full-width float32 output of one ``kind`` (normalized as the kind is by default: vectors normalized,
    sparse weights as the model gives them); ``query`` encodes the inputs of a kind whose result depends on the
    side (:attr:`zoo.kinds.OutputKind.sided`: multi-vector, sparse, FDE) as queries, with the prompt named
    ``query`` when the model has one; dense vectors use the model's default prompt on both sides."""
    sided = query and kinds.get(kind).sided and kinds.QUERY in embedder.spec.prompts
    return embedder.encode(inputs, modality, output=kind, precision="float32",
                           prompt_name=kinds.QUERY if sided else None)
