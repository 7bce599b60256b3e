"""The served sections of ``scripts/bench.py``: tritonserver per runtime under the load shapes, the
dynamic-batcher delay sweep, and the infinity-emb peer; each load comes from ``scripts/bench_load.py`` in a
process of its own. Where NVIDIA's ``perf_analyzer`` is found (``$PERF_ANALYZER``, else on ``PATH``; the
recipe is in the environment notes), the served section also drives 16 concurrent one-sentence clients with
it on the short sentences: a C++ load generator costs the server's cores almost nothing, so that row is the
one compared with the in-process batch-32 throughput of the same runtime, measured right before and after it."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOADS = ((1, 1), (16, 1), (64, 1), (4, 32))  # (concurrent clients, items per request)
PA_CLIENTS = 16  # perf_analyzer's concurrent one-sentence clients
PA_REQUESTS = 1500  # requests per perf_analyzer measurement window


def perf_analyzer() -> str | None:
    """The ``perf_analyzer`` executable to drive the served models with, or None where there is none."""
    import shutil

    return os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer")


def _perf_analyzer_load(exe: str, server, triton: str, short: list[str], work: Path) -> dict:
    """``PA_CLIENTS`` concurrent one-sentence clients from perf_analyzer on ``short``: items/s and latency."""
    data = work / "short.json"
    data.write_text(json.dumps({"data": [{"TEXT": {"content": [s], "shape": [1]}} for s in short]}))
    report = work / f"pa-{triton}.csv"
    headers = [a for k, v in server.admin_headers.items() for a in ("-H", f"{k}:{v}")]  # config and statistics
    cmd = [exe, "-m", triton, "-i", "grpc", "-u", server.grpc_url, "--input-data", str(data), "-b", "1",
           "--concurrency-range", str(PA_CLIENTS), "--measurement-mode", "count_windows",
           "--measurement-request-count", str(PA_REQUESTS), "--stability-percentage", "100", "--max-trials", "3",
           "-f", str(report), *headers]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {(done.stdout + done.stderr)[-2000:]}")
    import csv

    row = next(csv.DictReader(report.open()))
    return {"items_per_s": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1000,
            "p99_ms": float(row["p99 latency"]) / 1000, "generator": "perf_analyzer"}


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _load(url: str, model: str, modality: str, items_file: Path, clients: int, items: int, requests: int,
          protocol: str = "grpc") -> dict:
    cmd = [sys.executable, "-m", "scripts.bench_load", "--url", url, "--model", model, "--modality", modality,
           "--items-file", str(items_file), "--clients", str(clients), "--items", str(items),
           "--requests", str(requests), "--protocol", protocol]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(client, name: str, headers: dict[str, str]) -> dict:
    stats = client.get_inference_statistics(name, as_json=True, headers=headers)["model_stats"][0]
    inference = stats.get("inference_stats", {})
    batches = stats.get("batch_stats", [])
    executions = sum(int(b["compute_infer"]["count"]) for b in batches)
    items = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in batches)
    ns = {k: int(inference.get(k, {}).get("ns", 0)) for k in ("success", "queue", "compute_input", "compute_infer",
                                                               "compute_output")}
    return {"requests": int(inference.get("success", {}).get("count", 0)), "ns": ns, "executions": executions,
            "items": items}


def _split(before: dict, after: dict) -> dict:
    n = max(1, after["requests"] - before["requests"])
    per = {k: (after["ns"][k] - before["ns"][k]) / n / 1e6 for k in after["ns"]}
    runs = max(1, after["executions"] - before["executions"])
    return {"server_request_ms": per["success"], "queue_ms": per["queue"], "compute_ms": per["compute_infer"],
            "mean_batch": (after["items"] - before["items"]) / runs}


def _in_process_short(model, short: list[str]) -> float:
    """``model``'s items/s at batch 32 on ``short``, measured now (beside the served row it is compared with)."""
    model.encode(short[:32], "text", batch_size=32)
    start = time.perf_counter()
    model.encode(short, "text", batch_size=32)
    return len(short) / (time.perf_counter() - start)


def served_section(args: argparse.Namespace, texts: list[str], images: list[bytes], vit: Path,
                   in_process: dict, short: list[str] | None = None) -> dict:
    """Each runtime served in turn: cold start, memory, every load shape for text and image, and (with
    perf_analyzer) 16 one-sentence clients on ``short``."""

    from serving import contract
    from serving.channels import grpc_client
    from serving.export import export
    from serving.server import TritonServer, free_ports

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    (work / "texts.pkl").write_bytes(pickle.dumps(texts))
    (work / "images.pkl").write_bytes(pickle.dumps(images))
    out: dict = {}
    for runtime in args.served_runtimes.split(","):
        repo = work / f"repo-{runtime}"
        export([args.text_model, str(vit)], repo, runtime=runtime, instances=args.served_instances)
        # export the ONNX files before timing the cold start: the first start of a runtime makes them once
        if runtime.startswith("onnx"):
            import zoo

            zoo.create(args.text_model, runtime=runtime)
        server = TritonServer(repo, ports=free_ports())
        t = time.perf_counter()
        with server.start():
            cold = time.perf_counter() - t
            pids = [server.process.pid] + [s.pid for s in server.stubs()]
            client = grpc_client(server.grpc_url)
            rows = {}
            for modality, name, items_file in (("text", args.text_model, work / "texts.pkl"),
                                               ("image", str(vit), work / "images.pkl")):
                triton = contract.model_name(name) if not os.path.isdir(name) else Path(name).resolve().name
                base = (in_process.get("text", {}).get("rows", {}).get(f"zoo {runtime}", {}).get("batch_32")
                        if modality == "text" else
                        in_process.get("image", {}).get("rows", {}).get("zoo (ViT-B-32)", {}).get("batch_32"))
                for clients, per in LOADS:
                    total = args.served_items if modality == "text" else args.served_images
                    requests = max(2, total // (clients * per))
                    before = _stats(client, triton, server.admin_headers)
                    got = _load(server.grpc_url, name if not os.path.isdir(name) else triton, modality, items_file,
                                clients, per, requests)
                    got |= _split(before, _stats(client, triton, server.admin_headers))
                    if base and runtime in ("torch", "onnx", "onnx-int8"):
                        got["vs_in_process_batch_32"] = got["items_per_s"] / base
                    rows[f"{modality} {clients}x{per}"] = got
                if modality == "text" and short and perf_analyzer():
                    # the same runtime in-process right before and right after, on the same machine and load:
                    # the ratio is taken against their mean (the machine is shared, its speed drifts)
                    import zoo

                    local = zoo.create(args.text_model, runtime=runtime)
                    first = _in_process_short(local, short)
                    before = _stats(client, triton, server.admin_headers)
                    got = _perf_analyzer_load(perf_analyzer(), server, triton, short, work)
                    got |= _split(before, _stats(client, triton, server.admin_headers))
                    base = (first + _in_process_short(local, short)) / 2
                    del local
                    got |= {"in_process_short_batch_32": base, "vs_in_process_batch_32": got["items_per_s"] / base}
                    rows[f"text {PA_CLIENTS}x1 short, perf_analyzer"] = got
            out[runtime] = {"cold_start_s": cold, "rss_mib": _rss_mib(pids), "loads": rows}
    one = out.get(args.served_runtimes.split(",")[0], {}).get("loads", {}).get("text 1x1")
    if one and "text" in in_process:
        out["one_sentence_p50_over_in_process_ms"] = one["p50_ms"] - in_process["text"]["one_sentence_p50_ms"]
    return out


def batcher_section(args: argparse.Namespace, texts: list[str]) -> dict:
    """The text model served on torch at each of ``--queue-delays`` (µs): what the dynamic batcher's wait
    buys and costs at 1, 16 and 64 concurrent one-item clients."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from serving.export import export
    from serving.server import TritonServer, free_ports

    work = Path(tempfile.mkdtemp(prefix="zoo-batcher-"))
    (work / "texts.pkl").write_bytes(pickle.dumps(texts))
    out = {}
    for delay in (int(d) for d in args.queue_delays.split(",")):
        repo = work / f"repo-{delay}"
        (folder,) = export([args.text_model], repo)
        config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        config.dynamic_batching.max_queue_delay_microseconds = delay
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        with TritonServer(repo, ports=free_ports()).start() as server:
            out[str(delay)] = {f"{c}x1": _load(server.grpc_url, args.text_model, "text", work / "texts.pkl", c, 1,
                                               max(2, args.served_items // c)) for c in (1, 16, 64)}
    return out


INFINITY = "infinity-emb[server,torch]==0.0.78"


def _infinity_venv(venv: Path) -> Path:
    """A throw-away virtual environment holding infinity-emb (never a dependency of this project); made once."""
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build (pip's own choice would be CUDA's)
        subprocess.run(pip + [INFINITY], check=True)
    return exe


def peer_section(args: argparse.Namespace, texts: list[str], served: dict) -> dict:
    """infinity-emb serving the same weights folder on loopback, under the same text load shapes; each shape's
    ratio is zoo's best served runtime over infinity."""
    import urllib.request

    import zoo
    from serving.server import free_ports
    from zoo.weights import resolve

    exe = _infinity_venv(Path(args.peer_venv).expanduser())
    folder = args.text_model if os.path.isdir(args.text_model) else str(resolve(zoo.get_spec(args.text_model)))
    port = free_ports().http
    env = os.environ | {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    log = open(Path(tempfile.mkdtemp(prefix="zoo-peer-")) / "infinity.log", "w")
    t = time.perf_counter()
    proc = subprocess.Popen([str(exe), "v2", "--model-id", folder, "--served-model-name", "peer", "--host",
                             "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu",
                             "--batch-size", "32"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infinity exited with {proc.returncode}; its log: {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        out: dict = {"cold_start_s": time.perf_counter() - t, "rss_mib": _rss_mib([proc.pid]), "loads": {}}
        items_file = Path(tempfile.mkdtemp(prefix="zoo-peer-")) / "texts.pkl"
        items_file.write_bytes(pickle.dumps(texts))
        for clients, per in LOADS:
            got = _load(url, "peer", "text", items_file, clients, per, max(2, args.served_items // (clients * per)),
                        protocol="openai-http")
            best = max((r["loads"][f"text {clients}x{per}"]["items_per_s"] for r in served.values()
                        if isinstance(r, dict) and "loads" in r), default=None)
            if best:
                got["zoo_best_served_over_infinity"] = best / got["items_per_s"]
            out["loads"][f"text {clients}x{per}"] = got
        return out
    finally:
        proc.terminate()
        proc.wait(30)
