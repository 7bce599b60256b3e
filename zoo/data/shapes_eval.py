"""Held-out evaluation of an aligned model: fresh seed, held-out rendering, phrasings and voices.

Gallery: one single-object image per colour×shape pair (all 32), rendered with HELDOUT_RENDER. Queries of
the headline figures are the pairs seen in training (as colours and shapes; the rendering, phrasing and
voices are new); pairs held out of training entirely are reported separately (composition probe), while
staying in the gallery as distractors.
- text→image R@1: each EVAL_TEMPLATES caption of a pair retrieves among the 32 images;
- image→text R@1: each image retrieves among the 32 captions of one template (every template in turn);
- speech→image R@1: a caption spoken by a held-out voice retrieves among the 32 images;
- composed (interleaved) R@1: ``[image, "but <colour>"]`` must retrieve the same shape in the new colour
  among the 32 images (the query image itself stays in the gallery).

Run it with ``python scripts/eval_aligned.py [MODEL] [--write-card]``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import shapes as S
from . import speech as P


def evaluate(model, seed: int = 20261122, galleries: int = 4, speech: bool = True) -> dict:
    """Recall@1 figures for ``model`` (anything with zoo's ``encode()``)."""
    rng = np.random.default_rng(seed)
    seen = np.array([c not in S.HELDOUT_COMBOS for c in S.ALL_COMBOS])
    hits = {k: [] for k in ("t2i", "i2t", "a2i")}
    probe = {k: [] for k in ("t2i", "i2t", "a2i")}
    n = len(S.ALL_COMBOS)
    # (query image index, target index, modifier): every pair recoloured into each other colour
    composed = [(i, S.ALL_COMBOS.index((new, shape)), f"but {new}")
                for i, (color, shape) in enumerate(S.ALL_COMBOS) for new in S.COLORS if new != color]
    composed_hits: list[bool] = []
    for _ in range(galleries):
        scenes = S.single_object_gallery(rng, S.HELDOUT_RENDER)
        images = [S.render(sc, rng, S.HELDOUT_RENDER) for sc in scenes]
        img = model.encode(images, "image")
        caps = [S.captions(sc, S.EVAL_TEMPLATES) for sc in scenes]  # [32][T]
        flat = [c for cs in caps for c in cs]
        txt = model.encode(flat, "text").reshape(n, len(S.EVAL_TEMPLATES), -1)
        for t in range(len(S.EVAL_TEMPLATES)):
            t2i = (txt[:, t] @ img.T).argmax(1) == np.arange(n)
            i2t = (img @ txt[:, t].T).argmax(1) == np.arange(n)
            for key, hit in (("t2i", t2i), ("i2t", i2t)):
                hits[key] += list(hit[seen])
                probe[key] += list(hit[~seen])
        if speech:
            voices = [P.sample_voice(rng, P.HELDOUT_VOICES) for _ in range(n)]
            texts = [cs[int(rng.integers(len(cs)))] for cs in caps]
            seeds = rng.integers(1 << 31, size=n)
            with ThreadPoolExecutor(4) as pool:
                waves = list(pool.map(lambda a: P.speak(a[0], a[1], np.random.default_rng(a[2])),
                                      zip(texts, voices, seeds)))
            aud = model.encode([(w, P.SAMPLE_RATE) for w in waves], "audio")
            a2i = (aud @ img.T).argmax(1) == np.arange(n)
            hits["a2i"] += list(a2i[seen])
            probe["a2i"] += list(a2i[~seen])
        queries = model.encode([[{"image": images[i]}, text] for i, _, text in composed], "interleaved")
        composed_hits += list((queries @ img.T).argmax(1) == np.array([j for _, j, _ in composed]))
    result = {
        "text_to_image_R@1": float(np.mean(hits["t2i"])),
        "image_to_text_R@1": float(np.mean(hits["i2t"])),
        "heldout_combos": sorted(" ".join(c) for c in S.HELDOUT_COMBOS),
        "heldout_combos_text_to_image_R@1": float(np.mean(probe["t2i"])),
        "heldout_combos_image_to_text_R@1": float(np.mean(probe["i2t"])),
        "gallery": f"{n} single-object images (all colour x shape pairs), {galleries} galleries, seed {seed}",
    }
    result["composed_image_plus_colour_R@1"] = float(np.mean(composed_hits))
    if speech:
        result["speech_to_image_R@1"] = float(np.mean(hits["a2i"]))
        result["heldout_combos_speech_to_image_R@1"] = float(np.mean(probe["a2i"]))
    return result

