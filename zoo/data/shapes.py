"""Deterministic generator of simple scenes (1–3 coloured shapes) and their captions.

Used to train and evaluate the offline aligned model (`zoo/shapes-aligned-minilm`), and by the tests and
the demo corpus to make fresh images. Everything is a pure function of a ``numpy.random.Generator``.

    python -m zoo.data.shapes --out /tmp/scenes --n 50 --seed 7            # PNGs + captions.jsonl
    python -m zoo.data.shapes --out /tmp/scenes --n 50 --seed 7 --heldout  # evaluation rendering/phrasing
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 45, 175),
    "orange": (245, 135, 25),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
#: colour–shape pairs never shown in training (not even inside multi-object scenes): a composition probe
HELDOUT_COMBOS = frozenset({("purple", "star"), ("orange", "triangle"), ("green", "square")})
ALL_COMBOS = [(c, s) for s in SHAPES for c in COLORS]
NUMBER_WORDS = {2: "two", 3: "three"}
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "center": "in the center"}

TRAIN_TEMPLATES = (
    "a {color} {shape}",
    "a {size} {color} {shape}",
    "a {color} {shape} {where}",
    "a {size} {color} {shape} {where}",
    "a {color} {shape} on a {tone} background",
    "one {color} {shape}",
)
#: phrasings the training never sees
EVAL_TEMPLATES = (
    "a picture of a {color} {shape}",
    "there is a {color} {shape} in the image",
    "an image showing a {size} {color} {shape}",
)


@dataclass(frozen=True)
class Obj:
    """One shape in a scene."""

    color: str
    shape: str
    size: str
    pos: str


@dataclass(frozen=True)
class Scene:
    """Objects plus background; ``key`` identifies what a caption must describe."""

    objects: tuple[Obj, ...]
    background: tuple[int, int, int]
    textured: bool
    tone: str  # "dark" or "light"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Canonical multiset of colour–shape pairs (two captions match iff their keys do)."""
        return "|".join(sorted(f"{o.color} {o.shape}" for o in self.objects))


@dataclass(frozen=True)
class RenderParams:
    """Ranges of rendering parameters; the held-out set differs from training's."""

    canvas: tuple[int, int] = (56, 160)
    supersample: tuple[int, ...] = (1, 2, 4)  # 1 = jagged edges, >1 = anti-aliased
    rotation: float = 180.0  # max degrees either way
    blur: float = 0.6
    jitter: int = 18  # colour jitter per channel


TRAIN_RENDER = RenderParams()
HELDOUT_RENDER = RenderParams(canvas=(72, 200), supersample=(3,), rotation=45.0, blur=0.9, jitter=25)


def _luminance(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _background(rng: np.random.Generator, objects: tuple[Obj, ...]) -> tuple[tuple[int, int, int], str]:
    """A background colour far from every object's colour; its tone names it in captions."""
    for _ in range(100):
        tone = "dark" if rng.random() < 0.5 else "light"
        base = rng.integers(20, 90) if tone == "dark" else rng.integers(170, 235)
        bg = tuple(int(np.clip(base + rng.integers(-20, 21), 0, 255)) for _ in range(3))
        if all(np.abs(np.subtract(bg, COLORS[o.color])).sum() > 150 for o in objects):
            return bg, tone
    return ((128, 128, 128), "dark" if _luminance((128,) * 3) < 128 else "light")


def sample_scene(
    rng: np.random.Generator, n_objects: int = 1, combos: list[tuple[str, str]] | None = None,
    same: bool = False,
) -> Scene:
    """A random scene of ``n_objects`` drawn from ``combos`` (all same colour–shape when ``same``)."""
    combos = combos or ALL_COMBOS
    positions = list(rng.permutation(POSITIONS))[:n_objects]
    first = combos[rng.integers(len(combos))]
    objects = []
    for i in range(n_objects):
        color, shape = first if (same or i == 0) else combos[rng.integers(len(combos))]
        size = SIZES[rng.integers(2)] if n_objects == 1 else "small"
        objects.append(Obj(color, shape, size, str(positions[i])))
    objs = tuple(objects)
    bg, tone = _background(rng, objs)
    return Scene(objs, bg, bool(rng.random() < 0.35), tone)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
        r *= 1.15
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
        r *= 1.25
    else:  # star: 5 outer points, inner radius 0.45
        pts = [((1 if k % 2 == 0 else 0.45) * math.cos(a), (1 if k % 2 == 0 else 0.45) * math.sin(a))
               for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))]
        r *= 1.3
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


_ANCHORS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
            "center": (0.5, 0.5)}


def render(scene: Scene, rng: np.random.Generator, params: RenderParams = TRAIN_RENDER) -> Image.Image:
    """Draw ``scene`` as an RGB image with randomized canvas, rotation, texture and anti-aliasing."""
    w = int(rng.integers(params.canvas[0], params.canvas[1] + 1))
    h = int(np.clip(w * rng.uniform(0.75, 1.33), params.canvas[0], params.canvas[1]))
    ss = int(rng.choice(params.supersample))
    W, H = w * ss, h * ss
    img = Image.new("RGB", (W, H), scene.background)
    if scene.textured:  # low-contrast noise or stripes on top of the base colour
        base = np.asarray(img, dtype=np.int16)
        if rng.random() < 0.5:
            tex = rng.integers(-28, 29, size=(H // 4 + 1, W // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:H, :W]
        else:
            period = int(rng.integers(4, 12)) * ss
            tex = (((np.arange(W)[None, :] + np.arange(H)[:, None]) // period) % 2 * 36 - 18)[..., None]
        img = Image.fromarray(np.clip(base + tex, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = min(W, H)
    for obj in scene.objects:
        ax, ay = _ANCHORS[obj.pos]
        cx = (ax + rng.uniform(-0.06, 0.06)) * W
        cy = (ay + rng.uniform(-0.06, 0.06)) * H
        frac = rng.uniform(0.09, 0.13) if obj.size == "small" else rng.uniform(0.2, 0.26)
        r = frac * side
        color = tuple(int(np.clip(c + rng.integers(-params.jitter, params.jitter + 1), 0, 255))
                      for c in COLORS[obj.color])
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        else:
            angle = math.radians(rng.uniform(-params.rotation, params.rotation))
            draw.polygon(_polygon(obj.shape, cx, cy, r, angle), fill=color)
    if ss > 1:
        img = img.resize((w, h), Image.LANCZOS)
    if params.blur and rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, params.blur)))
    return img


def moving_clip(color: str, shape: str, n_frames: int = 12, size: tuple[int, int] = (128, 96),
                background: tuple[int, int, int] = (40, 40, 48)) -> list[Image.Image]:
    """Frames of one ``color`` ``shape`` gliding from the left edge to the right across a plain background (a
    generated video whose every frame shows the same thing: what a video embedder must find)."""
    w, h = size
    r = 0.18 * min(w, h)
    frames = []
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        cx, cy = (0.2 + 0.6 * t) * w, (0.45 + 0.1 * math.sin(math.pi * t)) * h
        img = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(img)
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLORS[color])
        else:
            draw.polygon(_polygon(shape, cx, cy, r, 0.3 * math.pi * t), fill=COLORS[color])
        frames.append(img)
    return frames


def _plural(shape: str) -> str:
    return shape + "s"


def _articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def captions(scene: Scene, templates: tuple[str, ...] = TRAIN_TEMPLATES) -> list[str]:
    """Natural-language captions of ``scene`` (every template for one object; fixed forms for more)."""
    return [_articles(c) for c in _captions(scene, templates)]


def numbered_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences: a caption of a fresh training scene plus its number (benchmark load)."""
    rng = np.random.default_rng(seed)
    return [captions(sample_training_scene(rng))[0] + f" number {i}" for i in range(n)]


def _captions(scene: Scene, templates: tuple[str, ...]) -> list[str]:
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        return [t.format(color=o.color, shape=o.shape, size=o.size, where=WHERE[o.pos], tone=scene.tone)
                for t in templates]
    if len({(o.color, o.shape) for o in objs}) == 1:
        o, n = objs[0], NUMBER_WORDS[len(objs)]
        return [f"{n} {o.color} {_plural(o.shape)}", f"{n} small {o.color} {_plural(o.shape)}",
                f"{n} {o.color} {_plural(o.shape)} on a {scene.tone} background"]
    parts = [f"a {o.color} {o.shape}" for o in objs]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    placed = " and ".join(f"a {o.color} {o.shape} {WHERE[o.pos]}" for o in objs)
    return [listed, placed]


def training_combos() -> list[tuple[str, str]]:
    """Colour–shape pairs the training may show."""
    return [c for c in ALL_COMBOS if c not in HELDOUT_COMBOS]


def sample_training_scene(rng: np.random.Generator) -> Scene:
    """The training mix: 60 % single objects, then pairs/triples of the same or different shapes."""
    u = rng.random()
    combos = training_combos()
    if u < 0.6:
        return sample_scene(rng, 1, combos)
    if u < 0.8:
        return sample_scene(rng, int(rng.integers(2, 4)), combos, same=True)
    return sample_scene(rng, int(rng.integers(2, 4)), combos)


def single_object_gallery(rng: np.random.Generator, params: RenderParams = HELDOUT_RENDER) -> list[Scene]:
    """One single-object scene per colour–shape pair (all 32), in ALL_COMBOS order."""
    scenes = []
    for color, shape in ALL_COMBOS:
        obj = Obj(color, shape, SIZES[rng.integers(2)], POSITIONS[rng.integers(len(POSITIONS))])
        bg, tone = _background(rng, (obj,))
        scenes.append(Scene((obj,), bg, bool(rng.random() < 0.35), tone))
    return scenes


def main() -> None:
    """Write ``n`` scenes as PNG files plus ``captions.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", action="store_true", help="evaluation rendering and phrasing")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    params, templates = (HELDOUT_RENDER, EVAL_TEMPLATES) if args.heldout else (TRAIN_RENDER, TRAIN_TEMPLATES)
    with open(args.out / "captions.jsonl", "w") as fh:
        for i in range(args.n):
            scene = sample_training_scene(rng)
            name = f"scene_{i:05d}.png"
            render(scene, rng, params).save(args.out / name)
            fh.write(json.dumps({"file": name, "key": scene.key, "captions": captions(scene, templates)}) + "\n")
    print(f"wrote {args.n} scenes to {args.out}")


if __name__ == "__main__":
    main()
