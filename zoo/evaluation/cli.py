"""``zoo eval``: the sweep on a set folder, ``--long WAYS`` to compare ways of embedding long documents instead,
``--rerank MODEL`` to measure what a reranker adds to the dense search, or ``--build NAME DIR`` to make a set from
this machine's files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..backends import check_backend, open_model
from ..errors import InvalidArgumentError


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..extras import require

    require("eval", "zoo eval")
    from . import report
    from .build import build
    from .data import load
    from .embed import Cache, default_cache_dir

    if args.build:
        name, dest = args.build
        path = build(name, dest, limit=args.limit, seed=args.seed)
        data = load(path)
        print(f"wrote {name} to {path}: {len(data.corpus)} documents, {len(data.queries)} queries")
        return 0
    if not args.model or not args.data:
        raise InvalidArgumentError("give a MODEL and --data DIR (or --build NAME DIR to make a set)")
    from . import evaluate

    if args.long:  # checked before the model loads
        from .long import check_ways

        args.long = check_ways(args.long)
        if args.plot:
            raise InvalidArgumentError("--plot draws the storage sweep; leave it out with --long")
    if args.rerank is not None:
        _check_rerank(args)
    check_backend(args.backend)
    data = load(args.data, split=args.split, max_queries=args.max_queries)
    model = open_model(args.model, args.backend, args.url, args.device)
    cache = Cache(None if args.no_cache else Path(args.cache_dir or default_cache_dir()))
    if args.long:
        return _long(args, model, data, cache)
    if args.rerank is not None:
        return _rerank(args, model, data, cache)
    rows = evaluate(model, data, backend=args.backend, cache=cache, batch_size=args.batch_size)
    print(f"{model.spec.name} on {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries"
          f"{' (embeddings from the cache)' if cache.hits == 2 else ''}")
    print(report.table(rows))
    print(report.summary(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot(rows, args.plot, f"{model.spec.name} on {data.name} ({len(data.queries)} queries)")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _long(args: argparse.Namespace, model: Any, data: Any, cache: Any) -> int:
    from . import report
    from .long import compare, table

    rows = compare(model, data, args.long, chunk_tokens=args.chunk_tokens, overlap=args.overlap,
                   backend=args.backend, cache=cache, batch_size=args.batch_size)
    print(f"{model.spec.name} on {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries, "
          f"{rows[0]['docs_over_window']} longer than the window of {model.spec.max_length} tokens; chunks of "
          f"{args.chunk_tokens} tokens")
    print(table(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _check_rerank(args: argparse.Namespace) -> None:
    """The reranking flags, checked before any model loads."""
    from ..listwise import check_feedback
    from .rerank import check_depth

    if not args.rerank.strip():
        raise InvalidArgumentError("--rerank needs a model name or folder, or e2rank", "rerank")
    if args.long:
        raise InvalidArgumentError("--rerank and --long measure different things; give one of them", "rerank")
    if args.plot:
        raise InvalidArgumentError("--plot draws the storage sweep; leave it out with --rerank", "plot")
    check_depth(args.rerank_depth)
    check_feedback(args.rerank_feedback)


def _rerank(args: argparse.Namespace, model: Any, data: Any, cache: Any) -> int:
    from . import report
    from .rerank import LISTWISE, compare, summary, table

    reranker = LISTWISE if args.rerank == LISTWISE else open_model(args.rerank, args.backend, args.url, args.device)
    rows = compare(model, data, reranker, depth=args.rerank_depth, feedback=args.rerank_feedback,
                   backend=args.backend, cache=cache, batch_size=args.batch_size)
    print(f"{model.spec.name} on {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries; the top "
          f"{rows[1]['depth']} reranked by {rows[1]['reranker']}"
          + (f" (feedback: its top {rows[1]['feedback']})" if rows[1]["feedback"] else ""))
    print(table(rows))
    print(summary(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_command(sub: Any) -> None:
    """Add ``zoo eval`` to the ``zoo`` CLI's sub-parsers."""
    from .build import BUILDERS

    p = sub.add_parser("eval", help="retrieval quality across dimensions x precision on a BEIR-layout set",
                       description=__doc__)
    p.add_argument("model", nargs="?", help="registry name or local model folder")
    p.add_argument("--data", help="set folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels file to use (default: test)")
    p.add_argument("--json", help="write the rows as a JSON list to this file")
    p.add_argument("--plot", help="write quality vs bytes per vector (with the Pareto front) to this PNG")
    p.add_argument("--backend", default="local", help="local (in-process) or an installed one, e.g. triton")
    p.add_argument("--url", default="127.0.0.1:8001", help="server address for a remote backend")
    p.add_argument("--device", help="local backend: torch device (default: CUDA when present)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    p.add_argument("--cache-dir", help="where embeddings are cached (default: <zoo cache>/eval)")
    p.add_argument("--no-cache", action="store_true", help="embed afresh and store nothing")
    p.add_argument("--build", nargs=2, metavar=("NAME", "DIR"),
                   help=f"make a set from this machine's files instead: one of {', '.join(BUILDERS)}")
    p.add_argument("--limit", type=int,
                   help="--build: at most this many pairs (images for the media sets, documents for longdocs)")
    p.add_argument("--seed", type=int, help="--build: seed of the generated media sets and of longdocs' draw")
    p.add_argument("--long", metavar="WAYS",
                   help="compare ways of embedding long documents instead of the sweep: a comma-separated list of "
                        "truncate, chunk-mean, naive-chunks, late-chunks (see zoo.evaluation.long)")
    p.add_argument("--chunk-tokens", type=int, default=128,
                   help="--long: tokens per chunk of naive-chunks and late-chunks (default 128)")
    p.add_argument("--overlap", type=int,
                   help="--long: tokens neighbouring windows share (chunk-mean; late-chunks' macro-windows)")
    p.add_argument("--rerank", metavar="MODEL",
                   help="measure a reranker on the dense search's top candidates instead of the sweep: a model name "
                        "or folder (a cross-encoder, a bi-encoder), or e2rank for the listwise reranker built from "
                        "MODEL itself (see zoo.evaluation.rerank)")
    p.add_argument("--rerank-depth", type=int, default=100,
                   help="--rerank: first-stage candidates reranked per query (default 100)")
    p.add_argument("--rerank-feedback", type=int, default=20,
                   help="--rerank e2rank: top candidates written into the listwise pseudo-query (default 20)")
    p.set_defaults(run=_cmd_eval)
