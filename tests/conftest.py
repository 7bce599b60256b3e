"""Shared fixtures: offline everywhere, the real default model once per session, the served models (tiny
models are made by tests/tiny_models.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # local Ray in the tests reports nothing anywhere
# the suite's models run on torch unless a test asks for another runtime: the default, auto, exports and checks
# an ONNX graph per model (seconds each); tests/test_runtime.py and the served tests cover auto itself
os.environ["ZOO_RUNTIME"] = "torch"
from zoo.batch.job import ONE_MACHINE_RAY  # noqa: E402

os.environ.update(ONE_MACHINE_RAY)  # before Ray is imported: a local Ray listens on 127.0.0.1 only

import zoo  # noqa: E402
from zoo.defaults import default_model  # noqa: E402
from zoo.weights import resolve  # noqa: E402


@pytest.fixture(scope="session")
def minilm():
    """The real shipped default text model, loaded once."""
    return zoo.create(default_model("text"), device="cpu")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder of the real shipped MiniLM weights."""
    return resolve(zoo.get_spec(default_model("text")))


from tests.serving_fixtures import triton  # noqa: E402,F401  (session fixture for serving tests)
