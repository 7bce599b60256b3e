"""Train the image and audio towers of `zoo/shapes-aligned-minilm` against the frozen MiniLM text tower.

LiT-style: the text tower is locked (the shipped all-MiniLM-L6-v2, unchanged); each tower learns to put a
scene (or its spoken caption) next to the text embedding of its caption, with a symmetric contrastive loss
in which every sample whose scene has the same colour–shape multiset counts as a positive. Data comes from
zoo/data/shapes.py and zoo/data/speech.py with a fixed seed; colour–shape pairs in HELDOUT_COMBOS are never
shown. Runs on CPU in about 15 minutes on 2 cores.

    python scripts/train_aligned.py --out zoo/models/shapes-aligned-minilm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from zoo.data import shapes as S
from zoo.data import speech as P

# interleaved fusion: text parts count 2.5x, so "[image, 'but blue']" moves the colour yet keeps the shape
# (measured with the composed figure of scripts/eval_aligned.py; at 1.0 the image always wins)
TEXT_WEIGHT = 2.5
CACHE = Path(os.environ.get("ZOO_CACHE", Path(__file__).resolve().parent.parent / "var")) / "aligned-data"


def _render_chunk(args: tuple[int, int]) -> tuple[np.ndarray, list[str], list[list[str]]]:
    from zoo.families.aligned import image_pixels

    seed, n = args
    rng = np.random.default_rng(seed)
    pixels, keys, caps = [], [], []
    for _ in range(n):
        scene = S.sample_training_scene(rng)
        pixels.append(image_pixels(S.render(scene, rng, S.TRAIN_RENDER)))
        keys.append(scene.key)
        caps.append(S.captions(scene, S.TRAIN_TEMPLATES))
    return np.stack(pixels), keys, caps


def _speak_chunk(args: tuple[int, int]) -> tuple[list[np.ndarray], list[str], list[str]]:
    seed, n = args
    rng = np.random.default_rng(seed)
    waves, keys, texts = [], [], []
    for _ in range(n):
        # speech leans on single objects: the colour and shape words are what must be heard
        scene = S.sample_scene(rng, 1, S.training_combos()) if rng.random() < 0.8 else S.sample_training_scene(rng)
        caps = S.captions(scene, S.TRAIN_TEMPLATES)
        text = caps[int(rng.integers(len(caps)))]
        waves.append(P.speak(text, P.sample_voice(rng, P.TRAIN_VOICES), rng).astype(np.float16))
        keys.append(scene.key)
        texts.append(text)
    return waves, keys, texts


def build_data(seed: int, n_images: int, n_audio: int, workers: int = 2) -> dict:
    """Render scenes and speak captions (cached under var/ by seed and size)."""
    path = CACHE / f"seed{seed}-img{n_images}-aud{n_audio}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=True)
        return {k: data[k] for k in data.files}
    chunks = 16
    t = time.time()
    with Pool(workers) as pool:
        img_parts = pool.map(_render_chunk, [(seed * 1000 + i, n_images // chunks) for i in range(chunks)])
        print(f"rendered {n_images} scenes in {time.time() - t:.0f}s", flush=True)
        aud_parts = pool.map(_speak_chunk, [(seed * 1000 + 500 + i, n_audio // chunks) for i in range(chunks)])
        print(f"spoke {n_audio} captions in {time.time() - t:.0f}s", flush=True)
    data = {
        "pixels": np.concatenate([p[0] for p in img_parts]),
        "img_keys": np.array([k for p in img_parts for k in p[1]]),
        "img_caps": np.array([json.dumps(c) for p in img_parts for c in p[2]]),
        "waves": np.array([w for p in aud_parts for w in p[0]] + [None], dtype=object)[:-1],
        "aud_keys": np.array([k for p in aud_parts for k in p[1]]),
        "aud_texts": np.array([t for p in aud_parts for t in p[2]]),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def multi_positive_loss(a, b, keys: np.ndarray, scale):
    """Symmetric InfoNCE where every pair with the same scene key is a positive."""
    import torch
    import torch.nn.functional as F

    same = torch.from_numpy(keys[:, None] == keys[None, :]).to(a.device)
    target = same.float() / same.float().sum(1, keepdim=True)
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())


def spec_augment(feats, rng: np.random.Generator):
    """Mask one band of mel bins and two spans of frames per batch (cheap SpecAugment)."""
    feats = feats.clone()
    n_mels, frames = feats.shape[1], feats.shape[2]
    f0 = int(rng.integers(0, n_mels - 8))
    feats[:, f0 : f0 + int(rng.integers(0, 8))] = 0
    for _ in range(2):
        t0 = int(rng.integers(0, max(1, frames - 15)))
        feats[:, :, t0 : t0 + int(rng.integers(0, 15))] = 0
    return feats


def train(args: argparse.Namespace) -> None:
    """Build data, train both towers, write the folder and its card."""
    import torch
    from safetensors.torch import save_file

    import zoo
    from zoo.defaults import default_model
    from zoo.families.aligned import audio_batch, build_audio_tower, build_image_tower, pixels_to_tensor
    from zoo.postprocess import normalize

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    data = build_data(args.seed, args.images, args.audio)
    text_model = zoo.create(default_model("text"), device="cpu")
    img_caps = [json.loads(c) for c in data["img_caps"]]
    vocab = sorted({c for cs in img_caps for c in cs} | set(data["aud_texts"].tolist()))
    print(f"embedding {len(vocab)} distinct captions with the frozen text tower", flush=True)
    table = torch.from_numpy(normalize(text_model.encode(vocab, "text", batch_size=128)))
    index = {c: i for i, c in enumerate(vocab)}
    img_cap_idx = [[index[c] for c in cs] for cs in img_caps]
    aud_cap_idx = np.array([index[t] for t in data["aud_texts"]])
    dim = table.shape[1]

    image_tower = build_image_tower(dim, args.image_width)
    audio_tower = build_audio_tower(dim, sample_rate=P.SAMPLE_RATE, width=args.audio_width)
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    params = [*image_tower.parameters(), *audio_tower.parameters(), scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.08)
    waves = [w.astype(np.float32) for w in data["waves"]]
    curve, window = [], {"image": [], "audio": []}
    for step in range(1, args.steps + 1):
        image_tower.train()
        audio_tower.train()
        logit_scale = scale.exp().clamp(max=50)
        idx = rng.choice(len(img_cap_idx), args.batch, replace=False)
        keys = data["img_keys"][idx]
        caps = torch.stack([table[img_cap_idx[i][rng.integers(len(img_cap_idx[i]))]] for i in idx])
        img_loss = multi_positive_loss(image_tower(pixels_to_tensor(data["pixels"][idx])), caps, keys, logit_scale)
        aidx = rng.choice(len(waves), args.audio_batch, replace=False)
        clips = []
        for i in aidx:  # random gain and a random lead-in of silence
            w = waves[i] * rng.uniform(0.3, 1.5)
            clips.append(np.concatenate([np.zeros(int(rng.integers(0, 4000)), np.float32), w]))
        wave, lengths = audio_batch(clips)
        aud = audio_tower(wave, lengths, spec_hook=lambda f: spec_augment(f, rng))
        aud_loss = multi_positive_loss(aud, table[aud_cap_idx[aidx]], data["aud_keys"][aidx], logit_scale)
        opt.zero_grad()
        (img_loss + aud_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        window["image"].append(img_loss.item())
        window["audio"].append(aud_loss.item())
        if step % 50 == 0 or step == args.steps:
            point = {"step": step, "image_loss": float(np.mean(window["image"])),
                     "audio_loss": float(np.mean(window["audio"])), "scale": float(logit_scale.detach())}
            curve.append(point)
            window = {"image": [], "audio": []}
            print(f"step {step}/{args.steps}  image {point['image_loss']:.3f}  audio {point['audio_loss']:.3f}  "
                  f"scale {point['scale']:.1f}  {time.time() - started:.0f}s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"image.{k}": v.contiguous() for k, v in image_tower.state_dict().items()}
    state |= {f"audio.{k}": v.contiguous() for k, v in audio_tower.state_dict().items() if not k.startswith("mel.")}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = {
        "model_type": "zoo-aligned", "text_model": default_model("text"), "dim": dim,
        "image_width": args.image_width, "audio_width": args.audio_width, "sample_rate": P.SAMPLE_RATE,
        "max_seconds": 10.0, "text_weight": TEXT_WEIGHT, "image_weight": 1.0, "max_length": text_model.spec.max_length,
        "description": "MiniLM text + image/audio towers trained on generated shapes and spoken captions "
                       "(offline demo model)",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    train_seconds = time.time() - started

    from zoo.data.shapes_eval import evaluate

    model = zoo.create(str(out), device="cpu")  # the real loading path
    results = evaluate(model)
    print(json.dumps(results, indent=2), flush=True)
    card = {
        "model": "zoo/shapes-aligned-minilm",
        "what": "frozen all-MiniLM-L6-v2 text tower; image and audio towers trained LiT-style on generated "
                "scenes of coloured shapes and captions spoken by espeak-ng. For offline demos and tests only.",
        "command": "python scripts/train_aligned.py --out zoo/models/shapes-aligned-minilm",
        "eval_command": "python scripts/eval_aligned.py",
        "data": {"seed": args.seed, "images": args.images, "spoken_captions": args.audio,
                 "train_voices": list(P.TRAIN_VOICES), "heldout_voices": list(P.HELDOUT_VOICES),
                 "train_templates": list(S.TRAIN_TEMPLATES), "eval_templates": list(S.EVAL_TEMPLATES),
                 "heldout_combos": sorted(" ".join(c) for c in S.HELDOUT_COMBOS)},
        "training": {"steps": args.steps, "batch": args.batch, "audio_batch": args.audio_batch, "lr": args.lr,
                     "seconds": round(train_seconds), "loss_curve": curve},
        "heldout_eval": results,
        "weights_bytes": (out / "model.safetensors").stat().st_size,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {out} in {time.time() - started:.0f}s", flush=True)


def main() -> None:
    """Parse arguments and train."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="zoo/models/shapes-aligned-minilm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--images", type=int, default=16000)
    parser.add_argument("--audio", type=int, default=3200)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--audio-batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--image-width", type=int, default=32)
    parser.add_argument("--audio-width", type=int, default=128)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
