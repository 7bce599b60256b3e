"""What a client learns of a served model before its first request: the spec, the weights' fingerprint, the
runtime and the window (:func:`fetch_config`), asked of the model itself."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from zoo.errors import OverloadedError, ServerError
from zoo.spec import EmbedderSpec

from . import contract
from .client_routing import _remote_error


class ServedConfig(tuple):
    """:func:`fetch_config`'s ``(spec, weights, runtime)``, with the backend's ``max_input_tokens`` (the tokenizer's
    limit, which the spec may not say) an attribute: None from a server older than it."""

    max_input_tokens: int | None = None


def fetch_config(client: grpcclient.InferenceServerClient, triton_name: str, priority: int = 0) -> ServedConfig:
    """The spec, the weights' fingerprint and the runtime of a served model, asked of the model itself (a
    :data:`contract.DESCRIBE` request: Triton's model-config API is an admin API, closed without its secret),
    at Triton priority level ``priority`` (it queues like any request: an interactive client's must not wait
    behind a bulk job's)."""
    try:
        first = client.get_model_metadata(triton_name, as_json=True)["inputs"][0]["name"]
        tensor = grpcclient.InferInput(first, [1, 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array([[b""]], dtype=object))
        result = client.infer(triton_name, [tensor], outputs=[grpcclient.InferRequestedOutput(contract.SPEC)],
                              parameters={contract.DESCRIBE: True}, priority=priority)
        data = json.loads(bytes(result.as_numpy(contract.SPEC).reshape(-1)[0]))
    except InferenceServerException as err:
        if isinstance(zerr := _remote_error(err, 0), OverloadedError):  # queued like any request: it may be refused
            raise zerr from None
        raise ServerError(f"cannot get model {triton_name!r} from the server: {err.message()}") from None
    config, limit = ServedConfig((EmbedderSpec.from_dict(data["spec"]), data.get("weights", ""),
                                  data.get("runtime") or "torch")), data.get("max_input_tokens")
    config.max_input_tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    return config


def fetch_spec(client: grpcclient.InferenceServerClient, triton_name: str) -> EmbedderSpec:
    """The spec the exporter stored in the served model's config."""
    return fetch_config(client, triton_name)[0]
