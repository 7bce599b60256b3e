"""Run a command-line server as a user does and wait, with a deadline, for the line that says it is up."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time


def start_and_wait(args: list[str], ready_prefix: str, timeout: float = 300) -> tuple[subprocess.Popen, list[str]]:
    """Start ``python -m zoo.cli ARGS`` in its own process group; return once a line starts with
    ``ready_prefix`` (or the process exits, or ``timeout`` passes) with the lines read so far."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
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
