"""Find, start, wait for and stop a real ``tritonserver``.

A ``tritonserver`` on PATH (e.g. the NGC container's) is preferred; otherwise the one inside the
``nvidia-pytriton`` wheel is used, with a backend folder assembled from the wheel's python backend and
the stub built for this interpreter's Python version. The stub embeds the ``libpython`` it finds at run
time and takes its packages from the ``python3`` on PATH, so both are pointed at this interpreter:
its ``bin`` first on PATH and its ``LIBDIR`` first on LD_LIBRARY_PATH (otherwise a stub linked against
another Python 3.11 crashes importing ``ssl``).

Models are loaded under explicit model control (``--load-model=*``), so a supervisor can unload and load one
model while the others keep serving (:mod:`serving.supervisor`). Each server names its python-backend
shared-memory regions with its own prefix, so :meth:`TritonServer.stop` can remove what a killed stub left
in ``/dev/shm``; the next server removes regions whose owner process is gone (one killed with SIGKILL never
ran its clean-up). Stopping is bounded: SIGTERM, ``exit_timeout`` seconds for a graceful exit, then SIGKILL.
The server's log goes to ``<zoo cache>/logs`` unless told otherwise, keeping the newest :data:`KEEP_LOGS`.
The process helpers this relies on (children, stubs, signals, orphaned regions) are in :mod:`serving.processes`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import ServerError
from zoo.settings import settings

from .processes import (
    SHM_DIR,
    Stub,
    child_pids,
    find_stubs,
    group_alive,
    remove_orphaned_shm,
    signal_group,
    signal_pid,
)

# the log quotes messages with newlines escaped; the python backend appends "\\n\\nAt:\\n<traceback>" to the reason
ESCAPED_NEWLINE = "\\n"
#: Triton's admin APIs (load a model with uploaded code, unload, register shared memory, read configs and
#: statistics, change tracing and logging): each needs this header with the server's secret
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
ADMIN_HEADER = "zoo-admin-key"
GRPC_ADMIN_PREFIX = "triton-grpc-protocol-"  # what Triton puts before a restricted gRPC protocol's header
KEEP_LOGS = 20  # server logs kept in <zoo cache>/logs; older ones are removed when a server starts


@dataclass(frozen=True)
class Ports:
    """The three ports tritonserver listens on."""

    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002


def free_ports(host: str = "127.0.0.1") -> Ports:
    """Three currently free ports on ``host`` (for tests and parallel servers)."""
    socks = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return Ports(*(s.getsockname()[1] for s in socks))
    finally:
        for s in socks:
            s.close()


def ensure_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise a one-line :class:`ServerError` naming ``port`` and the ``flag`` that changes it when something
    already listens there, before anything is started."""
    if not port:
        return
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as err:
            raise port_error(host, port, what, flag, err) from None


def port_error(host: str, port: int, what: str, flag: str, err: OSError | None = None) -> ServerError:
    """The one-line error for a port that cannot be listened on: which port, for what, the flag to change it."""
    why = f" ({err.strerror or err})" if err is not None else ""
    return ServerError(f"port {port} on {host} ({what}) is not available{why}; choose another with {flag} PORT")


def log_dir() -> Path:
    """Where server logs go by default: ``<zoo cache>/logs``."""
    return settings().logs_dir


def new_log_path() -> Path:
    """A fresh log file name in :func:`log_dir`, after removing all but the newest ``KEEP_LOGS - 1`` logs."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("tritonserver-*.log"), key=lambda p: p.stat().st_mtime)
    for path in old[: max(0, len(old) - (KEEP_LOGS - 1))]:
        path.unlink(missing_ok=True)
    return folder / f"tritonserver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}.log"


def _wheel_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    root = Path(pytriton.__file__).parent / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def find_tritonserver() -> tuple[Path, Path | None]:
    """``(binary, backend_dir)``: PATH first (its own backends), else the nvidia-pytriton wheel's."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None
    root = _wheel_root()
    if root is None:
        raise ServerError(
            "no tritonserver found: install one on PATH (e.g. run inside the NGC Triton container) or "
            "`pip install nvidia-pytriton`, which ships one"
        )
    return root / "bin" / "tritonserver", _wheel_backends(root)


def _wheel_backends(root: Path) -> Path:
    """A backend folder with the wheel's python backend and the stub for this Python version, kept in zoo's
    cache: a folder only this user can write, whose files are compared with the wheel's by content."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the nvidia-pytriton wheel has no python-backend stub for Python {version}")
    dest = settings().backends_dir / f"py{version}"
    python = dest / "python"
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    python.mkdir(exist_ok=True, mode=0o700)
    for folder in (dest, python):
        info = folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise ServerError(f"refusing the backend folder {folder}: it must belong to this user and not be "
                              "writable by others (remove it, or set ZOO_CACHE_DIR)")
    for src in [stub, *(root / "backends" / "python").glob("*.*")]:
        target = python / src.name
        if not target.is_file() or target.is_symlink() or _digest(target) != _digest(src):
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copy2(src, tmp)
            os.replace(tmp, target)  # atomic: a server starting beside us never sees half a file
    return dest


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def server_env() -> dict[str, str]:
    """Environment that makes the python-backend stub use this interpreter and its packages."""
    env = dict(os.environ)  # passed on whole: the stubs run zoo, which reads its settings from it
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libs = [sysconfig.get_config_var("LIBDIR") or ""]
    root = _wheel_root()
    if root is not None:
        libs.append(str(root.parent.parent / "nvidia_pytriton.libs"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*filter(None, libs), env.get("LD_LIBRARY_PATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")  # the server never downloads while loading
    # torch keeps its compile cache in TMPDIR unless told: zoo's cache instead, so a run leaves no temporary file
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings().inductor_dir))
    return env


@dataclass
class TritonServer:
    """A running tritonserver process (its own process group, so stubs go down with it)."""

    repository: Path
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    exit_timeout: int = 5  # seconds tritonserver may take to finish in-flight requests on SIGTERM
    shm_prefix: str = field(default_factory=lambda: f"zoo{os.getpid()}_{secrets.token_hex(4)}_")
    #: the secret of the admin APIs (:data:`RESTRICTED_APIS`), a new one at each start unless given
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: an OTLP/HTTP traces URL: tritonserver traces every inference with OpenTelemetry and sends the spans
    #: there, continuing the trace a request's ``traceparent`` header names (the door's span); None: no tracing
    otlp_endpoint: str | None = None

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC metadata that opens the admin APIs: what the supervisor and zoo's tools send (Triton expects a
        restricted gRPC protocol's header under the ``triton-grpc-protocol-`` prefix)."""
        return {GRPC_ADMIN_PREFIX + ADMIN_HEADER: self.admin_key}

    @property
    def admin_http_headers(self) -> dict[str, str]:
        """The HTTP header that opens the admin APIs of Triton's HTTP endpoint."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the KServe v2 HTTP endpoint."""
        return f"http://{self.host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics address."""
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def start(self, timeout: float = 300.0) -> TritonServer:
        """Launch tritonserver and wait until it and all its models are ready."""
        binary, backends = find_tritonserver()
        cmd = [
            str(binary),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports.grpc}",
            f"--http-address={self.host}", f"--http-port={self.ports.http}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true",
            # explicit control: a supervisor can reload one model while the others keep serving
            "--model-control-mode=explicit", "--load-model=*",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            # inference, health and metadata stay open; everything that changes or reveals the server does not
            f"--http-restricted-api={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}",
        ]
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        if self.otlp_endpoint:
            cmd += ["--trace-config=mode=opentelemetry", "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1",
                    f"--trace-config=opentelemetry,url={self.otlp_endpoint}",
                    "--trace-config=opentelemetry,resource=service.name=tritonserver"]
        if self.log_path is None:
            self.log_path = new_log_path()
        remove_orphaned_shm()
        log = open(self.log_path, "wb")  # not a with-block: the child keeps writing to it
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=server_env(), start_new_session=True,
        )
        log.close()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote (for error messages)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _exit_message(self) -> str:
        """Why the server stopped: each model's load failure when there is one, else the log's end."""
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        failures = dict(re.findall(r"failed to load '([^']+)' version \d+: (.*?)\"?$", text, re.M))
        head = f"tritonserver exited with code {self.process.returncode}"
        if failures:
            lines = "\n".join(f"  {model}: {why.split(ESCAPED_NEWLINE)[0]}" for model, why in failures.items())
            return f"{head}; models that failed to load:\n{lines}\n(full log: {self.log_path})"
        return f"{head}:\n{self.log_tail()}"

    def wait_ready(self, timeout: float) -> None:
        """Block until the server reports ready; raise with its log if it exits or times out."""
        from .channels import grpc_client

        client = grpc_client(self.grpc_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(self._exit_message())
            try:
                if client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise ServerError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stubs(self) -> list[Stub]:
        """The live python-backend stub processes of this server (children of tritonserver)."""
        return [] if self.process is None else find_stubs(self.process.pid)

    def stop(self, timeout: float | None = None) -> None:
        """Stop within ``exit_timeout + 5`` seconds (or ``timeout``), whatever state the server is in.

        SIGTERM goes to tritonserver alone (it unloads its models and ends their stubs); whatever is left
        after the grace period — a stub that died or hangs, a server stuck unloading — is SIGKILLed as a
        process group. Then orphaned stubs are reaped and this server's shared-memory regions removed."""
        if self.process is None:
            return
        grace = self.exit_timeout + 5 if timeout is None else timeout
        children = child_pids(self.process.pid)  # zombies too: ours to reap once the server is gone
        if self.process.poll() is None:
            signal_pid(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        pgid = self.process.pid
        deadline = time.monotonic() + 2
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_group(pgid, signal.SIGKILL)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # stubs are adopted by us when we are a subreaper (otherwise init reaps them); one SIGKILLed just now
        # may take a moment to die, so each is waited for, up to a short deadline, never left a zombie
        pending, reap_by = set(children), time.monotonic() + 2
        while pending:
            for pid in list(pending):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        pending.discard(pid)
                except ChildProcessError:  # not our child, or reaped already
                    pending.discard(pid)
            if pending and time.monotonic() < reap_by:
                time.sleep(0.05)
            else:
                break
        self.remove_shm_regions()

    def remove_shm_regions(self) -> None:
        """Remove this server's python-backend shared-memory files (call once the server is gone)."""
        for path in SHM_DIR.glob(f"{self.shm_prefix}*"):
            path.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

