"""A real tritonserver for the serving tests: started once on free loopback ports, always stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.export import export
from serving.server import TritonServer, free_ports


def served_models(tmp: Path) -> dict[str, str]:
    """Triton model name → what to load in-process for parity: one model of every exported family."""
    from tests.conftest import make_tiny_text_folder
    from tests.tiny_models import make_clap, make_hf_clip, make_open_clip, make_qwen2_vl
    from zoo.defaults import default_model_names

    tiny = make_tiny_text_folder(tmp / "tiny-text", pooling="mean",
                                 prompts={"query": "query: ", "document": "passage: "})
    folders = [tiny, make_open_clip(tmp / "tiny-open-clip"), make_hf_clip(tmp / "tiny-siglip", "siglip"),
               make_clap(tmp / "tiny-clap"), make_qwen2_vl(tmp / "tiny-qwen2-vl")]
    names = [*default_model_names(), "resemblyzer/ge2e-speaker", *map(str, folders)]
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
