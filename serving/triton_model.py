"""The one generic Triton python-backend model: loads any `zoo` model named in its config.

Batching: all requests of one dynamic batch that share a modality and output options are embedded together
and the rows are split back: texts (decoded up front, cut to what the model reads; a cross-encoder's pairs,
each one ``TEXT`` element, alike) by ONE ``embed_decoded()`` call, its forward passes cut by the token budget
(``spec.batch_tokens``); media by one ``encode_items()`` call, which decodes them a window at a time (never every
decoded image of a batch at once; see :mod:`zoo.media.budgets`). Every request gets exactly one response, in
order. A request whose item cannot be decoded, or whose parameters are invalid, gets an error response
naming the problem (and the item index) with the status its error class maps to (``INVALID_ARG`` →
gRPC ``INVALID_ARGUMENT`` / HTTP 400, ``NOT_FOUND`` → 404, ``INTERNAL`` → 500); the others in the batch are
unaffected, whatever the failure (a ``MemoryError`` included). Items are data only: paths are refused.

READY means warm: ``initialize`` loads the model (an ONNX runtime is exported and checked there, by
``zoo.create``; its spec then names the served model, so no error carries a local folder's path), then answers
:func:`serving.warmup.warmup_requests` through the same :func:`handle` path as real requests (every modality,
every output kind, a short and a full-length text) and fails if any of them fails, so a model
that cannot embed never goes READY. Failed responses are counted by reason on Triton's metrics port
(:class:`Metrics`), since Triton's own ``nv_inference_request_failure`` counts a model's error responses as
successes (upstream server#7713).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.errors import CODES, InvalidArgumentError, ZooError, code_of, to_wire
from zoo.front import EncodeOptions, check_items
from zoo.spec import Modality

from . import contract
from .triton_tasks import answer_task

log = logging.getLogger(__name__)


@dataclass
class Request:
    """What the model needs of one Triton request, independent of pb_utils (so it is unit-testable)."""

    inputs: dict[str, list[bytes]]  # input tensor name → its elements
    parameters: dict[str, Any]
    tokens: bool = False  # the request asks for the TOKENS output
    truncated: bool = False  # the request asks for the TRUNCATED output


@dataclass
class Answer:
    """One request's output tensors by name: those of its output kind (or of its task), and ``TOKENS`` and
    ``TRUNCATED`` when they were asked for."""

    outputs: dict[str, np.ndarray]

    @property
    def embedding(self) -> np.ndarray | None:
        """The ``EMBEDDING`` tensor (dense, fde and multivector output)."""
        return self.outputs.get(contract.OUTPUT)

    @property
    def tokens(self) -> np.ndarray | None:
        """The ``TOKENS`` tensor, when the request asked for it."""
        return self.outputs.get(contract.TOKENS)


@dataclass
class _Prepared:
    modality: Modality
    opts: EncodeOptions
    items: list[Any]  # decoded texts, or (other modalities) the raw items, decoded a window at a time later
    tokens: bool
    truncated: list[bool] | bool  # texts: whether each was cut; other modalities: whether TRUNCATED is asked for

    def answer(self, result: Any, counts: list[int] | None, cut: list[bool] | None = None) -> Answer:
        outputs = contract.result_to_wire(result, self.opts)
        if self.tokens:
            outputs[contract.TOKENS] = np.asarray(counts, np.int32).reshape(-1, 1)
        if isinstance(self.truncated, list) or self.truncated:
            cut = self.truncated if isinstance(self.truncated, list) else cut
            outputs[contract.TRUNCATED] = np.asarray(cut or [False] * len(self.items), bool).reshape(-1, 1)
        return Answer(outputs)


def _prepare(embedder, req: Request, params: dict[str, Any]) -> _Prepared:
    """Validate one request; raises a ZooError for the caller to report. Texts are decoded here (cut to what
    the model reads, they are cheap to hold, and fitted to its window as the request's ``truncate`` says: an item
    over it with ``truncate="none"`` fails the request); media stay raw until :func:`_embed_media` decodes them.
    ``params``: the request's parameters but :data:`contract.TASK` (an explicit ``embed`` is the default's)."""
    present = [name for name in req.inputs if name in contract.MODALITY_OF_INPUT]
    if len(present) != 1:
        expected = [contract.INPUTS[m] for m in embedder.spec.modalities]
        raise InvalidArgumentError(f"a request must carry exactly one input of {expected}, got {present}")
    modality = embedder.check_modality(contract.MODALITY_OF_INPUT[present[0]])
    opts, _ = embedder._call(modality, **contract.parse_parameters(params))
    raw = [contract.decode_item(modality, x, i) for i, x in enumerate(req.inputs[present[0]])]
    if modality is not Modality.TEXT:
        check_items(raw)
        return _Prepared(modality, opts, raw, req.tokens, req.truncated)
    texts = embedder.decode(raw, modality, allow_paths=False, opts=opts)
    report = opts.truncate != "end" or bool(opts.long) or req.truncated
    if not report and opts.max_tokens_per_doc is None:  # nothing to fit or to report: as before
        return _Prepared(modality, opts, texts, req.tokens, False)
    # pairs with max_tokens_per_doc: their documents are cut here (nothing else to tell, so no counting)
    fitted = embedder.fit_texts(texts, opts, report=report)
    if fitted.errors:
        raise fitted.errors[min(fitted.errors)]
    return _Prepared(modality, opts, fitted.texts, req.tokens, fitted.truncated if req.truncated else False)


def _embed_texts(embedder, modality: Modality, opts: EncodeOptions, members: list, results: list) -> None:
    """One group of text requests: ONE ``embed_decoded()`` call, rows split back."""
    try:
        joint = embedder.embed_decoded([x for _, prep in members for x in prep.items], modality, opts)
        ends = np.cumsum([0] + [len(prep.items) for _, prep in members])
        rows: list[Any] | None = [joint[a:b] for a, b in zip(ends[:-1], ends[1:])]  # array, list or csr rows
    except Exception:  # something in the joint batch failed: each request alone, so only the culprit fails
        rows = None
    for k, (i, prep) in enumerate(members):
        try:
            part = rows[k] if rows is not None else embedder.embed_decoded(prep.items, modality, opts)
            counts = embedder.count_tokens(prep.items, modality, opts.prompt, opts) if prep.tokens else None
            results[i] = prep.answer(part, counts)
        except Exception as err:  # reported to that request only; the model stays up
            log.exception("request %d failed", i)
            results[i] = err


def _embed_media(embedder, modality: Modality, opts: EncodeOptions, members: list, results: list) -> None:
    """One group of media requests: their items decoded and embedded a window at a time
    (:meth:`zoo.base.Embedder.encode_items`), so a dynamic batch's decoded items are never all held at once. A
    request with a bad item gets that item's error (its index within the request); the others their rows."""
    raw = [x for _, prep in members for x in prep.items]
    indices = [k for _, prep in members for k in range(len(prep.items))]
    counting = any(prep.tokens or prep.truncated for _, prep in members)
    try:
        done = embedder.encode_items(raw, modality, opts, allow_paths=False, indices=indices, tokens=counting)
    except Exception:  # something in the joint batch failed: each request alone, so only the culprit fails
        done = None
    start, good_start = 0, 0
    for i, prep in members:
        n = len(prep.items)
        try:
            if done is None:
                one = embedder.encode_items(prep.items, modality, opts, allow_paths=False,
                                            tokens=bool(prep.tokens or prep.truncated))
                if one.errors:
                    raise one.errors[min(one.errors)]
                part, counts, cut = one.result, one.tokens, one.truncated
            else:
                bad = [k for k in range(start, start + n) if k in done.errors]
                good = n - len(bad)
                span = slice(good_start, good_start + good)
                good_start += good
                if bad:
                    raise done.errors[bad[0]]
                part, counts = done.result[span], (done.tokens[span] if done.tokens is not None else None)
                cut = done.truncated[span] if done.truncated is not None else None
            results[i] = prep.answer(part, counts, cut)
        except ZooError as err:
            results[i] = err
        except Exception as err:  # reported to that request only; the model stays up
            log.exception("request %d failed", i)
            results[i] = err
        start += n


def handle(embedder, requests: list[Request], description: bytes | None = None) -> list[Answer | ZooError | Exception]:
    """One result per request, in order: its outputs, or the error that request gets (a request asking for the
    model's ``description``, see :data:`contract.DESCRIBE`, gets it as ``SPEC``, one row per element; one
    naming another :data:`contract.TASK` than ``embed`` is answered alone, by :mod:`serving.triton_tasks`)."""
    results: list[Any] = [None] * len(requests)
    groups: dict[tuple[Modality, EncodeOptions], list[tuple[int, _Prepared]]] = defaultdict(list)
    for i, req in enumerate(requests):
        if description is not None and contract.wants_description(req.parameters):
            rows = max(1, sum(len(v) for v in req.inputs.values()))
            results[i] = Answer({contract.SPEC: np.array([[description]] * rows, dtype=object)})
            continue
        try:
            task, params = contract.parse_task(req.parameters)
            if task != contract.EMBED:
                results[i] = Answer(answer_task(embedder, task, params, req.inputs))
                continue
            prep = _prepare(embedder, req, params)
        except Exception as err:  # a MemoryError too: this request fails, the batch does not
            if not isinstance(err, ZooError):
                log.exception("request %d could not be decoded", i)
            results[i] = err
            continue
        groups[(prep.modality, prep.opts)].append((i, prep))
    for (modality, opts), members in groups.items():
        embed = _embed_texts if modality is Modality.TEXT else _embed_media
        embed(embedder, modality, opts, members, results)
    return results


def instance_threads(config: dict[str, Any], cores: int | None = None) -> int:
    """Threads one model instance computes with: the machine's cores shared among the model's instances,
    which run side by side (each in its own process), so they never fight over a core."""
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group") or [{}])
    return max(1, (cores or os.cpu_count() or 1) // max(1, instances))


class Metrics:
    """The model's own counters on Triton's metrics port (python backend custom metrics): failed responses by
    reason, successful requests and the items they embedded, and the warm-up's duration. A no-op on a python
    backend without ``MetricFamily`` (before Triton 23.05)."""

    FAILURES = "zoo_model_failures_total"  # {model, reason}: reason is the error code (zoo.errors.CODES)
    REQUESTS = "zoo_model_requests_total"  # {model}: requests answered with embeddings
    ITEMS = "zoo_model_items_total"  # {model}: items those requests embedded
    WARMUP = "zoo_model_warmup_seconds"  # {model}: how long the last warm-up at initialize took

    def __init__(self, pb_utils: Any, model: str) -> None:
        family = getattr(pb_utils, "MetricFamily", None)
        self.families: list[Any] = []
        self.metrics: dict[str, Any] = {}
        if family is None:
            return

        def new(name: str, description: str, kind: Any) -> Any:
            self.families.append(family(name=name, description=description, kind=kind))
            return self.families[-1]

        failures = new(self.FAILURES, "requests the model answered with an error, by reason", family.COUNTER)
        for code in CODES:
            self.metrics[code] = failures.Metric(labels={"model": model, "reason": code})
        self.metrics["requests"] = new(self.REQUESTS, "requests the model answered with embeddings",
                                       family.COUNTER).Metric(labels={"model": model})
        self.metrics["items"] = new(self.ITEMS, "items embedded in successful requests",
                                    family.COUNTER).Metric(labels={"model": model})
        self.metrics["warmup"] = new(self.WARMUP, "seconds the warm-up at initialize took",
                                     family.GAUGE).Metric(labels={"model": model})

    def count(self, requests: list[Request], results: list[Any]) -> None:
        """Count one batch's answers (a description request, or another task's, is not an embedding request: not
        counted)."""
        if not self.metrics:
            return
        done = items = 0
        for req, result in zip(requests, results):
            if isinstance(result, Answer):
                if not contract.wants_description(req.parameters) and req.parameters.get(
                        contract.TASK, contract.EMBED) == contract.EMBED:
                    done += 1
                    items += sum(len(v) for v in req.inputs.values())
            else:
                self.metrics[code_of(result)].increment(1)
        if done:
            self.metrics["requests"].increment(done)
            self.metrics["items"].increment(items)

    def warmed(self, seconds: float) -> None:
        """Record the warm-up's duration."""
        if self.metrics:
            self.metrics["warmup"].set(seconds)

    def close(self) -> None:
        """Release the metrics before their families (the backend requires that order)."""
        self.metrics.clear()
        self.families.clear()


class TritonPythonModel:
    """Triton's entry points; everything model-specific comes from config parameters."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the `zoo` model named in ``config.pbtxt`` on this instance's device (an ONNX runtime is
        exported and checked here), then warm it (:func:`warm_up`): READY means warm."""
        import torch
        import triton_python_backend_utils as pb_utils

        import zoo

        config = json.loads(args["model_config"])
        params = config["parameters"]
        source = params[contract.CONFIG_MODEL_KEY]["string_value"]
        runtime = params.get(contract.CONFIG_RUNTIME_KEY, {}).get("string_value") or "torch"
        if runtime == "auto":  # the repository leaves it to the server: zoo's default ($ZOO_RUNTIME, else auto)
            runtime = None
        device = None  # CUDA when visible, else CPU
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
        threads = instance_threads(config)
        torch.set_num_threads(threads)
        self.embedder = zoo.create(source, device=device, runtime=runtime, threads=threads)
        # every error names the model as its clients know it: a local folder's path never leaves the server
        self.embedder.spec = contract.served_spec(self.embedder.spec, args["model_name"])
        weights = params.get(contract.CONFIG_WEIGHTS_KEY, {}).get("string_value", "")
        # the runtime that runs (``auto`` has resolved to one by now), as the clients, /v1/models and /info say it
        self.description = contract.description(self.embedder.spec, args["model_name"], weights,
                                                self.embedder.runtime, self.embedder.max_input_tokens)
        # zoo's protocol-neutral error codes → Triton's (gRPC INVALID_ARGUMENT / HTTP 400, …)
        self.codes = {"invalid_argument": pb_utils.TritonError.INVALID_ARG,
                      "not_found": pb_utils.TritonError.NOT_FOUND,
                      "unavailable": pb_utils.TritonError.UNAVAILABLE, "internal": pb_utils.TritonError.INTERNAL}
        self.metrics = Metrics(pb_utils, args["model_name"])
        start = time.perf_counter()
        from .warmup import warm_up

        warmed = warm_up(self.embedder)
        from .late_send import LateSender, enabled

        self.late = LateSender(f"zoo-late-send-{args.get('model_instance_name', '')}") if enabled() else None
        took = time.perf_counter() - start
        self.metrics.warmed(took)
        message = (f"zoo warm-up of {args['model_name']} ({args.get('model_instance_name', '')}, {runtime}): "
                   f"{len(warmed)} requests in {took:.2f} s: {', '.join(warmed)}")
        if hasattr(pb_utils, "Logger"):  # Triton's log at INFO level, beside the model's load messages
            pb_utils.Logger.log_info(message)
        else:
            log.warning(message)

    def execute(self, requests: list) -> list:
        """Answer a dynamic batch: exactly one response per request, in order; the last one is sent just after
        this returns (its place in the list is ``None``; see :mod:`serving.late_send`)."""
        import triton_python_backend_utils as pb_utils

        parsed = []
        for r in requests:
            inputs = {}
            for name in contract.MODALITY_OF_INPUT:
                tensor = pb_utils.get_input_tensor_by_name(r, name)
                if tensor is not None:
                    inputs[name] = [bytes(x) for x in tensor.as_numpy().reshape(-1)]
            asked = r.requested_output_names()
            parsed.append(Request(inputs=inputs, parameters=json.loads(r.parameters() or "{}"),
                                  tokens=contract.TOKENS in asked, truncated=contract.TRUNCATED in asked))
        responses = []
        results = handle(self.embedder, parsed, self.description)
        for result in results:
            if isinstance(result, Answer):
                outputs = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in result.outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            else:
                error = pb_utils.TritonError(to_wire(result), self.codes[code_of(result)])
                responses.append(pb_utils.InferenceResponse(error=error))
        try:
            self.metrics.count(parsed, results)
        except Exception:  # a metric that cannot be updated must not fail the answers
            log.exception("could not update the model's metrics")
        # the last answer goes out once this returns, so the batcher hears of its client's next request
        # (serving.late_send); the others are returned, and Triton sends them
        if not responses or self.late is None:
            return responses
        last = requests[-1]
        self.late.send(last.get_response_sender(), responses[-1], pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return responses[:-1] + [None]

    def finalize(self) -> None:
        """Send the last answer still queued, then release the model and the metrics."""
        if getattr(self, "late", None) is not None:
            self.late.close()
        self.embedder = None
        self.metrics.close()
