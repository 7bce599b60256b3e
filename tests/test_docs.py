"""The documentation: the MkDocs site builds with ``--strict``, and every fenced code block of README.md and
docs/**/*.md runs, as written, in a test of its own (id ``page:line:language``).

What each language gets:

- ``python``: executed in a fresh process (see the runner below), so nothing a block does — registering a
  family, changing the environment — reaches the test process or another block;
- ``bash``: run by ``bash -euo pipefail`` with a timeout, the environment's programs first on PATH;
- ``yaml`` / ``toml`` / ``json``: parsed; ``dockerfile``: known instructions, and the extras it installs exist;
- ``text``: output and listings, never run. A text block may not hold a command line (a command belongs in a
  ``bash`` block, where it runs); the one exception is the synopsis on the command-line page, which is
  checked flag by flag, and choice by choice, against the real ``zoo`` parser.

A block titled with a file name (```` ```python title="pkg/mod.py" ````) is that file: written into the
page's folder, then run like the others, so the blocks below it can import it.

The runner (:data:`RUNNER`) imports torch, transformers and zoo once; each python block, and each ``zoo``
command line of a bash block (the ``zoo`` on the blocks' PATH hands its command to the runner), then runs in
a process forked from it, with its own folder, environment, standard streams and exit status. A ``zoo``
command runs ``zoo.cli.main``, the function the installed ``zoo`` script calls, without paying its few
seconds of imports every time.

A page's blocks run in page order, in one temporary folder per page (a block finds the files the blocks
above it wrote), with ``ZOO_CACHE_DIR`` in a temporary folder too. Selecting one block runs the page's
blocks above it first.

Blocks that talk to a server get one: addresses of the default ports are replaced by those of a server
started for the test (:data:`SERVERS`: the session's tritonserver from ``tests/serving_fixtures.py``, and a
demo on a small corpus). Long jobs run on a sample: ``zoo eval`` gets ``--limit``/``--max-queries``
(:data:`SAMPLE`). ``kubectl`` is a stand-in (:data:`KUBECTL`) that checks each command against the manifests
the page wrote (secrets, schemas, object names, the autoscaler's metric); no cluster is involved.

Two kinds of blocks are not run here, and each is accounted for by name, so no block escapes:

- :data:`EXEMPT`: README's first block, ``./scripts/run.sh`` and ``./scripts/test.sh``, is what CI runs
  (``.ci/run`` runs ``test.sh``, which runs this file); it is checked for syntax and for the scripts it names.
- :data:`COVERED`: pages whose blocks an existing test runs against its own server; that test must exist and
  read the page, and the blocks are checked for syntax here.

Beside the blocks, every dotted ``zoo.`` / ``serving.`` / ``ui.`` name and every repository path written in
inline code must exist, so that prose does not drift from the code.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
BLOCK_TIMEOUT = 300  # seconds one block may take
RUN = {"python", "bash"}
PARSE = {"yaml", "toml", "json", "dockerfile"}
KINDS = RUN | PARSE | {"text"}

#: README's first block: what CI itself runs (.ci/run → scripts/test.sh → this suite), so not run from here
EXEMPT = {
    "./scripts/run.sh     # main job: serve the default models through Triton, with the Gradio demo on top\n"
    "./scripts/test.sh    # the whole test suite, offline\n",
}
#: page → the test that runs that page's blocks against a server of its own (it must read the page)
COVERED = {
    "docs/openai.md": "tests/test_openai.py::test_readme_examples_run",
    "docs/tei.md": "tests/test_door_tei.py::test_page_examples_run",
    "docs/clients.md": "tests/test_clients.py::test_snippet",
}
#: the synopsis checked against the real parser: (page, first line of the block)
SYNOPSIS = ("docs/cli.md", "zoo list")
#: a text block line starting so is a command hidden from the tests
COMMANDS = re.compile(r"^\s*(\$ |zoo |python3? |pip |curl |kubectl |docker |mkdocs |\./scripts/)")
#: default address in a block → (fixture, what replaces it)
SERVERS = {
    "127.0.0.1:8001": ("triton", lambda t: t[0].grpc_url),
    "localhost:8000": ("triton", lambda t: t[0].http_url.removeprefix("http://")),
    "127.0.0.1:8000": ("triton", lambda t: t[0].http_url.removeprefix("http://")),
    "localhost:8002": ("triton", lambda t: t[0].metrics_url.removeprefix("http://").removesuffix("/metrics")),
    "127.0.0.1:7860": ("docs_demo", lambda demo: demo.address),
}
#: long jobs on a sample: (pattern, replacement) applied to bash blocks
SAMPLE = [(re.compile(r"\bzoo eval "), "zoo eval --limit 32 --max-queries 8 "),
          # long documents cost a forward pass of up to 4k tokens each, four ways over: a handful is enough
          (re.compile(r"--limit 32 (--max-queries 8 --build longdocs)"), r"--limit 6 \1")]
#: the files the demo page's example names, taken from the demo's own corpus (label prefix)
DEMO_FILES = {"cat.png": "photo: chelsea", "speech.wav": "spoken: ", "clip.mp4": "clip: ",
              "scene.png": "a picture of "}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    code: str
    index: int  # among the page's blocks
    title: str = ""  # a block titled with a file name (title="pkg/mod.py") is that file: written, then run

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang}"


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\n`]*)\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    page = path.relative_to(ROOT).as_posix()
    out = []
    for m in FENCE.finditer(text):
        lang = (m["info"].split() or [""])[0].lower()
        code = textwrap.dedent(m["body"]) if m["indent"] else m["body"]
        title = re.search(r'title="([^"]+)"', m["info"])
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, lang, code, len(out), title[1] if title else ""))
    return out


BLOCKS = [b for page in PAGES for b in blocks_of(page)]
BY_PAGE: dict[str, list[Block]] = {}
for _b in BLOCKS:
    BY_PAGE.setdefault(_b.page, []).append(_b)


# ---- the site -------------------------------------------------------------------------------------------
def build_site(dest: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(dest)], capture_output=True, text=True, timeout=300, env=env)


def test_site_builds_strictly(tmp_path):
    """Every page in the nav, every link and anchor resolves, every ``:::`` reference renders."""
    out = build_site(tmp_path / "site")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    core = (tmp_path / "site" / "reference" / "core" / "index.html").read_text()
    serving = (tmp_path / "site" / "reference" / "serving" / "index.html").read_text()
    assert "register_checkpoints" in core and "TritonEmbedder" in serving  # the docstrings are in


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav, (sorted(on_disk - in_nav), sorted(in_nav - on_disk))


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) <= 12 * 1024
    first = BY_PAGE["README.md"][0]
    assert first.lang == "bash" and first.code in EXEMPT and text.index("```") < text.index("\n## ")
    links = set(re.findall(r"\]\((docs/[^)#]+)", text))
    assert links and all((ROOT / link).is_file() for link in links), links


# ---- inline code does not drift from the code -----------------------------------------------------------
DOTTED = re.compile(r"(?<![\w/.:-])((?:zoo|serving|ui)(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(r"(?<![\w/.:-])((?:zoo|serving|ui|tests|scripts|docs)/[\w./-]*)")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _inline_code(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", FENCE.sub("", text))


def _defined(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or a name a module defines (read from the source, nothing imported)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            break
    else:
        return False
    body = ast.parse(source.read_text()).body
    for name in parts[i:]:
        found = None
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                found = node
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and name in {
                    a.asname or a.name.split(".")[0] for a in node.names}:
                return True  # defined elsewhere and imported here: good enough
            elif isinstance(node, ast.Assign) and name in {t.id for t in node.targets if isinstance(t, ast.Name)}:
                return True
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
                return True
            elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and name.isupper():
                found = found or node  # a module-level __getattr__ serving constants
        if found is None:
            return False
        body = getattr(found, "body", [])
    return True


def test_names_and_paths_in_prose_exist():
    groups = set(PROJECT["entry-points"])  # entry-point groups read like module names: zoo.families, …
    missing = []
    for page in PAGES:
        for span in _inline_code(page.read_text()):
            for name in DOTTED.findall(span):
                if name not in groups and "NAME" not in name.split(".") and not _defined(name):
                    missing.append(f"{page.name}: {name}")
            for path in PATH.findall(span):
                if "NAME" in re.split(r"[/.]", path) or not (path.endswith("/") or re.search(r"\.\w+$", path)):
                    continue  # a placeholder, or a registry name such as zoo/shapes-aligned-minilm
                if not (ROOT / path).exists():
                    missing.append(f"{page.name}: {path}")
    assert not missing, missing


# ---- the command-line synopsis ----------------------------------------------------------------------------
def _parser_options():
    from zoo.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    out = {}
    for name, p in sub.choices.items():
        out[name] = {o: a for a in p._actions for o in a.option_strings if o not in ("-h", "--help")}
    return out


def test_synopsis_matches_the_parser():
    """Every sub-command and every flag of the real ``zoo`` parser is in the synopsis, nothing else is, and a
    flag's choices written as ``a|b|c`` are exactly the parser's."""
    page, first = SYNOPSIS
    block = next(b for b in BY_PAGE[page] if b.lang == "text" and b.code.startswith(first))
    written: dict[str, set[str]] = {}
    cmd = None
    problems = []
    real = _parser_options()
    for line in block.code.splitlines():
        if line.startswith("zoo "):
            cmd = line.split()[1]
            written.setdefault(cmd, set())
        if cmd is None or cmd not in real:
            problems.append(f"not a zoo sub-command: {line}")
            continue
        for flag, choices in re.findall(r"\[?(--[a-z0-9-]+)(?:[ =]([\w.-]+(?:\|[\w.:-]+)+))?", line):
            written[cmd].add(flag)
            action = real[cmd].get(flag)
            if action is None:
                problems.append(f"zoo {cmd} has no {flag}")
            elif choices and action.choices and set(choices.split("|")) != set(action.choices):
                problems.append(f"zoo {cmd} {flag}: written {choices}, parser {sorted(action.choices)}")
    assert set(written) == set(real), (sorted(set(real) - set(written)), sorted(set(written) - set(real)))
    for cmd, options in real.items():
        primary = {a.option_strings[-1] for a in options.values()}
        problems += [f"zoo {cmd} {o} is not in the synopsis" for o in sorted(primary - written[cmd])]
    assert not problems, problems


# ---- running the blocks -----------------------------------------------------------------------------------
KUBECTL = r'''
"""kubectl for the docs' blocks: no cluster; each command is checked against the manifests in the folder
applied (its state is kept in .kubectl.json in the working folder)."""
import json, re, sys
from pathlib import Path

import kubernetes_validate, yaml

state_file = Path(".kubectl.json")
state = json.loads(state_file.read_text()) if state_file.is_file() else {"secrets": [], "objects": []}
args = sys.argv[1:]

def fail(msg):
    sys.exit(f"kubectl (docs stand-in): {msg}: {' '.join(args)}")

if args[:3] == ["create", "secret", "generic"] and len(args) == 5:
    literal = re.fullmatch(r"--from-literal=key=(.+)", args[4])
    if not literal or len(literal[1]) < 32:
        fail("expected --from-literal=key=<at least 32 characters>")
    if args[3] in state["secrets"]:
        fail(f'secrets "{args[3]}" already exists')
    state["secrets"].append(args[3])
    print(f"secret/{args[3]} created")
elif args[:2] == ["apply", "-f"] and len(args) == 3:
    docs = [d for p in sorted(Path(args[2]).glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    if not docs:
        fail("no manifests")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
        state["objects"].append([doc["kind"], doc["metadata"]["name"]])
        print(f"{doc['kind'].lower()}/{doc['metadata']['name']} created")
    def refs(node):
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                yield node["secretKeyRef"]["name"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)
    wanted = set(refs(docs))
    if not wanted or not wanted <= set(state["secrets"]):
        fail(f"the pods need the secrets {sorted(wanted)}; created: {sorted(state['secrets'])}")
    state["rules"] = json.dumps(docs)
elif args[:2] == ["rollout", "status"] and len(args) == 3:
    kind, name = args[2].split("/")
    if ["Deployment", name] not in state["objects"] or kind != "deployment":
        fail("no such deployment applied")
    print(f'deployment "{name}" successfully rolled out')
elif args[:2] == ["get", "--raw"] and len(args) == 3:
    m = re.fullmatch(r"/apis/custom\.metrics\.k8s\.io/v1beta1/namespaces/[\w-]+/pods/\*/(\w+)", args[2])
    if not m or m[1] not in state.get("rules", ""):
        fail("no applied adapter rule exposes this metric")
    print(json.dumps({"kind": "MetricValueList", "items": []}))
else:
    fail("not a command the docs use")
state_file.write_text(json.dumps(state))
'''


RUNNER = r"""
import atexit, json, os, signal, socket, struct, sys, traceback

import torch, transformers  # noqa: F401  (most of a command's start-up: imported once, here)
from transformers import BertModel  # noqa: F401  (the default text model's architecture)

import zoo.cli
import zoo.evaluation  # noqa: F401
from zoo.registry import list_families

zoo.cli.build_parser()
list_families()  # every family's module imported, nothing computed: children fork from a quiet process
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen()
listener.settimeout(5)
parent = os.getppid()
print("ready", flush=True)


def run(job):
    if job["kind"] == "python":
        try:
            exec(compile(job["code"], job["name"], "exec"), {"__name__": "__main__"})
            return 0
        except BaseException:
            traceback.print_exc()
            return 1
    sys.argv = ["zoo", *job["argv"]]
    try:
        return zoo.cli.main(job["argv"])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)


while True:
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        if os.getppid() != parent:  # the test process is gone: so is the runner
            sys.exit(0)
        continue
    conn.settimeout(None)
    size = struct.unpack("!I", conn.recv(4))[0]
    message, fds, _, _ = socket.recv_fds(conn, size, 3)
    while len(message) < size:
        message += conn.recv(size - len(message))
    job = json.loads(message)
    pid = os.fork()
    if pid == 0:  # the block or the command, in a process of its own
        listener.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        signal.alarm(job["timeout"])
        rc = run(job)
        atexit._run_exitfuncs()  # what a normal exit runs (Ray's shutdown among them)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
    conn.close()
"""


def ask(job: dict, fds: list[int]) -> int:
    """Have the runner run ``job`` with ``fds`` as its standard streams; its exit status, as a shell reports
    it (128 + the signal that killed it). The ``zoo`` on the blocks' PATH is this function and a call to it."""
    message = json.dumps(job).encode()
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(job["env"]["ZOO_DOCS_RUNNER"])
    conn.sendall(struct.pack("!I", len(message)))
    socket.send_fds(conn, [message], fds)
    answer = conn.recv(4)
    conn.close()
    rc = struct.unpack("!i", answer)[0] if len(answer) == 4 else 1
    return 128 - rc if rc < 0 else rc


ZOO_SHIM = "import json, os, socket, struct, sys\n\n" + inspect.getsource(ask) + r"""
env = dict(os.environ)
sys.exit(ask({"kind": "zoo", "argv": sys.argv[1:], "cwd": os.getcwd(), "env": env,
              "timeout": int(env["ZOO_DOCS_TIMEOUT"])}, [0, 1, 2]))
"""


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory):
    """The environment blocks run in (the venv's programs first on PATH, the ``zoo`` that hands its command to
    the runner, the kubectl stand-in, a private zoo cache), with the runner started; it stops with the module."""
    tmp = tmp_path_factory.mktemp("docs-env")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, source, flags in (("kubectl", KUBECTL, ""), ("zoo", ZOO_SHIM, " -S")):  # -S: no site, quick
        (bin_dir / name).write_text(f"#!{sys.executable}{flags}\n{source}")
        (bin_dir / name).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "ZOO_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT),
           "MPLBACKEND": "Agg", "ZOO_DOCS_RUNNER": str(tmp / "runner.sock"), "ZOO_DOCS_TIMEOUT": str(BLOCK_TIMEOUT)}
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, env["ZOO_DOCS_RUNNER"]], env=env, cwd=tmp,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "ready", "the docs' runner did not start"
        yield env
    finally:
        runner.kill()
        runner.wait(10)


class Pages:
    """Per page: its working folder, which of its blocks already ran, and which failed."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.done: dict[str, set[int]] = {}
        self.failed: set[str] = set()  # ids of blocks that failed: the blocks below them fail at once

    def folder(self, page: str) -> Path:
        path = self.root / page.replace("/", "--")
        path.mkdir(exist_ok=True)
        return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory, docs_env):
    return Pages(tmp_path_factory.mktemp("docs-pages"), docs_env)


@dataclass
class Demo:
    address: str  # host:port
    corpus: object  # ui.corpus.Corpus


@pytest.fixture(scope="module")
def docs_demo(tmp_path_factory):
    """The demo on a small corpus of its own (what ``zoo demo --backend local`` serves), on a free port."""
    from serving.server import free_ports
    from ui.app import Searcher, build_app
    from ui.backend import LocalBackend
    from ui.default_corpus import build_default

    tmp = tmp_path_factory.mktemp("docs-demo")
    corpus = build_default(tmp / "corpus", scenes=36, spoken=2)
    demo = build_app(Searcher(LocalBackend("cpu"), corpus, tmp / "index"))
    port = free_ports().grpc
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(corpus.root)])
    yield Demo(f"127.0.0.1:{port}", corpus)
    demo.close()


def _prepare(block: Block, request, cwd: Path) -> str:
    """The block's code with the test's servers put in, its sample sizes, and the files it names."""
    code = block.code
    for address, (fixture, replacement) in SERVERS.items():
        if address in code:
            code = code.replace(address, replacement(request.getfixturevalue(fixture)))
    if block.lang == "bash":
        for pattern, replacement in SAMPLE:
            code = pattern.sub(replacement, code)
    if "127.0.0.1:7860" in block.code:
        corpus = request.getfixturevalue("docs_demo").corpus
        for name, label in DEMO_FILES.items():
            item = next(i for i in corpus.items if i.path and i.label.startswith(label))
            shutil.copy(corpus.file(item), cwd / name)
    return code


def _run(block: Block, pages: Pages, request) -> tuple[bool, str]:
    cwd = pages.folder(block.page)
    code = _prepare(block, request, cwd)
    if block.title:
        (cwd / block.title).parent.mkdir(parents=True, exist_ok=True)
        (cwd / block.title).write_text(code)
    with open(cwd / ".output", "w+") as out, open(os.devnull) as devnull:
        if block.lang == "python":
            job = {"kind": "python", "code": code, "name": block.id, "cwd": str(cwd), "env": pages.env,
                   "timeout": BLOCK_TIMEOUT}
            rc = ask(job, [devnull.fileno(), out.fileno(), out.fileno()])
        else:
            try:
                rc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=pages.env, stdin=devnull,
                                    stdout=out, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                rc = f"timed out after {BLOCK_TIMEOUT} s"
        out.seek(0)
        output = out.read()
    return rc == 0, f"{output}\n(exit status {rc})"


def _covered(block: Block) -> bool:
    return block.page in COVERED or (block.lang == "bash" and block.code in EXEMPT)


def _syntax(block: Block) -> None:
    if block.lang == "python":
        compile(block.code, block.id, "exec")
    elif block.lang == "bash":
        out = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def _check_parsed(block: Block) -> None:
    if block.lang == "yaml":
        assert list(yaml.safe_load_all(block.code))
    elif block.lang == "toml":
        assert tomllib.loads(block.code)
    elif block.lang == "json":
        json.loads(block.code)
    elif block.lang == "dockerfile":
        known = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD",
                 "LABEL", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD"}
        lines = [x for x in block.code.replace("\\\n", " ").splitlines() if x.strip() and not x.startswith("#")]
        assert lines[0].split()[0] == "FROM" and all(x.split()[0] in known for x in lines), lines
        extras = {e for group in re.findall(r"\[([\w,]+)\]", block.code) for e in group.split(",")}
        assert extras <= set(PROJECT["optional-dependencies"]), extras


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block(block: Block, pages: Pages, request):
    assert block.lang in KINDS, f"{block.id}: a fenced block names its language, one of {sorted(KINDS)}"
    if block.lang == "text":
        if (block.page, block.code.split("\n", 1)[0].split(" [")[0]) != SYNOPSIS:
            hidden = [x for x in block.code.splitlines() if COMMANDS.match(x)]
            assert not hidden, f"commands in a text block are never run; make it a bash block: {hidden}"
        return
    if block.lang in PARSE:
        _check_parsed(block)
        return
    if _covered(block):
        _syntax(block)
        if block.code in EXEMPT:
            assert all(os.access(ROOT / s, os.X_OK) for s in re.findall(r"\./(scripts/\S+)", block.code))
        return
    for earlier in BY_PAGE[block.page][:block.index]:  # what the page's blocks above it leave behind
        assert earlier.id not in pages.failed, f"{earlier.id}, above this block, failed"
        if earlier.lang in RUN and not _covered(earlier) and earlier.index not in pages.done.get(block.page, ()):
            ok, output = _run(earlier, pages, request)
            if not ok:
                pages.failed.add(earlier.id)
            assert ok, f"{earlier.id} (above this block) failed:\n{output[-6000:]}"
            pages.done.setdefault(block.page, set()).add(earlier.index)
    ok, output = _run(block, pages, request)
    if not ok:
        pages.failed.add(block.id)
    assert ok, output[-6000:]
    pages.done.setdefault(block.page, set()).add(block.index)


def test_every_block_is_run_here_or_by_a_named_test():
    """No block escapes: each one is run above, exempt by its exact text, or on a page whose named test
    exists and reads that page."""
    assert all(b.lang in KINDS for b in BLOCKS)
    for page, test in COVERED.items():
        assert page in BY_PAGE and any(b.lang in RUN for b in BY_PAGE[page]), page
        file, name = test.split("::")
        source = (ROOT / file).read_text()
        assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.parse(source).body), test
        assert Path(page).name in source, f"{test} does not read {page}"
    exempt = [b for b in BLOCKS if b.lang in RUN and b.code in EXEMPT]
    assert exempt and exempt[0].page == "README.md" and exempt[0].index == 0, [b.id for b in exempt]
