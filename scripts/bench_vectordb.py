"""Which vector database backs ``zoo embed --to`` and ``zoo demo --index``: candidates measured side by side.

    python -m scripts.bench_vectordb [--n 100000] [--dim 384] [--queries 200] [--out docs] [--only NAME,NAME]

Each candidate runs embedded in this process, as a user without a cluster would run it, on the same data:
``n`` unit vectors drawn around 1,000 random centres (a stand-in for a real corpus: real embeddings cluster,
and uniform random vectors are the worst case for graph indexes), and ``queries`` held-out vectors from the
same centres. Reported per candidate: insert rate (rows/s, index built and data flushed, until the first
query can run), query latency (p50 / p99 of one query at a time, top 10) and recall@10 against exact inner
product search (numpy). Writes ``docs/VECTORDB.md`` and ``docs/vectordb.json``.

The candidates: exact search in numpy; ``zoo.store``'s embedded mode, Qdrant Edge (HNSW built with 2 threads,
float32 and with Qdrant's int8 scalar and binary quantization, rescored by the float32 vectors), through
``zoo.store.VectorStore`` exactly as ``zoo embed --to`` and the demo use it (uuid point ids, payloads); the
store's former engine, qdrant-client's local mode; and Milvus Lite (HNSW and FLAT). ``--only`` runs just the
candidates it names, comma-separated, as :data:`CANDIDATES` names them (exact search always runs): a run at
1M vectors without the slow ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

K = 10
REASONS = "<!-- reasons: written by hand, kept when the measurement above is rewritten -->"


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors scattered around 1,000 unit centres (angular spread about 0.6 rad)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, dim)).astype(np.float32) * (0.6 / dim**0.5)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row ids of each query's exact top ``k`` by inner product."""
    return np.argsort(-(queries @ corpus.T), axis=1)[:, :k]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of the exact top ``k`` that a candidate found."""
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


class Qdrant:
    """qdrant-client's local mode (its in-process engine; the same client talks to a Qdrant server by URL)."""

    name = "qdrant-client local"

    def __init__(self, folder: str, dim: int) -> None:
        from qdrant_client import QdrantClient, models

        self.m = models
        self.client = QdrantClient(path=folder)
        self.client.create_collection("bench", vectors_config=models.VectorParams(size=dim,
                                                                                   distance=models.Distance.DOT))

    def insert(self, x: np.ndarray, chunk: int = 2000) -> None:
        for a in range(0, len(x), chunk):
            self.client.upsert("bench", points=self.m.Batch(ids=list(range(a, min(a + chunk, len(x)))),
                                                            vectors=x[a:a + chunk].tolist()))

    def search(self, q: np.ndarray) -> list[int]:
        return [p.id for p in self.client.query_points("bench", query=q.tolist(), limit=K).points]

    def close(self) -> None:
        self.client.close()


class Edge:
    """``zoo.store.VectorStore`` embedded: Qdrant Edge, one shard, HNSW (and ``precision``'s quantization)."""

    def __init__(self, folder: str, dim: int, precision: str) -> None:
        from zoo.store import VectorStore

        self.name = "Qdrant Edge HNSW" + ("" if precision == "float32" else f" {precision}, rescored")
        self.store = VectorStore(f"qdrant:{folder}", indexing_threads=2)
        self.store.ensure("bench", "dense", dim, precision=precision)

    def insert(self, x: np.ndarray) -> None:
        self.store.upsert("bench", "dense", [str(i) for i in range(len(x))], list(x))  # the first search indexes

    def search(self, q: np.ndarray) -> list[int]:
        return [int(m.id) for m in self.store.search("bench", "dense", q, K)]

    def close(self) -> None:
        self.store.close()


class Milvus:
    """Milvus Lite through pymilvus's ``MilvusClient`` (the same client talks to a Milvus server by URL)."""

    def __init__(self, folder: str, dim: int, index: str) -> None:
        from pymilvus import DataType, MilvusClient

        self.name = f"Milvus Lite {index}"
        self.client = MilvusClient(str(Path(folder) / "bench.db"))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=dim)
        params = self.client.prepare_index_params()
        params.add_index("v", index_type=index, metric_type="IP",
                         params={"M": 16, "efConstruction": 200} if index == "HNSW" else {})
        self.client.create_collection("bench", schema=schema, index_params=params)
        self.search_params = {"params": {"ef": 64}} if index == "HNSW" else {}

    def insert(self, x: np.ndarray, chunk: int = 2000) -> None:
        for a in range(0, len(x), chunk):
            self.client.insert("bench", [{"id": a + i, "v": v} for i, v in enumerate(x[a:a + chunk])])
        self.client.flush("bench")
        self.client.load_collection("bench")

    def search(self, q: np.ndarray) -> list[int]:
        hits = self.client.search("bench", [q], anns_field="v", limit=K, output_fields=[],
                                  search_params=self.search_params)
        return [h["id"] for h in hits[0]]

    def close(self) -> None:
        self.client.close()


#: the candidates by name: each makes its database in a folder for vectors of a width
CANDIDATES = {"Qdrant Edge HNSW": lambda f, d: Edge(f, d, "float32"),
              "Qdrant Edge HNSW int8": lambda f, d: Edge(f, d, "int8"),
              "Qdrant Edge HNSW binary": lambda f, d: Edge(f, d, "binary"),
              "qdrant-client local": lambda f, d: Qdrant(f, d),
              "Milvus Lite HNSW": lambda f, d: Milvus(f, d, "HNSW"),
              "Milvus Lite FLAT": lambda f, d: Milvus(f, d, "FLAT")}


def measure(db, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Insert rate, one-query latency and recall@10 of one candidate."""
    t = time.perf_counter()
    db.insert(corpus)
    db.search(queries[0])  # the first query waits for whatever the insert left to build
    insert_s = time.perf_counter() - t
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(db.search(q))
        lat.append((time.perf_counter() - t) * 1000)
    db.close()
    return {"candidate": db.name, "insert_rows_per_s": round(len(corpus) / insert_s),
            "query_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "query_p99_ms": round(float(np.percentile(lat, 99)), 2), "recall_at_10": round(recall(found, truth), 4)}


def numpy_exact(corpus: np.ndarray, queries: np.ndarray) -> dict:
    """The exact baseline's own latency (a matrix product over the whole corpus per query)."""
    lat = []
    for q in queries:
        t = time.perf_counter()
        np.argpartition(-(corpus @ q), K)[:K]
        lat.append((time.perf_counter() - t) * 1000)
    return {"candidate": "exact (numpy)", "insert_rows_per_s": None,
            "query_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "query_p99_ms": round(float(np.percentile(lat, 99)), 2), "recall_at_10": 1.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    args = ap.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(CANDIDATES))
    if unknown:
        ap.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    data = clustered(args.n + args.queries, args.dim, seed=0)
    corpus, queries = data[: args.n], data[args.n:]
    truth = exact_top(corpus, queries)
    rows = [numpy_exact(corpus, queries)]
    for name, make in CANDIDATES.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as folder:
            rows.append(measure(make(folder, args.dim), corpus, queries, truth))
            print(rows[-1], flush=True)
    versions = {p: version(p) for p in ("qdrant-edge-py", "qdrant-client", "pymilvus", "milvus-lite", "numpy")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vectordb.json").write_text(json.dumps({"n": args.n, "dim": args.dim, "queries": args.queries,
                                                   "versions": versions, "rows": rows}, indent=1))
    head = "| candidate | insert rows/s | query p50 ms | query p99 ms | recall@10 |\n|---|---|---|---|---|\n"
    table = head + "".join(f"| {r['candidate']} | {r['insert_rows_per_s'] or '—'} | {r['query_p50_ms']} | "
                           f"{r['query_p99_ms']} | {r['recall_at_10']} |\n" for r in rows)
    print(table)
    doc = out / "VECTORDB.md"
    kept = doc.read_text().partition(REASONS)[2] if doc.exists() else ""  # the written reasons stay
    doc.write_text(
        f"# Vector database: the measurement\n\n`python -m scripts.bench_vectordb --n {args.n}"
        + (f" --only {args.only}" if args.only else "") + "` on "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f".\n\n{args.n:,} clustered unit vectors of {args.dim} dimensions, {args.queries} held-out queries, "
        f"top {K}, one query at a time, every candidate embedded in the benchmark's process.\n\n{table}\n"
        + REASONS + kept)


if __name__ == "__main__":
    main()
