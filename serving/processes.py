"""The processes around a ``tritonserver``, and what they leave behind: which of its children are python-backend
stubs, whether a process runs and how much CPU it has used, signals to a process or a process group, adopting
orphaned descendants (a subreaper), and removing the ``/dev/shm`` regions a killed server's stubs left.

:mod:`serving.server` starts and stops the server with these; :mod:`serving.supervisor` watches its stubs.
psutil is imported inside the functions that use it, not at the top: the demo imports :mod:`serving.server`
(and so this module) for ``ensure_port_free`` alone, and only the serve extra declares psutil.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SHM_DIR = Path("/dev/shm")
STUB_NAME = "triton_python_backend_stub"
_SHM_OWNER = re.compile(r"zoo(\d+)_[0-9a-f]{8}_")  # TritonServer.shm_prefix: the pid of the process that made it
_GONE = ("zombie", "dead")  # psutil's STATUS_ZOMBIE, STATUS_DEAD: exited, not yet (or being) reaped


@dataclass(frozen=True)
class Stub:
    """One python-backend stub process: the worker that runs one instance of one model."""

    pid: int
    model: str  # Triton model name


def find_stubs(server_pid: int) -> list[Stub]:
    """The live python-backend stub processes among the children of the tritonserver ``server_pid``."""
    import psutil

    out = []
    for pid in child_pids(server_pid, zombies=False):
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        # argv: stub, <repository>/<model>/<version>/model.py, <shm region>, ...
        if len(argv) > 1 and argv[0].endswith(STUB_NAME):
            out.append(Stub(pid, Path(argv[1]).parent.parent.name))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` itself has used, its children's not counted; 0 when it is gone."""
    import psutil

    if pid <= 0:  # psutil refuses these outright; no process has them
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def child_pids(parent: int, *, zombies: bool = True) -> list[int]:
    """The pids whose parent is ``parent``, zombies included unless ``zombies=False``."""
    import psutil

    # one pass over every process, reading each one's ppid and status once (a process gone meanwhile is skipped)
    return [p.pid for p in psutil.process_iter(["ppid", "status"])
            if p.info["ppid"] == parent and (zombies or p.info["status"] not in _GONE)]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie — exited, not yet reaped — does not)."""
    import psutil

    try:
        return pid > 0 and psutil.Process(pid).status() not in _GONE
    except psutil.Error:
        return False


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so stubs left behind by a killed
    tritonserver are reaped here rather than lingering as zombies (matters where we run as PID 1)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def remove_orphaned_shm() -> list[Path]:
    """Remove this user's python-backend regions in ``/dev/shm`` whose owner process is gone (a ``zoo serve``
    killed with SIGKILL or by the OOM killer never removes its own); the removed paths."""
    removed = []
    for path in SHM_DIR.glob("zoo*_*"):
        match = _SHM_OWNER.match(path.name)
        try:
            mine = path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if match and mine and not process_alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def signal_pid(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process that is gone (or not ours) is left alone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of the group ``pgid``; a group that is gone (or not ours) is left alone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` still runs (as far as signalling it can tell)."""
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
