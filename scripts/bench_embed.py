"""``zoo embed`` on local Ray Data against single-process ``encode()`` on the same data, side by side.

    python -m scripts.bench_embed [--model NAME] [--n 4000] [--actors 1,2] [--out docs]

The data is ``zoo.data.sentences.mixed_sentences(n)`` written as JSONL. Single process: the model is
created once and ``encode()`` runs over every row (load time reported apart). Ray: ``zoo.batch.job.run``
with a fresh output folder per actor count, timed from submit to the last shard written (actor start and
model load included, ``ray.init`` not). Writes ``docs/BATCH.md`` and ``docs/batch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from zoo.batch.job import Settings, run
from zoo.data.sentences import corpus_id, mixed_sentences
from zoo.defaults import default_model

KEPT_FROM = "## The output folder"  # BATCH.md from this heading on is written by hand


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model("text"))
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--rows-per-shard", type=int, default=500)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args(argv)
    import ray
    import torch

    import zoo

    texts = mixed_sentences(args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.jsonl"
        source.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
        t = time.perf_counter()
        model = zoo.create(args.model, device="cpu")
        load = time.perf_counter() - t
        t = time.perf_counter()
        model.encode(texts, "text", batch_size=32)
        single = time.perf_counter() - t
        rows.append({"path": f"single process encode() ({torch.get_num_threads()} threads)",
                     "rows_per_s": round(args.n / single, 1), "seconds": round(single, 1),
                     "note": f"model load {load:.1f} s not counted"})
        print(rows[-1], flush=True)
        del model
        t = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        start = time.perf_counter() - t
        for n in map(int, args.actors.split(",")):
            settings = Settings(model=args.model, input=str(source), rows_per_shard=args.rows_per_shard)
            report = run(settings, Path(tmp) / f"out{n}", actors=n, progress=False)
            working = report.rows / (report.busy_seconds / n)  # while the actors were inside shards
            rows.append({"path": f"zoo embed, local Ray, {n} actor(s)", "rows_per_s": round(report.rows_per_s, 1),
                         "seconds": round(report.seconds, 1),
                         "note": f"actor start and model load counted; {working:.1f} rows/s once working"})
            print(rows[-1], flush=True)
        ray.shutdown()
    base = rows[0]["rows_per_s"]
    for r in rows:
        r["ratio_to_single_process"] = round(r["rows_per_s"] / base, 2)
    meta = {"model": args.model, "n": args.n, "corpus": corpus_id(texts), "cores": os.cpu_count(),
            "ray_init_s": round(start, 1), "cpu": platform.processor() or platform.machine(), "ray": ray.__version__}
    out = Path(args.out)
    (out / "batch.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = "| path | rows/s | seconds | × single process | |\n|---|---|---|---|---|\n" + "".join(
        f"| {r['path']} | {r['rows_per_s']} | {r['seconds']} | {r['ratio_to_single_process']} | {r['note']} |\n"
        for r in rows)
    print(table)
    page = out / "BATCH.md"
    # the page's hand-written sections (the output folder's layout) follow the measurement and are kept
    kept = page.read_text().partition(KEPT_FROM) if page.exists() else ("", "", "")
    page.write_text(
        f"# zoo embed on Ray Data: the measurement\n\n`python -m scripts.bench_embed --n {args.n}` on "
        f"{meta['cpu']} ({meta['cores']} cores), Ray {meta['ray']}, model `{args.model}`, corpus "
        f"`{meta['corpus']}` ({args.n} rows of `zoo.data.sentences.mixed_sentences`). `ray.init()` took "
        f"{meta['ray_init_s']} s and is not counted.\n\n{table}\n"
        f"One process already keeps all {meta['cores']} cores busy (torch's threads), so local actors share the same "
        "cores with Ray's own processes and cannot beat it on one machine; what Ray adds is the same job on a "
        "cluster (`RAY_ADDRESS`), where every node brings its cores, and resuming, error rows and progress.\n"
        + (f"\n{kept[1]}{kept[2]}" if kept[1] else ""))


if __name__ == "__main__":
    main()
