"""How cost grows, in one run: items/s and peak memory against text length, and search time and memory
against corpus size. Writes ``docs/SCALING.md``, ``docs/scaling.json`` and ``docs/scaling.png``.

    python -m scripts.bench_scaling [--lengths 16,64,256,1024,4096] [--runtimes torch,onnx]
                                    [--sizes 1000,10000,100000,1000000] [--out docs]

- Text length: the shipped MiniLM (a 256-token window: longer items are cut, so its cost stops growing there)
  and a tiny e5-4k (MiniLM's positions stretched to 4,096 by ``zoo.evaluation.long.stretch_positions``)
  embed items of about L tokens each, at batch 32 up to 256 tokens and fewer items per batch beyond
  (8,192 tokens a batch). Every cell runs in a process of its own, so its peak resident memory is its own;
  ONNX graphs are exported in the parent first, and the model's load happens before the clock starts.
- Corpus size: exact top-10 search (``zoo.search.top_k``) of 64 unit queries against N unit vectors of 384
  dimensions in float32, in a process of its own per N: milliseconds per query batch and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_TOKENS = 8192


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def text_cell(model: str, runtime: str, length: int) -> dict:
    """Items/s and peak memory of one model and runtime on items of about ``length`` tokens (run in a child)."""
    import zoo
    from zoo.data.docstrings import docstring_pairs

    embedder = zoo.create(model, device="cpu", runtime=runtime)
    tokenizer = embedder.tokenizer
    words = [w for _, body in docstring_pairs() for w in body.split()]
    batch = max(1, min(32, BATCH_TOKENS // length))
    n = max(2 * batch, min(256, 65536 // length))
    items, start = [], 0
    while len(items) < n:  # windows of the docstrings cut to about `length` tokens
        ids = tokenizer(" ".join(words[start: start + length]), add_special_tokens=False)["input_ids"][: length - 2]
        items.append(tokenizer.decode(ids))
        start = (start + length) % (len(words) - length)
    tokens = [min(len(tokenizer(t)["input_ids"]), embedder.spec.max_length or 10**9) for t in items]
    embedder.encode(items[:batch], "text", batch_size=batch)  # warm: sessions, allocator, threads
    begin = time.perf_counter()
    embedder.encode(items, "text", batch_size=batch)
    seconds = time.perf_counter() - begin
    return {"runtime": runtime, "length": length, "tokens_embedded": sum(tokens) / len(tokens),
            "batch": batch, "items": n, "items_per_s": n / seconds, "tokens_per_s": sum(tokens) / seconds,
            "peak_mib": _peak_mib()}


def search_cell(size: int, dim: int = 384, queries: int = 64) -> dict:
    """Exact top-10 search time and peak memory over ``size`` random unit vectors (run in a child)."""
    import numpy as np

    from zoo.search import top_k

    rng = np.random.default_rng(0)
    corpus = np.empty((size, dim), np.float32)
    for i in range(0, size, 100_000):  # in slices: no float64 copy of the whole corpus
        block = rng.standard_normal((min(100_000, size - i), dim), dtype=np.float32)
        corpus[i: i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    top_k(q, corpus, 10)
    times = []
    for _ in range(5):
        begin = time.perf_counter()
        top_k(q, corpus, 10)
        times.append(time.perf_counter() - begin)
    return {"size": size, "dim": dim, "queries": queries, "ms_per_batch": 1000 * min(times),
            "corpus_mib": corpus.nbytes / 2**20, "peak_mib": _peak_mib()}


def _child(kind: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "scripts.bench_scaling", "--cell", kind, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"cell {kind} {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, rows in _series(results["text"]).items():
        xs = [r["length"] for r in rows]
        axes[0].plot(xs, [r["items_per_s"] for r in rows], marker="o", label=label)
        axes[1].plot(xs, [r["peak_mib"] for r in rows], marker="o", label=label)
    for ax, title in ((axes[0], "items/s"), (axes[1], "peak resident MiB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens per item")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    rows = results["search"]
    axes[2].plot([r["size"] for r in rows], [r["ms_per_batch"] for r in rows], marker="o", label="ms per 64 queries")
    axes[2].plot([r["size"] for r in rows], [r["peak_mib"] for r in rows], marker="s", label="peak MiB")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("corpus vectors (384-d float32)")
    axes[2].set_title("exact top-10 search")
    axes[2].legend(fontsize=8)
    axes[2].grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['label']} {r['runtime']}", []).append(r)
    return series


def report(results: dict) -> str:
    """The results as markdown."""
    from scripts.bench import machine

    m = machine("cpu")
    lines = ["# How cost grows", "",
             f"`{results['command']}`: {m['cpu']} ({m['cores']} cores, CPU features {m['isa'] or 'unknown'}), "
             f"torch {m['torch']}, onnxruntime {m['onnxruntime']}. One run, each cell in a process of its own: "
             "peak = that process's resident memory, the imported libraries, the model and its runtime included "
             "(ONNX graphs are exported beforehand, in the parent process).", "",
             "![items/s and peak memory against text length; search against corpus size](scaling.png)", "",
             "## Text length", "",
             "| model | runtime | tokens per item | batch | items/s | tokens/s | peak MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in results["text"]:
        lines.append(f"| {r['label']} | {r['runtime']} | {r['tokens_embedded']:.0f} (asked {r['length']}) "
                     f"| {r['batch']} | {r['items_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} |")
    lines += ["", "## Corpus size (exact search)", "", "| vectors | corpus MiB | ms per 64 queries | peak MiB |",
              "|---|---|---|---|"]
    for r in results["search"]:
        lines.append(f"| {r['size']:,} | {r['corpus_mib']:.0f} | {r['ms_per_batch']:.1f} | {r['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every cell in a child process, then write the report, the JSON and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16,64,256,1024,4096")
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.cell:
        kind, *rest = args.cell
        cell = text_cell(rest[0], rest[1], int(rest[2])) if kind == "text" else search_cell(int(rest[0]))
        print(json.dumps(cell))
        return
    import zoo
    from zoo.evaluation.long import stretch_positions
    from zoo.weights import resolve

    minilm = str(resolve(zoo.get_spec(MINILM)))
    long_model = str(stretch_positions(minilm, Path(tempfile.mkdtemp(prefix="zoo-scaling-")) / "minilm-4k"))
    results: dict = {"command": " ".join(["python -m scripts.bench_scaling", *sys.argv[1:]]), "text": [],
                     "search": []}
    lengths = [int(x) for x in args.lengths.split(",")]
    for label, model in (("MiniLM (256-token window)", minilm), ("tiny e5-4k (4,096)", long_model)):
        for runtime in args.runtimes.split(","):
            if runtime.startswith("onnx"):  # exported here, so no cell's peak holds the export
                zoo.create(model, device="cpu", runtime=runtime)
            for length in lengths:
                results["text"].append({"label": label} | _child("text", model, runtime, str(length)))
                print(json.dumps(results["text"][-1]), flush=True)
    for size in (int(x) for x in args.sizes.split(",")):
        results["search"].append(_child("search", str(size)))
        print(json.dumps(results["search"][-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "scaling.png")
    text = report(results)
    (out / "SCALING.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
