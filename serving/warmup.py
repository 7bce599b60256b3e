"""READY means warm: the requests a served model answers at ``initialize`` before it goes READY (every modality,
every output kind, a short and a full-length text, a tokenize request where the family tokenizes), through the
same :func:`serving.triton_model.handle` as real requests. A cross-encoder reads pairs, so its texts are sent as
``(query, document)`` pairs (a short one, and one whose document fills the window), as its clients send them."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from zoo import kinds
from zoo.errors import ZooError
from zoo.spec import Modality

from . import contract
from .triton_model import Answer, Request, handle

#: the longest warm-up text, in tokens: a model's full length up to this (an 8192-token forward costs tens of
#: seconds on a CPU and warms no code path a 1024-token one does not)
WARMUP_MAX_TOKENS = 1024
WARMUP_TEXT = "warm up the model"
WARMUP_SIDE = 64  # pixels of the warm-up image's sides and video's frames


def warmup_requests(embedder) -> list[tuple[str, Request]]:
    """``(what, request)`` pairs that exercise every modality the model embeds with every output kind it gives
    (TOKENS counted too), as wire elements like a client sends, plus a batch of a short and a full-length
    text, and that batch tokenized where the family exposes its tokenizer: what
    :meth:`TritonPythonModel.initialize` answers before the model goes READY."""
    from PIL import Image

    from zoo.media.sampling import encode_frames

    spec = embedder.spec
    rate = int(spec.sample_rate or 16000)
    ramp = np.linspace(0, 255, WARMUP_SIDE, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(128)), axis=-1)
    second = (0.1 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    frames = [Image.fromarray(np.roll(image, 8 * k, axis=1)) for k in range(4)]  # 2 s at 2 frames per second
    listens = Modality.AUDIO in spec.modalities
    clip = encode_frames(frames, audio=np.tile(second, 2) if listens else None, sample_rate=rate)
    parts: list[Any] = [WARMUP_TEXT, image]
    if "audio" in embedder.interleaved_parts:
        parts.append({"audio": (second, rate)})
    if "video" in embedder.interleaved_parts:
        parts.append({"video": clip})
    items = {Modality.TEXT: WARMUP_TEXT, Modality.IMAGE: image, Modality.AUDIO: (second, rate),
             Modality.INTERLEAVED: parts, Modality.VIDEO: clip}
    tokens = max(spec.max_length, getattr(embedder, "max_length", 0) or 0)
    long_text = " ".join(["warm"] * min(tokens, WARMUP_MAX_TOKENS))  # one token a word, then cut at the length
    pairs = contract.reads_pairs(spec.outputs)
    if pairs:  # a cross-encoder's text items are pairs
        items[Modality.TEXT] = (WARMUP_TEXT, WARMUP_TEXT)
    # TOKENS too, as the door asks, unless the family counts no text tokens (a plugin may not: then only the
    # door's usage fails, and the model still serves gRPC clients)
    from zoo.base import Embedder

    counting = type(embedder)._text_tokens is not Embedder._text_tokens
    out = []
    for modality in spec.modalities:
        wire = [contract.encode_item(modality, items[modality], 0, pairs=pairs)]
        for kind in kinds.available(spec.outputs):
            out.append((f"{modality.value}/{kind}", Request({contract.INPUTS[modality]: wire}, {"output": kind},
                                                            tokens=counting)))
    if Modality.TEXT in spec.modalities:
        texts = [contract.encode_item(Modality.TEXT, x, k, pairs=pairs) for k, x in enumerate(
            [(WARMUP_TEXT, WARMUP_TEXT), (WARMUP_TEXT, long_text)] if pairs else [WARMUP_TEXT, long_text])]
        out.append((f"text/{spec.output} at full length", Request({contract.INPUTS[Modality.TEXT]: texts}, {},
                                                                   tokens=counting)))
        # where the family exposes its tokenizer, tokenize is served too (never of pairs: it is refused)
        if embedder.text_limit(None) is not None and not pairs:
            out.append(("text/tokenize", Request({contract.INPUTS[Modality.TEXT]: texts},
                                                 {contract.TASK: contract.TOKENIZE})))
    return out


def warm_up(embedder) -> list[str]:
    """Answer :func:`warmup_requests`; the names of what was warmed, or a :class:`RuntimeError` naming the
    first request that failed and why (so that ``initialize`` fails and the model does not go READY)."""
    from zoo.media.sampling import VideoTruncationWarning
    from zoo.truncation import TruncationWarning

    requests = warmup_requests(embedder)
    with warnings.catch_warnings():  # the full-length text is cut on purpose: no warning in the server's log
        warnings.simplefilter("ignore", TruncationWarning)
        warnings.simplefilter("ignore", VideoTruncationWarning)
        results = handle(embedder, [r for _, r in requests])
    for (what, _), result in zip(requests, results):
        if not isinstance(result, Answer):
            why = str(result) if isinstance(result, ZooError) else type(result).__name__
            raise RuntimeError(f"warm-up failed for {what}: {why}; the model cannot embed, so it does not go READY")
    return [what for what, _ in requests]
