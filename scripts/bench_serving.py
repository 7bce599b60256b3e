"""Served vs in-process throughput, and what dynamic batching buys, measured side by side in one run.

    python scripts/bench_serving.py [--model NAME] [--n 512] [--threads 16] [--rounds 2]

Starts a real tritonserver on free loopback ports with one model, then alternates, ``--rounds`` times:
in-process ``encode()``; the gRPC client on the whole list (chunks of ``max_batch_size`` sent
concurrently); one-item requests sent one after another; the same one-item requests from ``--threads``
threads at once (the dynamic batcher merges them). Prints items/s, ratios and the mean batch size Triton
executed (from its own statistics). The machine is shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    """Run the benchmark and print a table of throughputs and ratios."""
    import tritonclient.grpc as grpcclient

    import zoo
    from serving import contract
    from serving.client import TritonEmbedder
    from serving.export import export
    from serving.server import TritonServer, free_ports
    from zoo.data import shapes as S
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model("text"))
    parser.add_argument("--n", type=int, default=512, help="sentences per measurement")
    parser.add_argument("--singles", type=int, default=128, help="one-item requests per measurement")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    texts = S.numbered_captions(args.n)
    local = zoo.create(args.model)
    repo = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    export([args.model], repo)
    server = TritonServer(repo, ports=free_ports())
    with server.start():
        remote = TritonEmbedder(args.model, server.grpc_url)
        stats_client = grpcclient.InferenceServerClient(server.grpc_url)
        name = contract.model_name(args.model)
        singles = texts[: args.singles]
        remote.encode(texts[:64], "text")  # warm both paths up
        local.encode(texts[:64], "text")
        rows: dict[str, list[float]] = {k: [] for k in ("in-process", "served", "sequential", "concurrent")}
        latencies: list[float] = []
        batch_sizes: list[float] = []
        for _ in range(args.rounds):
            dt, ref = _timed(lambda: local.encode(texts, "text"))
            rows["in-process"].append(args.n / dt)
            dt, got = _timed(lambda: remote.encode(texts, "text"))
            rows["served"].append(args.n / dt)
            assert (got * ref).sum(1).min() > 0.9999, "served embeddings differ from in-process"
            dt, _ = _timed(lambda: [remote.encode([t], "text") for t in singles])
            rows["sequential"].append(len(singles) / dt)
            before = stats_client.get_inference_statistics(name, as_json=True)["model_stats"][0]

            def one(t: str) -> float:
                start = time.perf_counter()
                remote.encode([t], "text")
                return time.perf_counter() - start

            with ThreadPoolExecutor(args.threads) as pool:
                dt, lat = _timed(lambda: list(pool.map(one, singles)))
            rows["concurrent"].append(len(singles) / dt)
            latencies += lat
            after = stats_client.get_inference_statistics(name, as_json=True)["model_stats"][0]
            runs = int(after["execution_count"]) - int(before["execution_count"])
            batch_sizes.append(len(singles) / max(runs, 1))

    best = {k: max(v) for k, v in rows.items()}
    print(f"model {args.model}; {args.n} sentences, {args.singles} one-item requests, {args.threads} threads, "
          f"best of {args.rounds} rounds")
    for key, label in (("in-process", "in-process encode()"), ("served", "served, client chunks"),
                       ("sequential", "served, 1-item requests one by one"),
                       ("concurrent", f"served, 1-item requests from {args.threads} threads")):
        print(f"  {label:45} {best[key]:8.1f} items/s")
    print(f"  served / in-process                           {best['served'] / best['in-process']:8.2f}x")
    print(f"  concurrent / sequential one-item requests     {best['concurrent'] / best['sequential']:8.2f}x")
    print(f"  mean batch Triton executed (concurrent)       {statistics.mean(batch_sizes):8.1f} requests")
    lat = sorted(latencies)
    print(f"  concurrent request latency p50 / p95          {1000 * lat[len(lat) // 2]:6.1f} / "
          f"{1000 * lat[int(len(lat) * 0.95)]:6.1f} ms")


if __name__ == "__main__":
    main()
