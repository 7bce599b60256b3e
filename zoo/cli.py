"""The ``zoo`` command line: list, info, encode, and the sub-commands installed packages add through the
``zoo.commands`` entry point (export / serve from `serving`, demo from `ui`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from .errors import ZooError


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import get_spec, list_models
    from .weights import available_offline

    rows = [("NAME", "FAMILY", "MODALITIES", "OUTPUTS", "DIM", "LICENSE", "OFFLINE")]
    for name in list_models(modality=args.modality, pattern=args.pattern):
        s = get_spec(name)
        mods = ",".join(m.value for m in s.modalities)
        rows.append((name, s.family, mods, ",".join(s.outputs), str(s.dim), s.license,
                     "yes" if available_offline(s) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .base import pick_device
    from .registry import family_of, get_spec
    from .runtime import auto_runtime
    from .settings import settings
    from .weights import available_offline

    spec = get_spec(args.name)
    runtimes = family_of(spec).runtimes
    device = pick_device(args.device)
    runtime = settings().runtime  # the default; auto is shown as what it picks on this device
    shown = f"{auto_runtime(runtimes, device)} (auto on {device})" if runtime == "auto" else runtime
    info = spec.to_dict() | {"batch_tokens": spec.batch_tokens,  # the budget in force (max_batch_tokens or derived)
                             "available_offline": available_offline(spec), "runtimes": ["auto", *runtimes],
                             "runtime": shown}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:20} {value}")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from .defaults import default_model
    from .registry import create

    name = default_model(args.modality) if args.name == "default" else args.name
    model = create(name, device=args.device)
    inputs = args.inputs
    if args.modality == "interleaved":  # the arguments are the parts of one item; files are images
        from pathlib import Path

        inputs = [[{"image": p} if Path(p).is_file() else p for p in args.inputs]]
    emb = model.encode(
        inputs,
        modality=args.modality,
        dimensions=args.dimensions,
        precision=args.precision,
        prompt_name=args.prompt_name,
        normalize=False if args.no_normalize else None,
        output=args.output,
        max_vectors=args.max_vectors,
        top_k=args.top_k,
        truncate=args.truncate,
        long=args.long,
    )
    from . import kinds

    output = args.output or model.spec.output
    kind = kinds.get(output)  # its handler prints it: JSON values per item, a line per item
    rows = kind.items_of(emb)
    if args.json:
        print(json.dumps({"model": model.spec.name, "precision": args.precision, "output": output,
                          "shape": kind.shape(emb), "embeddings": [kind.to_json(r) for r in rows]}))
    else:
        with np.printoptions(precision=4, threshold=12, edgeitems=4):
            for item, row in zip([" ".join(args.inputs)] if len(rows) == 1 else args.inputs, rows):
                print(f"{item[:40]!r}: {kind.describe(row)}")
        print(f"{len(rows)} item(s), output {output}, dtype {rows[0].dtype}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with every sub-command the installed packages provide."""
    from . import kinds
    from .postprocess import PRECISIONS
    from .spec import Modality

    parser = argparse.ArgumentParser(prog="zoo", description="Multimodal embedding model zoo and server")
    sub = parser.add_subparsers(dest="command", required=True)
    modalities = [m.value for m in Modality]

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("--modality", choices=modalities)
    p.add_argument("--pattern", help="wildcard filter on names, e.g. '*MiniLM*'")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("info", help="show one model's spec and the runtime it runs on by default")
    p.add_argument("name")
    p.add_argument("--device", help="the device the default runtime is shown for (default: CUDA if present)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("encode", help="embed inputs given on the command line")
    p.add_argument("name", help="registry name, local model folder, or 'default' (the modality's default model)")
    p.add_argument("inputs", nargs="+", help="texts, or file paths for image/audio; for interleaved, the parts "
                   "of one item (existing files are images)")
    p.add_argument("--modality", choices=modalities, default="text")
    p.add_argument("--dimensions", type=int)
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32")
    p.add_argument("--prompt-name")
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--output", choices=list(kinds.names()),
                   help="output kind (default: the model's first)")
    p.add_argument("--max-vectors", type=int, help="multivector: at most this many vectors per item")
    p.add_argument("--top-k", type=int, help="sparse: at most this many terms per item")
    from .long import LONG, TRUNCATE

    p.add_argument("--truncate", choices=list(TRUNCATE), default="end",
                   help="a text over the model's window: cut at the end, at the start, or none (refused)")
    p.add_argument("--long", choices=list(LONG), help="chunk: embed a long text as averaged windows")
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_encode)

    from . import plugins
    from .batch.cli import add_command as add_embed
    from .evaluation.cli import add_command as add_eval

    add_eval(sub)
    add_embed(sub)
    for add_commands in plugins.load(plugins.COMMANDS):  # export/serve, demo, ...: installed packages' own
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
