"""The supervisor's rules on real processes standing in for stubs (a busy loop computes, a stopped process does
not), with a stand-in for Triton's client: when a model counts as hung, how restarts back off, and that a model
that keeps crashing is left failed with its reason instead of restarted forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import zoo
from serving import supervisor as S
from serving.processes import Stub, process_alive


class FakeServer:
    """What the supervisor reads of a TritonServer: its stubs (real processes), its process, its secret."""

    grpc_url = "127.0.0.1:9"  # never dialled: the client below stands in
    admin_headers: dict[str, str] = {}

    def __init__(self, make_stub):
        self.make_stub = make_stub
        self.pids = [make_stub()]
        self.process = SimpleNamespace(poll=lambda: None)

    def stubs(self):
        return [Stub(p, "m") for p in self.pids if process_alive(p)]


class FakeClient:
    """Triton's answers: executions finished so far; load starts a fresh stub."""

    def __init__(self, server: FakeServer):
        self.server, self.executions, self.loads = server, 0, 0

    def get_inference_statistics(self, name, as_json=True, headers=None):
        return {"model_stats": [{"execution_count": self.executions}]}

    def unload_model(self, name, headers=None):
        pass

    def load_model(self, name, headers=None, client_timeout=None):
        self.loads += 1
        self.server.pids.append(self.server.make_stub())

    def is_model_ready(self, name):
        return True

    def close(self):
        pass


def busy() -> int:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"]).pid


def idle() -> int:
    return subprocess.Popen(["sleep", "600"]).pid


@pytest.fixture()
def watch(monkeypatch):
    made: list[S.Supervisor] = []

    def make(stub, **kw):
        server = FakeServer(stub)
        sup = S.Supervisor(server, interval=0.05, probe_every=0.2, **kw)
        sup._client = FakeClient(server)
        monkeypatch.setattr(sup, "_probe", lambda name: None)  # a probe that never comes back: work pending
        sup.specs["m"] = zoo.get_spec("sentence-transformers/all-MiniLM-L6-v2")
        sup.health["m"] = S.ModelHealth()
        sup.health["m"].fresh(tuple(server.pids))
        made.append(sup)
        return sup, server

    yield make
    for sup in made:
        sup._stop.set()
        for pid in sup.server.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def run_checks(sup: S.Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sup.check()
        time.sleep(0.05)


def wait_ready(sup: S.Supervisor, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and sup.health["m"].state == S.RESTARTING:
        time.sleep(0.02)


def test_a_long_batch_that_computes_is_not_hung_until_max_execution(watch):
    """Work pending and nothing finished for 3 x hang_timeout, but the stub computes: left alone; past
    max_execution it counts as a runaway."""
    sup, server = watch(busy, hang_timeout=1.0, max_execution=4.0)
    run_checks(sup, 3.0)
    h = sup.health["m"]
    assert h.state == S.READY and h.restarts == 0 and h.probe_since is not None
    run_checks(sup, 2.5)
    wait_ready(sup)
    assert sup.health["m"].restarts == 1 and "max-execution" in sup.health["m"].reason


def test_a_stub_that_computes_nothing_with_work_pending_is_hung(watch):
    """A stopped stub (alive, silent, no CPU) with a probe pending: restarted after hang_timeout, with why."""
    sup, server = watch(idle, hang_timeout=1.0)
    os.kill(server.pids[0], signal.SIGSTOP)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and sup.health["m"].restarts == 0 and sup.health["m"].state == S.READY:
        sup.check()
        time.sleep(0.05)
    took = time.monotonic() - t0
    wait_ready(sup)
    assert sup.health["m"].restarts == 1 and "computed nothing" in sup.health["m"].reason
    assert 1.0 <= took <= 2.5, took
    assert not process_alive(server.pids[0])  # its stub was killed
    assert sup.health["m"].state == S.READY and sup.health["m"].stubs == (server.pids[-1],)


def test_progress_is_not_a_hang(watch):
    """Executions finishing keep a model ready even when its stub uses no CPU between looks."""
    sup, server = watch(idle, hang_timeout=0.5)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        sup._client.executions += 1
        sup.check()
        time.sleep(0.1)
    assert sup.health["m"].state == S.READY and sup.health["m"].restarts == 0


def test_restarts_back_off():
    assert [S._backoff(n) for n in range(8)] == [0, 2, 4, 8, 16, 32, 60, 60]


def test_a_crash_loop_is_reported_not_restarted_forever(watch, monkeypatch):
    """Stubs that die at once after every load: restarted MAX_RESTARTS times with growing waits, then left
    failed with the reason, and never loaded again."""
    waits: list[float] = []
    monkeypatch.setattr(S, "_backoff", lambda n: waits.append(n) or 0.01 * n)
    sup, server = watch(idle, hang_timeout=0)
    for _ in range(S.MAX_RESTARTS + 3):
        for pid in list(server.pids):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        sup.check()
        wait_ready(sup)
    h = sup.health["m"]
    assert h.state == S.FAILED and h.gave_up and f"restarted {S.MAX_RESTARTS} times" in h.reason
    assert "is gone" in h.reason  # the last reason is kept
    assert sup._client.loads == S.MAX_RESTARTS
    assert waits[: S.MAX_RESTARTS] == list(range(S.MAX_RESTARTS))  # each restart waits longer than the last
    assert not sup.ready() and sup.status()["m"]["state"] == "failed"
    loads = sup._client.loads
    run_checks(sup, 0.5)
    assert sup._client.loads == loads
