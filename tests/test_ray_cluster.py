"""``zoo embed`` on a real Ray cluster: a head and a second worker node on loopback with token auth, joined by
the command line through ``RAY_ADDRESS``; the worker node killed in the middle of a job; every listener of the
cluster and of the job on 127.0.0.1.

The cluster runs in a process of its own (this file run as a script): Ray reads its settings once, when it is
imported, so this pytest process's Ray (loaded for local runs by other tests) must not be the one that starts
the nodes. Its nodes are that process's children, so stopping it stops only what this test started."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

if __name__ != "__main__":  # as a script this file only runs the cluster, and needs none of the tests' helpers
    from .processes import listeners, process_tree

pytestmark = pytest.mark.timeout(300)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # the default text model
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")
NODE_CPUS = 2  # per node: `zoo embed` then runs one actor of two threads on each


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# the cluster process: `python tests/test_ray_cluster.py`, the RAY_* environment set by the test before Ray loads


def _busy_workers(node) -> list[str]:
    """Names of the Ray worker processes of ``node`` that hold an actor (idle workers are ``ray::IDLE``)."""
    import psutil

    names = []
    for info in node.all_processes.get("raylet", []):
        try:
            for child in psutil.Process(info.process.pid).children(recursive=True):
                name = child.name()
                if name.startswith("ray::") and name != "ray::IDLE":
                    names.append(name)
        except psutil.NoSuchProcess:
            pass
    return names


def _serve_cluster() -> None:
    """Start a head and a worker node on 127.0.0.1, print their address, then obey stdin: ``kill-worker`` kills
    the worker node at once (no drain, as a machine that dies), ``stop`` (or end of input) stops the cluster."""
    from ray.cluster_utils import Cluster

    def node_args() -> dict:
        return dict(num_cpus=NODE_CPUS, object_store_memory=80 << 20, dashboard_agent_listen_port=free_port())

    # a node that is gone is noticed in about two seconds, not thirty: the rerun must see the cluster as it is
    fast_health = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args=dict(node_args(), include_dashboard=False,
                                                                _system_config=fast_health))
    worker = cluster.add_node(**node_args())
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "ips": [cluster.head_node.node_ip_address,
                                                           worker.node_ip_address]}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill-worker":
                busy = _busy_workers(worker)
                cluster.remove_node(worker, allow_graceful=False)
                cluster.wait_for_nodes()  # until the head has noticed: the rerun then sees one node
                print(json.dumps({"killed": busy}), flush=True)
            elif line.strip() == "stop":
                break
    finally:
        cluster.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# the test


class RayCluster:
    """The cluster process (its own session), what it says, and how it stops."""

    def __init__(self, root: Path, ray_tmp: Path) -> None:
        self.log, self.ray_tmp = root / "cluster.log", ray_tmp
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # what Ray 2.60 asks
        # RAY_TMPDIR: its session folders and `ray_current_cluster` go there, not to /tmp/ray; a free port for
        # the head's autoscaler metrics, whose fixed default (44217) another Ray on this machine may hold
        env = {**os.environ, **self.auth, "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "AUTOSCALER_METRIC_PORT": str(free_port())}
        env.pop("RAY_ADDRESS", None)
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True, start_new_session=True, env=env,
                                         cwd=Path(__file__).resolve().parent.parent)
        self.address = self.reply(120)["address"]

    def reply(self, timeout: float) -> dict:
        """The cluster process's next JSON line."""
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"the cluster said nothing for {timeout} s:\n{self.log.read_text()[-3000:]}")
        line = self.proc.stdout.readline()
        assert line, f"the cluster process ended:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def tell(self, command: str, timeout: float = 60) -> dict:
        """Send one command and wait for its answer."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.reply(timeout)

    def pids(self) -> set[int]:
        """The cluster process and every process under it (Ray's nodes and their workers)."""
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        """Stop the cluster; anything of it still there after that is killed by pid."""
        import psutil

        left = [psutil.Process(pid) for pid in self.pids() if psutil.pid_exists(pid)]
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for proc in left:
            try:
                proc.kill()  # psutil checks it is still the same process (start time), not a reused pid
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module; the test that kills its worker node goes last."""
    # Ray's sockets live under RAY_TMPDIR, and a Unix socket's path must stay under 108 bytes: pytest's
    # tmp_path is too deep, so Ray gets a short folder of its own in /tmp
    with tempfile.TemporaryDirectory(prefix="zoo-ray-") as ray_tmp:
        c = RayCluster(tmp_path_factory.mktemp("cluster"), Path(ray_tmp))
        try:
            yield c
        finally:
            c.stop()


def _driver_env(cluster: RayCluster, **more: str) -> dict[str, str]:
    """This environment as a user's shell would have it: the cluster's token, no one-machine setting (which
    this pytest process has on for its own local Ray: zoo must decide it), RAY_ADDRESS only if given."""
    env = {**os.environ, **cluster.auth, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(cluster.ray_tmp), **more}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    if "RAY_ADDRESS" not in more:
        env.pop("RAY_ADDRESS", None)
    return env


class Embed:
    """``zoo embed`` run as a user runs it, against the cluster named by RAY_ADDRESS."""

    def __init__(self, cluster: RayCluster, corpus: Path, out: Path, rows_per_shard: int, flag: bool = False) -> None:
        """``flag``: name the cluster with ``--ray-address`` instead of RAY_ADDRESS."""
        self.out, self.log = out, out.parent / f"{out.name}.log"
        where = ["--ray-address", cluster.address] if flag else []
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zoo.cli", "embed", str(corpus), "--model", MODEL, "--out", str(out),
                 "--rows-per-shard", str(rows_per_shard), "--no-progress", *where],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=_driver_env(cluster) if flag else _driver_env(cluster, RAY_ADDRESS=cluster.address))
        self.listeners: set[tuple[str, int, str]] = set()  # the cluster's, while the job ran
        self.own: set[tuple[str, int, str]] = set()  # the job's own (the driver's Ray worker)

    def shards(self) -> int:
        return len(list(self.out.glob("shard-*.parquet")))

    def watch(self, cluster: RayCluster, until, timeout: float) -> None:
        """Sample the listeners of the cluster and of the job until ``until()`` holds or the job ends."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and not until():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"zoo embed did not finish in {timeout} s:\n{self.text()[-3000:]}")
            self.listeners |= listeners(cluster.pids())
            self.own |= listeners(process_tree(self.proc.pid))
            time.sleep(0.3)

    def finish(self, cluster: RayCluster, timeout: float = 120) -> int:
        self.watch(cluster, lambda: False, timeout)
        return self.proc.wait()

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session it was started in: only this job
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _rows(out: Path):
    import numpy as np
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table()
    ids = table.column("id").to_pylist()
    vectors = np.array(table.column("embedding").to_pylist(), np.float32)
    return dict(zip(ids, vectors))


def _off_loopback(listeners: set[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    return sorted(x for x in listeners if x[0] not in LOOPBACK)


LOCAL_RAY = """
from zoo.batch.job import init_ray, load_ray
ray = load_ray(None)
init_ray(ray)
print(ray.get_runtime_context().gcs_address, len(ray.nodes()), flush=True)
ray.shutdown()
"""


def test_a_local_job_starts_its_own_ray_beside_a_cluster(cluster):
    """Without RAY_ADDRESS a job never joins the cluster that Ray's own record (``ray_current_cluster``, which a
    bare ``ray.init()`` follows) names: it starts a Ray of its own, on 127.0.0.1."""
    assert (cluster.ray_tmp / "ray" / "ray_current_cluster").read_text().strip() == cluster.address
    run = subprocess.run([sys.executable, "-c", LOCAL_RAY], capture_output=True, text=True, timeout=120,
                         env=_driver_env(cluster))
    assert run.returncode == 0, run.stderr[-3000:]
    gcs, nodes = run.stdout.split()
    assert gcs != cluster.address and gcs.startswith("127.0.0.1:") and nodes == "1"


def test_zoo_embed_on_a_two_node_loopback_cluster_survives_a_lost_node(cluster, tmp_path):
    """`zoo embed` with RAY_ADDRESS on the cluster: the rows equal the model run in this process; with the worker
    node killed mid-job the job completes or names the shards it lost, and the same command again finishes it;
    every listener of the cluster and of the job on loopback all along."""
    import numpy as np

    import zoo

    texts = [f"document {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(40)) for i in range(80)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    total = 40  # shards of two rows: enough that the job is still running when the worker node goes
    expected = dict(zip((f"d{i}" for i in range(len(texts))), zoo.create(MODEL, device="cpu").encode(texts, "text")))

    def check_rows(out: Path) -> None:
        rows = _rows(out)
        assert sorted(rows) == sorted(expected)
        for key, vec in expected.items():
            np.testing.assert_allclose(rows[key], vec, atol=1e-5, err_msg=key)

    # 1. the whole job on both nodes
    first = Embed(cluster, corpus, tmp_path / "out1", rows_per_shard=2)
    assert first.finish(cluster) == 0, first.text()[-3000:]
    assert f"{total} shards (0 already done): {len(texts)} rows embedded" in first.text()
    check_rows(first.out)
    assert first.listeners and first.own, (first.listeners, first.own)
    assert not _off_loopback(first.listeners | first.own), _off_loopback(first.listeners | first.own)

    # 2. the worker node dies while the job runs (no drain, as a machine that fails)
    second = Embed(cluster, corpus, tmp_path / "out2", rows_per_shard=2)
    second.watch(cluster, lambda: second.shards() >= 4, 120)
    assert second.proc.poll() is None, "the job ended before the node could be killed:\n" + second.text()[-3000:]
    killed = cluster.tell("kill-worker")["killed"]
    assert killed, "the worker node held no actor when it was killed"
    assert second.shards() < total, "the job was over before the node died: the corpus is too small"
    if second.finish(cluster) != 0:  # then it names the shards it lost
        assert re.search(r"\d+ of \d+ shards were not written \(shards \d", second.text()), second.text()[-3000:]
    # 3. the same command again (the cluster named by --ray-address this time) finishes the job, skipping the
    # shards already written
    before = second.shards()
    rerun = Embed(cluster, corpus, second.out, rows_per_shard=2, flag=True)
    assert rerun.finish(cluster) == 0, rerun.text()[-3000:]
    assert f"{total} shards ({before} already done): {(total - before) * 2} rows embedded" in rerun.text()
    check_rows(second.out)
    assert not _off_loopback(second.listeners | second.own | rerun.listeners | rerun.own)


def test_a_job_that_stops_names_the_shards_it_did_not_write(tmp_path):
    """When Ray gives up on the job (here: no actor can load the model), `zoo embed` names the shards that were
    not written, and the same command again writes them."""
    from tests.tiny_models import make_tiny_text_folder

    model = make_tiny_text_folder(tmp_path / "model", pooling="mean")
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").unlink()  # the spec still reads; every actor fails to load the model
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"text {i}"}) + "\n" for i in range(6)))
    with tempfile.TemporaryDirectory(prefix="zoo-ray-") as ray_tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
        env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   RAY_USAGE_STATS_ENABLED="0")
        command = [sys.executable, "-m", "zoo.cli", "embed", str(corpus), "--model", str(model), "--out",
                   str(tmp_path / "out"), "--rows-per-shard", "2", "--no-progress"]
        failed = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env,
                                start_new_session=True)
        assert failed.returncode == 2, failed.stderr[-3000:]
        assert "3 of 3 shards were not written (shards 0, 1, 2)" in failed.stderr, failed.stderr[-3000:]
        assert "running the same command again does the rest" in failed.stderr
        (model / "model.safetensors").write_bytes(weights)
        again = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env, start_new_session=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "3 shards (0 already done): 6 rows embedded, 0 errors" in again.stdout


# ---------------------------------------------------------------------------------------------------------------
# which Ray a job may use (no cluster needed)


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:6379", True), ("127.0.0.2:6379", True), ("localhost:6379", True), ("[::1]:6379", True),
    ("ray://127.0.0.1:10001", True), ("::1", True), ("10.0.0.5:6379", False), ("head.example.com:6379", False),
    ("auto", False), ("[2001:db8::1]:6379", False),
])
def test_a_loopback_address_is_recognised(address, loopback):
    from zoo.batch.job import is_loopback

    assert is_loopback(address) is loopback


REFUSED = """
import os, sys
if sys.argv[1] == "early":
    import ray  # imported before zoo, with Ray's default setting
from zoo.batch.job import load_ray
from zoo.errors import InvalidArgumentError
try:
    load_ray(None if sys.argv[2] == "local" else sys.argv[2])
except InvalidArgumentError as err:
    print("refused:", err)
else:
    print("loaded")
"""


@pytest.mark.parametrize(("when", "address", "one_machine", "said"), [
    ("early", "local", None, "Ray was imported before zoo could keep it on 127.0.0.1, so a local Ray"),
    ("early", "127.0.0.1:6379", None, "so the Ray cluster at 127.0.0.1:6379 would listen on every interface"),
    ("late", "10.0.0.5:6379", "0", "the nodes of the Ray cluster at 10.0.0.5:6379 could not reach it"),
    ("late", "10.0.0.5:6379", None, "loaded"),
    ("late", "local", None, "loaded"),
])
def test_a_ray_set_for_the_wrong_place_is_refused(when, address, one_machine, said):
    """Ray reads its bind setting once, when imported: a Ray imported earlier with the setting that does not
    fit where the job runs is refused by name (it would listen on every interface, or hang looking for a
    loopback cluster elsewhere, or leave a remote cluster unable to reach this process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    if one_machine is not None:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = one_machine
    run = subprocess.run([sys.executable, "-c", REFUSED, when, address], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert said in run.stdout, run.stdout


if __name__ == "__main__":
    _serve_cluster()
