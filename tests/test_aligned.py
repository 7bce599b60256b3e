"""The committed offline aligned model: loads offline, text tower unchanged, retrieves on fresh data."""

import json

import numpy as np
import pytest

import zoo
from zoo.data import shapes as S
from zoo.data import speech as P
from zoo.defaults import default_model
from zoo.postprocess import normalize
from zoo.weights import resolve

NAME = "zoo/shapes-aligned-minilm"


@pytest.fixture(scope="module")
def aligned():
    return zoo.create(NAME, device="cpu")


def test_is_the_default_for_image_audio_interleaved():
    for modality in ("image", "audio", "interleaved"):
        assert default_model(modality) == NAME
    spec = zoo.get_spec(NAME)
    assert set(spec.modalities) == set(zoo.Modality)


README_ROWS = {  # docs/families.md table row (its first cell starts so) → the card.json figures it shows, in order
    "text → image": ["text_to_image_R@1"],
    "image → text": ["image_to_text_R@1"],
    "spoken caption": ["speech_to_image_R@1"],
    "composed query": ["composed_image_plus_colour_R@1"],
    "composition probe": ["heldout_combos_text_to_image_R@1", "heldout_combos_image_to_text_R@1",
                          "heldout_combos_speech_to_image_R@1"],
}


def test_weights_are_small_and_carded():
    folder = resolve(zoo.get_spec(NAME))
    assert (folder / "model.safetensors").stat().st_size <= 20 * 1024 * 1024
    card = json.loads((folder / "card.json").read_text())
    assert card["data"]["seed"] is not None and card["training"]["loss_curve"]


def test_card_figures_are_reproduced_and_the_readme_shows_them(aligned):
    """Re-running the held-out evaluation on the committed weights gives exactly the card's figures, and the
    docs' table (docs/families.md) prints those figures (rounded as printed)."""
    import re
    from pathlib import Path

    from zoo.data.shapes_eval import evaluate

    card = json.loads((resolve(zoo.get_spec(NAME)) / "card.json").read_text())["heldout_eval"]
    assert evaluate(aligned, 20261122, 4) == card
    readme = (Path(__file__).resolve().parent.parent / "docs" / "families.md").read_text()
    for start, keys in README_ROWS.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {start}"))
        cell = row.split("|")[2]
        printed = [float(x) for x in re.findall(r"\d\.\d+", cell)]
        decimals = [len(x.split(".")[1]) for x in re.findall(r"\d\.\d+", cell)]
        assert len(printed) == len(keys), row
        for key, value, places in zip(keys, printed, decimals):
            assert round(card[key], places) == value, (row, key, card[key])


def test_text_tower_is_exactly_minilm(aligned, minilm):
    texts = ["a red circle", "an astronaut in space", "héllo 🐱", ""]
    assert np.array_equal(aligned.encode(texts, "text"), minilm.encode(texts, "text"))


@pytest.fixture(scope="module")
def gallery():
    rng = np.random.default_rng(424242)  # a seed neither training nor the card's evaluation used
    scenes = S.single_object_gallery(rng, S.HELDOUT_RENDER)
    return scenes, [S.render(sc, rng, S.HELDOUT_RENDER) for sc in scenes]


def test_fresh_text_to_image_and_back(aligned, gallery):
    scenes, images = gallery
    seen = np.array([(o.color, o.shape) not in S.HELDOUT_COMBOS for sc in scenes for o in sc.objects])
    img = aligned.encode(images, "image")
    txt = aligned.encode([S.captions(sc, S.EVAL_TEMPLATES)[0] for sc in scenes], "text")
    t2i = (txt @ img.T).argmax(1) == np.arange(len(scenes))
    i2t = (img @ txt.T).argmax(1) == np.arange(len(scenes))
    assert t2i[seen].mean() >= 0.8, t2i
    assert i2t[seen].mean() >= 0.75, i2t


def test_fresh_speech_to_image(aligned, gallery):
    scenes, images = gallery
    rng = np.random.default_rng(99)
    picks = [i for i in rng.permutation(len(scenes)) if (scenes[i].objects[0].color, scenes[i].objects[0].shape)
             not in S.HELDOUT_COMBOS][:10]
    speech = [(P.speak(S.captions(scenes[i], S.EVAL_TEMPLATES)[1], P.sample_voice(rng, P.HELDOUT_VOICES), rng),
               P.SAMPLE_RATE) for i in picks]
    aud = aligned.encode(speech, "audio")
    img = aligned.encode(images, "image")
    hits = (aud @ img.T).argmax(1) == np.array(picks)
    assert hits.mean() >= 0.6, hits


def test_interleaved_is_the_documented_fusion(aligned, gallery):
    _, images = gallery
    fused = aligned.encode([[{"image": images[0]}, "blue", "large"]], "interleaved", normalize=False)
    parts = aligned.config["image_weight"] * normalize(aligned.encode([images[0]], "image", normalize=False))
    words = normalize(aligned.encode(["blue", "large"], "text", normalize=False))
    parts += aligned.config["text_weight"] * words.sum(0)
    assert np.allclose(fused, parts, atol=1e-5)


def test_this_image_but_another_colour(aligned, gallery):
    scenes, images = gallery
    img = aligned.encode(images, "image")
    combos = [(sc.objects[0].color, sc.objects[0].shape) for sc in scenes]
    rng = np.random.default_rng(7)
    cases = [(i, str(rng.choice([c for c in S.COLORS if c != combos[i][0]]))) for i in range(len(scenes))]
    queries = aligned.encode([[{"image": images[i]}, f"but {new}"] for i, new in cases], "interleaved")
    want = np.array([combos.index((new, combos[i][1])) for i, new in cases])
    hits = (queries @ img.T).argmax(1) == want
    assert hits.mean() >= 0.6, hits
