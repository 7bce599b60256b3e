"""Tiny random-weight models saved to folders in each family's real layout (loaded like hub checkpoints)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

import zoo
from zoo.defaults import default_model
from zoo.weights import resolve

TEXTS = ["a red circle", "two blue squares on the left", "héllo wörld 🐱", "", "long " * 300, "x"]
BERT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

#: The largest cosine a parity test's reference may give two of its different inputs. A random model can map
#: every input to nearly the same vector (a tiny BERT's CLS row did, at cos 0.99997): then a row-wise bar of
#: cos ≥ 0.9999 holds for the wrong input too, and the parity test cannot fail.
MAX_CROSS_COS = 0.99


def _rows(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1)


def assert_tells_apart(rows, max_cos: float = MAX_CROSS_COS, what: str = "the reference") -> None:
    """The rows (one per input) are told apart: no two of them have a cosine of ``max_cos`` or more."""
    rows = _rows(rows)
    assert len(rows) >= 2, "telling inputs apart needs two of them"
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
    assert sim[i, j] < max_cos, (f"{what} maps inputs {i} and {j} to nearly the same vector (cos {sim[i, j]:.6f} "
                                 f"≥ {max_cos}): a parity bar could not tell a wrong input from the right one")


def assert_parity(got, want, *, min_cos: float = 0.9999, rtol: float = 1e-4,
                  max_cross: float | None = MAX_CROSS_COS, what: str = "") -> None:
    """``got`` (zoo's rows) equals ``want`` (the reference's rows for the same inputs), in a way that can fail:
    the reference tells its inputs apart (:func:`assert_tells_apart`; ``max_cross=None`` where the caller
    checks that itself, e.g. on whole items when the rows are their token vectors), every row's cosine is at
    least ``min_cos``, and the raw values agree within ``rtol`` of the largest reference value (far tighter than
    the cosine bar, and blind to nothing the cosine ignores, e.g. a row's length)."""
    got, want = _rows(got), _rows(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if max_cross is not None:
        assert_tells_apart(want, max_cross, f"the reference{' (' + what + ')' if what else ''}")
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12)
    assert cos.min() >= min_cos, (what, cos)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max(), err_msg=what)


def assert_multivector_parity(got: list, want: list, *, min_cos: float = 0.9999, rtol: float = 1e-4,
                              what: str = "") -> None:
    """Multi-vector output (one ``[n_i, d]`` array per input) equals the reference's: the same number of vectors
    per input, the reference tells the inputs apart (their mean vectors; single token vectors may repeat, as a
    word does), and every vector passes :func:`assert_parity`'s cosine and raw-value bars."""
    got, want = [_rows(g) for g in got], [_rows(w) for w in want]
    assert [g.shape for g in got] == [w.shape for w in want], what
    assert_tells_apart(np.stack([w.mean(0) for w in want]), what=f"the reference{' (' + what + ')' if what else ''}")
    assert_parity(np.concatenate(got), np.concatenate(want), min_cos=min_cos, rtol=rtol, max_cross=None, what=what)


def flagembedding_class(packages: list[str], module: str, name: str):
    """Class ``name`` of FlagEmbedding's ``module``, loaded past the re-exporting ``__init__`` files of
    ``packages`` (FlagEmbedding's package and the subpackages above ``module``). FlagEmbedding 1.4.2 (the newest
    release) cannot be imported whole beside transformers 5.x: its re-exports reach
    ``inference/reranker/decoder_only/models/modeling_minicpm_reranker.py``, which imports
    ``transformers.modeling_attn_mask_utils`` (removed in transformers 5); the modules the tests use load unchanged
    once bare package objects stand in for those ``__init__`` files while they load."""
    import importlib
    import importlib.util
    import sys
    import types

    root = Path(importlib.util.find_spec("FlagEmbedding").submodule_search_locations[0])
    stand_ins = {package: root.joinpath(*package.split(".")[1:]) for package in packages}
    for package, path in stand_ins.items():
        stand_in = types.ModuleType(package)
        stand_in.__path__ = [str(path)]
        sys.modules[package] = stand_in
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        for package in stand_ins:  # a later `import FlagEmbedding` fails as it should, not on a bare stand-in
            sys.modules.pop(package, None)


def spread(model, gain: float = 1.0) -> None:
    """Re-draw a random model's weight matrices (every parameter of two or more dimensions: linear, convolution
    and embedding weights) from N(0, gain²/fan_in), in place, so that different inputs get clearly different
    vectors.

    transformers' own initialization (std 0.02) leaves a 32-wide model's residual branches a hundred times smaller
    than the stream they add to: the CLS row of a tiny BERT, CLAP's audio rows, CLIP's image rows come out nearly
    the same for every input (cos 0.9999+), and a parity bar of cos ≥ 0.9999 then holds for a wrong input too.
    Variance-preserving weights make every layer mix its inputs as a trained one does."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, gain * param[0].numel() ** -0.5)


def copy_bert_tokenizer(dest: Path) -> None:
    """The real MiniLM (BERT WordPiece) tokenizer: a shipped, offline tokenizer for tiny text towers."""
    src = resolve(zoo.get_spec(default_model("text")))
    for name in BERT_TOKENIZER_FILES:
        shutil.copy(src / name, dest / name)


def make_tiny_text_folder(dest: Path, *, pooling: str | None = None, prompts: dict | None = None,
                          seed: int = 0) -> Path:
    """Save a tiny random BERT (real MiniLM tokenizer) in sentence-transformers layout."""
    import torch
    from transformers import BertConfig, BertModel

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    bert = BertModel(cfg)
    spread(bert)
    bert.save_pretrained(dest)
    copy_bert_tokenizer(dest)
    if pooling:
        (dest / "1_Pooling").mkdir(exist_ok=True)
        modes = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "max": "pooling_mode_max_tokens", "last": "pooling_mode_lasttoken"}
        (dest / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, **{v: k == pooling for k, v in modes.items()}}))
        (dest / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]))
        (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    if prompts:
        (dest / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts, "default_prompt_name": None}))
    return dest


def make_cross_encoder(dest: Path, *, seed: int = 0, activation: str | None = None, labels: int = 1) -> Path:
    """Save a tiny random BERT sequence classifier (``labels`` labels, real MiniLM tokenizer, 64-token window) as
    sentence-transformers' ``CrossEncoder.save`` writes it (``activation``: the torch activation's path it
    records; default its own, the sigmoid)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    raw = dest.parent / f"{dest.name}.raw"
    raw.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=labels)
    model = BertForSequenceClassification(cfg)
    spread(model, 2.0)  # scores spread over the sigmoid's slope, not all near 0.5
    model.save_pretrained(raw)
    copy_bert_tokenizer(raw)
    kwargs = {}
    if activation is not None:
        from sentence_transformers.util import import_from_string

        kwargs["activation_fn"] = import_from_string(activation)()
    CrossEncoder(str(raw), max_length=64, **kwargs).save(str(dest))
    shutil.rmtree(raw)
    return dest


def long_minilm(dest: Path) -> Path:
    """A tiny e5-4k: the shipped MiniLM with its 512 positions stretched to 4,096 by linear interpolation
    (:func:`zoo.evaluation.long.stretch_positions`), saved in the layout of ``dwzhu/e5-base-4k``."""
    from zoo.evaluation.long import stretch_positions

    return stretch_positions(resolve(zoo.get_spec(default_model("text"))), dest)


def make_open_clip(dest: Path) -> Path:
    """open_clip hub layout: open_clip_config.json + open_clip_model.safetensors (random ViT)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (dest / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{dest}")
    spread(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, dest / "open_clip_model.safetensors")
    return dest


def make_hf_clip(dest: Path, kind: str = "clip") -> Path:
    """A transformers CLIPModel or SiglipModel folder with a BERT tokenizer and the family's image processor."""
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    text = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    if kind == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        model = CLIPModel(CLIPConfig(text_config=text | {"eos_token_id": 102, "pad_token_id": 0},
                                     vision_config=vision, projection_dim=24))
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(dest)
    else:
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dest)
    # SigLIP reads a text padded to 64 tokens at its last (padding) position: sharper attention lets the few
    # real tokens show there (at gain 1, "héllo 🐱" and "" come out at cos 0.996)
    spread(model, gain=2.0 if kind == "siglip" else 1.0)
    model.save_pretrained(dest)
    copy_bert_tokenizer(dest)
    return dest


def make_clap(dest: Path) -> Path:
    """A transformers ClapModel folder: tiny RoBERTa-style text tower, tiny HTSAT audio tower."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    text = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=130, pad_token_id=0)
    audio = dict(patch_embeds_hidden_size=16, hidden_size=32, depths=[1, 1], num_attention_heads=[1, 2],
                 window_size=8, num_mel_bins=64, spec_size=256)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=24))
    spread(model)
    # the audio tower's input BatchNorm, as training leaves it, holds the log-mel statistics (dB, about -40 ± 15):
    # a fresh one (0 ± 1) passes on every clip as one large constant offset, and all clips look alike
    norm = model.audio_model.audio_encoder.batch_norm
    norm.running_mean.fill_(-40.0)
    norm.running_var.fill_(15.0**2)
    model.save_pretrained(dest)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(dest)  # as the unfused LAION checkpoints
    copy_bert_tokenizer(dest)
    return dest


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]


def byte_bpe(special: list[str]):
    """A byte-level BPE trained offline over the shape captions and the words of embedding instructions, with
    ``special`` tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from zoo.data import shapes as S

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [t.format(color=c, shape=s, size="small", where="on the left", tone="dark")
              for t in S.TRAIN_TEMPLATES for c in S.COLORS for s in S.SHAPES]
    corpus += ["system user assistant You are a helpful assistant. Find an image that matches the given text. "
               "Instruct: Given a query, retrieve documents that answer the query Query: Represent the given "
               "image video audio with the following question"] * 5
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    return bpe


def qwen_tokenizer(special: list[str] = QWEN_SPECIAL, **extra: str):
    """A Qwen2 tokenizer on :func:`byte_bpe` with Qwen's ``special`` tokens (``extra``: more named special
    tokens, e.g. ``image_token``)."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(tokenizer_object=byte_bpe(special), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token=None, extra_special_tokens=extra or None)


LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]


def make_mllama(dest: Path) -> Path:
    """A tiny Llama 3.2 Vision (Mllama) generation folder, as mmE5 ships: one-tile 28-pixel images, one
    cross-attention layer, the real Mllama processor on a trained BPE with Llama 3's special tokens."""
    import torch
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        PreTrainedTokenizerFast,
    )

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_bpe(LLAMA_SPECIAL), bos_token="<|begin_of_text|>",
                                        eos_token="<|end_of_text|>", pad_token="<|finetune_right_pad_id|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAMA_SPECIAL}
    torch.manual_seed(0)
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=28, patch_size=14, max_num_tiles=1,
                           supported_aspect_ratios=[[1, 1]], intermediate_layers_indices=[0], vision_output_dim=64),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, cross_attention_layers=[1],
                         bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|end_of_text|>"],
                         pad_token_id=ids["<|finetune_right_pad_id|>"]),
        image_token_index=ids["<|image|>"],
    )
    model = MllamaForConditionalGeneration(config)
    spread(model)
    for name, gate in model.named_parameters():  # transformers opens the cross-attention gates at 0: images
        if "cross_attn_" in name and name.endswith("_gate"):  # would then change nothing in the text
            gate.data.fill_(1.0)
    model.save_pretrained(dest)
    MllamaProcessor(image_processor=MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=1),
                    tokenizer=tokenizer).save_pretrained(dest)
    return dest


def make_qwen2_vl(dest: Path) -> Path:
    """A tiny Qwen2-VL folder: byte-level BPE trained offline with Qwen's special tokens, real processor."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLModel,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer(image_token="<|image_pad|>")
    vocab = tokenizer.get_vocab()
    ids = {t: vocab[t] for t in QWEN_SPECIAL}
    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                         pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLModel(config)
    # read as GME does, every input ends in the same <|endoftext|> token, whose last hidden state is the
    # embedding: sharper attention lets the texts show there (at gain 1, "a red circle" and "x" give cos 0.991)
    spread(model, gain=1.5)
    model.save_pretrained(dest)
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                     video_processor=Qwen2VLVideoProcessor(**pixels)).save_pretrained(dest)
    return dest


OMNI_SPECIAL = QWEN_SPECIAL + ["<|IMAGE|>", "<|AUDIO|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
                               "<|audio_bos|>", "<|audio_eos|>"]


def make_omni(dest: Path, *, model_type: str = "nvomniembed") -> Path:
    """A tiny Omni-Embed-Nemotron folder: a random Qwen2.5-Omni thinker saved under the checkpoint's own
    ``model_type`` (with the ``auto_map`` to its remote classes, which zoo must not need), and the real
    Qwen2.5-Omni processor (Qwen2-VL image and video processors, Whisper features, a trained BPE)."""
    import torch
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer(OMNI_SPECIAL, image_token="<|IMAGE|>", audio_token="<|AUDIO|>",
                               video_token="<|VIDEO|>", vision_bos_token="<|vision_bos|>",
                               vision_eos_token="<|vision_eos|>", audio_bos_token="<|audio_bos|>",
                               audio_eos_token="<|audio_eos|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in OMNI_SPECIAL}
    torch.manual_seed(0)
    config = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, window_size=56,
                           fullatt_block_indexes=[0]),
        audio_config=dict(d_model=32, encoder_ffn_dim=64, encoder_layers=1, encoder_attention_heads=2,
                          num_mel_bins=16, max_source_positions=1500, n_window=50, output_dim=32),
        image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_token_index=ids["<|AUDIO|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], position_id_per_seconds=25, seconds_per_chunk=2,
        pad_token_id=ids["<|endoftext|>"],
    )
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(config)
    spread(thinker)
    thinker.save_pretrained(dest)
    if model_type != "qwen2_5_omni_thinker":
        cfg = json.loads((dest / "config.json").read_text())
        cfg |= {"model_type": model_type, "architectures": ["NVOmniEmbedModel"],
                "auto_map": {"AutoConfig": "modeling_nv_omni_embed.NVOmniEmbedConfig",
                             "AutoModel": "modeling_nv_omni_embed.NVOmniEmbedModel"}}
        (dest / "config.json").write_text(json.dumps(cfg))
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                         video_processor=Qwen2VLVideoProcessor(**pixels),
                         feature_extractor=WhisperFeatureExtractor(feature_size=16),
                         tokenizer=tokenizer).save_pretrained(dest)
    return dest


def make_aligned(dest: Path) -> Path:
    """An aligned-family folder in the layout training writes: config.json + narrow random towers on the real
    MiniLM text model."""
    import torch
    from safetensors.torch import save_file

    from zoo.data import shapes as S
    from zoo.families.aligned import build_audio_tower, build_image_tower, image_batch

    dest.mkdir(parents=True, exist_ok=True)
    text = zoo.get_spec(default_model("text"))
    config = {"model_type": "zoo-aligned", "text_model": text.name, "dim": text.dim, "image_width": 4,
              "audio_width": 8, "sample_rate": 16000, "max_seconds": 10.0, "text_weight": 2.5, "image_weight": 1.0,
              "max_length": text.max_length, "description": "tiny random aligned towers (tests)"}
    torch.manual_seed(0)
    image, audio = build_image_tower(text.dim, 4), build_audio_tower(text.dim, width=8)
    spread(image)
    spread(audio)
    # the image tower's BatchNorms hold the statistics of what they see, as training leaves them (fresh ones,
    # 0 ± 1, let every ReLU layer add the same positive offset, until all pictures come out alike)
    rng = np.random.default_rng(0)
    for norm in image.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.momentum = None  # a plain average over the calibration batch
    image.train()
    with torch.no_grad():
        image(image_batch([S.render(S.sample_scene(rng), rng) for _ in range(32)]))
    image.eval()
    state = {f"image.{k}": v for k, v in image.state_dict().items()}
    state |= {f"audio.{k}": v for k, v in audio.state_dict().items() if not k.startswith("mel.")}
    save_file({k: v.contiguous() for k, v in state.items()}, dest / "model.safetensors")
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def make_speaker(dest: Path) -> Path:
    """A GE2E folder as Resemblyzer ships it (``pretrained.pt`` holding ``model_state``), random weights."""
    import torch
    from torch import nn

    from zoo.families.speaker import N_MELS

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lstm, linear = nn.LSTM(N_MELS, 256, 3, batch_first=True), nn.Linear(256, 256)
    spread(lstm, gain=3.0)  # its input, mel power frames, is small: at gain 1 every clip gave one vector
    spread(linear)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()} | {f"linear.{k}": v for k, v in
                                                                       linear.state_dict().items()}
    torch.save({"model_state": state}, dest / "pretrained.pt")
    return dest


def make_colbert(dest: Path, *, expansion: dict | None = None, skiplist: list[str] | None = None,
                 prompts: dict | None = None) -> Path:
    """A tiny ColBERT saved by sentence-transformers' MultiVectorEncoder (random BERT, Dense 32→16 projection,
    scoring mask, Normalize), optionally with query expansion, a document skip list and prompts."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    bert = make_tiny_text_folder(dest.with_name(dest.name + "-bert"))
    torch.manual_seed(1)
    transformer = Transformer(str(bert), max_seq_length=64, query_expansion=expansion)
    tokens = dict(module_input_name="token_embeddings", module_output_name="token_embeddings")
    model = MultiVectorEncoder(modules=[transformer, Dense(32, 16, bias=False, **tokens), MultiVectorMask(skiplist),
                                       Normalize(**tokens)], prompts=prompts or {"query": "", "document": ""})
    model.save(str(dest))
    return dest


def make_pylate_colbert(dest: Path) -> Path:
    """A tiny ColBERT in PyLate's (v3) layout, as the published checkpoints are: [Transformer, pylate Dense]
    modules, the multi-vector knobs at the top of config_sentence_transformers.json (``[unused0]`` /
    ``[unused1]`` prefixes, query length 16 with expansion, document length 40), skip list implied."""
    import torch
    from safetensors.torch import save_file

    make_tiny_text_folder(dest)
    torch.manual_seed(6)
    (dest / "1_Dense").mkdir()
    (dest / "1_Dense" / "config.json").write_text(json.dumps({
        "in_features": 32, "out_features": 16, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}))
    save_file({"linear.weight": torch.randn(16, 32) * 0.2}, dest / "1_Dense" / "model.safetensors")
    (dest / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    (dest / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "ColBERT", "query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 16,
        "document_length": 40, "attend_to_expansion_tokens": False, "prompts": {}, "default_prompt_name": None,
        "similarity_fn_name": "MaxSim"}))
    return dest


def make_splade(dest: Path) -> Path:
    """A tiny SPLADE saved by sentence-transformers' SparseEncoder (random BERT MLM head, max pooling)."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import BertConfig, BertForMaskedLM

    mlm = dest.with_name(dest.name + "-mlm")
    mlm.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2)
    bert = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=128))
    spread(bert)
    bert.save_pretrained(mlm)
    copy_bert_tokenizer(mlm)
    model = SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=64),
                                   SpladePooling("max")])
    model.save(str(dest))
    return dest


def make_colqwen2(dest: Path) -> Path:
    """A tiny transformers ColQwen2 (the tiny Qwen2-VL above plus a 16-d projection) with its processor."""
    import torch
    from transformers import AutoProcessor, ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, Qwen2VLConfig

    vlm = make_qwen2_vl(dest.with_name(dest.name + "-vlm"))
    torch.manual_seed(3)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=Qwen2VLConfig.from_pretrained(vlm), embedding_dim=16))
    spread(model)
    model.save_pretrained(dest)
    base = AutoProcessor.from_pretrained(vlm)
    ColQwen2Processor(image_processor=base.image_processor, tokenizer=base.tokenizer).save_pretrained(dest)
    return dest


def make_colpali(dest: Path) -> Path:
    """A tiny transformers ColPali: PaliGemma (random Gemma + SigLIP) with a Metaspace BPE trained offline,
    SigLIP's image processor and a 16-d projection."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        ColPaliConfig,
        ColPaliForRetrieval,
        ColPaliProcessor,
        GemmaTokenizer,
        PaliGemmaConfig,
        SiglipImageProcessor,
    )

    from zoo.data import shapes as S

    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    corpus = [t.format(color=c, shape=s, size="small", where="on the left", tone="dark")
              for t in S.TRAIN_TEMPLATES for c in S.COLORS for s in S.SHAPES] + ["Query: Describe the image."] * 5
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=special))
    ids = {t: bpe.token_to_id(t) for t in special}
    tokenizer = GemmaTokenizer(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                               unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    vlm = PaliGemmaConfig(
        text_config=dict(model_type="gemma", vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"]),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        image_token_id=ids["<image>"], projection_dim=32, hidden_size=32)
    torch.manual_seed(4)
    model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm, embedding_dim=16))
    spread(model)
    model.save_pretrained(dest)
    processor = ColPaliProcessor(image_processor=SiglipImageProcessor(size={"height": 28, "width": 28},
                                                                      image_seq_length=4), tokenizer=tokenizer)
    processor.image_seq_length = 4
    processor.save_pretrained(dest)
    return dest


def make_m3(dest: Path) -> Path:
    """A tiny BGE-M3 layout: random XLM-RoBERTa encoder (the MiniLM WordPiece tokenizer, pad id 0) with
    ``colbert_linear.pt`` (32→32) and ``sparse_linear.pt`` (32→1) saved beside it as FlagEmbedding saves them."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    encoder = XLMRobertaModel(XLMRobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64,
                                               max_position_embeddings=130, pad_token_id=0), add_pooling_layer=False)
    spread(encoder)
    encoder.save_pretrained(dest)
    copy_bert_tokenizer(dest)
    torch.save(torch.nn.Linear(32, 32).state_dict(), dest / "colbert_linear.pt")
    torch.save(torch.nn.Linear(32, 1).state_dict(), dest / "sparse_linear.pt")
    return dest


#: family → a maker of a tiny random model folder in that family's real layout. Every registered family has
#: one (a test checks it): the family contract and serving tests run over this table.
TINY_MODELS: dict[str, Callable[[Path], Path]] = {
    "text": lambda dest: make_tiny_text_folder(dest, pooling="mean",
                                               prompts={"query": "query: ", "document": "passage: "}),
    "aligned": make_aligned,
    "open_clip": make_open_clip,
    "hf_clip": lambda dest: make_hf_clip(dest, "siglip"),
    "clap": make_clap,
    "speaker": make_speaker,
    "vlm": make_qwen2_vl,
    "colbert": lambda dest: make_colbert(dest, expansion={"strategy": "fixed", "length": 16},
                                         skiplist=[",", "."]),
    "splade": make_splade,
    "colvision": make_colqwen2,
    "m3": make_m3,
    "omni": make_omni,
    "cross-encoder": make_cross_encoder,
    "llm-reranker": lambda dest: _llm_reranker(dest),
    "bm25": lambda dest: make_bm25(dest),
}


def make_bm25(dest: Path) -> Path:
    """A BM25 fitted on a few texts (words of one character are terms too, no stopwords: "x" has a column)."""
    from zoo.families.bm25 import fit

    return fit([*TEXTS, "a blue circle", "red squares"], dest, splitter=r"(?u)\b\w+\b", stopwords=None)


def _llm_reranker(dest: Path) -> Path:
    from tests.tiny_rerankers import make_st_llm_reranker

    return make_st_llm_reranker(dest)


#: (query, document) pairs for models whose items are pairs (cross-encoders): short, long, unicode, empty
PAIRS = [("a red circle", "two blue squares on the left"), ("héllo wörld 🐱", "long " * 300), ("x", ""),
         ("what is gzip", "gzip compresses files")]


def sample_inputs(spec: zoo.EmbedderSpec) -> dict[zoo.Modality, list]:
    """Inputs of each modality the model embeds: texts of every kind, generated images, speech and noise; for a
    model whose items are pairs (a cross-encoder), text pairs."""
    import numpy as np

    from zoo import kinds

    if any(kinds.get(k).pairs for k in spec.outputs):
        return {zoo.Modality.TEXT: PAIRS}

    from zoo.data import shapes as S
    from zoo.data import speech as P
    from zoo.media.sampling import encode_frames

    rng = np.random.default_rng(3)
    images = [S.render(S.sample_training_scene(rng), rng) for _ in range(3)]
    speech = [(P.speak(t, P.sample_voice(rng), rng), P.SAMPLE_RATE) for t in ("a red circle", "two blue squares")]
    noise = (np.random.default_rng(4).standard_normal(24000).astype(np.float32) * 0.1, 24000)
    samples = {
        zoo.Modality.TEXT: TEXTS,
        zoo.Modality.IMAGE: images,
        zoo.Modality.AUDIO: [*speech, noise],
        zoo.Modality.INTERLEAVED: [[images[0], "but blue"], ["a", images[1]], [images[2]]],
        zoo.Modality.VIDEO: [encode_frames(S.moving_clip("red", "circle", 8), 4, audio=speech[0][0]),
                             np.stack([np.asarray(f) for f in S.moving_clip("blue", "star", 5)])],
    }
    from zoo.registry import family_of

    if "video" in family_of(spec).interleaved_parts:  # a model of every medium takes their mixtures too
        samples[zoo.Modality.INTERLEAVED] += [["said", {"audio": speech[1]}, "shown", {"video": samples[
            zoo.Modality.VIDEO][0]}, images[0]]]
    return {m: samples[m] for m in spec.modalities}
