"""Image–text family: parity with open_clip and transformers on the same random weights."""

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.data import shapes as S

from .tiny_models import assert_parity, make_clap, make_hf_clip, make_open_clip, spread

TEXTS = ["a red circle", "two blue squares on a dark background", "héllo 🐱", ""]


def images(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [S.render(S.sample_training_scene(rng), rng) for _ in range(n)]


def test_open_clip_parity(tmp_path):
    import open_clip
    import torch

    folder = make_open_clip(tmp_path / "oc")
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.family == "open_clip" and model.spec.dim == 32
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    ref.eval()
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    imgs = images()
    with torch.no_grad():
        want_t = ref.encode_text(tok(TEXTS)).numpy()
        want_i = ref.encode_image(torch.stack([preprocess(im) for im in imgs])).numpy()
    assert_parity(model.encode(TEXTS, "text", normalize=False), want_t, what="text")
    assert_parity(model.encode(imgs, "image", normalize=False), want_i, what="image")


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_transformers_parity(tmp_path, kind):
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    folder = make_hf_clip(tmp_path / kind, kind)
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.family == "hf_clip"
    ref = AutoModel.from_pretrained(folder).eval()
    tok, proc = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    imgs = images()
    with torch.no_grad():
        if kind == "siglip":  # SigLIP's documented use: pad to max length, input_ids only
            t = tok(TEXTS, padding="max_length", max_length=64, return_tensors="pt")
            text_out = ref.get_text_features(input_ids=t["input_ids"])
        else:
            text_out = ref.get_text_features(**tok(TEXTS, padding=True, return_tensors="pt"))
        image_out = ref.get_image_features(pixel_values=proc(images=imgs, return_tensors="pt")["pixel_values"])
    want_t = getattr(text_out, "pooler_output", text_out).numpy()
    want_i = getattr(image_out, "pooler_output", image_out).numpy()
    assert model.spec.dim == want_t.shape[1]
    assert_parity(model.encode(TEXTS, "text", normalize=False), want_t, what="text")
    assert_parity(model.encode(imgs, "image", normalize=False), want_i, what="image")


def test_image_input_forms_agree(tmp_path):
    """Path, bytes, data: URI, PIL and numpy array of the same picture embed identically."""
    import base64
    import io

    model = zoo.create(str(make_open_clip(tmp_path / "oc")), device="cpu")
    img = images(1)[0]
    path = tmp_path / "x.png"
    img.save(path)
    data = path.read_bytes()
    forms = [str(path), path, data, "data:image/png;base64," + base64.b64encode(data).decode(), img, np.asarray(img)]
    out = model.encode(forms, "image")
    assert np.allclose(out, out[0], atol=1e-5)
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    assert model.encode([buf.getvalue()], "image").shape == (1, 32)


@pytest.mark.parametrize("name", zoo.list_models(family="open_clip") + zoo.list_models(family="hf_clip"))
def test_registered_checkpoints_say_where_to_put_weights(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    spec = zoo.get_spec(name)
    assert set(spec.modalities) == {zoo.Modality.TEXT, zoo.Modality.IMAGE}
    with pytest.raises(zoo.WeightsUnavailableError, match="ZOO_MODELS_DIR"):
        zoo.create(name)


def test_registered_arch_tags_exist_in_open_clip():
    import open_clip

    known = set(open_clip.list_pretrained())
    for name in zoo.list_models(family="open_clip"):
        opts = zoo.get_spec(name).options
        assert (opts["arch"], opts["tag"]) in known, name


def test_open_clip_bare_checkpoint_file(tmp_path, monkeypatch):
    """A registered open_clip model whose folder holds only a checkpoint file (as OpenAI ships ViT-L-14.pt)."""
    import json

    import open_clip
    import torch

    from zoo import registry

    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    arch_cfg = json.loads((make_open_clip(tmp_path / "oc") / "open_clip_config.json").read_text())["model_cfg"]
    (cfg_dir / "zoo-tiny-test.json").write_text(json.dumps(arch_cfg))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(1)
    weights = tmp_path / "models" / "test" / "tiny-clip-file"
    weights.mkdir(parents=True)
    tiny = open_clip.create_model("zoo-tiny-test")
    spread(tiny)
    torch.save(tiny.state_dict(), weights / "tiny.pt")
    spec = zoo.EmbedderSpec(name="test/tiny-clip-file", family="open_clip", modalities=("text", "image"), dim=32,
                            license="mit", source="test/tiny-clip-file", options={"arch": "zoo-tiny-test"})
    monkeypatch.setitem(registry._MODELS, spec.name, spec)
    monkeypatch.setenv("ZOO_MODELS_DIR", str(tmp_path / "models"))
    model = zoo.create(spec.name, device="cpu")
    ref, _, preprocess = open_clip.create_model_and_transforms("zoo-tiny-test", pretrained=str(weights / "tiny.pt"))
    ref.eval()
    imgs = images(2)
    with torch.no_grad():
        want_i = ref.encode_image(torch.stack([preprocess(im) for im in imgs])).numpy()
        want_t = ref.encode_text(open_clip.get_tokenizer("zoo-tiny-test")(TEXTS)).numpy()
    assert_parity(model.encode(imgs, "image", normalize=False), want_i, what="image")
    assert_parity(model.encode(TEXTS, "text", normalize=False), want_t, what="text")
    (weights / "second.pt").write_bytes(b"")
    with pytest.raises(zoo.WeightsUnavailableError, match="exactly one"):
        zoo.create(spec.name, device="cpu")


@pytest.mark.parametrize("kind", ["open_clip", "clip", "siglip", "clap"])
def test_token_counts_follow_each_tokenizer(tmp_path, kind):
    """``count_tokens`` (the servers' usage) is what the reference tokenizer feeds the model: special tokens
    included, truncated at the context length, padding not counted."""
    texts = ["a cat", "word " * 200]
    if kind == "open_clip":
        import open_clip

        folder = make_open_clip(tmp_path / kind)
        tok = open_clip.get_tokenizer(f"local-dir:{folder}")
        ids = tok(texts)
        want = [int((row == tok.eot_token_id).nonzero()[0]) + 1 for row in ids]  # up to and including EOT
    else:
        from transformers import AutoTokenizer

        folder = make_clap(tmp_path / kind) if kind == "clap" else make_hf_clip(tmp_path / kind, kind)
        limit = zoo.get_spec(str(folder)).max_length
        want = [len(AutoTokenizer.from_pretrained(folder)(t, truncation=True, max_length=limit)["input_ids"])
                for t in texts]
    model = zoo.create(str(folder), device="cpu")
    got = model.count_tokens(texts, zoo.Modality.TEXT, None)
    assert got == want and got[0] < got[1] == max(want), (got, want)
    assert model.count_tokens(images(2), zoo.Modality.IMAGE, None) == [0, 0]


def test_an_open_clip_folder_with_a_transformers_config_stays_open_clip(tmp_path):
    """LAION's open_clip repositories ship an HF ``config.json`` of type ``clip`` beside ``open_clip_config.json``:
    the open_clip family, which knows its own files, is offered the folder before the family claiming ``clip``."""
    import json

    folder = make_open_clip(tmp_path / "oc")
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "projection_dim": 32}))
    assert zoo.get_spec(str(folder)).family == "open_clip"
