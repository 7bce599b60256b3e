"""``zoo embed INPUT --model NAME --out DEST [--to STORE]``: the batch job of :mod:`zoo.batch.job`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..extras import require

    require("scale", "zoo embed")
    from .dest import errors_path
    from .job import Settings, run

    settings = Settings(model=args.model, input=args.input, rows_per_shard=args.rows_per_shard, output=args.output,
                        dimensions=args.dimensions, precision=args.precision, prompt_name=args.prompt_name,
                        backend="triton" if args.triton else "local", url=args.triton or "")
    report = run(settings, args.out, to=args.to, collection=args.collection, actors=args.actors,
                 batch_size=args.batch_size, progress=not args.no_progress, ray_address=args.ray_address)
    print(f"{report.shards} shards ({report.skipped} already done): {report.rows} rows embedded, "
          f"{report.errors} errors (see {errors_path(Path(args.out))}), {report.rows_per_s:.1f} rows/s"
          + (f"; {report.stored} rows written to {args.to}" if args.to else ""))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``zoo embed`` to the ``zoo`` command line."""
    from .. import kinds
    from ..postprocess import PRECISIONS

    p = sub.add_parser("embed", help="embed a corpus on Ray Data into Parquet shards and/or a vector database",
                       description="Runs on a local Ray that listens on 127.0.0.1 only, or on the cluster named "
                       "by --ray-address or RAY_ADDRESS.")
    p.add_argument("input", help="a JSONL file, a Parquet file or dataset folder, or a folder of files")
    p.add_argument("--model", required=True, help="registry name or local model folder")
    p.add_argument("--out", required=True, help="folder for the Parquet shards (one dataset); the job's errors "
                   "and record go to its _zoo/ sub-folder")
    p.add_argument("--to", help="also write into this vector database: qdrant:PATH, qdrant+http://HOST:PORT")
    p.add_argument("--collection", help="collection name in --to (default: from the model name)")
    p.add_argument("--triton", metavar="URL", help="call the model served at this tritonserver (host:grpc-port) "
                   "instead of loading it in each actor; as a bulk job: low priority (interactive requests go "
                   "first), small requests, retried with backoff while the server is overloaded")
    p.add_argument("--ray-address", metavar="ADDRESS", help="run on the Ray cluster at this address (HOST:PORT of "
                   "its head; default: RAY_ADDRESS; without either, a local Ray started for this job)")
    p.add_argument("--actors", type=int, help="model copies (or server clients) working side by side")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rows-per-shard", type=int, default=1000)
    p.add_argument("--output", choices=list(kinds.names()))
    p.add_argument("--dimensions", type=int)
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32")
    p.add_argument("--prompt-name")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_cmd_embed)
