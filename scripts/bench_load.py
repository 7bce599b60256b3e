"""The load generator ``scripts/bench.py`` runs in a process of its own (so it never shares the measuring
process's interpreter lock): ``--clients`` asyncio clients on zoo's async gRPC client (or, for a peer
server, JSON ``POST /embeddings`` over keep-alive HTTP connections), each sending
``--requests`` requests of ``--items`` items one after another. Prints one JSON line: items/s, latency
percentiles and the generator's own CPU share (CPU seconds over wall seconds)."""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time

import numpy as np


class _OpenAIHTTP:
    """The same calls against an OpenAI-style ``POST /embeddings`` (a peer server), on keep-alive connections."""

    def __init__(self, model: str, url: str, clients: int) -> None:
        import httpx

        self.model = model
        self.http = httpx.AsyncClient(base_url=url, timeout=600,
                                      limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))

    async def encode(self, texts: list[str], modality: str, batch_size: int | None = None) -> list:
        response = await self.http.post("/embeddings", json={"model": self.model, "input": texts})
        response.raise_for_status()
        return response.json()["data"]

    async def close(self) -> None:
        await self.http.aclose()


async def _run(args: argparse.Namespace, items: list) -> dict:
    if args.protocol == "openai-http":
        client = _OpenAIHTTP(args.model, args.url, args.clients)
    else:
        from serving.client import AsyncTritonEmbedder

        client = AsyncTritonEmbedder(args.model, args.url)
    await client.encode(items[: args.items], args.modality)  # connect and warm up
    latencies: list[float] = []

    async def one_client(k: int) -> None:
        for r in range(args.requests):
            start = (k * args.requests + r) * args.items % max(1, len(items) - args.items)
            t = time.perf_counter()
            await client.encode(items[start : start + args.items], args.modality, batch_size=args.items)
            latencies.append(time.perf_counter() - t)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_client(k) for k in range(args.clients)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await client.close()
    ms = np.asarray(latencies) * 1000
    return {"items_per_s": len(latencies) * args.items / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(latencies), "generator_cpu_share": cpu / wall}


def main() -> None:
    """Parse the arguments, run the load, print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--modality", default="text")
    parser.add_argument("--items-file", required=True, help="a pickle of the item list (written by bench.py)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--items", type=int, default=1, help="items per request")
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--protocol", choices=["grpc", "openai-http"], default="grpc",
                        help="zoo's gRPC client, or JSON POST /embeddings (a peer server)")
    args = parser.parse_args()
    with open(args.items_file, "rb") as fh:
        items = pickle.load(fh)
    print(json.dumps(asyncio.run(_run(args, items))))


if __name__ == "__main__":
    main()
