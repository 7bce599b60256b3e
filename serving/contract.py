"""The serving contract: the one place tensor names, wire dtypes, request parameters and the model-name
rule are written. The exporter, the python-backend model, the clients and docs/serving.md all read it.

Per model (see ``config.pbtxt``):

- one ``BYTES`` input per modality the model embeds, shape ``[batch, 1]``, all optional (a request sends
  exactly one): ``TEXT`` (UTF-8), ``IMAGE`` (an encoded image file), ``AUDIO`` (an encoded audio file),
  ``INTERLEAVED`` (UTF-8 JSON: a list of parts ``{"text": "..."}`` or ``{"image": "data:image/...;base64,..."}``),
  ``VIDEO`` (an encoded video file; frames a client holds in memory travel as lossless FFV1 in Matroska);
- output ``EMBEDDING``, shape ``[batch, d]``. ``config.pbtxt`` declares ``TYPE_FP32`` (the default
  precision); the python backend returns the dtype of the requested ``precision`` (table below), which
  Triton passes through and clients read from the response's ``datatype``;
- a model whose items are pairs (a cross-encoder: the ``score`` kind, :func:`reads_pairs`) reads each ``TEXT``
  element as one ``(query, document)`` pair, the UTF-8 JSON array ``[query, document]``
  (:func:`zoo.ranking.pair_to_wire`; :func:`encode_item` with ``pairs``), so Triton's dynamic batcher batches
  pairs like texts; it answers ``EMBEDDING [batch, 1]`` ``FP32`` scores (declared of width 1), ``TOKENS`` (the
  pair's tokens) and ``TRUNCATED`` (the pair was cut to the window), and refuses every ``zoo_task`` but ``embed``;
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

  A kind's handler (:mod:`zoo.kinds`) gives its arrays by role; :data:`ROLE_TENSORS` names the tensor of each
  role, so a new kind whose roles exist needs nothing here;

- output ``TOKENS``, shape ``[batch, 1]`` ``INT32``: the text tokens the model read per item (image and audio
  content counts 0), computed only when the request names it among its outputs;
- output ``TRUNCATED``, shape ``[batch, 1]`` ``BOOL``: whether each item was cut to the model's window,
  computed only when the request names it among its outputs (every model declares it);
- request parameters ``dimensions`` (int), ``normalize`` (bool), ``precision`` (str), ``prompt_name``
  (str), ``output`` (str), ``max_vectors`` (int), ``top_k`` (int), ``truncate`` (str), ``long`` (str),
  ``chunk_tokens`` (int), ``overlap`` (int), ``max_tokens_per_doc`` (int, pairs only: each document cut to that
  many tokens before its pair is read), with the same meaning and defaults as ``encode()``; any other
  parameter is refused. ``truncate="none"`` makes an item over the window that item's ``InputError``
  (its index, token count and the limit);
- the request parameter ``zoo_task`` (:data:`TASK`) asks a text model for something else than embeddings,
  from a ``TEXT`` input (the parameters each task takes: :data:`TASK_PARAMETERS`; a model without text, or
  whose family gives no tokenizer, refuses with ``InvalidArgumentError``):

  ===============  ==========================================================================================
  zoo_task         input → output tensors of one request of ``batch`` items
  ===============  ==========================================================================================
  ``embed``        the default: the embeddings above
  ``tokenize``     texts → ``TOKEN_IDS [total, 1]`` ``INT32`` and ``TOKEN_STRINGS [total, 1]`` ``BYTES`` (the
                   ids the model reads, prompt and special tokens included, after truncation, item after
                   item), ``TOKEN_OFFSETS [total, 2]`` ``INT32`` (character start and end in the text; -1 -1
                   for prompt and special tokens), ``LENGTHS [batch, 1]``: tokens per item, ``TRUNCATED``
  ``detokenize``   elements that are UTF-8 JSON lists of token ids → ``DETOKENIZED [batch, 1]`` ``BYTES``
  ``late_chunks``  texts → ``EMBEDDING [total, d]`` (one row per chunk, pooled from one pass over the whole
                   text, in the request's precision), ``LENGTHS [batch, 1]``: chunks per item, ``SPANS
                   [total, 2]`` ``INT32``: each chunk's character start and end; chunks of ``chunk_tokens``
                   or at the per-item spans of ``chunk_spans`` (UTF-8 JSON ``[[[start, end], …], …]``, at
                   most :data:`serving.contract_long.MAX_SPANS_CHARS` characters), ``TRUNCATED`` (the text was cut at
                   ``zoo.long.MAX_LONG_CHARS`` characters) and ``TOKENS`` (the whole text's tokens, prompt and
                   special tokens included)
  ===============  ==========================================================================================

  (their parameters' and answers' wire forms: :mod:`serving.contract_long`).
- output ``SPEC``, shape ``[batch, 1]`` ``BYTES``: a request with the parameter ``zoo_describe`` true (and any
  one input element, which is not decoded) is answered with the served model's description, UTF-8 JSON
  ``{"spec": …, "weights": …, "runtime": …, "max_input_tokens": …}`` (:func:`description`; the last is the
  backend's own ``max_input_tokens``, which may differ from the spec's ``max_length``); clients learn the spec this
  way, since
  Triton's model-config API is an admin API that needs the server's secret (see :mod:`serving.server`).

Model names: a registry name maps to a Triton model name by replacing ``/`` with ``--``
(``sentence-transformers/all-MiniLM-L6-v2`` → ``sentence-transformers--all-MiniLM-L6-v2``) and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from zoo import kinds, media
from zoo import postprocess as pp
from zoo.errors import InputError, InvalidArgumentError, choices
from zoo.front import EncodeOptions
from zoo.ranking import check_pair, pair_to_wire
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
#: a role of an output kind's wire form (:meth:`zoo.kinds.OutputKind.to_arrays`) → the tensor that carries it;
#: a kind names roles only, so tensor names are written here alone
ROLE_TENSORS: dict[str, str] = {kinds.OUTPUT: OUTPUT, kinds.LENGTHS: LENGTHS, kinds.INDICES: INDICES,
                                kinds.VALUES: VALUES}
COLUMN_TENSORS = (LENGTHS, INDICES, VALUES)  # travel as [n, 1] columns; EMBEDDING keeps its rows


class _KindTensors(Mapping):
    """Output kind → the tensors that carry it (what a client asks for), from the kind's wire roles; read at
    each use, so a kind registered later has its entry."""

    def __getitem__(self, kind: str) -> tuple[str, ...]:
        if kind not in kinds.names():
            raise KeyError(kind)
        return tuple(ROLE_TENSORS[role] for role in kinds.get(kind).wire_roles)

    def __iter__(self) -> Iterator[str]:
        return iter(kinds.names())

    def __len__(self) -> int:
        return len(kinds.names())


KIND_OUTPUTS: Mapping[str, tuple[str, ...]] = _KindTensors()
SPEC = "SPEC"  # [batch, 1] BYTES: the served model's description (answer to a DESCRIBE request)
DESCRIBE = "zoo_describe"  # request parameter (bool): answer with SPEC, embed nothing
TRUNCATED = "TRUNCATED"  # [batch, 1] BOOL: whether each item was cut (computed only when asked for)
TOKEN_IDS = "TOKEN_IDS"  # tokenize: [total, 1] INT32 token ids, item after item
TOKEN_OFFSETS = "TOKEN_OFFSETS"  # tokenize: [total, 2] INT32 character start, end (-1, -1: prompt or special)
TOKEN_STRINGS = "TOKEN_STRINGS"  # tokenize: [total, 1] BYTES the tokenizer's token strings
DETOKENIZED = "DETOKENIZED"  # detokenize: [batch, 1] BYTES the texts of the id lists
SPANS = "SPANS"  # late_chunks: [total, 2] INT32 character start and end of each chunk
NO_OFFSET = -1  # TOKEN_OFFSETS of a token that has no characters in the text (prompt, special)
#: the outputs besides EMBEDDING, in the order config.pbtxt declares them, with their datatypes
EXTRA_OUTPUTS: dict[str, str] = {TOKENS: TOKENS_DATATYPE, LENGTHS: "INT32", INDICES: "INT32", VALUES: "FP32",
                                 SPEC: INPUT_DATATYPE, TRUNCATED: "BOOL", TOKEN_IDS: "INT32", TOKEN_OFFSETS: "INT32",
                                 TOKEN_STRINGS: INPUT_DATATYPE, DETOKENIZED: INPUT_DATATYPE, SPANS: "INT32"}
#: the width of each output's rows in config.pbtxt (1 unless named here; EMBEDDING's is -1)
OUTPUT_WIDTHS: dict[str, int] = {TOKEN_OFFSETS: 2, SPANS: 2}

#: request parameter (str): what a request asks for (default "embed"), see the module's table
TASK = "zoo_task"
EMBED, TOKENIZE, DETOKENIZE, LATE_CHUNKS = "embed", "tokenize", "detokenize", "late_chunks"
CHUNK_SPANS = "chunk_spans"  # late_chunks parameter (str): UTF-8 JSON per-item spans
#: task → the output tensors that answer it (embed: the output kind's, :data:`KIND_OUTPUTS`)
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    TOKENIZE: (TOKEN_IDS, TOKEN_OFFSETS, TOKEN_STRINGS, LENGTHS, TRUNCATED),
    DETOKENIZE: (DETOKENIZED,),
    LATE_CHUNKS: (OUTPUT, LENGTHS, SPANS, TRUNCATED, TOKENS),
}


def reads_pairs(kinds_given: tuple[str, ...]) -> bool:
    """Whether a model giving ``kinds_given`` reads ``(query, document)`` pairs as its items (a cross-encoder)."""
    return any(kinds.get(kind).pairs for kind in kinds_given)


def check_text_task(spec: Any, task: str) -> None:
    """Refuse a :data:`TASK` other than ``embed`` of a model without text, or of one whose items are pairs (its
    texts are never read alone: there is nothing to tokenize or chunk), naming the model."""
    if Modality.TEXT not in spec.modalities:
        raise InvalidArgumentError(f"model {spec.name!r} reads no text; {TASK} {task!r} needs a text model", TASK)
    if reads_pairs(tuple(getattr(spec, "outputs", ()))):  # one naming no outputs scores no pairs
        raise InvalidArgumentError(f"model {spec.name!r} scores (query, document) pairs; {TASK} {task!r} needs a "
                                   "model that embeds texts", TASK)


def declared_outputs(kinds_given: tuple[str, ...], modalities: tuple[Modality, ...] = ()) -> dict[str, str]:
    """The outputs besides EMBEDDING a model giving ``kinds_given`` declares: TOKENS, and the tensors of its
    kinds and of the kinds derived from them (see :data:`KIND_OUTPUTS`), each with its datatype; with the
    model's ``modalities``, TRUNCATED too, and for a model with text the tensors of every :data:`TASK_OUTPUTS`
    (none for a model of pairs, which refuses the tasks: :func:`check_text_task`)."""
    used = {name for kind in kinds.available(kinds_given) for name in KIND_OUTPUTS[kind]} | {TOKENS, SPEC}
    if modalities:
        used.add(TRUNCATED)
    if Modality.TEXT in modalities and not reads_pairs(kinds_given):
        used |= {name for names in TASK_OUTPUTS.values() for name in names}
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
                               "output": str, "max_vectors": int, "top_k": int, "truncate": str, "long": str,
                               "chunk_tokens": int, "overlap": int, "max_tokens_per_doc": int, CHUNK_SPANS: str}
#: task → the request parameters it takes (besides :data:`TASK`); any other is refused, naming these
TASK_PARAMETERS: dict[str, tuple[str, ...]] = {
    EMBED: tuple(k for k in PARAMETERS if k != CHUNK_SPANS),
    TOKENIZE: ("prompt_name", "truncate"),
    DETOKENIZE: (),
    LATE_CHUNKS: ("chunk_tokens", CHUNK_SPANS, "overlap", "prompt_name", "normalize", "dimensions", "precision"),
}
#: a request's priority by name → Triton's priority level (1 is served first); ``config.pbtxt`` declares
#: ``priority_levels`` = len(PRIORITIES) and ``default_priority_level`` = PRIORITIES[DEFAULT_PRIORITY]
PRIORITIES: dict[str, int] = {"high": 1, "normal": 2, "low": 3}
DEFAULT_PRIORITY = "normal"  # what a request naming none gets; bulk jobs (zoo embed --triton) send "low"
TRACE_HEADER = "traceparent"  # gRPC/HTTP header: the W3C trace context of the caller's span (the door's)
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


def description(spec: Any, served_name: str, weights: str, runtime: str,
                max_input_tokens: int | None = None) -> bytes:
    """The SPEC answer of a served model: its :func:`served_spec`, the weights' fingerprint, the runtime and the
    backend's ``max_input_tokens`` (the tokenizer's limit, which clients cannot derive from the spec), as UTF-8
    JSON."""
    data = {"spec": served_spec(spec, served_name).to_dict(), "weights": weights, "runtime": runtime,
            "max_input_tokens": max_input_tokens}
    return json.dumps(data, sort_keys=True).encode("utf-8")


def wants_description(params: dict[str, Any]) -> bool:
    """Whether a request's parameters ask for the model's description (:data:`DESCRIBE`)."""
    return params.get(DESCRIBE) in (True, "true", "True")


def _spelled_count(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


def _spelled_bool(value: Any) -> Any:
    return value.lower() == "true" if isinstance(value, str) and value.lower() in ("true", "false") else value


# Triton hands parameters over as JSON of bools, integers and strings; a client may spell a number or a bool as a
# string, which is taken (and nothing looser: strict, so 1 is no bool nor 2.0 an integer)
_Count = Annotated[int, BeforeValidator(_spelled_count), Field(ge=0)]
_Bool = Annotated[bool, BeforeValidator(_spelled_bool)]


class RequestParameters(BaseModel):
    """The request parameters (:data:`PARAMETERS`) as they arrive; one left out stays unset, so that
    ``encode()``'s default applies."""

    model_config = ConfigDict(strict=True, extra="forbid")

    # not Optional: a parameter sent as null is refused; None only marks one left out
    dimensions: _Count = Field(None)
    normalize: _Bool = Field(None)
    precision: str = Field(None)
    prompt_name: str = Field(None)
    output: str = Field(None)
    max_vectors: _Count = Field(None)
    top_k: _Count = Field(None)
    truncate: str = Field(None)
    long: str = Field(None)
    chunk_tokens: _Count = Field(None)
    overlap: _Count = Field(None)
    max_tokens_per_doc: _Count = Field(None)
    chunk_spans: str = Field(None)


assert set(RequestParameters.model_fields) == set(PARAMETERS), "the parameters' model and table must agree"
_RULES = {int: "a positive integer", bool: "true or false", str: "a string"}  # what a parameter's error says


def parse_task(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A request's task (:data:`TASK`, default ``embed``) and its other parameters."""
    rest = {k: v for k, v in params.items() if k != TASK}
    task = params.get(TASK, EMBED)
    if task not in TASK_PARAMETERS:
        raise InvalidArgumentError(f"unknown {TASK} {task!r}; valid: {choices(TASK_PARAMETERS)}", TASK)
    return task, rest


def parse_parameters(params: dict[str, Any], task: str = EMBED) -> dict[str, Any]:
    """Turn request parameters into ``Embedder.options()`` keyword arguments (:class:`RequestParameters`; for
    another ``task``, the keyword arguments of its method), refusing unknown ones and those the task does not
    take; the first parameter at fault, in request order, is named in an :class:`InvalidArgumentError`."""
    valid = TASK_PARAMETERS[task]
    for key in params:
        if key in PARAMETERS and key not in valid:
            raise InvalidArgumentError(f"parameter {key!r} does not apply to {TASK} {task!r}; valid: "
                                       f"{choices(valid) if valid else 'none'}", key)
    try:
        return RequestParameters.model_validate(params).model_dump(exclude_unset=True)
    except ValidationError as err:
        order = list(params)
        first = min(err.errors(include_url=False), key=lambda e: order.index(e["loc"][0]))
        key = str(first["loc"][0])
        if first["type"] == "extra_forbidden":
            raise InvalidArgumentError(f"unknown request parameter {key!r}; valid: {choices(valid)}") from None
        raise InvalidArgumentError(f"parameter {key!r} must be {_RULES[PARAMETERS[key]]}, got {first['input']!r}",
                                   key) from None


#: encode() options sent only when they differ from these defaults (a request from an older client means the same)
_SENT_UNLESS: dict[str, Any] = {"dimensions": None, "prompt_name": None, "max_vectors": None, "top_k": None,
                                "truncate": "end", "long": None, "chunk_tokens": None, "overlap": None,
                                "max_tokens_per_doc": None}


def request_parameters(opts: EncodeOptions) -> dict[str, Any]:
    """The request parameters a client sends for validated ``encode()`` options (unset ones left out)."""
    params: dict[str, Any] = {"normalize": bool(opts.normalize), "precision": opts.precision, "output": opts.output}
    for key, default in _SENT_UNLESS.items():
        if getattr(opts, key, default) != default:
            params[key] = getattr(opts, key)
    return params


# ---- items on the wire ---------------------------------------------------------------------------
def encode_item(modality: Modality, item: Any, index: int, allow_paths: bool = True, pairs: bool = False,
                limit: int | None = None) -> bytes:
    """One client-side item as the element of its modality's input tensor (checked first, see
    :func:`zoo.media.to_wire`); interleaved parts travel as UTF-8 JSON. ``pairs``: the model's items are
    ``(query, document)`` pairs (:func:`reads_pairs`), each one ``TEXT`` element (:func:`zoo.ranking.pair_to_wire`;
    ``limit``: characters of each side sent, :func:`zoo.ranking.pair_chars`)."""
    if pairs:
        return pair_to_wire(*check_pair(item, index), limit)
    wire = media.to_wire(item, index, modality, allow_paths)
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


def result_to_wire(result: Any, opts: EncodeOptions) -> dict[str, np.ndarray]:
    """One request's ``encode()`` result as the output tensors of its kind (see the module table): the kind's
    arrays by role, each under its tensor's name; EMBEDDING in the request's precision (:func:`to_wire`)."""
    out = {}
    for role, arr in kinds.get(opts.output).to_arrays(result).items():
        name = ROLE_TENSORS[role]
        out[name] = np.asarray(arr).reshape(-1, 1) if name in COLUMN_TENSORS else to_wire(arr, opts.precision)
    return out


def result_from_wire(tensors: dict[str, np.ndarray], opts: EncodeOptions, vocab_size: int | None = None) -> Any:
    """Undo :func:`result_to_wire`: exactly what in-process ``encode()`` returns for those items."""
    handler = kinds.get(opts.output)
    arrays = {}
    for role in handler.wire_roles:
        name = ROLE_TENSORS[role]
        arrays[role] = tensors[name].reshape(-1) if name in COLUMN_TENSORS else from_wire(tensors[name],
                                                                                           opts.precision)
    return handler.from_arrays(arrays, vocab_size=vocab_size)

