"""A real tritonserver for the serving tests: started once on free loopback ports, always stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.export import export
from serving.server import TritonServer, free_ports


def served_models(tmp: Path) -> dict[str, str]:
    """Triton model name → what to load in-process for parity: the default models and one tiny model of every
    registered family (from the table in tests/tiny_models.py)."""
    from tests.tiny_models import TINY_MODELS
    from zoo.defaults import default_model_names

    folders = [make(tmp / f"tiny-{family.replace('_', '-')}") for family, make in TINY_MODELS.items()]
    names = [*default_model_names(), *map(str, folders)]
    folders = export(names, tmp / "repository")
    return {f.name: n for f, n in zip(folders, names)}


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """(server, {triton name: registry name or folder}) for a server holding every served family."""
    tmp = tmp_path_factory.mktemp("triton")
    models = served_models(tmp)
    server = TritonServer(tmp / "repository", ports=free_ports(), log_path=tmp / "server.log")
    with server.start(timeout=600):
        yield server, models
