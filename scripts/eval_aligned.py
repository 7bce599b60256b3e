"""Print the held-out figures of an aligned model (see zoo/data/shapes_eval.py) as JSON.

    python scripts/eval_aligned.py [MODEL]                # default: zoo/shapes-aligned-minilm
    python scripts/eval_aligned.py --write-card   # also store the figures in the model's card.json
"""

from __future__ import annotations

import argparse
import json

from zoo.data.shapes_eval import evaluate


def main() -> None:
    """Print the held-out figures of a model as JSON."""
    import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="zoo/shapes-aligned-minilm")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--galleries", type=int, default=4)
    parser.add_argument("--write-card", action="store_true", help="store the figures in the model's card.json")
    args = parser.parse_args()
    figures = evaluate(zoo.create(args.model), args.seed, args.galleries)
    print(json.dumps(figures, indent=2))
    if args.write_card:
        from pathlib import Path

        from zoo.weights import resolve

        folder = Path(args.model) if Path(args.model).is_dir() else resolve(zoo.get_spec(args.model))
        card = json.loads((folder / "card.json").read_text())
        card["heldout_eval"] = figures
        (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
