"""The door's served models: found by registry or Triton name in tritonserver's repository (or by an alias,
``zoo serve --alias NAME=MODEL``), one async gRPC client each (:class:`AsyncTritonEmbedder`), made on first use
inside the door's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from zoo.errors import InvalidArgumentError, ZooError

from . import contract
from .client import AsyncTritonEmbedder, triton_name
from .openai_api import ApiError, model_not_found


def public_name(name: str) -> str:
    """The id a served model goes by here: its registry name (a local folder's model: the Triton name)."""
    return contract.registry_name(name)


def parse_aliases(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``NAME=MODEL`` strings (``zoo serve --alias``) as ``{NAME: MODEL}``; :class:`InvalidArgumentError` names a
    malformed one or a name given twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, model = pair.partition("=")
        name, model = name.strip(), model.strip()
        if not sep or not name or not model:
            raise InvalidArgumentError(f"--alias takes NAME=MODEL (e.g. text-embedding-3-small=sentence-transformers/"
                                       f"all-MiniLM-L6-v2), got {pair!r}", "alias")
        if name in out:
            raise InvalidArgumentError(f"--alias names {name!r} twice", "alias")
        try:  # the name must be one a served model could go by (a 503's metrics label is its Triton form)
            triton_name(name)
        except InvalidArgumentError:
            raise InvalidArgumentError(f"--alias {pair}: {name!r} cannot be a model name", "alias") from None
        out[name] = model
    return out


class Catalog:
    """The served models, found by registry or Triton name, or by an alias of ``aliases`` (``{NAME: MODEL}``:
    clients that accept only names they know, such as LiteLLM's and LlamaIndex's, use an OpenAI-looking one); one
    async gRPC client per model, made on first use inside the door's event loop."""

    def __init__(self, url: str, admin_headers: dict[str, str] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.admin_headers = admin_headers  # the model list is an admin API of Triton's (serving.server)
        self.aliases = dict(aliases or {})
        self._models: dict[str, AsyncTritonEmbedder] = {}
        self._client: Any = None

    async def repository(self) -> dict[str, str]:
        """Triton model name → its state (``READY``, ``UNAVAILABLE``, …)."""
        from tritonclient.utils import InferenceServerException

        from .channels import aio_client

        if self._client is None:
            self._client = aio_client(self.url)
        try:
            index = await self._client.get_model_repository_index(as_json=True, headers=self.admin_headers)
        except InferenceServerException:
            raise ApiError(503, "tritonserver is not answering; retry shortly", type="server_error",
                           code="server_not_ready", failure="unavailable") from None
        return {m["name"]: m.get("state", "") for m in index.get("models", [])}

    async def get(self, model: str) -> AsyncTritonEmbedder:
        """The client of a served model (by name or alias); 404 when it is not served, 503 when it cannot be
        reached now."""
        model = self.aliases.get(model, model)
        try:
            name = triton_name(model)
        except InvalidArgumentError:
            raise model_not_found(model) from None
        found = self._models.get(name)
        if found is not None:
            return found
        if name not in await self.repository():
            raise model_not_found(model)
        try:  # reads the spec from the server (a blocking call): off the event loop
            embedder = await asyncio.to_thread(AsyncTritonEmbedder, name, self.url)
        except ZooError:
            raise ApiError(503, f"model `{model}` is not ready; retry shortly", type="server_error",
                           code="model_not_ready", failure="unavailable") from None
        return self._models.setdefault(name, embedder)

    async def close(self) -> None:
        """Close every gRPC channel."""
        for embedder in self._models.values():
            await embedder.close()
        if self._client is not None:
            await self._client.close()
