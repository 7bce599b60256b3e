"""Keep every served model alive: notice a dead or hung python-backend stub and bring the model back.

Triton's python backend does not restart a stub that died (SIGKILL, OOM killer, a crash in native code):
every later request fails with "Stub process ... is not healthy" while Triton's ready endpoints keep
answering 200. The :class:`Supervisor` watches, from outside the server:

- **stub processes** (every ``interval`` seconds): a stub of a ready model that is gone or a zombie;
- **liveness** (when a model has executed nothing for ``probe_every`` seconds): one tiny request must be
  answered within ``hang_timeout`` seconds, else the model's stubs are killed.

A dead model is unloaded at once (Triton's per-model and, with strict readiness, server ready endpoints
then say "not ready", and :meth:`Supervisor.ready` does too), then loaded again under explicit model
control: a fresh stub loads the weights and the model answers again. Failed loads are retried with backoff.

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
from .server import TritonServer, process_alive

log = logging.getLogger(__name__)

READY, RESTARTING, FAILED = "ready", "restarting", "failed"


@dataclass
class ModelHealth:
    """What the supervisor knows of one model."""

    state: str = READY  # ready | restarting | failed
    reason: str = ""  # why it was last restarted or why loading failed
    restarts: int = 0
    since: float = field(default_factory=time.monotonic)  # when the state was entered
    stubs: tuple[int, ...] = ()  # pids of its stubs while ready
    executions: int = -1  # Triton's execution_count at the last look
    active_at: float = field(default_factory=time.monotonic)  # last time it was seen executing or answering

    def to_dict(self) -> dict[str, Any]:
        """JSON view for health endpoints."""
        return {"state": self.state, "reason": self.reason, "restarts": self.restarts,
                "for_seconds": round(time.monotonic() - self.since, 1)}


def probe_item(spec: EmbedderSpec) -> tuple[str, bytes]:
    """``(input tensor name, element)`` of the smallest valid request for the model's first modality."""
    modality = spec.modalities[0]
    if modality is Modality.TEXT:
        item: Any = "probe"
    elif modality is Modality.IMAGE:
        item = np.full((8, 8, 3), 128, np.uint8)
    elif modality is Modality.AUDIO:
        item = (np.sin(np.arange(8000, dtype=np.float32) * 0.06), 16000)
    elif modality is Modality.VIDEO:
        item = np.full((2, 8, 8, 3), 128, np.uint8)
    else:
        item = [{"text": "probe"}]
    return contract.INPUTS[modality], contract.encode_item(modality, item, 0)


class Supervisor:
    """Watches the models of a running :class:`TritonServer` and reloads any whose stub dies or hangs."""

    def __init__(
        self, server: TritonServer, *, interval: float = 0.5, probe_every: float = 5.0, hang_timeout: float = 60.0,
        load_timeout: float = 600.0, on_event: Callable[[str], None] | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self.server = server
        self.interval, self.probe_every, self.hang_timeout = interval, probe_every, hang_timeout
        self.load_timeout = load_timeout
        self.on_event = on_event or (lambda msg: log.warning("%s", msg))
        self._client = grpcclient.InferenceServerClient(server.grpc_url)
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

        index = self._client.get_model_repository_index(as_json=True).get("models", [])
        stubs = self._stubs_by_model()
        for entry in index:
            if entry.get("state") == "READY":
                name = entry["name"]
                self.specs[name] = fetch_spec(self._client, name)
                self.health[name] = ModelHealth(stubs=stubs.get(name, ()))
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
        """One round: dead stubs restart their model at once; idle models are probed now and then."""
        now = time.monotonic()
        for name, h in list(self.health.items()):
            if h.state == FAILED and now - h.since >= min(60.0, 5.0 * 2 ** min(h.restarts, 4)):
                self._restart_async(name, h.reason)  # retry a failed load, with backoff
                continue
            if h.state != READY:
                continue
            dead = [pid for pid in h.stubs if not process_alive(pid)]
            if dead or not h.stubs:
                self._restart_async(name, f"stub process {', '.join(map(str, dead)) or '?'} is gone")
                continue
            if self.hang_timeout > 0:
                self._check_liveness(name, h, now)

    def _check_liveness(self, name: str, h: ModelHealth, now: float) -> None:
        if now - h.active_at < self.probe_every:  # one look (and at most one probe) per probe_every
            return
        h.active_at = now
        executions = self._executions(name)
        if executions != h.executions:  # it executed something since the last look: alive
            h.executions = executions
            return
        threading.Thread(target=self._probe, args=(name,), name=f"zoo-probe-{name}", daemon=True).start()

    def _executions(self, name: str) -> int:
        try:
            stats = self._client.get_inference_statistics(name, as_json=True).get("model_stats", [])
            return sum(int(s.get("execution_count", 0)) for s in stats)
        except Exception:  # model being reloaded, or the server busy: no news is not a failure
            return -1

    def _probe(self, name: str) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        tensor_name, element = probe_item(self.specs[name])
        tensor = grpcclient.InferInput(tensor_name, [1, 1], contract.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array([[element]], dtype=object))
        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        try:
            client.infer(name, [tensor], client_timeout=self.hang_timeout)
        except InferenceServerException as err:
            dead = "not healthy" in (err.message() or "")
            hung = err.status() == "StatusCode.DEADLINE_EXCEEDED"
            with self._lock:
                still_ready = self.health[name].state == READY
            if still_ready and (dead or hung):
                self._kill_stubs(name)
                self._restart_async(name, "stub process is not healthy" if dead else
                                    f"no answer to a probe within {self.hang_timeout:g} s")
        finally:
            client.close()

    def _kill_stubs(self, name: str) -> None:
        """SIGKILL the model's stubs: an unload waits forever for a stub that hangs."""
        for stub in self.server.stubs():
            if stub.model == name:
                try:
                    os.kill(stub.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---- bringing a model back -----------------------------------------------------------------
    def _restart_async(self, name: str, reason: str) -> None:
        with self._lock:
            h = self.health[name]
            if h.state == RESTARTING:
                return
            h.state, h.reason, h.since, h.stubs = RESTARTING, reason, time.monotonic(), ()
        self.on_event(f"model {name} not ready: {reason}; reloading it")
        threading.Thread(target=self._restart, args=(name,), name=f"zoo-restart-{name}", daemon=True).start()

    def _restart(self, name: str) -> None:
        """Unload (Triton reports the model not ready at once), then load a fresh stub with its weights."""
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        self._kill_stubs(name)  # the remaining instances of a multi-instance model go too
        try:
            self._client.unload_model(name)
        except InferenceServerException as err:
            log.warning("unloading %s: %s", name, err.message())
        try:
            self._client.load_model(name, client_timeout=self.load_timeout)
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
                h.state, h.stubs, h.executions, h.active_at = READY, stubs, -1, time.monotonic()
            else:
                h.state, h.reason = FAILED, why or "no stub process after loading"
        if ok and stubs:
            self.on_event(f"model {name} ready again after {time.monotonic() - started:.1f} s")
        else:
            self.on_event(f"model {name} failed to load again: {h.reason}; retrying")
