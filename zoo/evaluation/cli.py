"""``zoo eval``: the sweep on a set folder, ``--long WAYS`` to compare ways of embedding long documents instead,
``--rerank MODEL`` to measure what a reranker adds to the dense search, ``--hybrid OTHER`` to compare two models
and their reciprocal rank fusion, or ``--build NAME DIR`` to make a set from this machine's files."""

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
    _check_hybrid(args)
    check_backend(args.backend)
    data = load(args.data, split=args.split, max_queries=args.max_queries)
    cache = Cache(None if args.no_cache else Path(args.cache_dir or default_cache_dir()))
    model = _open(args.model, args, data, cache)
    if args.long:
        return _long(args, model, data, cache)
    if args.rerank is not None:
        return _rerank(args, model, data, cache)
    if args.hybrid is not None:
        return _hybrid(args, model, _open(args.hybrid, args, data, cache), data, cache)
    rows = evaluate(model, data, backend=args.backend, cache=cache, batch_size=args.batch_size)
    hits = cache.hits  # before the latency's own reads of the cache
    if args.latency:
        _time_base(args, model, rows, data, cache)
    print(f"{model.spec.name} on {data.name}: {len(data.corpus)} documents, {len(data.queries)} queries"
          f"{' (embeddings from the cache)' if hits == 2 else ''}")
    print(report.table(rows))
    print(report.summary(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot(rows, args.plot, f"{model.spec.name} on {data.name} ({len(data.queries)} queries)")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _open(name: str, args: argparse.Namespace, data: Any, cache: Any) -> Any:
    """The model ``name`` names: ``bm25`` is fitted here on the set's own corpus (kept in the cache)."""
    from .sparse import BM25, fitted_bm25

    if name != BM25:
        return open_model(name, args.backend, args.url, args.device)
    if args.backend != "local":
        raise InvalidArgumentError("bm25 is fitted on the set's corpus in this process: use --backend local",
                                   "backend")
    from ..registry import create

    return create(str(fitted_bm25(data, cache)))


def _name(given: str, model: Any) -> str:
    """A row's model name: ``bm25`` rather than the cache folder it was fitted into."""
    from .sparse import BM25

    return BM25 if given == BM25 else model.spec.name


def _check_hybrid(args: argparse.Namespace) -> None:
    """The --hybrid and --latency flags, checked before any model loads."""
    if args.latency is not None and (isinstance(args.latency, bool) or args.latency < 1):
        raise InvalidArgumentError(f"--latency must be a positive number of queries, not {args.latency}", "latency")
    if args.latency and (args.long or args.rerank is not None):
        raise InvalidArgumentError("--latency times the sweep's or --hybrid's searches; leave out --long and "
                                   "--rerank", "latency")
    if args.hybrid is None:
        return
    if not args.hybrid.strip():
        raise InvalidArgumentError("--hybrid needs a second model: a name or folder, or bm25", "hybrid")
    for flag, given in (("--long", args.long), ("--rerank", args.rerank is not None), ("--plot", args.plot)):
        if given:
            raise InvalidArgumentError(f"--hybrid compares two models and their fusion; leave out {flag}", "hybrid")
    if args.hybrid == args.model:
        raise InvalidArgumentError("--hybrid needs a model other than MODEL", "hybrid")


def _time_base(args: argparse.Namespace, model: Any, rows: list[dict], data: Any, cache: Any) -> None:
    """``query_ms`` on the row a query search uses as it is: full-width float32 (dense), or the sparse row."""
    from . import _key
    from .hybrid import Ranker, median_ms
    from .sparse import METHOD

    base = next(r for r in rows if r["method"] == METHOD or (r["method"] == "truncate" and r["compression"] == 1))
    ranker = Ranker(model, data, key=_key(model, data, args.backend), cache=cache, batch_size=args.batch_size)
    base["query_ms"] = median_ms(ranker.one, list(data.queries.items[:args.latency]))


def _hybrid(args: argparse.Namespace, model: Any, other: Any, data: Any, cache: Any) -> int:
    from . import _key, report
    from .hybrid import RRF_K, compare

    rows = compare(model, other, data, keys=(_key(model, data, args.backend), _key(other, data, args.backend)),
                   cache=cache, batch_size=args.batch_size, latency=args.latency or 0,
                   names=(_name(args.model, model), _name(args.hybrid, other)))
    print(f"{rows[0]['model']} and {rows[1]['model']} on {data.name}: {len(data.corpus)} documents, "
          f"{len(data.queries)} queries; hybrid: reciprocal rank fusion (k={RRF_K}) of each one's top 100"
          + (f"; ms/query: median over the first {min(args.latency, len(data.queries))} queries, one at a time"
             if args.latency else ""))
    print(report.table(rows))
    if args.json:
        report.write_json(rows, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
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
    p.add_argument("model", nargs="?", help="registry name or local model folder, or bm25: BM25 fitted on the "
                   "set's corpus")
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
    p.add_argument("--hybrid", metavar="OTHER",
                   help="compare MODEL, OTHER (a name or folder, or bm25) and their reciprocal rank fusion (k=60) "
                        "instead of the sweep (see zoo.evaluation.hybrid)")
    p.add_argument("--latency", type=int, metavar="N",
                   help="add ms/query: the median time of one query (embed + exact search) over the first N queries")
    p.set_defaults(run=_cmd_eval)
