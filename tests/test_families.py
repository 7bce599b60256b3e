"""Audio and interleaved families (parity with the reference libraries) and input decoding for every family."""

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from PIL import Image

import zoo
from zoo.data import shapes as S
from zoo.data import speech as P
from zoo.postprocess import normalize

from .tiny_models import assert_parity, make_clap, make_qwen2_vl


def cos(a, b):
    return (normalize(a) * normalize(b)).sum(1)


@pytest.fixture(scope="module")
def speaker():
    return zoo.create("resemblyzer/ge2e-speaker", device="cpu")


@pytest.fixture(scope="module")
def clips():
    """Four sentences by each of three espeak-ng voices (made fresh, deterministic)."""
    rng = np.random.default_rng(5)
    sentences = ["the weather is lovely today", "please pass me the salt", "a red circle on the left",
                 "numbers one two three four five"]
    # espeak-ng's voices are formant synthesis and alike; these three differ in variant and pitch
    voices = {"en-us+m3": 20, "en-us+f2": 80, "en-us+klatt": 50}
    return {v: [P.speak(s, P.Voice(v, 160, pitch, 35), rng) for s in sentences] for v, pitch in voices.items()}


def test_speaker_parity_with_resemblyzer(speaker, clips):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    ref = VoiceEncoder("cpu", verbose=False)
    waves = [w for ws in clips.values() for w in ws[:2]] + [np.zeros(100, np.float32) + 0.01]
    ours = speaker.encode([(w, P.SAMPLE_RATE) for w in waves], "audio")
    theirs = np.stack([ref.embed_utterance(normalize_volume(w, -30, increase_only=True)) for w in waves])
    assert_parity(ours, theirs)


def test_same_voice_is_closer_than_other_voices(speaker, clips):
    voices = list(clips)
    emb = {v: speaker.encode([(w, P.SAMPLE_RATE) for w in ws], "audio") for v, ws in clips.items()}
    for v in voices:
        same = emb[v] @ emb[v].T
        same_mean = same[~np.eye(len(same), dtype=bool)].mean()
        for other in voices:
            if other != v:
                assert same_mean > (emb[v] @ emb[other].T).mean() + 0.05, (v, other)


def test_clap_parity(tmp_path):
    import torch
    import torchaudio.functional as AF
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    folder = make_clap(tmp_path / "clap")
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.family == "clap" and model.sample_rate == 48000
    rng = np.random.default_rng(0)
    # sounds that differ (white noise of any length is one sound to a model that averages over time)
    seconds = np.arange(29000) / 48000
    waves = [rng.standard_normal(96000).astype(np.float32) * 0.1,  # 2 s of noise
             (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32),  # 0.6 s of a 440 Hz tone
             AF.resample(torch.from_numpy(P.speak("rain on a roof", P.Voice("en-us+m3", 160, 50, 35), rng)),
                         P.SAMPLE_RATE, 48000).numpy(),  # speech
             rng.standard_normal(4800).astype(np.float32) * 0.005]  # 0.1 s of quiet noise
    texts = ["a dog barking", "rain on a roof", "é 🐱"]
    ref = ClapModel.from_pretrained(folder).eval()
    fe, tok = ClapFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        want_a = ref.get_audio_features(**fe(waves, sampling_rate=48000, return_tensors="pt"))
        want_t = ref.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    assert_parity(model.encode([(w, 48000) for w in waves], "audio", normalize=False), want_a.pooler_output,
                  what="audio")
    assert_parity(model.encode(texts, "text", normalize=False), want_t.pooler_output, what="text")


def test_vlm_parity_with_transformers(tmp_path):
    """Batched zoo embeddings vs the transformers model called on one GME-format input at a time."""
    import torch
    from transformers import AutoModel, AutoProcessor

    folder = make_qwen2_vl(tmp_path / "qwen2vl")
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.family == "vlm" and set(model.spec.modalities) >= {zoo.Modality.INTERLEAVED}
    rng = np.random.default_rng(1)
    imgs = [S.render(S.sample_training_scene(rng), rng) for _ in range(3)]
    items = [[imgs[0], "this but blue"], ["a red circle"], ["two", imgs[1], "and", imgs[2]], [imgs[2]]]
    raw = model.encode(items, "interleaved", batch_size=4, normalize=False)
    ours = normalize(raw)
    proc, ref = AutoProcessor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    tail = "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    want = []
    for parts in items:
        text = system + "".join(p if isinstance(p, str) else vision for p in parts) + tail
        pics = [p for p in parts if not isinstance(p, str)] or None
        with torch.no_grad():
            hidden = ref(**proc(text=[text], images=pics, return_tensors="pt")).last_hidden_state
        want.append(hidden[0, -1].numpy())
    assert_parity(raw, np.stack(want))
    assert np.allclose(model.encode(["a red circle"], "text"), ours[1:2], atol=1e-5)
    assert np.allclose(model.encode([imgs[2]], "image"), ours[3:4], atol=1e-5)
    q = model.encode(["a red circle"], "text", prompt_name="default")
    assert np.allclose(q, ours[1:2], atol=1e-5)


def _png(size=(8, 8)):
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "PNG")
    return buf.getvalue()


def test_audio_input_forms_and_resampling(speaker, clips, tmp_path):
    wave = clips["en-us+m3"][0]
    path = tmp_path / "a.wav"
    soundfile.write(path, wave, P.SAMPLE_RATE)
    forms = [str(path), path.read_bytes(), (wave, P.SAMPLE_RATE), (np.stack([wave, wave]), P.SAMPLE_RATE)]
    for fmt in ("FLAC", "OGG"):
        buf = io.BytesIO()
        soundfile.write(buf, wave, P.SAMPLE_RATE, format=fmt)
        forms.append(buf.getvalue())
    out = speaker.encode(forms, "audio")
    assert cos(out, np.repeat(out[:1], len(out), 0)).min() > 0.99  # lossy OGG stays close
    import torch
    import torchaudio.functional as AF

    up = AF.resample(torch.from_numpy(wave), P.SAMPLE_RATE, 44100).numpy()
    assert cos(speaker.encode([(up, 44100)], "audio"), out[:1]).min() > 0.99


@pytest.mark.parametrize(("modality", "item", "match"), [
    ("image", b"not an image at all", "not an image format"),
    ("image", _png((64, 64))[:300], "corrupt image"),  # a real PNG header, truncated data
    ("image", b"", "empty image data"),
    ("image", np.zeros((0, 5, 3), np.uint8), "zero size"),
    ("image", 3.14, "unsupported image input type"),
    ("image", "/no/such/file.png", "not found"),
    ("audio", b"RIFF0000WAVEjunk", "cannot decode audio"),
    ("audio", (np.zeros(0, np.float32), 16000), "no samples"),
    ("audio", (np.full(10, np.nan, np.float32), 16000), "NaN"),
    ("audio", {"x": 1}, "unsupported audio input type"),
    ("interleaved", "just a string", "list of text and media parts"),
    ("interleaved", [], "no parts"),
    ("interleaved", [{"video": "x"}], "takes text and image parts in an interleaved input, not video"),
    ("interleaved", [{"smell": "x"}], "got keys \\['smell'\\]"),
    ("video", b"definitely not a video", "cannot read the video container"),
    ("video", np.zeros((2, 4, 4), np.uint8), "TxHxWxC"),
    ("video", [], "no frames"),
    ("video", 3.14, "unsupported video input type"),
    ("video", "/no/such/clip.mp4", "not found"),
])
def test_bad_inputs_name_the_item(modality, item, match):
    from zoo import media

    with pytest.raises(zoo.InputError, match=f"input 2: .*{match}") as err:
        media.decode(item, 2, zoo.Modality(modality))
    assert err.value.index == 2


def test_decompression_bomb_is_refused(monkeypatch):
    from zoo import media
    from zoo.media import budgets

    monkeypatch.setattr(budgets, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(zoo.InputError, match="decompression bomb"):
        media.decode_image(_png((100, 100)), 0)


def test_per_item_errors_keep_the_good_results(speaker, clips):
    items = [(clips["en-us+m3"][0], P.SAMPLE_RATE), b"garbage", (clips["en-us+f2"][1], P.SAMPLE_RATE), b""]
    out = speaker.encode_per_item(items, "audio")
    assert isinstance(out[1], zoo.InputError) and out[1].index == 1
    assert isinstance(out[3], zoo.InputError) and out[3].index == 3
    assert np.allclose(out[0], speaker.encode(items[:1], "audio")[0], atol=1e-5)
    assert np.allclose(out[2], speaker.encode(items[2:3], "audio")[0], atol=1e-5)
    with pytest.raises(zoo.InputError, match="input 1"):
        speaker.encode(items, "audio")


@pytest.mark.parametrize("modality", ["image", "audio", "interleaved", "video"])
def test_cli_lists_families_per_modality(modality):
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "list", "--modality", modality], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0
    rows = out.stdout.splitlines()[1:]
    assert rows and all(modality in r.split()[2] for r in rows)
    assert any(r.split()[-1] == "yes" for r in rows)  # the offline aligned model covers every modality
    assert all(r.split()[-1] in ("yes", "no") for r in rows)
    if modality == "video":
        assert {r.split()[0] for r in rows} == {"zoo/shapes-aligned-minilm", "nvidia/omni-embed-nemotron-3b"}


def test_long_audio_is_truncated_with_one_warning(speaker):
    from zoo.truncation import AudioTruncationWarning

    long = (np.random.default_rng(0).standard_normal(61 * P.SAMPLE_RATE).astype(np.float32) * 0.1, P.SAMPLE_RATE)
    with pytest.warns(AudioTruncationWarning, match="1 of 2 audio inputs exceed 60 s"):
        out = speaker.encode([long, (long[0][:16000], P.SAMPLE_RATE)], "audio")
    assert out.shape == (2, 256) and np.isfinite(out).all()
