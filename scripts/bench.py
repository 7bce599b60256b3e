"""One benchmark, one run: text and image in-process against their reference libraries, every runtime, the
served path under several load shapes, cold start and memory. Prints a table, writes JSON and
``docs/BENCHMARKS.md`` (``docs/benchmarks.json``; on CUDA ``-gpu`` files beside them).

    python -m scripts.bench [--sections text,image,served,batcher] [--n 2000] [--device cpu|cuda] [--out DIR]

Everything is measured side by side in this one run (the machine is shared and noisy: read the ratios).

- text: sentence-transformers vs zoo on each runtime (torch, onnx, onnx-int8; torch-fp16 on CUDA) at batch
  1 / 32 / 128 over the fixed mixed corpus of ``zoo.data.sentences`` (batch 1 over its first ``--singles``
  items), with each runtime's agreement with torch over the whole corpus (least cosine, top-10 overlap);
- image: open_clip called directly vs zoo from the same encoded PNG bytes, on a random-weight ViT-B-32 saved
  to a folder, and the offline aligned model on torch and onnx;
- served (``scripts/bench_served.py``): tritonserver on free loopback ports, the load from a separate
  process (``scripts/bench_load.py``) with 1 / 16 / 64 concurrent one-item clients and 4 clients of 32
  items, text and image; items/s, p50 / p99,
  the ratio to the same runtime's in-process batch-32 throughput, the generator's CPU share, Triton's own
  split of a request's time (queue, compute) and the mean executed batch; cold start to READY and the
  server's resident memory (tritonserver and its python-backend stubs);
- batcher (not in the default sections): the served text model at several dynamic-batcher queue delays;
- ``--peer infinity``: infinity-emb, installed into a throw-away virtual environment (never a dependency
  of this project), serving the same weights folder under the same text load shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from scripts.bench_served import ROOT, batcher_section, peer_section, served_section

BATCHES = (1, 32, 128)


def _rate(fn, n: int, repeat: int = 1) -> float:
    """Items per second of ``fn()`` over ``n`` items: the best of ``repeat`` runs (after one warm-up call)."""
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": device}
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        info["cpu"] = model
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    import onnxruntime

    from zoo.runtime import cpu_isa

    info["onnxruntime"] = onnxruntime.__version__
    info["isa"] = cpu_isa()  # int8 speed and exactness depend on these (VNNI or not)
    return info


#: bench-only names beside the runtimes: torch with padding-free batches (zoo.packed), and with tokenization in
#: line instead of ahead on a thread (zoo.ahead; ahead is the default on CUDA)
VARIANTS = {"torch-packed": ("torch", {"packed": True}), "torch-inline": ("torch", {"tokenize_ahead": False})}


def zoo_model(folder: str, device: str, name: str) -> Any:
    """The zoo model a bench row named ``name`` times: a runtime, or one of :data:`VARIANTS`."""
    import zoo

    runtime, settings = VARIANTS.get(name, (name, {}))
    model = zoo.create(folder, device=device, runtime=runtime)
    if settings.get("packed"):
        model.encoder.packed = True
    if "tokenize_ahead" in settings:
        model.tokenize_ahead = settings["tokenize_ahead"]
    return model


def text_section(args: argparse.Namespace, texts: list[str], short: list[str]) -> dict:
    """sentence-transformers vs zoo on every runtime: items/s per batch size on the mixed corpus and at batch
    32 on short sentences, and agreement with torch on both."""
    from sentence_transformers import SentenceTransformer

    import zoo
    from zoo.runtime import agreement
    from zoo.weights import resolve

    folder = args.text_model if os.path.isdir(args.text_model) else str(resolve(zoo.get_spec(args.text_model)))
    st = {"sentence-transformers": SentenceTransformer(folder, device=args.device)}
    if "torch-fp16" in args.runtimes:
        st["sentence-transformers fp16"] = SentenceTransformer(folder, device=args.device).half()
    models = dict.fromkeys(st) | {f"zoo {r}": zoo_model(folder, args.device, r) for r in args.runtimes.split(",")}
    singles = texts[: args.singles]

    def run(name: str, items: list[str], batch: int) -> np.ndarray:
        if models[name] is None:
            return st[name].encode(items, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True)
        return models[name].encode(items, "text", batch_size=batch)

    rows: dict[str, dict] = {name: {} for name in models}
    for batch in BATCHES:
        items = singles if batch == 1 else texts
        for name in models:  # side by side: every path at this batch size before the next size
            run(name, items[:batch], batch)
            rows[name][f"batch_{batch}"] = _rate(partial(run, name, items, batch), len(items), args.repeat)
    for name in models:
        run(name, short[:32], 32)
        rows[name]["short_batch_32"] = _rate(partial(run, name, short, 32), len(short), args.repeat)
    reference, short_reference = run("zoo torch", texts, 32), run("zoo torch", short, 32)
    for name in models:
        rows[name]["agreement"] = agreement(reference, run(name, texts, 32))
        rows[name]["short_agreement"] = agreement(short_reference, run(name, short, 32))
        tower = getattr(models[name], "_fast", {}).get("text")
        if tower is not None and getattr(tower, "check", None):
            rows[name]["export_check"] = tower.check
    # one sentence, in-process: the latency a served request is compared with
    one = models["zoo torch"]
    lat = []
    for t in singles[:100]:
        start = time.perf_counter()
        one.encode([t], "text")
        lat.append(time.perf_counter() - start)
    profile = backend_profile(one, singles[:100])
    base = rows["sentence-transformers"]
    for row in rows.values():
        row["vs_sentence_transformers"] = {k: row[k] / base[k] for k in base if "batch_" in k}
    return {"model": args.text_model, "rows": rows, "one_sentence_p50_ms": float(np.median(lat) * 1000),
            "backend_profile_ms": profile}


#: the python-backend's stages for one request, as functions a profile finds them by
STAGES = {"parse and validate": "_prepare", "tokenize": "tokenize_texts", "forward": "run_tower",
          "post-process": "postprocess", "to wire": "result_to_wire"}


def backend_profile(model, texts: list[str]) -> dict[str, float]:
    """Where the served model's own time goes for one-sentence requests: the backend's ``handle`` profiled
    on one request at a time (ms per request, by stage, and in all)."""
    import cProfile
    import pstats

    from serving import contract
    from serving.triton_model import Request, handle
    from zoo.spec import Modality

    requests = [Request(inputs={contract.INPUTS[Modality.TEXT]: [t.encode()]}, parameters={}) for t in texts]
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    for req in requests:
        handle(model, [req])
    profiler.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(profiler).stats
    cumulative = {}
    for stage, func in STAGES.items():
        cumulative[stage] = sum(v[3] for k, v in stats.items() if k[2] == func) / len(requests) * 1000
    return cumulative | {"handle (all, profiled)": total / len(requests) * 1000}


def _png_bytes(n: int, size: int = 224) -> list[bytes]:
    from zoo.data import shapes

    rng = np.random.default_rng(11)
    out = []
    for _ in range(n):
        buf = BytesIO()
        shapes.render(shapes.sample_scene(rng, int(rng.integers(1, 3))), rng).resize((size, size)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def save_vit_b32(dest: Path) -> Path:
    """A random-weight open_clip ViT-B-32 in the hub layout (open_clip_config.json + safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config("ViT-B-32")
    (dest / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{dest}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, dest / "open_clip_model.safetensors")
    return dest


def image_section(args: argparse.Namespace, images: list[bytes], vit: Path) -> dict:
    """open_clip directly vs zoo from the same PNG bytes; the aligned model on torch and onnx."""
    import open_clip
    import torch
    from PIL import Image

    import zoo
    from zoo.defaults import default_model

    direct = open_clip.create_model(f"local-dir:{vit}", device=args.device).eval()
    preprocess = open_clip.image_transform(direct.visual.image_size, is_train=False)

    def open_clip_direct(items: list[bytes], batch: int = 32) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(items), batch):
                pixels = torch.stack([preprocess(Image.open(BytesIO(b)).convert("RGB")) for b in items[i : i + batch]])
                emb = direct.encode_image(pixels.to(args.device))
                out.append(torch.nn.functional.normalize(emb, dim=-1).float().cpu().numpy())
        return np.concatenate(out)

    ours = zoo.create(str(vit), device=args.device)
    aligned = {r: zoo.create(default_model("image"), device=args.device, runtime=r)
               for r in ("torch", "onnx") if args.aligned}
    def zoo_images(model, items: list[bytes]) -> np.ndarray:
        return model.encode(items, "image", batch_size=32)

    paths = {"open_clip direct (ViT-B-32)": open_clip_direct, "zoo (ViT-B-32)": partial(zoo_images, ours)}
    paths |= {f"zoo aligned {r}": partial(zoo_images, m) for r, m in aligned.items()}
    rows = {}
    for name, fn in paths.items():
        n = len(images) if "aligned" in name else args.vit_images
        fn(images[:8])
        rows[name] = {"batch_32": _rate(partial(fn, images[:n]), n, args.repeat)}
    same = (open_clip_direct(images[:16]) * ours.encode(images[:16], "image")).sum(1).min()
    def ratio(a: str, b: str) -> float:
        return rows[a]["batch_32"] / rows[b]["batch_32"]

    rows["zoo (ViT-B-32)"]["vs_open_clip"] = ratio("zoo (ViT-B-32)", "open_clip direct (ViT-B-32)")
    if args.aligned:
        rows["zoo aligned onnx"]["vs_torch"] = ratio("zoo aligned onnx", "zoo aligned torch")
    return {"rows": rows, "zoo_vs_open_clip_least_cosine": float(same)}


def table(results: dict) -> str:
    """The results as markdown tables."""
    lines = []
    if "text" in results:
        lines += ["### Text in-process (items/s; × sentence-transformers in brackets)", "",
                  "Mixed corpus at batch 1 / 32 / 128, short sentences (6–16 words) at batch 32; agreement with zoo "
                  "torch (least cosine / top-10 overlap) on each.", "",
                  "| path | batch 1 | batch 32 | batch 128 | short b32 | mixed: cos / top-10 | short: cos / top-10 |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in results["text"]["rows"].items():
            keys = [f"batch_{b}" for b in BATCHES] + ["short_batch_32"]
            cells = [f"{row[k]:.1f} ({row['vs_sentence_transformers'][k]:.2f}×)" for k in keys]
            agree = [f"{row[k]['min_cos']:.4f} / {row[k]['top10_overlap']:.3f}"
                     for k in ("agreement", "short_agreement")]
            lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(agree)} |")
        rows = results["text"]["rows"]
        if "zoo onnx" in rows and "zoo onnx-int8" in rows:
            cells = (("mixed b32", "batch_32"), ("mixed b128", "batch_128"), ("short b32", "short_batch_32"))
            lines += ["", "onnx-int8 ÷ onnx: " + ", ".join(
                f"{label} {rows['zoo onnx-int8'][k] / rows['zoo onnx'][k]:.2f}×" for label, k in cells)]
        lines += ["", f"One sentence in-process (zoo torch): p50 {results['text']['one_sentence_p50_ms']:.1f} ms", "",
                  "Served model's own time for one sentence (python backend `handle`, profiled, ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in results["text"]["backend_profile_ms"].items()), ""]
    if "image" in results:
        lines += ["### Image in-process (items/s, batch 32, from PNG bytes)", "", "| path | items/s | ratio |",
                  "|---|---|---|"]
        for name, row in results["image"]["rows"].items():
            ratio = row.get("vs_open_clip") or row.get("vs_torch")
            lines.append(f"| {name} | {row['batch_32']:.1f} | {'' if ratio is None else f'{ratio:.2f}×'} |")
        lines.append("")
    for runtime, served in results.get("served", {}).items():
        if not isinstance(served, dict):
            continue
        lines += [f"### Served over gRPC, runtime {runtime} (cold start {served['cold_start_s']:.1f} s, "
                  f"RSS {served['rss_mib']:.0f} MiB)", "",
                  "| load | items/s | × in-process b32 | p50 ms | p99 ms | server ms | queue ms | compute ms "
                  "| mean batch | generator CPU |", "|---|---|---|---|---|---|---|---|---|---|"]
        for load, r in served["loads"].items():
            ratio = r.get("vs_in_process_batch_32")
            cells = [f"{r[k]:.1f}" for k in ("p50_ms", "p99_ms", "server_request_ms", "queue_ms", "compute_ms",
                                             "mean_batch")]
            share = r.get("generator_cpu_share")
            lines.append(f"| {load} | {r['items_per_s']:.1f} | {'' if ratio is None else f'{ratio:.2f}×'} | "
                         f"{' | '.join(cells)} | {r.get('generator', '') if share is None else f'{share:.0%}'} |")
        lines.append("")
    if "peer" in results:
        peer = results["peer"]
        lines += [f"### Peer: infinity-emb (torch engine, same folder; cold start {peer['cold_start_s']:.1f} s, "
                  f"RSS {peer['rss_mib']:.0f} MiB)", "",
                  "| load | items/s | p50 ms | p99 ms | zoo best served ÷ infinity | generator CPU |",
                  "|---|---|---|---|---|---|"]
        for load, r in peer["loads"].items():
            ratio = r.get("zoo_best_served_over_infinity")
            lines.append(f"| {load} | {r['items_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}×'} | {r['generator_cpu_share']:.0%} |")
        lines.append("")
    if "batcher" in results:
        lines += ["### Dynamic batcher: max queue delay (text, torch; items/s and p50 ms)", "",
                  "| delay µs | 1x1 | 16x1 | 64x1 |", "|---|---|---|---|"]
        for delay, loads in results["batcher"].items():
            lines.append(f"| {delay} | " + " | ".join(f"{r['items_per_s']:.1f} / {r['p50_ms']:.1f}"
                                                      for r in loads.values()) + " |")
        lines.append("")
    if "one_sentence_p50_over_in_process_ms" in results.get("served", {}):
        extra = results["served"]["one_sentence_p50_over_in_process_ms"]
        lines.append(f"One sentence served over in-process: {extra:+.1f} ms p50")
    return "\n".join(lines)


def main() -> None:
    """Run the chosen sections, print the table, write the JSON and the markdown report."""
    import zoo
    from zoo.data.sentences import corpus_id, mixed_sentences, short_sentences
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="text,image,served")
    parser.add_argument("--text-model", default=default_model("text"))
    parser.add_argument("--n", type=int, default=2000, help="sentences in the text corpus")
    parser.add_argument("--short", type=int, default=1000, help="short sentences timed at batch 32")
    parser.add_argument("--singles", type=int, default=200, help="sentences timed at batch 1")
    parser.add_argument("--images", type=int, default=256, help="images for the aligned model")
    parser.add_argument("--vit-images", type=int, default=96, help="images for ViT-B-32 (slow on a CPU)")
    parser.add_argument("--served-items", type=int, default=640, help="text items per served load shape")
    parser.add_argument("--served-images", type=int, default=128, help="images per served load shape")
    parser.add_argument("--served-runtimes", default="torch,onnx-int8")
    parser.add_argument("--served-instances", type=int, default=1, help="instances of each served model")
    parser.add_argument("--peer", choices=["infinity"], help="also load a peer server with the same text shapes")
    parser.add_argument("--peer-venv", default="~/.cache/zoo/bench-infinity-venv",
                        help="the throw-away virtual environment the peer is installed into")
    parser.add_argument("--queue-delays", default="0,2000,8000", help="batcher section: max queue delays (µs)")
    parser.add_argument("--runtimes", default=None, help="zoo runtimes timed in-process (default: torch, onnx, "
                        "onnx-int8, and torch-fp16 on CUDA)")
    parser.add_argument("--no-aligned", dest="aligned", action="store_false", help="leave the aligned model out")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per cell (the best is kept)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.json and BENCHMARKS.md")
    args = parser.parse_args()
    if args.runtimes is None:
        args.runtimes = "torch,onnx,onnx-int8" + (",torch-fp16" if args.device.startswith("cuda") else "")
    sections = args.sections.split(",")
    texts = mixed_sentences(args.n)
    images = _png_bytes(args.images)
    vit = save_vit_b32(Path(tempfile.mkdtemp(prefix="zoo-vit-")) / "vit-b-32")
    results: dict = {"machine": machine(args.device), "command": " ".join(["python -m scripts.bench", *sys.argv[1:]]),
                     "corpus": {"sentences": len(texts), "id": corpus_id(texts)}, "zoo": zoo.__version__}
    short = short_sentences(args.short)
    if "text" in sections:
        results["text"] = text_section(args, texts, short)
    if "image" in sections:
        results["image"] = image_section(args, images, vit)
    if "served" in sections:
        results["served"] = served_section(args, texts, images, vit, results, short)
    if "batcher" in sections:
        results["batcher"] = batcher_section(args, texts)
    if args.peer == "infinity":
        results["peer"] = peer_section(args, texts, results.get("served", {}))
    report = table(results)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "benchmarks" if not args.device.startswith("cuda") else "benchmarks-gpu"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))
    name = name.upper()
    m = results["machine"]
    header = (f"## {m['cpu']} ({m['cores']} cores){', ' + m['gpu'] if 'gpu' in m else ''}\n\n"
              f"`{results['command']}`, torch {m['torch']}, onnxruntime {m['onnxruntime']}, Python {m['python']}, "
              f"CPU features {m.get('isa') or 'unknown'}, "
              f"corpus {results['corpus']['sentences']} sentences (id {results['corpus']['id']}).\n\n")
    (out / f"{name}.md").write_text(header + report + "\n")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
