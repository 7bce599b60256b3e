"""One settings object (zoo.settings): the environment → settings mapping, one cache root, flags over the
environment, the places that use it, and no other module reading these variables."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from zoo.settings import ENV_VARS, Settings, settings

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "serving", "ui")
linux = pytest.mark.skipif(sys.platform != "linux", reason="platformdirs follows XDG on Linux only")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """An environment with none of the settings' variables and HOME in ``tmp_path/home``."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


@linux
def test_the_cache_root_defaults_to_the_platforms(env, tmp_path):
    assert Settings.from_env().cache_dir == tmp_path / "home" / ".cache" / "zoo"


@linux
def test_xdg_cache_home_is_honoured(env, tmp_path):
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings.from_env().cache_dir == tmp_path / "xdg" / "zoo"


def test_zoo_cache_dir_wins(env, tmp_path):
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "mine"))
    assert Settings.from_env().cache_dir == tmp_path / "mine"


def test_every_folder_is_under_the_one_root(env, tmp_path):
    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "c"))
    s = Settings.from_env()
    folders = {"eval": s.eval_cache_dir, "logs": s.logs_dir, "triton-backends": s.backends_dir, "onnx": s.onnx_dir,
               "torchinductor": s.inductor_dir, "demo": s.demo_dir}
    assert folders == {name: tmp_path / "c" / name for name in folders}
    env.setenv("ZOO_DATA_DIR", str(tmp_path / "demo-data"))
    assert Settings.from_env().demo_dir == tmp_path / "demo-data"


@pytest.mark.parametrize("value, offline", [("", False), ("0", False), ("false", False), ("1", True),
                                            ("true", True), ("yes", True)])
@pytest.mark.parametrize("name", ["HF_HUB_OFFLINE", "ZOO_OFFLINE"])
def test_offline(env, name, value, offline):
    env.setenv(name, value)
    assert Settings.from_env().offline is offline


def test_the_other_variables(env, tmp_path):
    assert Settings.from_env() == Settings(cache_dir=Settings.from_env().cache_dir)  # all unset: the defaults
    for name, value in [("ZOO_MODELS_DIR", str(tmp_path / "m")), ("ZOO_API_KEY", "k1"),
                        ("ZOO_TRITON_ADMIN_KEY", "k2"), ("QDRANT_API_KEY", "k3"), ("RAY_ADDRESS", "ray://h:1")]:
        env.setenv(name, value)
    s = Settings.from_env()
    assert (s.models_dir, s.api_key, s.triton_admin_key, s.qdrant_api_key, s.ray_address) == (
        tmp_path / "m", "k1", "k2", "k3", "ray://h:1")
    assert not any(k in repr(s) for k in ("k1", "k2", "k3"))  # secrets stay out of logs
    env.setenv("ZOO_API_KEY", "")
    assert Settings.from_env().api_key is None  # empty counts as unset


def test_flags_override_the_environment(env, tmp_path):
    env.setenv("ZOO_API_KEY", "from-env")
    env.setenv("ZOO_DATA_DIR", str(tmp_path / "env-data"))
    base = Settings.from_env()
    s = base.with_flags(api_key="from-flag", data_dir=str(tmp_path / "flag-data"), triton_admin_key=None)
    assert (s.api_key, s.data_dir, s.demo_dir) == ("from-flag", tmp_path / "flag-data", tmp_path / "flag-data")
    assert base.with_flags(api_key=None, data_dir=None) == base  # a flag not given keeps the environment's
    with pytest.raises(TypeError, match="nope"):
        base.with_flags(nope=1)


def test_settings_follows_the_environment(env, tmp_path):
    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "a"))
    first = settings()
    assert first is settings() and first.cache_dir == tmp_path / "a"  # built once per environment
    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "b"))
    assert settings().cache_dir == tmp_path / "b"  # a changed variable is seen without a reset


def test_the_users_read_it(env, tmp_path):
    """The places that used to read the environment themselves now take it from the settings."""
    from serving.server import log_dir, server_env
    from zoo import weights
    from zoo.evaluation.embed import default_cache_dir
    from zoo.store import parse_uri

    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "c"))
    env.setenv("ZOO_OFFLINE", "1")
    env.setenv("QDRANT_API_KEY", "q")
    env.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # torch sets it in this process once it compiles
    assert (log_dir(), default_cache_dir()) == (tmp_path / "c" / "logs", tmp_path / "c" / "eval")
    assert server_env()["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "c" / "torchinductor")
    assert weights.offline() and parse_uri("qdrant+http://h:6333")["api_key"] == "q"


def test_the_command_lines_lay_flags_over_the_environment(env, tmp_path):
    pytest.importorskip("gradio")  # the demo's command is there only with the ui extra
    from serving.cli import _settings as serve_settings
    from ui.cli import _settings as demo_settings
    from zoo.cli import build_parser

    env.setenv("ZOO_CACHE_DIR", str(tmp_path / "c"))
    env.setenv("ZOO_API_KEY", "env-key")
    parser = build_parser()
    assert serve_settings(parser.parse_args(["serve"])).api_key == "env-key"
    assert serve_settings(parser.parse_args(["serve", "--api-key", "flag-key"])).api_key == "flag-key"
    assert demo_settings(parser.parse_args(["demo"])).demo_dir == tmp_path / "c" / "demo"
    env.setenv("ZOO_DATA_DIR", str(tmp_path / "env-data"))
    assert demo_settings(parser.parse_args(["demo"])).demo_dir == tmp_path / "env-data"
    args = parser.parse_args(["demo", "--data-dir", str(tmp_path / "flag-data")])
    assert demo_settings(args).demo_dir == tmp_path / "flag-data"


# ---- nothing else reads these variables -------------------------------------------------------------------------

#: every other use of the environment in the packages, each for a reason: (file, how, variable)
ALLOWED = {
    ("ui/cli.py", "write", "GRADIO_TEMP_DIR"),  # where Gradio (in this process) puts uploads
    ("zoo/batch/job.py", "update", None),  # ONE_MACHINE_RAY: read by Ray and the processes it starts
    ("serving/server.py", "copy", None),  # the environment tritonserver and its stubs run in
}


def environment_uses(path: Path) -> set[tuple[str, str | None]]:
    """``(how, variable)`` for each use of ``os.environ`` / ``os.getenv`` in a file: ``read`` (``get``,
    ``[name]``, ``in``, ``getenv``), ``write`` (``[name] = ``), a method name (``update``, ``pop``, ...),
    ``copy`` (passed whole: ``dict(os.environ)``, ``{**os.environ}``), ``import`` (``from os import environ``)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = set()

    def text(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            uses |= {("import", a.name) for a in node.names if a.name in ("environ", "getenv", "environb")}
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                and node.attr in ("environ", "getenv", "environb")):
            continue
        up = parents.get(node)
        if node.attr == "getenv":
            uses.add(("read", text(up.args[0]) if isinstance(up, ast.Call) and up.args else None))
        elif isinstance(up, ast.Subscript):
            uses.add(("write" if isinstance(up.ctx, ast.Store) else "read", text(up.slice)))
        elif isinstance(up, ast.Attribute):  # os.environ.get / .update / .setdefault / .pop / .items ...
            call = parents.get(up)
            name = text(call.args[0]) if isinstance(call, ast.Call) and call.args else None
            uses.add(("read" if up.attr == "get" else up.attr, name))
        elif isinstance(up, ast.Compare):
            uses.add(("read", text(up.left)))
        else:  # dict(os.environ), {**os.environ}, passed to a function
            uses.add(("copy", None))
    return uses


def test_only_the_settings_read_the_environment():
    settings_file = REPO / "zoo" / "settings.py"
    found = {(str(p.relative_to(REPO)), how, name)
             for package in PACKAGES for p in sorted((REPO / package).rglob("*.py")) if p != settings_file
             for how, name in environment_uses(p)}
    assert {f for f in found if f[2] in ENV_VARS} == set()  # zoo's own variables: through zoo.settings
    assert found - ALLOWED == set()  # any other use is listed above, with its reason (an alias counts as a copy)


def test_the_check_sees_each_form(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom os import getenv\nos.environ.get('A')\nos.environ['B']\nos.getenv('C')\n"
                      "'D' in os.environ\nos.environ['E'] = '1'\nos.environ.update({})\nenv = dict(os.environ)\n"
                      "alias = os.environ\n")
    assert environment_uses(source) == {("import", "getenv"), ("read", "A"), ("read", "B"), ("read", "C"),
                                        ("read", "D"), ("write", "E"), ("update", None), ("copy", None)}
