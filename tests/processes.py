"""Run a command-line server as a user does and wait, with a deadline, for the line that says it is up."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving.processes import child_pids as children
from serving.server import free_ports

_OUTPUT: dict[int, queue.Queue] = {}  # what each started process printed, read by a thread of its own
REPO = str(Path(__file__).resolve().parent.parent / "model_repository")


@contextlib.contextmanager
def taken_port():
    """A loopback port that something listens on while the block runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def start_and_wait(args: list[str], ready_prefix: str, timeout: float = 300, env: dict[str, str] | None = None,
                   python: str = sys.executable) -> tuple[subprocess.Popen, list[str]]:
    """Start ``python -m zoo.cli ARGS`` in its own process group (``env`` added to this environment; ``python``:
    another interpreter); return once a line starts with ``ready_prefix`` (or the process exits, or ``timeout``
    passes) with the lines read so far."""
    proc = subprocess.Popen([python, "-m", "zoo.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    lines: queue.Queue = queue.Queue()
    _OUTPUT[proc.pid] = lines
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith(ready_prefix):
            break
    return proc, seen


def output_since_start(proc: subprocess.Popen, last: int = 60) -> str:
    """The last ``last`` lines the process printed after :func:`start_and_wait` returned (to explain a failure)."""
    lines, out = _OUTPUT.get(proc.pid), []
    while lines is not None and not lines.empty():
        out.append(lines.get_nowait())
    return "".join(out[-last:])


def stop_group(proc: subprocess.Popen, timeout: float = 60) -> int | None:
    """SIGTERM the process group, SIGKILL it if still there after ``timeout``; the exit code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)
    except ProcessLookupError:
        return proc.poll()


def process_tree(pid: int) -> set[int]:
    """``pid`` and every process under it (empty when it is gone)."""
    import psutil

    try:
        return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def listeners(pids: set[int]) -> set[tuple[str, int, str]]:
    """``(address, port, process name)`` of the TCP sockets that ``pids`` listen on."""
    import psutil

    found = set()
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                found.add((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
            except psutil.NoSuchProcess:
                pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Serve:
    """A `zoo serve` process and what the tests look at: tritonserver, its stubs, its shm prefix, health."""

    def __init__(self, proc, ports, health_port, openai_port):
        self.proc, self.ports, self.health_port, self.openai_port = proc, ports, health_port, openai_port
        self.grpc = f"127.0.0.1:{ports.grpc}"
        self.openai = f"http://127.0.0.1:{openai_port}/v1"

    @property
    def triton_pid(self) -> int:
        return next(p for p in children(self.proc.pid) if "tritonserver" in cmdline(p))

    def stubs(self, model: str) -> list[int]:
        return [p for p in children(self.triton_pid) if f"/{model}/1/model.py" in cmdline(p)]

    @property
    def shm_prefix(self) -> str:
        return cmdline(self.triton_pid).split("shm-region-prefix-name=")[1].split()[0]

    def model_ready(self, model: str) -> bool:  # Triton's own per-model endpoint
        return _status(f"http://127.0.0.1:{self.ports.http}/v2/models/{model}/ready") == 200

    def health(self) -> int:
        return _status(f"http://127.0.0.1:{self.health_port}/health")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def start_serve(*extra: str, wait_for: str = "health:", repository: str | Path = REPO) -> Serve:
    """`zoo serve` of ``repository`` (the committed default one unless told), every port (the OpenAI door's too)
    free on loopback."""
    ports, health_port, openai_port = free_ports(), free_ports().grpc, free_ports().http
    proc, lines = start_and_wait(["serve", "--repository", str(repository), "--grpc-port", str(ports.grpc),
                                  "--http-port", str(ports.http), "--metrics-port", str(ports.metrics), "--health-port",
                                  str(health_port), "--openai-port", str(openai_port), *extra], wait_for)
    assert lines and lines[-1].startswith(wait_for.split()[0]) or wait_for == "", "".join(lines)
    return Serve(proc, ports, health_port, openai_port)
