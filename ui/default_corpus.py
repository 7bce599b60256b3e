"""The demo's default corpus, built offline on first start: the photos shipped in scikit-image, generated
shape scenes with their captions, generated clips of moving shapes, the sounds shipped with pygame, spoken
captions (when espeak-ng is installed), and text snippets.

This is the demo's one way into the generated data (:mod:`zoo.data`): the scenes, clips and spoken captions
come from its generators, and :func:`scene_colours` is the page's one view of their vocabulary.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from zoo.errors import InvalidArgumentError

from .corpus import Corpus

#: the generated clips of the default corpus: one shape each, moving across the frame
CLIPS = (("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"), ("purple", "circle"),
         ("orange", "star"))
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "horse",
                  "immunohistochemistry", "hubble_deep_field", "retina", "cat")
SNIPPETS = (
    "an astronaut in a white space suit", "a cup of coffee on a saucer", "a tabby cat looking at the camera",
    "a rocket on the launch pad", "a man holding a camera", "a handful of old coins", "the surface of the moon",
    "a page of printed text", "a horse silhouette", "a car door slamming", "a loud explosion", "a punch sound",
    "a whoosh of air", "a red circle", "two blue squares", "a yellow star on a dark background",
)


def scene_colours() -> list[str]:
    """The colours the default corpus's generated scenes are painted in and named by in their labels, in a
    fixed order: the demo's one view of the generator's vocabulary (:mod:`zoo.data.shapes`)."""
    from zoo.data import shapes as S

    return list(S.COLORS)


def build_default(root: Path, *, scenes: int = 48, spoken: int = 8, seed: int = 11) -> Corpus:
    """Create the default offline corpus under ``root`` (idempotent)."""
    from zoo.data import shapes as S

    corpus = Corpus(root)
    if corpus.items or corpus.quarantined:
        return corpus
    tmp = Path(tempfile.mkdtemp(prefix="zoo-corpus-"))
    try:
        for name in SKIMAGE_PHOTOS:
            try:
                import skimage.data
                from PIL import Image

                arr = getattr(skimage.data, name)()
            except Exception:  # a photo that needs a download is simply left out
                continue
            if arr.dtype != np.uint8:
                arr = (arr.astype(np.float32) / max(float(arr.max()), 1) * 255).astype(np.uint8)
            Image.fromarray(arr).convert("RGB").save(tmp / f"{name}.png")
            corpus.add_file(tmp / f"{name}.png", label=f"photo: {name}")
        rng = np.random.default_rng(seed)
        gallery = S.single_object_gallery(rng, S.HELDOUT_RENDER)
        extra = [S.sample_training_scene(rng) for _ in range(max(0, scenes - len(gallery)))]
        for i, scene in enumerate((gallery + extra)[:scenes]):
            path = tmp / f"scene_{i:03d}.png"
            S.render(scene, rng, S.HELDOUT_RENDER).save(path)
            caption = S.captions(scene, S.EVAL_TEMPLATES if len(scene.objects) == 1 else S.TRAIN_TEMPLATES)[0]
            corpus.add_file(path, label=caption)
            corpus.add_text(caption)
        _add_clips(corpus, tmp)
        _add_pygame_sounds(corpus)
        _add_spoken(corpus, tmp, rng, spoken)
        for text in SNIPPETS:
            corpus.add_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def _add_clips(corpus: Corpus, tmp: Path) -> None:
    from zoo.data import shapes as S
    from zoo.media.sampling import encode_frames

    for color, shape in CLIPS:
        path = tmp / f"clip_{color}_{shape}.mp4"
        path.write_bytes(encode_frames(S.moving_clip(color, shape, 16), 8, lossless=False))
        article = "an" if color[0] in "aeiou" else "a"
        corpus.add_file(path, label=f"clip: {article} {color} {shape} moving")


def _add_pygame_sounds(corpus: Corpus) -> None:
    import importlib.util

    spec = importlib.util.find_spec("pygame")
    if spec is None or not spec.submodule_search_locations:
        return
    data = Path(next(iter(spec.submodule_search_locations))) / "examples" / "data"
    for path in sorted(data.glob("*.wav")) + sorted(data.glob("*.ogg")):
        try:
            corpus.add_file(path, label=f"sound: {path.stem.replace('_', ' ')}")
        except InvalidArgumentError:
            continue


def _add_spoken(corpus: Corpus, tmp: Path, rng: np.random.Generator, n: int) -> None:
    from zoo.data import shapes as S
    from zoo.data import speech as P

    if not P.espeak_available():
        return
    for i in range(n):
        scene = S.sample_scene(rng, 1)
        text = S.captions(scene, S.EVAL_TEMPLATES)[0]
        path = tmp / f"spoken_{i:02d}.wav"
        path.write_bytes(P.wav_bytes(P.speak(text, P.sample_voice(rng, P.HELDOUT_VOICES), rng)))
        corpus.add_file(path, label=f"spoken: {text}")
