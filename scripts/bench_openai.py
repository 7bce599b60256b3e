"""What the OpenAI-compatible door costs over direct Triton gRPC, measured side by side in one run.

    python scripts/bench_openai.py [--model NAME] [--singles 128] [--threads 16] [--rounds 3]

Starts ``zoo serve`` (tritonserver, supervisor and the door, as users run it) on free loopback ports with
one model, then alternates, ``--rounds`` times, the same one-sentence requests through: our gRPC client
(``TritonEmbedder``), plain HTTP to ``/v1/embeddings`` (httpx, keep-alive, ``encoding_format`` base64 and
float), and the ``openai`` SDK. Prints the p50 latency of requests sent one after another and the
throughput of ``--threads`` threads sending at once, with the door / gRPC ratios. The machine is shared
and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _serve(repo: Path, ports, openai_port: int) -> subprocess.Popen:
    """``zoo serve`` on ``repo``; returns once the door listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "serve", "--repository", str(repo), "--grpc-port", str(ports.grpc),
         "--http-port", str(ports.http), "--metrics-port", str(ports.metrics), "--health-port", "0",
         "--openai-port", str(openai_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("OpenAI-compatible API:"):
            return proc
    raise RuntimeError(f"zoo serve exited with {proc.wait()}")


def _p50(fn: Callable[[str], object], texts: list[str]) -> float:
    times = []
    for t in texts:
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _throughput(make: Callable[[], Callable[[str], object]], texts: list[str], threads: int) -> float:
    callers = [make() for _ in range(threads)]  # one client per thread, as a connection pool would be
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda it: callers[it[0] % threads](it[1]), enumerate(texts)))
        return len(texts) / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print latencies, throughputs and door / gRPC ratios."""
    import httpx
    import openai

    import zoo
    from serving.client import TritonEmbedder
    from serving.export import export
    from serving.server import free_ports
    from zoo.data import shapes as S
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model("text"))
    parser.add_argument("--singles", type=int, default=128, help="one-sentence requests per measurement")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = S.numbered_captions(args.singles)
    repo = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    export([args.model], repo)
    ports, openai_port = free_ports(), free_ports().http
    proc = _serve(repo, ports, openai_port)
    base = f"http://127.0.0.1:{openai_port}/v1"
    try:
        sdk = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

        def via_grpc() -> Callable[[str], object]:
            client = TritonEmbedder(args.model, f"127.0.0.1:{ports.grpc}")
            return lambda t: client.encode([t], "text")

        def via_http(fmt: str) -> Callable[[], Callable[[str], object]]:
            def make() -> Callable[[str], object]:
                client = httpx.Client(base_url=base, timeout=60)
                return lambda t: client.post("/embeddings", json={"model": args.model, "input": [t],
                                                                  "encoding_format": fmt}).raise_for_status()
            return make

        def via_sdk() -> Callable[[str], object]:
            client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)
            return lambda t: client.embeddings.create(model=args.model, input=[t])

        ways = {"gRPC client": via_grpc, "door, HTTP base64": via_http("base64"), "door, HTTP float": via_http("float"),
                "door, openai SDK": via_sdk}
        want = zoo.create(args.model).encode(texts[:4], "text")  # the door answers what in-process does
        got = np.array([d.embedding for d in sdk.embeddings.create(model=args.model, input=texts[:4]).data])
        assert (got * want).sum(1).min() > 0.9999, "the door's rows differ from in-process encode()"
        for make in ways.values():  # warm every path up
            call = make()
            for t in texts[:8]:
                call(t)
        p50: dict[str, list[float]] = {k: [] for k in ways}
        tput: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(args.rounds):
            for key, make in ways.items():
                p50[key].append(_p50(make(), texts[:32]))
                tput[key].append(_throughput(make, texts, args.threads))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)

    print(f"model {args.model}; one-sentence requests: 32 sequential (p50), {args.singles} from {args.threads} "
          f"threads (throughput); median of {args.rounds} rounds, alternated")
    med = {k: (statistics.median(p50[k]), statistics.median(tput[k])) for k in ways}
    for key, (lat, thr) in med.items():
        print(f"  {key:22} p50 {1000 * lat:7.2f} ms   {thr:8.1f} req/s")
    g_lat, g_thr = med["gRPC client"]
    for key in list(ways)[1:]:
        lat, thr = med[key]
        print(f"  {key:22} / gRPC: p50 {lat / g_lat:5.2f}x (+{1000 * (lat - g_lat):.2f} ms), "
              f"throughput {thr / g_thr:5.2f}x")


if __name__ == "__main__":
    main()
