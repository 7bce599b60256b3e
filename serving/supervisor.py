"""Keep every served model alive: notice a dead or hung python-backend stub and bring the model back.

Triton's python backend does not restart a stub that died (SIGKILL, OOM killer, a crash in native code):
every later request fails with "Stub process ... is not healthy" while Triton's ready endpoints keep
answering 200. The :class:`Supervisor` watches, from outside the server:

- **stub processes** (every ``interval`` seconds): a stub of a ready model that is gone or a zombie;
- **progress**: a model with work pending (a probe is sent when it has finished nothing for ``probe_every``
  seconds, so a silent model always has some) is hung only when no execution has finished for
  ``hang_timeout`` seconds *and* its stubs used almost no CPU meanwhile. A long, legitimate batch keeps its
  stub computing and is left alone (up to ``max_execution`` seconds); a stopped or deadlocked stub is not.

A dead or hung model is unloaded at once (Triton's per-model and, with strict readiness, server ready
endpoints then say "not ready", and :meth:`Supervisor.ready` does too), then loaded again under explicit
model control: a fresh stub loads the weights and the model answers again. Restarts back off (the first at
once, then 2, 4, 8 … s), and a model restarted more than :data:`MAX_RESTARTS` times within
:data:`CRASH_WINDOW_S` is left failed, with its reason on ``/health`` (503), instead of restarted forever.

Triton 2.51 keeps the old version of a model pinned (state UNLOADING) when a request reached its dead
stub before the unload; the new version serves regardless, and the pinned one's zombie stub and shared
memory are cleaned up when the server stops (:meth:`serving.server.TritonServer.stop`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.spec import EmbedderSpec, Modality

from . import contract
from .processes import cpu_seconds, process_alive
from .server import TritonServer

log = logging.getLogger(__name__)

READY, RESTARTING, FAILED = "ready", "restarting", "failed"
MAX_RESTARTS = 5  # restarts within CRASH_WINDOW_S after which a model is left failed (a crash loop)
CRASH_WINDOW_S = 600.0
MAX_BACKOFF_S = 60.0  # the longest wait before a restart
WORKING_CPU_SHARE = 0.1  # a stub computing uses at least this share of one core; an idle or stopped one less


@dataclass
class ModelHealth:
    """What the supervisor knows of one model."""

    state: str = READY  # ready | restarting | failed
    reason: str = ""  # why it was last restarted or why loading failed
    restarts: int = 0
    since: float = field(default_factory=time.monotonic)  # when the state was entered
    stubs: tuple[int, ...] = ()  # pids of its stubs while ready
    executions: int = -1  # Triton's execution_count at the last look
    progress_at: float = field(default_factory=time.monotonic)  # last time an execution was seen to finish
    cpu: float = 0.0  # its stubs' CPU seconds at the last look
    cpu_look: float = field(default_factory=time.monotonic)  # when that was read
    working_at: float = field(default_factory=time.monotonic)  # last time its stubs were seen computing
    probe_since: float | None = None  # when the probe still outstanding was sent
    recent: list[float] = field(default_factory=list)  # times of its restarts within CRASH_WINDOW_S
    gave_up: bool = False  # restarted too often: left failed

    def to_dict(self) -> dict[str, Any]:
        """JSON view for health endpoints."""
        return {"state": self.state, "reason": self.reason, "restarts": self.restarts,
                "for_seconds": round(time.monotonic() - self.since, 1)}

    def fresh(self, stubs: tuple[int, ...]) -> None:
        """Ready again with new ``stubs``: progress is counted from now."""
        now = time.monotonic()
        self.state, self.stubs, self.executions, self.probe_since = READY, stubs, -1, None
        self.progress_at = self.working_at = self.cpu_look = now
        self.cpu = sum(cpu_seconds(pid) for pid in stubs)


def probe_item(spec: EmbedderSpec) -> tuple[str, bytes]:
    """``(input tensor name, element)`` of the smallest valid request for the model's first modality."""
    modality = spec.modalities[0]
    pairs = contract.reads_pairs(spec.outputs)
    if pairs:  # a cross-encoder's items are (query, document) pairs
        item: Any = ("probe", "probe")
    elif modality is Modality.TEXT:
        item = "probe"
    elif modality is Modality.IMAGE:
        item = np.full((8, 8, 3), 128, np.uint8)
    elif modality is Modality.AUDIO:
        item = (np.sin(np.arange(8000, dtype=np.float32) * 0.06), 16000)
    elif modality is Modality.VIDEO:
        item = np.full((2, 8, 8, 3), 128, np.uint8)
    else:
        item = [{"text": "probe"}]
    return contract.INPUTS[modality], contract.encode_item(modality, item, 0, pairs=pairs)


class Supervisor:
    """Watches the models of a running :class:`TritonServer` and reloads any whose stub dies or hangs."""

    def __init__(
        self, server: TritonServer, *, interval: float = 0.5, probe_every: float = 5.0, hang_timeout: float = 60.0,
        max_execution: float | None = None, load_timeout: float = 600.0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        from .channels import grpc_client

        self.server = server
        self.interval, self.probe_every, self.hang_timeout = interval, probe_every, hang_timeout
        # a stub may compute this long without finishing anything before it counts as a runaway
        self.max_execution = max_execution if max_execution is not None else 10 * hang_timeout
        self.load_timeout = load_timeout
        self.on_event = on_event or (lambda msg: log.warning("%s", msg))
        self._client = grpc_client(server.grpc_url)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health: dict[str, ModelHealth] = {}
        self.specs: dict[str, EmbedderSpec] = {}

    # ---- what others read ------------------------------------------------------------------------
    def ready(self, model: str | None = None) -> bool:
        """Whether ``model`` (or every model) is ready as far as the supervisor knows."""
        with self._lock:
            states = [self.health[model].state] if model is not None else [h.state for h in self.health.values()]
        return bool(states) and all(s == READY for s in states)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per model: state, reason, restart count."""
        with self._lock:
            return {name: h.to_dict() for name, h in self.health.items()}

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self) -> Supervisor:
        """Record the models the server has loaded and their stubs, then watch in a daemon thread."""
        from .client import fetch_spec

        index = self._client.get_model_repository_index(as_json=True, headers=self.server.admin_headers)
        index = index.get("models", [])
        stubs = self._stubs_by_model()
        for entry in index:
            if entry.get("state") == "READY":
                name = entry["name"]
                self.specs[name] = fetch_spec(self._client, name)
                self.health[name] = ModelHealth()
                self.health[name].fresh(stubs.get(name, ()))
        self._thread = threading.Thread(target=self._run, name="zoo-supervisor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching (returns within about one interval)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.server.process is None or self.server.process.poll() is not None:
                return  # the server itself is gone: `zoo serve` reports that and exits
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad look at the server
                log.exception("supervisor check failed")

    def _stubs_by_model(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, list[int]] = {}
        for stub in self.server.stubs():
            out.setdefault(stub.model, []).append(stub.pid)
        return {k: tuple(sorted(v)) for k, v in out.items()}

    # ---- one look ----------------------------------------------------------------------------------
    def check(self) -> None:
        """One round: dead stubs restart their model; a model with work pending that makes no progress and
        computes nothing for ``hang_timeout`` is restarted; failed loads are retried with backoff."""
        now = time.monotonic()
        for name, h in list(self.health.items()):
            if h.state == FAILED:
                if not h.gave_up and now - h.since >= _backoff(len(h.recent)):
                    self._restart_async(name, h.reason)
                continue
            if h.state != READY:
                continue
            dead = [pid for pid in h.stubs if not process_alive(pid)]
            if dead or not h.stubs:
                self._restart_async(name, f"stub process {', '.join(map(str, dead)) or '?'} is gone")
                continue
            if self.hang_timeout > 0:
                self._check_progress(name, h, now)

    def _check_progress(self, name: str, h: ModelHealth, now: float) -> None:
        executions = self._executions(name)
        if executions >= 0 and executions != h.executions:  # something finished since the last look
            h.executions, h.progress_at = executions, now
            return
        cpu = sum(cpu_seconds(pid) for pid in h.stubs)
        if now > h.cpu_look:
            if cpu - h.cpu >= WORKING_CPU_SHARE * (now - h.cpu_look):
                h.working_at = now  # its stubs are computing: a long batch, not a hang
            h.cpu, h.cpu_look = cpu, now
        if h.probe_since is None:
            if now - h.progress_at >= self.probe_every:  # silent: give it some work to show it still answers
                h.probe_since = now
                threading.Thread(target=self._probe, args=(name,), name=f"zoo-probe-{name}", daemon=True).start()
            return
        pending_since = max(h.progress_at, h.probe_since)
        stalled = now - max(pending_since, h.working_at)
        if stalled >= self.hang_timeout:
            why = f"no execution finished and its stubs computed nothing for {stalled:.0f} s with work pending"
        elif now - pending_since >= self.max_execution:
            why = f"no execution finished for {now - pending_since:.0f} s (longer than --max-execution)"
        else:
            return
        self._kill_stubs(name)
        self._restart_async(name, why)

    def _executions(self, name: str) -> int:
        try:
            stats = self._client.get_inference_statistics(name, as_json=True, headers=self.server.admin_headers)
            return sum(int(s.get("execution_count", 0)) for s in stats.get("model_stats", []))
        except Exception:  # model being reloaded, or the server busy: no news is not a failure
            return -1

    def _probe(self, name: str) -> None:
        """Send the smallest valid request; a stub reported dead restarts the model at once. Whether a silent
        model is hung is decided by :meth:`_check_progress`, never by this call's own timeout."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        from .channels import grpc_client

        tensor_name, element = probe_item(self.specs[name])
        tensor = grpcclient.InferInput(tensor_name, [1, 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array([[element]], dtype=object))
        client = grpc_client(self.server.grpc_url)
        try:
            # served first: a probe stuck behind a full queue of bulk work would say nothing of the model
            client.infer(name, [tensor], client_timeout=self.max_execution + self.hang_timeout,
                         priority=contract.PRIORITIES["high"])
        except InferenceServerException as err:
            with self._lock:
                still_ready = self.health[name].state == READY
            if still_ready and "not healthy" in (err.message() or ""):
                self._kill_stubs(name)
                self._restart_async(name, "stub process is not healthy")
        finally:
            client.close()
            with self._lock:
                h = self.health[name]
                if h.state == READY:
                    h.probe_since = None

    def _kill_stubs(self, name: str, wait: float = 0.0) -> None:
        """SIGKILL the model's stubs (an unload waits forever for a stub that hangs), and wait up to ``wait``
        seconds until they are gone, so none of them is taken for a stub of the reloaded model."""
        killed = []
        for stub in self.server.stubs():
            if stub.model == name:
                try:
                    os.kill(stub.pid, signal.SIGKILL)
                    killed.append(stub.pid)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        while any(process_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.01)

    # ---- bringing a model back -----------------------------------------------------------------
    def _restart_async(self, name: str, reason: str) -> None:
        with self._lock:
            h = self.health[name]
            if h.state == RESTARTING or h.gave_up:
                return
            now = time.monotonic()
            h.recent = [t for t in h.recent if now - t < CRASH_WINDOW_S] + [now]
            if len(h.recent) > MAX_RESTARTS:
                h.state, h.gave_up, h.since, h.stubs = FAILED, True, now, ()
                h.reason = (f"restarted {MAX_RESTARTS} times within {CRASH_WINDOW_S:.0f} s; not restarting it again "
                            f"(last: {reason})")
                delay = None
            else:
                h.state, h.reason, h.since, h.stubs = RESTARTING, reason, now, ()
                delay = _backoff(len(h.recent) - 1)
        if delay is None:
            self._kill_stubs(name)
            self.on_event(f"model {name} failed: {h.reason}")
            return
        self.on_event(f"model {name} not ready: {reason}; reloading it" + (f" in {delay:g} s" if delay else ""))
        threading.Thread(target=self._restart, args=(name, delay), name=f"zoo-restart-{name}", daemon=True).start()

    def _restart(self, name: str, delay: float = 0.0) -> None:
        """Unload (Triton reports the model not ready at once), wait ``delay``, then load a fresh stub."""
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        admin = self.server.admin_headers
        self._kill_stubs(name, wait=5.0)  # the remaining instances of a multi-instance model go too
        try:
            self._client.unload_model(name, headers=admin)
        except InferenceServerException as err:
            log.warning("unloading %s: %s", name, err.message())
        if self._stop.wait(delay):
            return  # shutting down
        try:
            self._client.load_model(name, headers=admin, client_timeout=self.load_timeout)
            ok = self._client.is_model_ready(name)
            why = "" if ok else "not ready after loading"
        except InferenceServerException as err:
            ok, why = False, (err.message() or str(err)).split("\n")[0]
        stubs = self._stubs_by_model().get(name, ()) if ok else ()
        with self._lock:
            h = self.health[name]
            h.restarts += 1
            h.since = time.monotonic()
            if ok and stubs:
                h.fresh(stubs)
            else:
                h.state, h.reason = FAILED, why or "no stub process after loading"
        if ok and stubs:
            self.on_event(f"model {name} ready again after {time.monotonic() - started:.1f} s")
        else:
            self.on_event(f"model {name} failed to load again: {h.reason}; retrying")


def _backoff(restarts: int) -> float:
    """Seconds to wait before a model's next restart after ``restarts`` recent ones: 0, 2, 4, 8 … 60."""
    return 0.0 if restarts <= 0 else min(MAX_BACKOFF_S, 2.0 ** restarts)
