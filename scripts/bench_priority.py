"""Interactive latency while a bulk job runs: does indexing starve search?

    python -m scripts.bench_priority [--seconds 15] [--interactive 4] [--actors 1] [--instances 2]

Starts tritonserver on free loopback ports with the text model as ``zoo export --instances 2`` writes it
(priority levels, bounded queues; two instances of one thread each, so that one is free for interactive work
while the other runs a bulk request), then measures, side by side in one run:

1. ``alone``: ``--interactive`` threads, each sending one short sentence per request at priority "high", one
   after another, for ``--seconds``: p50 / p99;
2. ``+ bulk (plain client)``: the same while a bulk job runs as ``zoo embed --triton`` did before priorities
   (4 actors, each a plain client: normal priority, chunks of ``--batch-size`` 32, 8 in flight): the starvation;
3. ``+ bulk (zoo embed --triton)``: the same while the bulk job runs as ``zoo embed --triton`` does now:
   ``--actors`` clients (its default for a served model: 1) opened with ``serving.client.open_backend(bulk=True)``
   (priority "low", retries, small requests one at a time);
4. ``bulk (zoo embed) alone`` (with ``--phases ...,bulk-only``): that bulk job on an otherwise idle server.

The bulk actors run in a process apart from the measuring one (as Ray's actors are) and call
``encode_per_item`` over the mixed corpus (``zoo.data.sentences``) as ``zoo.batch.job.embed_shard`` does.
Prints each phase's p50 / p99, the bulk rows/s, the model's mean executed batch and execute time (Triton's
statistics), and the ratio p99 with bulk / p99 alone (target ≤ 2). The machine is shared and noisy: read the
ratios, and run it twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARD_ROWS = 64  # rows per encode_per_item call of a bulk actor (a shard's flush, in zoo embed's terms)
PLAIN_ACTORS = 4  # zoo embed's actors for a served model before bulk mode


def short_sentences(n: int = 200) -> list[str]:
    """What interactive users send: short queries (5 to 12 words of the mixed corpus)."""
    from zoo.data.sentences import mixed_sentences

    return [t for t in mixed_sentences(4000, seed=1) if len(t.split()) <= 12][:n]


def bulk_worker(args: argparse.Namespace) -> None:
    """One bulk actor's process: ``--actors`` threads (one client each) embedding the corpus until ``--seconds``
    have passed; prints one JSON line (rows embedded, rows refused, seconds)."""
    from serving.client import TritonEmbedder, open_backend
    from zoo.data.sentences import mixed_sentences

    texts = mixed_sentences(2000)
    deadline = time.monotonic() + args.seconds
    counts = {"rows": 0, "failed": 0}
    lock = threading.Lock()

    def actor(k: int) -> None:
        if args.bulk_mode == "plain":
            client = TritonEmbedder(args.model, args.url)
        else:
            client = open_backend(args.model, args.url, bulk=True)
            client.max_chunk = args.bulk_chunk or client.max_chunk
            client.max_chunk_bytes = args.bulk_chunk_bytes or client.max_chunk_bytes
            client.concurrency = args.bulk_concurrency or client.concurrency
        start = k * 500
        while time.monotonic() < deadline:
            rows = [texts[(start + i) % len(texts)] for i in range(SHARD_ROWS)]
            start += SHARD_ROWS
            try:
                client.encode_per_item(rows, "text", batch_size=32)
                with lock:
                    counts["rows"] += len(rows)
            except Exception:  # noqa: BLE001 - counted: a refusal the client gave up on
                with lock:
                    counts["failed"] += len(rows)
        client.close()

    t = time.monotonic()
    threads = [threading.Thread(target=actor, args=(k,)) for k in range(args.actors)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps(counts | {"seconds": time.monotonic() - t}))


def interactive(model: str, url: str, threads: int, seconds: float) -> dict:
    """``threads`` closed-loop clients of one high-priority client: latencies over ``seconds``."""
    from serving.client import TritonEmbedder

    client = TritonEmbedder(model, url, priority="high")
    texts = short_sentences()
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds

    def run(k: int) -> None:
        i = k
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                client.encode([texts[i % len(texts)]], "text")
                latencies.append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001 - counted: an interactive request refused
                errors[0] += 1
            i += threads

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    client.close()
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "errors": errors[0], "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def with_bulk(args: argparse.Namespace, url: str, mode: str) -> dict:
    """The interactive phase while a bulk job (``mode``: "plain" or "zoo-embed") runs in another process;
    ``bulk-only``: the zoo embed bulk job with no interactive clients (what it gets from an idle server)."""
    ramp = 3.0  # the bulk clients connect and fill the queue before the interactive clients are timed
    cmd = [sys.executable, "-m", "scripts.bench_priority", "--bulk-worker", "--bulk-mode", mode, "--url", url,
           "--model", args.model, "--actors", str(PLAIN_ACTORS if mode == "plain" else args.actors),
           "--seconds", str(args.seconds + ramp + 1),
           "--bulk-chunk", str(args.bulk_chunk or 0), "--bulk-chunk-bytes", str(args.bulk_chunk_bytes or 0),
           "--bulk-concurrency", str(args.bulk_concurrency or 0)]
    worker = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    time.sleep(ramp)
    if mode == "bulk-only":
        time.sleep(args.seconds)
        got = {"requests": 0, "errors": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    else:
        got = interactive(args.model, url, args.interactive, args.seconds)
    out, _ = worker.communicate(timeout=args.seconds + 120)
    if worker.returncode:
        raise RuntimeError(f"the bulk worker failed (exit {worker.returncode})")
    bulk = json.loads(out.strip().splitlines()[-1])
    return got | {"bulk_rows_per_s": bulk["rows"] / bulk["seconds"], "bulk_rows_failed": bulk["failed"]}


def serve(args: argparse.Namespace, work: Path):
    """The text model exported as ``zoo export`` writes it (``--instances`` instances), on free ports."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from serving import contract
    from serving.export import export
    from serving.server import TritonServer, free_ports

    (folder,) = export([args.model], work / "repo", instances=args.instances)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    if not config.dynamic_batching.priority_levels:  # an export from before priorities: add them as it would
        config.dynamic_batching.priority_levels = len(contract.PRIORITIES)
        config.dynamic_batching.default_priority_level = contract.PRIORITIES[contract.DEFAULT_PRIORITY]
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        print("note: the exported config had no priority levels; added", file=sys.stderr)
    print("dynamic_batching:", text_format.MessageToString(config.dynamic_batching, as_one_line=True))
    return TritonServer(work / "repo", ports=free_ports(), log_path=work / "server.log")


def main() -> None:
    """Parse the arguments; run the phases (or, with ``--bulk-worker``, be a bulk job's process)."""
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model("text"))
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed phase")
    parser.add_argument("--interactive", type=int, default=4, help="interactive client threads")
    parser.add_argument("--actors", type=int, default=1, help="bulk clients (zoo embed's actors)")
    parser.add_argument("--instances", type=int, default=2, help="model instances (zoo export --instances)")
    parser.add_argument("--phases", default="alone,plain,zoo-embed",
                        help="which phases to run, of: alone, plain, zoo-embed, bulk-only")
    parser.add_argument("--bulk-chunk", type=int, help="items per bulk request (default: serving.client.BULK's)")
    parser.add_argument("--bulk-chunk-bytes", type=int, help="bytes per bulk request (default: BULK's)")
    parser.add_argument("--bulk-concurrency", type=int, help="bulk requests in flight per actor (default: BULK's)")
    parser.add_argument("--bulk-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-mode", default="zoo-embed", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bulk_worker:
        bulk_worker(args)
        return
    phases = args.phases.split(",")
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-priority-"))
    results: dict[str, dict] = {}
    with serve(args, work).start(timeout=600) as server:

        from scripts.bench_served import _stats
        from serving.channels import grpc_client
        from serving.client import triton_name

        admin = grpc_client(server.grpc_url)
        interactive(args.model, server.grpc_url, args.interactive, 3.0)  # warm up
        for phase in phases:
            before = _stats(admin, triton_name(args.model), server.admin_headers)
            if phase == "alone":
                results[phase] = interactive(args.model, server.grpc_url, args.interactive, args.seconds)
            else:
                results[phase] = with_bulk(args, server.grpc_url, phase)
            after = _stats(admin, triton_name(args.model), server.admin_headers)
            runs = max(1, after["executions"] - before["executions"])  # what the model executed meanwhile
            compute_ns = after["ns"]["compute_infer"] - before["ns"]["compute_infer"]
            results[phase] |= {"mean_batch": (after["items"] - before["items"]) / runs,
                               "compute_ms": compute_ns / runs / 1e6}
            print(phase, json.dumps(results[phase]), file=sys.stderr)
        admin.close()
    names = {"alone": "interactive alone", "plain": "+ bulk (plain client)", "zoo-embed": "+ bulk (zoo embed --triton)",
             "bulk-only": "bulk (zoo embed) alone"}
    from serving.client import BULK

    chunk, conc = args.bulk_chunk or BULK["max_chunk"], args.bulk_concurrency or BULK["concurrency"]
    budget = args.bulk_chunk_bytes or BULK["max_chunk_bytes"]
    print(f"\n{args.interactive} interactive threads (1 short sentence, priority high); {args.actors} zoo embed "
          f"actor(s) (≤ {chunk} items and ≤ {budget} bytes a request, {conc} in flight each; plain: {PLAIN_ACTORS} "
          f"actors); {args.instances} instance(s); {args.seconds:.0f} s per phase")
    print(f"{'phase':30} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/alone':>9} {'bulk rows/s':>11} "
          f"{'batch':>6} {'execute ms':>10}")
    alone = results.get("alone", {}).get("p99_ms")
    for phase, r in results.items():
        ratio = f"{r['p99_ms'] / alone:9.2f}" if alone and r["requests"] else f"{'':9}"
        bulk = f"{r['bulk_rows_per_s']:11.1f}" if "bulk_rows_per_s" in r else f"{'':11}"
        print(f"{names[phase]:30} {r['requests']:8d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {ratio} {bulk} "
              f"{r['mean_batch']:6.1f} {r['compute_ms']:10.1f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"(batch, execute ms: the model's mean rows and compute time per execution during the phase; JSON: "
          f"{work / 'results.json'}; target: p99 with the zoo embed bulk job ≤ 2× alone)")


if __name__ == "__main__":
    main()
