"""`zoo serve` under load and under faults, as an operator runs it (a real process on free loopback ports):
a bounded load test, a stub killed under load that must come back, and SIGTERM in every state."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from serving import contract
from serving.client import TritonEmbedder
from serving.processes import child_pids as children
from zoo.defaults import default_model

from .processes import Serve, cmdline, output_since_start, start_serve, stop_group

pytestmark = pytest.mark.server
TEXT_MODEL = contract.model_name(default_model("text"))
ALIGNED = contract.model_name(default_model("image"))
LOAD_SECONDS = float(os.environ.get("ZOO_LOAD_SECONDS", 30))


def stop_and_check_clean(serve: Serve, tracked: list[int], prefix: str, limit: float = 20.0) -> float:
    """SIGTERM `zoo serve`; it must end within ``limit`` seconds and leave no process, zombie or shm file."""
    t0 = time.monotonic()
    code = stop_group(serve.proc, timeout=limit + 10)
    took = time.monotonic() - t0
    assert code == 0, code
    assert took <= limit, f"SIGTERM took {took:.1f} s"
    time.sleep(0.5)
    left = [p for p in tracked if Path(f"/proc/{p}").exists()]
    assert not left, f"processes (zombies included) outlived zoo serve: {[(p, cmdline(p)) for p in left]}"
    assert not list(Path("/dev/shm").glob(f"{prefix}*")), "shared-memory regions left in /dev/shm"
    return took


@pytest.fixture(scope="module")
def serve():
    s = start_serve()
    yield s
    if s.proc.poll() is None:
        stop_group(s.proc)


@pytest.fixture(scope="module")
def local():
    return {TEXT_MODEL: zoo.create(default_model("text"), device="cpu"),
            ALIGNED: zoo.create(default_model("image"), device="cpu")}


def group_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo.extend(children(p))
    return total


def _images(n: int) -> list:
    from zoo.data import shapes as S

    rng = np.random.default_rng(8)
    return [S.render(S.sample_training_scene(rng), rng) for _ in range(n)]


OPTION_SETS = [{}, {"dimensions": 128, "precision": "float16"}, {"normalize": False}, {"precision": "int8"}]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float32), b.astype(np.float32)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bounded_load_is_exact_and_does_not_grow_memory(serve, local):
    """16 threads, text and image, four option sets: no error, every row equal to in-process, RSS flat."""
    texts = [f"sentence {i} about {w}" for i, w in enumerate(["cats", "a red circle", "héllo 🐱", "", "x " * 80] * 4)]
    images = _images(6)
    cases = []  # (model, modality, items, options, expected rows)
    for opts in OPTION_SETS:
        for start in range(0, len(texts), 3):
            items = texts[start:start + 1 + start % 3]
            cases.append((TEXT_MODEL, "text", items, opts, local[TEXT_MODEL].encode(items, "text", **opts)))
        for start in range(0, len(images), 2):
            items = images[start:start + 1 + start % 2]
            cases.append((ALIGNED, "image", items, opts, local[ALIGNED].encode(items, "image", **opts)))
    clients = {m: TritonEmbedder(m, serve.grpc) for m in (TEXT_MODEL, ALIGNED)}
    errors, wrong, worst, counts = [], [], [1.0], [0]
    lock = threading.Lock()

    def worker(seed: int, seconds: float) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            model, modality, items, opts, want = cases[rng.integers(len(cases))]
            try:
                got = clients[model].encode(items, modality, **opts)
                same = got.dtype == want.dtype and got.shape == want.shape and np.isfinite(got).all()
                cos = float(_cos(got, want).min()) if same else float("nan")
                with lock:
                    counts[0] += 1
                    if cos >= 0.9999:
                        worst[0] = min(worst[0], cos)
                    else:  # a NaN (a zero row, a wrong shape) is wrong too, never skipped by min()
                        wrong.append((model, len(items), opts, cos))
            except Exception as err:  # collected and asserted below
                errors.append(repr(err))

    def run(seconds: float) -> None:
        threads = [threading.Thread(target=worker, args=(i, seconds)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)

    run(8)  # warm-up: every shape and option set seen once, allocators settled
    before = group_rss(serve.triton_pid)
    counts[0] = 0
    run(LOAD_SECONDS)
    after = group_rss(serve.triton_pid)
    print(f"load: {counts[0]} calls in {LOAD_SECONDS:g} s, {len(wrong)} wrong, worst cos {worst[0]:.6f}, "
          f"RSS {before / 1e6:.0f} -> {after / 1e6:.0f} MB")
    assert not errors, errors[:5]
    assert counts[0] > 16 and not wrong, (len(wrong), wrong[:5])
    assert after < 1.05 * before, f"server RSS grew {100 * (after / before - 1):.1f} %"


def test_killed_stub_under_load_is_reloaded(serve, local):
    """SIGKILL one model's stub while both models are under load: that model is reported not ready within
    5 s (Triton's endpoint and zoo's /health), serves correct rows again within 60 s; the other model never
    fails; SIGTERM then ends everything within 20 s leaving no process, zombie or shm region."""
    assert serve.model_ready(TEXT_MODEL) and serve.health() == 200
    prefix, triton_pid = serve.shm_prefix, serve.triton_pid
    victim = serve.stubs(TEXT_MODEL)
    assert len(victim) == 1, victim
    tracked = [triton_pid, *children(triton_pid)]
    text_want = local[TEXT_MODEL].encode(["a red circle"], "text")
    image = _images(1)
    image_want = local[ALIGNED].encode(image, "image")
    remote = {m: TritonEmbedder(m, serve.grpc) for m in (TEXT_MODEL, ALIGNED)}
    log: list[tuple[float, str, str]] = []  # (time, model, "ok" | error class)
    stop = threading.Event()

    def worker(model, items, want):
        while not stop.is_set():
            try:
                got = remote[model].encode(items, "text" if model == TEXT_MODEL else "image")
                log.append((time.monotonic(), model, "ok" if float(_cos(got, want).min()) >= 0.9999 else "WRONG"))
            except zoo.ZooError as err:
                log.append((time.monotonic(), model, type(err).__name__))
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(TEXT_MODEL, ["a red circle"], text_want)) for _ in range(4)]
    threads += [threading.Thread(target=worker, args=(ALIGNED, image, image_want)) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(victim[0], signal.SIGKILL)
        down = back = None
        while time.monotonic() - killed_at < 120:  # past the bound below, so a failure says how long it took
            ready, health = serve.model_ready(TEXT_MODEL), serve.health()
            now = time.monotonic() - killed_at
            if down is None and not ready and health == 503:
                down = now
            if down is not None and ready and health == 200:
                back = now
                break
            time.sleep(0.1)
        time.sleep(3)  # load keeps running on the reloaded model
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    print(f"not ready after {down} s, back after {back} s")
    assert down is not None and down <= 5, down
    # 8 to 23 s here (idle, and with three busy loops beside it); the bound catches a model that never comes back
    # or reloads in a loop, with room for a slower, shared machine
    assert back is not None and back <= 60, f"back after {back} s; zoo serve said:\n{output_since_start(serve.proc)}"
    back_at = killed_at + back
    text = [(t, r) for t, m, r in log if m == TEXT_MODEL]
    assert "WRONG" not in {r for _, m, r in log}
    assert all(r == "ok" for _, m, r in log if m == ALIGNED), "the other model failed during the restart"
    after = [r for t, r in text if t > back_at + 0.5]
    assert after and all(r == "ok" for r in after), after[:5]
    outage = {r for t, r in text if killed_at <= t <= back_at + 0.5 and r != "ok"}
    assert outage <= {"ModelUnavailableError"}, outage  # retryable, and said so
    assert serve.stubs(TEXT_MODEL) and serve.stubs(TEXT_MODEL) != victim
    tracked += children(triton_pid)
    stop_and_check_clean(serve, tracked, prefix)


def test_sigterm_during_startup_and_during_a_restart():
    """SIGTERM while models load, and while the supervisor reloads a model: both end within 20 s, clean."""
    s = start_serve(wait_for="starting tritonserver")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("tritonserver" in cmdline(p) for p in children(s.proc.pid)):
        time.sleep(0.1)
    time.sleep(2)  # models are loading now
    triton_pid = s.triton_pid
    prefix = s.shm_prefix
    stop_and_check_clean(s, [triton_pid, *children(triton_pid)], prefix)

    s = start_serve()
    triton_pid, prefix = s.triton_pid, s.shm_prefix
    tracked = [triton_pid, *children(triton_pid)]
    os.kill(s.stubs(TEXT_MODEL)[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while s.health() != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # the fresh stub is loading its weights
    tracked += children(triton_pid)
    stop_and_check_clean(s, tracked, prefix)


def test_hung_stub_is_noticed_by_the_probe_and_reloaded():
    """A stub that stops answering (SIGSTOP: alive, but silent) fails the idle probe within --hang-timeout; the
    model is reported not ready, reloaded with a fresh stub, and answers correctly again."""
    s = start_serve("--hang-timeout", "3")
    try:
        hung = s.stubs(TEXT_MODEL)
        assert len(hung) == 1
        remote = TritonEmbedder(TEXT_MODEL, s.grpc)
        want = zoo.create(default_model("text"), device="cpu").encode(["a red circle"], "text")
        os.kill(hung[0], signal.SIGSTOP)
        stopped_at = time.monotonic()
        down = back = None
        while time.monotonic() - stopped_at < 60:
            ready, health = s.model_ready(TEXT_MODEL), s.health()
            if down is None and not ready and health == 503:
                down = time.monotonic() - stopped_at
            if down is not None and ready and health == 200:
                back = time.monotonic() - stopped_at
                break
            time.sleep(0.2)
        print(f"hung stub: not ready after {down} s, back after {back} s")
        # probe_every (5 s) for the idle model to be probed, up to twice, plus the 3 s probe deadline
        assert down is not None and down <= 2 * 5 + 3 + 2, down
        assert back is not None and back <= down + 30, (f"back after {back} s; zoo serve said:\n"
                                                        f"{output_since_start(s.proc)}")
        assert hung[0] not in s.stubs(TEXT_MODEL) and s.stubs(TEXT_MODEL)
        assert float(_cos(remote.encode(["a red circle"], "text"), want).min()) >= 0.9999
        triton_pid, prefix = s.triton_pid, s.shm_prefix
        stop_and_check_clean(s, [triton_pid, *children(triton_pid), hung[0]], prefix)
    finally:
        if s.proc.poll() is None:
            stop_group(s.proc)
