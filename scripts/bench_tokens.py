"""Token budgets, measured: peak memory of 64 full-length items with and without the budget, and what the budget
costs short texts.

    python -m scripts.bench_tokens [--length 2048] [--items 64] [--rounds 5]

Memory: a tiny random BERT (256 wide, 2 layers) with ``--length`` positions, saved in the standard transformers
layout with the shipped MiniLM tokenizer, loaded by ``zoo.create`` like any folder. Three cases, each in a fresh
subprocess, each measured as the peak RSS during ``encode()`` minus the RSS after loading (and one short warm-up
call): ``--items`` items at full length under the default budget (``spec.batch_tokens``), one budget-sized
batch alone (``batch_tokens // length`` items in one pass) and the same items without a budget (one pass of them
all). ``batch_size`` is ``--items`` throughout (a served batch's size), so only the token budget cuts. The
budgeted case is claimed to stay within ``FACTOR`` × one budget-sized batch.

Overhead: the shipped MiniLM on 256 short sentences, side by side in rounds: batches cut by items only (what
there was before budgets), the token budget as shipped (a cheap bound per text; nothing tokenized twice unless a
batch's bound passes the budget), and the budget with every text counted exactly (tokenized twice).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

FACTOR = 1.5  # the budgeted peak stays within this many times one budget-sized batch's
WIDTH = 256
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
UNBOUNDED = 10**12  # "no budget": max_batch_tokens past any batch


def make_long_bert(dest: Path, length: int) -> Path:
    """A random 2-layer BERT with ``length`` positions, tokenizer and sentence-transformers files included."""
    import torch
    from transformers import BertConfig, BertModel

    import zoo
    from zoo.weights import resolve

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=4 * WIDTH, max_position_embeddings=length)).save_pretrained(dest)
    src = resolve(zoo.get_spec(MINILM))
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "modules.json"):
        shutil.copy(src / name, dest / name)
    shutil.copytree(src / "1_Pooling", dest / "1_Pooling")
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text()) | {"model_max_length": length}
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": length, "do_lower_case": False}))
    return dest


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(folder: str, case: str, items: int) -> dict:
    """One case in this (fresh) process: the peak RSS of ``encode()`` over the RSS after loading."""
    import dataclasses

    import torch

    import zoo

    warnings.simplefilter("ignore")  # every item is cut to the model's length: that is the point
    model = zoo.create(folder, device="cpu")
    length = model.spec.max_length
    budget = model.spec.batch_tokens
    text = "word " * (length + 16)  # a WordPiece token a word: full length after truncation
    if case == "none":
        model.spec = dataclasses.replace(model.spec, max_batch_tokens=UNBOUNDED)
    n = max(1, budget // length) if case == "one" else items
    model.encode(["warm up"], "text")
    base = _rss()
    exact = _reset_peak()
    t = time.perf_counter()
    model.encode([text] * n, "text", batch_size=items)
    seconds = time.perf_counter() - t
    peak = _peak()
    return {"case": case, "items": n, "tokens": n * length, "budget": budget, "seconds": round(seconds, 2),
            "peak_over_loaded_mb": round((peak - base) / 2**20, 1), "peak_reset": exact,
            "threads": torch.get_num_threads()}


def memory(length: int, items: int) -> list[dict]:
    """The three cases, each in its own subprocess."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(make_long_bert(Path(tmp) / "long-bert", length))
        for case in ("one", "budget", "none"):
            out = subprocess.run([sys.executable, "-m", "scripts.bench_tokens", "--case", case, "--folder", folder,
                                  "--items", str(items)], check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def overhead(rounds: int) -> tuple[dict, dict]:
    """Seconds per encode() of 256 short sentences (items only, the budget as shipped, every text counted), and
    seconds of the counting alone (the bounds; the exact counts), which the machine's noise hardly touches."""
    import zoo
    from zoo.data.sentences import mixed_sentences

    texts = [t for t in mixed_sentences(400) if len(t.split()) <= 60][:256]
    model = zoo.create(MINILM, device="cpu")
    cls = type(model)
    shipped = cls._token_sizes
    variants = {
        "items only (before budgets)": lambda self, items, modality, prompt, exact=False: None,
        "token budget (bounds)": shipped,
        "token budget (every text counted)": lambda self, items, modality, prompt, exact=False:
            shipped(self, items, modality, prompt, True),
    }
    model.encode(texts, "text")  # warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved, so the machine's noise falls on every variant alike
        for name, sizes in variants.items():
            cls._token_sizes = sizes
            t = time.perf_counter()
            model.encode(texts, "text")
            times[name].append(time.perf_counter() - t)
    cls._token_sizes = shipped
    alone = {}
    for name, exact in (("bounds", False), ("exact counts", True)):
        t = time.perf_counter()
        for _ in range(20):
            model._token_sizes(texts, zoo.Modality.TEXT, None, exact)
        alone[name] = (time.perf_counter() - t) / 20
    return {name: statistics.median(v) for name, v in times.items()}, alone


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=2048, help="positions of the random BERT (its full length)")
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--case", choices=["one", "budget", "none"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.case:  # a subprocess of the memory measurement
        print(json.dumps(run_case(args.folder, args.case, args.items)))
        return
    rows = {r["case"]: r for r in memory(args.length, args.items)}
    one, budget, none = (rows[c]["peak_over_loaded_mb"] for c in ("one", "budget", "none"))
    print(f"\npeak memory over the loaded model, {args.items} items × {args.length} tokens, "
          f"budget {rows['budget']['budget']} tokens ({rows['one']['items']} items a pass):")
    print("| case | items | tokens | passes | peak MB | × one budget-sized batch | seconds |")
    print("|---|---|---|---|---|---|---|")
    for case, what in (("one", "one budget-sized batch"), ("budget", f"{args.items} items, budget"),
                       ("none", f"{args.items} items, no budget")):
        r = rows[case]
        passes = 1 if case != "budget" else -(-r["tokens"] // (rows["one"]["tokens"] or 1))
        print(f"| {what} | {r['items']} | {r['tokens']} | {passes} | {r['peak_over_loaded_mb']} | "
              f"{r['peak_over_loaded_mb'] / max(one, 0.1):.2f} | {r['seconds']} |")
    verdict = "holds" if budget <= FACTOR * one else "DOES NOT HOLD"
    print(f"\nclaim: budgeted peak ≤ {FACTOR} × one budget-sized batch: {budget:.0f} MB vs {FACTOR} × {one:.0f} MB: "
          f"{verdict}; without the budget {none / max(budget, 0.1):.1f}× the budgeted peak")
    times, alone = overhead(args.rounds)
    before = times["items only (before budgets)"]
    print(f"\nMiniLM, 256 short sentences, encode() median of {args.rounds} interleaved rounds:")
    for name, sec in times.items():
        print(f"  {name:36} {sec * 1000:8.1f} ms  × {sec / before:.3f} of items only")
    for name, sec in alone.items():
        print(f"  {name} alone: {sec * 1000:.2f} ms a call, {sec / before:.2%} of the items-only encode()")


if __name__ == "__main__":
    main()
