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
- served: tritonserver on free loopback ports, the load from a separate process (``scripts/bench_load.py``)
  with 1 / 16 / 64 concurrent one-item clients and 4 clients of 32 items, text and image; items/s, p50 / p99,
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
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 32, 128)
LOADS = ((1, 1), (16, 1), (64, 1), (4, 32))  # (concurrent clients, items per request)


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

    info["onnxruntime"] = onnxruntime.__version__
    return info


def text_section(args: argparse.Namespace, texts: list[str]) -> dict:
    """sentence-transformers vs zoo on every runtime: items/s per batch size, and agreement with torch."""
    from sentence_transformers import SentenceTransformer

    import zoo
    from zoo.runtime import agreement
    from zoo.weights import resolve

    folder = args.text_model if os.path.isdir(args.text_model) else str(resolve(zoo.get_spec(args.text_model)))
    st = {"sentence-transformers": SentenceTransformer(folder, device=args.device)}
    if "torch-fp16" in args.runtimes:
        st["sentence-transformers fp16"] = SentenceTransformer(folder, device=args.device).half()
    models = dict.fromkeys(st) | {f"zoo {r}": zoo.create(folder, device=args.device, runtime=r)
                                  for r in args.runtimes.split(",")}
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
    reference = run("zoo torch", texts, 32)
    for name in models:
        rows[name]["agreement"] = agreement(reference, run(name, texts, 32))
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
        row["vs_sentence_transformers"] = {k: row[k] / base[k] for k in base if k.startswith("batch_")}
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


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _load(url: str, model: str, modality: str, items_file: Path, clients: int, items: int, requests: int,
          protocol: str = "grpc") -> dict:
    cmd = [sys.executable, "-m", "scripts.bench_load", "--url", url, "--model", model, "--modality", modality,
           "--items-file", str(items_file), "--clients", str(clients), "--items", str(items),
           "--requests", str(requests), "--protocol", protocol]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(client, name: str) -> dict:
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    inference = stats.get("inference_stats", {})
    batches = stats.get("batch_stats", [])
    executions = sum(int(b["compute_infer"]["count"]) for b in batches)
    items = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in batches)
    ns = {k: int(inference.get(k, {}).get("ns", 0)) for k in ("success", "queue", "compute_input", "compute_infer",
                                                               "compute_output")}
    return {"requests": int(inference.get("success", {}).get("count", 0)), "ns": ns, "executions": executions,
            "items": items}


def _split(before: dict, after: dict) -> dict:
    n = max(1, after["requests"] - before["requests"])
    per = {k: (after["ns"][k] - before["ns"][k]) / n / 1e6 for k in after["ns"]}
    runs = max(1, after["executions"] - before["executions"])
    return {"server_request_ms": per["success"], "queue_ms": per["queue"], "compute_ms": per["compute_infer"],
            "mean_batch": (after["items"] - before["items"]) / runs}


def served_section(args: argparse.Namespace, texts: list[str], images: list[bytes], vit: Path,
                   in_process: dict) -> dict:
    """Each runtime served in turn: cold start, memory, and every load shape for text and image."""
    import tritonclient.grpc as grpcclient

    from serving import contract
    from serving.export import export
    from serving.server import TritonServer, free_ports

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    (work / "texts.pkl").write_bytes(pickle.dumps(texts))
    (work / "images.pkl").write_bytes(pickle.dumps(images))
    out: dict = {}
    for runtime in args.served_runtimes.split(","):
        repo = work / f"repo-{runtime}"
        export([args.text_model, str(vit)], repo, runtime=runtime)
        # export the ONNX files before timing the cold start: the first start of a runtime makes them once
        if runtime.startswith("onnx"):
            import zoo

            zoo.create(args.text_model, runtime=runtime)
        server = TritonServer(repo, ports=free_ports())
        t = time.perf_counter()
        with server.start():
            cold = time.perf_counter() - t
            pids = [server.process.pid] + [s.pid for s in server.stubs()]
            client = grpcclient.InferenceServerClient(server.grpc_url)
            rows = {}
            for modality, name, items_file in (("text", args.text_model, work / "texts.pkl"),
                                               ("image", str(vit), work / "images.pkl")):
                triton = contract.model_name(name) if not os.path.isdir(name) else Path(name).resolve().name
                base = (in_process.get("text", {}).get("rows", {}).get(f"zoo {runtime}", {}).get("batch_32")
                        if modality == "text" else
                        in_process.get("image", {}).get("rows", {}).get("zoo (ViT-B-32)", {}).get("batch_32"))
                for clients, per in LOADS:
                    total = args.served_items if modality == "text" else args.served_images
                    requests = max(2, total // (clients * per))
                    before = _stats(client, triton)
                    got = _load(server.grpc_url, name if not os.path.isdir(name) else triton, modality, items_file,
                                clients, per, requests)
                    got |= _split(before, _stats(client, triton))
                    if base and runtime in ("torch", "onnx", "onnx-int8"):
                        got["vs_in_process_batch_32"] = got["items_per_s"] / base
                    rows[f"{modality} {clients}x{per}"] = got
            out[runtime] = {"cold_start_s": cold, "rss_mib": _rss_mib(pids), "loads": rows}
    one = out.get(args.served_runtimes.split(",")[0], {}).get("loads", {}).get("text 1x1")
    if one and "text" in in_process:
        out["one_sentence_p50_over_in_process_ms"] = one["p50_ms"] - in_process["text"]["one_sentence_p50_ms"]
    return out


def batcher_section(args: argparse.Namespace, texts: list[str]) -> dict:
    """The text model served on torch at each of ``--queue-delays`` (µs): what the dynamic batcher's wait
    buys and costs at 1, 16 and 64 concurrent one-item clients."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from serving.export import export
    from serving.server import TritonServer, free_ports

    work = Path(tempfile.mkdtemp(prefix="zoo-batcher-"))
    (work / "texts.pkl").write_bytes(pickle.dumps(texts))
    out = {}
    for delay in (int(d) for d in args.queue_delays.split(",")):
        repo = work / f"repo-{delay}"
        (folder,) = export([args.text_model], repo)
        config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        config.dynamic_batching.max_queue_delay_microseconds = delay
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        with TritonServer(repo, ports=free_ports()).start() as server:
            out[str(delay)] = {f"{c}x1": _load(server.grpc_url, args.text_model, "text", work / "texts.pkl", c, 1,
                                               max(2, args.served_items // c)) for c in (1, 16, 64)}
    return out


INFINITY = "infinity-emb[server,torch]==0.0.78"


def _infinity_venv(venv: Path) -> Path:
    """A throw-away virtual environment holding infinity-emb (never a dependency of this project); made once."""
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build (pip's own choice would be CUDA's)
        subprocess.run(pip + [INFINITY], check=True)
    return exe


def peer_section(args: argparse.Namespace, texts: list[str], served: dict) -> dict:
    """infinity-emb serving the same weights folder on loopback, under the same text load shapes; each shape's
    ratio is zoo's best served runtime over infinity."""
    import urllib.request

    import zoo
    from serving.server import free_ports
    from zoo.weights import resolve

    exe = _infinity_venv(Path(args.peer_venv).expanduser())
    folder = args.text_model if os.path.isdir(args.text_model) else str(resolve(zoo.get_spec(args.text_model)))
    port = free_ports().http
    env = os.environ | {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    log = open(Path(tempfile.mkdtemp(prefix="zoo-peer-")) / "infinity.log", "w")
    t = time.perf_counter()
    proc = subprocess.Popen([str(exe), "v2", "--model-id", folder, "--served-model-name", "peer", "--host",
                             "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu",
                             "--batch-size", "32"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infinity exited with {proc.returncode}; its log: {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        out: dict = {"cold_start_s": time.perf_counter() - t, "rss_mib": _rss_mib([proc.pid]), "loads": {}}
        items_file = Path(tempfile.mkdtemp(prefix="zoo-peer-")) / "texts.pkl"
        items_file.write_bytes(pickle.dumps(texts))
        for clients, per in LOADS:
            got = _load(url, "peer", "text", items_file, clients, per, max(2, args.served_items // (clients * per)),
                        protocol="openai-http")
            best = max((r["loads"][f"text {clients}x{per}"]["items_per_s"] for r in served.values()
                        if isinstance(r, dict) and "loads" in r), default=None)
            if best:
                got["zoo_best_served_over_infinity"] = best / got["items_per_s"]
            out["loads"][f"text {clients}x{per}"] = got
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def table(results: dict) -> str:
    """The results as markdown tables."""
    lines = []
    if "text" in results:
        lines += ["### Text in-process (items/s; × sentence-transformers in brackets)", "",
                  "| path | batch 1 | batch 32 | batch 128 | least cos | top-10 overlap |", "|---|---|---|---|---|---|"]
        for name, row in results["text"]["rows"].items():
            cells = [f"{row[f'batch_{b}']:.1f} ({row['vs_sentence_transformers'][f'batch_{b}']:.2f}×)" for b in BATCHES]
            agree = row["agreement"]
            lines.append(f"| {name} | {' | '.join(cells)} | {agree['min_cos']:.4f} | {agree['top10_overlap']:.3f} |")
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
            lines.append(f"| {load} | {r['items_per_s']:.1f} | {'' if ratio is None else f'{ratio:.2f}×'} | "
                         f"{' | '.join(cells)} | {r['generator_cpu_share']:.0%} |")
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
    from zoo.data.sentences import corpus_id, mixed_sentences
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="text,image,served")
    parser.add_argument("--text-model", default=default_model("text"))
    parser.add_argument("--n", type=int, default=2000, help="sentences in the text corpus")
    parser.add_argument("--singles", type=int, default=200, help="sentences timed at batch 1")
    parser.add_argument("--images", type=int, default=256, help="images for the aligned model")
    parser.add_argument("--vit-images", type=int, default=96, help="images for ViT-B-32 (slow on a CPU)")
    parser.add_argument("--served-items", type=int, default=640, help="text items per served load shape")
    parser.add_argument("--served-images", type=int, default=128, help="images per served load shape")
    parser.add_argument("--served-runtimes", default="torch,onnx-int8")
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
    if "text" in sections:
        results["text"] = text_section(args, texts)
    if "image" in sections:
        results["image"] = image_section(args, images, vit)
    if "served" in sections:
        results["served"] = served_section(args, texts, images, vit, results)
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
              f"corpus {results['corpus']['sentences']} sentences (id {results['corpus']['id']}).\n\n")
    (out / f"{name}.md").write_text(header + report + "\n")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
