"""The serving contract: the one place tensor names, wire dtypes, request parameters and the model-name
rule are written. The exporter, the python-backend model, the clients and the README all read it.

Per model (see ``config.pbtxt``):

- one ``BYTES`` input per modality the model embeds, shape ``[batch, 1]``, all optional (a request sends
  exactly one): ``TEXT`` (UTF-8), ``IMAGE`` (an encoded image file), ``AUDIO`` (an encoded audio file),
  ``INTERLEAVED`` (UTF-8 JSON: a list of parts ``{"text": "..."}`` or ``{"image": "data:image/...;base64,..."}``),
  ``VIDEO`` (an encoded video file; frames a client holds in memory travel as lossless FFV1 in Matroska);
- output ``EMBEDDING``, shape ``[batch, d]``. ``config.pbtxt`` declares ``TYPE_FP32`` (the default
  precision); the python backend returns the dtype of the requested ``precision`` (table below), which
  Triton passes through and clients read from the response's ``datatype``;
- the other output kinds (request parameter ``output``, see :mod:`zoo.kinds`), one encoding each:

  ============  =========================================================================================
  output        tensors of one request of ``batch`` items
  ============  =========================================================================================
  dense, fde    ``EMBEDDING [batch, d]``
  multivector   ``EMBEDDING [total, d]``: every item's vectors, item after item; ``LENGTHS [batch, 1]``
                ``INT32``: vectors per item (``total`` is their sum)
  sparse        ``INDICES [total, 1]`` ``INT32`` vocabulary ids and ``VALUES [total, 1]`` ``FP32`` weights, item
                after item, ids ascending within an item; ``LENGTHS [batch, 1]``: terms per item
  ============  =========================================================================================

- output ``TOKENS``, shape ``[batch, 1]`` ``INT32``: the text tokens the model read per item (image and audio
  content counts 0), computed only when the request names it among its outputs;
- request parameters ``dimensions`` (int), ``normalize`` (bool), ``precision`` (str), ``prompt_name``
  (str), ``output`` (str), ``max_vectors`` (int), ``top_k`` (int), with the same meaning and defaults as
  ``encode()``; any other parameter is refused.
- output ``SPEC``, shape ``[batch, 1]`` ``BYTES``: a request with the parameter ``zoo_describe`` true (and any
  one input element, which is not decoded) is answered with the served model's description, UTF-8 JSON
  ``{"spec": …, "weights": …, "runtime": …}`` (:func:`description`); clients learn the spec this way, since
  Triton's model-config API is an admin API that needs the server's secret (see :mod:`serving.server`).

Model names: a registry name maps to a Triton model name by replacing ``/`` with ``--``
(``sentence-transformers/all-MiniLM-L6-v2`` → ``sentence-transformers--all-MiniLM-L6-v2``) and back.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from zoo import inputs, kinds
from zoo import postprocess as pp
from zoo.base import EncodeOptions
from zoo.errors import InputError, InvalidArgumentError, choices
from zoo.spec import Modality

INPUTS: dict[Modality, str] = {
    Modality.TEXT: "TEXT",
    Modality.IMAGE: "IMAGE",
    Modality.AUDIO: "AUDIO",
    Modality.INTERLEAVED: "INTERLEAVED",
    Modality.VIDEO: "VIDEO",
}
MODALITY_OF_INPUT = {v: k for k, v in INPUTS.items()}
INPUT_DATATYPE = "BYTES"  # KServe v2 name; TYPE_STRING in config.pbtxt
OUTPUT = "EMBEDDING"
#: optional second output, ``[batch, 1]`` INT32: the text tokens each item's model read (``count_tokens``);
#: computed only when a request asks for it (the OpenAI door reports it as usage)
TOKENS = "TOKENS"
TOKENS_DATATYPE = "INT32"
LENGTHS = "LENGTHS"  # [batch, 1] INT32: vectors (multivector) or terms (sparse) per item
INDICES = "INDICES"  # [total, 1] INT32: sparse vocabulary ids
VALUES = "VALUES"  # [total, 1] FP32: sparse weights
#: output kind → the tensors that carry it (what a client asks for)
KIND_OUTPUTS: dict[str, tuple[str, ...]] = {
    "dense": (OUTPUT,), "fde": (OUTPUT,), "multivector": (OUTPUT, LENGTHS), "sparse": (INDICES, VALUES, LENGTHS)}
SPEC = "SPEC"  # [batch, 1] BYTES: the served model's description (answer to a DESCRIBE request)
DESCRIBE = "zoo_describe"  # request parameter (bool): answer with SPEC, embed nothing
#: the outputs besides EMBEDDING, in the order config.pbtxt declares them, with their datatypes
EXTRA_OUTPUTS: dict[str, str] = {TOKENS: TOKENS_DATATYPE, LENGTHS: "INT32", INDICES: "INT32", VALUES: "FP32",
                                 SPEC: INPUT_DATATYPE}


def declared_outputs(kinds_given: tuple[str, ...]) -> dict[str, str]:
    """The outputs besides EMBEDDING a model giving ``kinds_given`` declares: TOKENS, and the tensors of its
    kinds (see :data:`KIND_OUTPUTS`), each with its datatype."""
    used = {name for kind in kinds_given for name in KIND_OUTPUTS[kind]} | {TOKENS, SPEC}
    return {name: dtype for name, dtype in EXTRA_OUTPUTS.items() if name in used}
DECLARED_OUTPUT_PRECISION = "float32"

#: precision → KServe v2 datatype of the EMBEDDING tensor on the wire (float8 travels as its bits)
WIRE_DATATYPES: dict[str, str] = {
    "float32": "FP32",
    "float16": "FP16",
    "float8": "UINT8",
    "int8": "INT8",
    "uint8": "UINT8",
    "binary": "INT8",
    "ubinary": "UINT8",
}
assert set(WIRE_DATATYPES) == set(pp.PRECISIONS), "every precision needs a wire datatype"

#: request parameter → type it is coerced to (the defaults are encode()'s own)
PARAMETERS: dict[str, type] = {"dimensions": int, "normalize": bool, "precision": str, "prompt_name": str,
                               "output": str, "max_vectors": int, "top_k": int}
SEPARATOR = "--"  # replaces "/" in Triton model names
CONFIG_MODEL_KEY = "zoo_model"  # config.pbtxt parameter: registry name or folder to load
CONFIG_SPEC_KEY = "zoo_spec"  # config.pbtxt parameter: the spec as JSON, for clients
CONFIG_WEIGHTS_KEY = "zoo_weights"  # config.pbtxt parameter: the weights' fingerprint at export ("" unknown)
CONFIG_RUNTIME_KEY = "zoo_runtime"  # config.pbtxt parameter: the runtime the model runs on (zoo.runtime)


def model_name(registry_name: str) -> str:
    """Triton model name of a registry name (reversible, see :func:`registry_name`)."""
    if SEPARATOR in registry_name:
        raise InvalidArgumentError(f"registry name {registry_name!r} contains {SEPARATOR!r}; cannot map it")
    return registry_name.replace("/", SEPARATOR)


def registry_name(triton_name: str) -> str:
    """Registry name of a Triton model name."""
    return triton_name.replace(SEPARATOR, "/")


def served_spec(spec: Any, served_name: str) -> Any:
    """The spec as clients of the served model ``served_name`` see it: a local folder's path (in ``name`` and
    ``source``) becomes the served name, so no server path leaves the server."""
    import dataclasses
    import os

    def is_path(value: str) -> bool:
        return os.path.isabs(value) or value.startswith(".")

    return dataclasses.replace(spec, name=served_name if is_path(spec.name) else spec.name,
                               source=served_name if is_path(spec.source) else spec.source)


def description(spec: Any, served_name: str, weights: str, runtime: str) -> bytes:
    """The SPEC answer of a served model: its :func:`served_spec`, the weights' fingerprint and the runtime, as
    UTF-8 JSON."""
    data = {"spec": served_spec(spec, served_name).to_dict(), "weights": weights, "runtime": runtime}
    return json.dumps(data, sort_keys=True).encode("utf-8")


def wants_description(params: dict[str, Any]) -> bool:
    """Whether a request's parameters ask for the model's description (:data:`DESCRIBE`)."""
    return params.get(DESCRIBE) in (True, "true", "True")


def parse_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Turn request parameters into ``Embedder.options()`` keyword arguments, refusing unknown ones."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in PARAMETERS:
            raise InvalidArgumentError(f"unknown request parameter {key!r}; valid: {choices(PARAMETERS)}")
        kind = PARAMETERS[key]
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"parameter {key!r} must be true or false, got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
                raise InvalidArgumentError(f"parameter {key!r} must be a positive integer, got {value!r}")
            value = int(value)
        elif not isinstance(value, str):
            raise InvalidArgumentError(f"parameter {key!r} must be a string, got {value!r}")
        out[key] = value
    return out


def request_parameters(opts: EncodeOptions) -> dict[str, Any]:
    """The request parameters a client sends for validated ``encode()`` options (unset ones left out)."""
    params: dict[str, Any] = {"normalize": bool(opts.normalize), "precision": opts.precision, "output": opts.output}
    for key in ("dimensions", "prompt_name", "max_vectors", "top_k"):
        if getattr(opts, key) is not None:
            params[key] = getattr(opts, key)
    return params


# ---- items on the wire ---------------------------------------------------------------------------
def encode_item(modality: Modality, item: Any, index: int, allow_paths: bool = True) -> bytes:
    """One client-side item as the element of its modality's input tensor (checked first, see
    :func:`zoo.inputs.to_wire`); interleaved parts travel as UTF-8 JSON."""
    wire = inputs.to_wire(item, index, modality, allow_paths)
    return json.dumps(wire).encode("utf-8") if modality is Modality.INTERLEAVED else wire


def decode_item(modality: Modality, raw: bytes, index: int) -> Any:
    """Turn one input tensor element back into something ``Embedder.decode`` accepts (which the server
    calls with ``allow_paths=False``: an image part that is not a ``data:`` URI is refused there)."""
    if modality is Modality.INTERLEAVED:
        try:
            parts = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(index, f"INTERLEAVED element is not UTF-8 JSON: {err}") from None
        if not isinstance(parts, list):
            raise InputError(index, "INTERLEAVED JSON must be a list of parts")
        return parts
    return raw


def to_wire(emb: np.ndarray, precision: str) -> np.ndarray:
    """The array the server puts in the EMBEDDING tensor (float8 as its uint8 bits)."""
    return emb.view(np.uint8) if precision == "float8" else emb


def from_wire(arr: np.ndarray, precision: str) -> np.ndarray:
    """Undo :func:`to_wire` so the client returns exactly what in-process ``encode()`` returns."""
    return arr.view(pp.FLOAT8) if precision == "float8" else arr.astype(pp.PRECISIONS[precision], copy=False)


def _counts(n: list[int]) -> np.ndarray:
    return np.asarray(n, np.int32).reshape(-1, 1)


def result_to_wire(result: Any, opts: EncodeOptions) -> dict[str, np.ndarray]:
    """One request's ``encode()`` result as the output tensors of its kind (see the module table)."""
    if opts.output == "multivector":
        flat = np.concatenate(result) if result else np.zeros((0, 0), np.float32)
        return {OUTPUT: to_wire(flat, opts.precision), LENGTHS: _counts([len(x) for x in result])}
    if opts.output == "sparse":
        m = result.tocsr()
        return {INDICES: m.indices.astype(np.int32).reshape(-1, 1), VALUES: m.data.reshape(-1, 1),
                LENGTHS: _counts(np.diff(m.indptr).tolist())}
    return {OUTPUT: to_wire(result, opts.precision)}


def result_from_wire(tensors: dict[str, np.ndarray], opts: EncodeOptions, vocab_size: int | None = None) -> Any:
    """Undo :func:`result_to_wire`: exactly what in-process ``encode()`` returns for those items."""
    if opts.output == "sparse":
        return kinds.csr_of(tensors[INDICES].reshape(-1), tensors[VALUES].reshape(-1),
                            tensors[LENGTHS].reshape(-1), int(vocab_size or 0))
    emb = from_wire(tensors[OUTPUT], opts.precision)
    if opts.output == "multivector":
        return kinds.split_rows(emb, tensors[LENGTHS].reshape(-1))
    return emb
