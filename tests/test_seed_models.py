"""The research embedders' registered loaders, each on a tiny random model of its architecture saved where the
registry finds the hub checkpoint ($ZOO_MODELS_DIR), against the model called directly through transformers
with the card's recipe."""

import dataclasses
import json

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.data import shapes as S
from zoo.postprocess import normalize

from .tiny_models import assert_parity, copy_bert_tokenizer, make_qwen2_vl, qwen_tokenizer, spread


def cos(a, b):
    return (normalize(np.asarray(a, np.float32)) * normalize(np.asarray(b, np.float32))).sum(1)


def as_registered(monkeypatch, tmp_path, name: str, build, **spec_changes):
    """Save a tiny model with ``build(folder)`` where the registry looks for ``name``'s weights, with the
    registered spec's width set to the tiny model's (everything else, the card's recipe, unchanged)."""
    root = tmp_path / "models"
    folder = root / name
    folder.mkdir(parents=True)
    dim = build(folder)
    spec = dataclasses.replace(zoo.get_spec(name), dim=dim, matryoshka_dims=(), **spec_changes)
    monkeypatch.setitem(registry._MODELS, name, spec)
    monkeypatch.setenv("ZOO_MODELS_DIR", str(root))
    return folder


def tiny_bert(folder, max_positions: int = 512) -> int:
    """A tiny random BERT (weights spread as :func:`tests.tiny_models.spread` does: its CLS row tells texts
    apart, and reading a text as the second of a pair shows in the vectors)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=max_positions))
    spread(model)
    model.save_pretrained(folder)
    copy_bert_tokenizer(folder)
    return 32


def tiny_qwen2(folder) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    tok = qwen_tokenizer()
    torch.manual_seed(0)
    model = Qwen2Model(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                                   pad_token_id=tok.pad_token_id))
    spread(model)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return 32


TEXTS = ["a red circle", "two blue squares on the left of a large yellow star", "x"]


def full_padding_mask(attention_mask, dtype):
    """A bidirectional attention mask, as the cards hand their decoders: the ``[B, T]`` padding mask (1 = token,
    0 = padding) spread to the additive ``[B, 1, T, T]`` form every attention layer adds to its scores: 0 where a
    query may look (every real token, before or after it), the dtype's minimum at padding; no causal triangle."""
    import torch

    b, t = attention_mask.shape
    padding = (attention_mask[:, None, None, :] == 0).expand(b, 1, t, t)
    return torch.zeros(b, 1, t, t, dtype=dtype).masked_fill(padding, torch.finfo(dtype).min)


def bert_rows(folder, texts, pooling, firsts=None, max_length=512):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    args = (texts,) if firsts is None else (firsts, texts)
    enc = tok(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0].numpy()
    mask = enc["attention_mask"][..., None].float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def test_kalm_v2_is_bidirectional_mean_pooled_with_its_instruction(monkeypatch, tmp_path):
    """KaLM-Embedding-V2: a Qwen2 decoder read with bidirectional attention, mean pooling, the card's
    'Instruct: … \\n Query: ' prompt on queries only; a mixed-length batch (padding) included."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    name = "KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2"
    folder = as_registered(monkeypatch, tmp_path, name, tiny_qwen2)
    model = zoo.create(name, device="cpu")
    tok, ref = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def card(texts, prompt="", causal=False):
        enc = tok([prompt + t for t in texts], padding=True, return_tensors="pt")
        # the card's model: a full (non-causal) padding mask handed to every layer (Qwen2Model takes a dict of
        # ready masks by layer type and uses it as it is)
        mask = enc["attention_mask"] if causal else {"full_attention": full_padding_mask(
            enc["attention_mask"], torch.float32)}
        with torch.no_grad():
            hidden = ref(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
        m = enc["attention_mask"][..., None].float()
        return ((hidden * m).sum(1) / m.sum(1)).numpy()

    query = model.spec.prompts["query"]
    assert query == "Instruct: Given a query, retrieve documents that answer the query \n Query: "
    assert_parity(model.encode(TEXTS, "text", prompt_name="query", normalize=False), card(TEXTS, query))
    assert_parity(model.encode(TEXTS, "text", normalize=False), card(TEXTS))
    assert cos(model.encode(TEXTS, "text"), card(TEXTS, causal=True)).min() < 0.999  # the mask matters


@pytest.mark.parametrize("name,pooling,prefix", [
    ("avsolatorio/GIST-Embedding-v0", "cls", ""),
    ("avsolatorio/GIST-small-Embedding-v0", "cls", ""),
    ("dwzhu/e5-base-4k", "mean", "query: "),
])
def test_bert_retrievers_follow_their_cards(monkeypatch, tmp_path, name, pooling, prefix):
    long = dict(max_positions=4096) if "4k" in name else {}
    folder = as_registered(monkeypatch, tmp_path, name, lambda f: tiny_bert(f, **long))
    model = zoo.create(name, device="cpu")
    texts = TEXTS + (["a red circle " * 150 + "and two green stars " * 600] if long else [])
    want = bert_rows(folder, [prefix + t for t in texts], pooling, max_length=4096 if long else 512)
    assert_parity(model.encode(texts, "text", normalize=False), want)
    if long:  # 4k positions: a 3,000-token text is read past 512 tokens
        assert model.max_length == 4096
        assert cos(model.encode(texts[-1:], "text"), bert_rows(folder, [prefix + texts[-1]], pooling)) < 0.999


def test_simlm_reads_documents_as_title_passage_pairs(monkeypatch, tmp_path):
    """SimLM: CLS pooling; a query alone cut at 32 tokens, a document as the pair ('-', passage) at 144."""
    name = "intfloat/simlm-base-msmarco-finetuned"
    folder = as_registered(monkeypatch, tmp_path, name, tiny_bert)
    model = zoo.create(name, device="cpu")
    texts = TEXTS + ["long passage " * 100]
    queries = bert_rows(folder, texts, "cls", max_length=32)
    docs = bert_rows(folder, texts, "cls", firsts=["-"] * len(texts), max_length=144)
    assert_parity(model.encode(texts, "text", normalize=False), queries)  # "query" is the default prompt
    got = model.encode(texts, "text", prompt_name="document", normalize=False)
    assert_parity(got, docs)
    # the same words as one text (a prefix) are read differently: the parity above is not a coincidence
    assert cos(got, bert_rows(folder, ["- " + t for t in texts], "cls", max_length=144)).min() < 0.9999


@pytest.mark.parametrize("name,instead", [
    ("nvidia/NV-Embed-v2", "Qwen/Qwen3-Embedding-0.6B"),
    ("TIGER-Lab/VLM2Vec-Full", "TIGER-Lab/VLM2Vec-Qwen2VL-2B"),
])
def test_remote_code_checkpoints_are_refused_with_what_to_use(name, instead):
    with pytest.raises(zoo.RemoteCodeRefusedError, match="trust_remote_code") as err:
        zoo.create(name)
    assert instead in str(err.value)
    assert name not in zoo.list_models()


def test_a_folder_with_its_own_modelling_code_is_refused(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    tiny_bert(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(zoo.RemoteCodeRefusedError, match="ships its own modelling code"):
        zoo.create(str(folder))


def _vlm2vec_folders(root):
    """A tiny Qwen2-VL generation model where the registry finds the base, and a LoRA adapter trained on it
    (random, non-zero) with the processor files, where it finds VLM2Vec: the hub checkpoint's layout."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    base = root / "Qwen" / "Qwen2-VL-2B-Instruct"
    make_qwen2_vl(base)  # saves the base transformer; the generation class adds its (unused) head
    torch.manual_seed(1)
    gen = Qwen2VLForConditionalGeneration.from_pretrained(base)
    gen.save_pretrained(base)
    lora = get_peft_model(gen, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False))
    adapter = root / "TIGER-Lab" / "VLM2Vec-Qwen2VL-2B"
    lora.save_pretrained(adapter)
    AutoProcessor.from_pretrained(base).save_pretrained(adapter)
    return base, adapter


def test_vlm2vec_merges_its_lora_and_follows_the_card(monkeypatch, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    name = "TIGER-Lab/VLM2Vec-Qwen2VL-2B"
    base, adapter = _vlm2vec_folders(tmp_path / "models")
    monkeypatch.setitem(registry._MODELS, name, dataclasses.replace(zoo.get_spec(name), dim=32))
    monkeypatch.setenv("ZOO_MODELS_DIR", str(tmp_path / "models"))
    model = zoo.create(name, device="cpu")
    rng = np.random.default_rng(2)
    imgs = [S.render(S.sample_training_scene(rng), rng) for _ in range(2)]
    items = [[imgs[0]], ["a red circle"], [imgs[1], "what colour is it?"]]
    prompts = ["document", "query", "question"]
    ref = PeftModel.from_pretrained(Qwen2VLForConditionalGeneration.from_pretrained(base), adapter).eval()
    proc = AutoProcessor.from_pretrained(adapter)
    strings = ["<|image_pad|> Represent the given image.",
               "Find me an everyday image that matches the given caption: a red circle",
               "<|image_pad|> Represent the given image with the following question: what colour is it?"]
    got, want = [], []
    for item, prompt, string in zip(items, prompts, strings):
        pics = [p for p in item if not isinstance(p, str)] or None
        with torch.no_grad():
            out = ref(**proc(text=[string], images=pics, return_tensors="pt"), output_hidden_states=True)
        want.append(out.hidden_states[-1][0, -1].numpy())
        got.append(model.encode([item], "interleaved", prompt_name=prompt, normalize=False)[0])
    assert_parity(np.stack(got), np.stack(want))
    # a mixed batch (images and text alone, one prompt) gives the rows one at a time gives
    batch = model.encode(items, "interleaved", prompt_name="question", batch_size=3, normalize=False)
    alone = np.concatenate([model.encode([x], "interleaved", prompt_name="question", normalize=False)
                            for x in items])
    assert_parity(batch, alone)


def _omni_reference(folder):
    """The checkpoint called directly through transformers as its card's code does: the Qwen2.5-Omni thinker
    with a full (bidirectional) padding mask handed to its decoder, mean of the last hidden states."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    cfg = json.loads((folder / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if k != "auto_map"} | {"model_type": "qwen2_5_omni_thinker"}
    ref = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        folder, config=Qwen2_5OmniThinkerConfig.from_dict(cfg)).eval()
    decoder = ref.model.language_model
    causal_forward = decoder.forward

    def bidirectional_forward(*args, attention_mask=None, **kwargs):
        if attention_mask is not None and not isinstance(attention_mask, dict):
            attention_mask = {"full_attention": full_padding_mask(attention_mask, kwargs["inputs_embeds"].dtype)}
        return causal_forward(*args, attention_mask=attention_mask, **kwargs)

    decoder.forward = bidirectional_forward
    return ref


def test_omni_embed_text_image_audio_video_and_mixtures(monkeypatch, tmp_path):
    """Omni-Embed-Nemotron: each kind of input and their mixtures, embedded in one mixed call, equal the
    thinker called one input at a time with the card's chat turn, bidirectional mask and mean pooling."""
    import torch
    from transformers import Qwen2_5OmniProcessor

    from zoo import media as zmedia
    from zoo.data import speech as P
    from zoo.media.sampling import encode_frames

    from .tiny_models import make_omni

    name = "nvidia/omni-embed-nemotron-3b"
    folder = as_registered(monkeypatch, tmp_path, name, lambda f: (make_omni(f), 32)[1])
    model = zoo.create(name, device="cpu")
    rng = np.random.default_rng(5)
    img = S.render(S.sample_training_scene(rng), rng)
    speech = P.speak("a red circle", P.sample_voice(rng), rng)
    clip = encode_frames(S.moving_clip("red", "circle", 12), 4, audio=speech)  # 3 s, with a sound track
    silent = encode_frames(S.moving_clip("blue", "star", 6), 2)
    items = [["a red circle"], [img], [{"audio": (speech, P.SAMPLE_RATE)}], [{"video": clip}],
             [{"video": silent}], ["this", img, "sounds like", {"audio": (speech, P.SAMPLE_RATE)}]]
    got = model.encode(items, "interleaved", prompt_name="document", batch_size=6, normalize=False)

    ref, proc = _omni_reference(folder), Qwen2_5OmniProcessor.from_pretrained(folder, trust_remote_code=False)
    tags = {"image": "<|vision_bos|><|IMAGE|><|vision_eos|>", "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
            "video": "<|vision_bos|><|VIDEO|><|vision_eos|>"}
    want = []
    for item in items:
        text, parts = "", {"images": [], "audio": [], "videos": []}
        for part in item:
            if isinstance(part, str):
                text += part
            elif not isinstance(part, dict):
                text += tags["image"]
                parts["images"].append(part)
            elif "audio" in part:
                text += tags["audio"]
                parts["audio"].append(part["audio"][0])
            else:
                video = zmedia.decode(part["video"], 0, zoo.Modality.VIDEO, P.SAMPLE_RATE, 30.0)
                text += tags["video"] + (tags["audio"] if video.audio is not None else "")
                parts["videos"].append([np.asarray(f) for f in video.frames])
                if video.audio is not None:
                    parts["audio"].append(video.audio)
                fps = video.fps
        extra = {"videos_kwargs": {"fps": fps, "do_sample_frames": False}} if parts["videos"] else {}
        enc = proc(text=[f"<|im_start|>user\npassage: {text}<|im_end|>\n"], images=parts["images"] or None,
                   videos=parts["videos"] or None, audio=parts["audio"] or None, sampling_rate=P.SAMPLE_RATE,
                   return_tensors="pt", **extra)
        with torch.no_grad():
            hidden = ref(**enc, output_hidden_states=True).hidden_states[-1]
        mask = enc["attention_mask"][..., None].float()
        want.append(((hidden * mask).sum(1) / mask.sum(1))[0].numpy())
    assert_parity(got, np.stack(want))
    # the plain modalities are one-part inputs, and a video file carries its sound track
    assert cos(model.encode([img], "image", prompt_name="document"), got[1:2])[0] >= 0.9999
    assert cos(model.encode([clip], "video", prompt_name="document"), got[3:4])[0] >= 0.9999
    assert cos(model.encode([(speech, P.SAMPLE_RATE)], "audio", prompt_name="document"), got[2:3])[0] >= 0.9999
    assert zoo.Modality.VIDEO in model.spec.modalities and model.spec.prompts["query"] == "query: "


def test_mme5_follows_its_card_on_llama_vision(monkeypatch, tmp_path):
    """mmE5: '<|image|><|begin_of_text|> {instruction} {text}' (the text alone without images), the
    generation model's last hidden state at the last token; a batch mixing inputs with and without images."""
    import torch
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    from .tiny_models import make_mllama

    name = "intfloat/mmE5-mllama-11b-instruct"
    folder = as_registered(monkeypatch, tmp_path, name, lambda f: (make_mllama(f), 32)[1])
    model = zoo.create(name, device="cpu")
    rng = np.random.default_rng(4)
    img = S.render(S.sample_training_scene(rng), rng)
    items = [[img], ["a cat and a dog"], [img, "what is in the image"]]
    strings = ["<|image|><|begin_of_text|> Represent the given image with the following question:",
               "Represent the given image with the following question: a cat and a dog",
               "<|image|><|begin_of_text|> Represent the given image with the following question: what is in the image"]
    got = model.encode(items, "interleaved", prompt_name="question", batch_size=3, normalize=False)
    ref, proc = MllamaForConditionalGeneration.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    want = []
    for item, string in zip(items, strings):
        pics = [[p for p in item if not isinstance(p, str)]] if any(not isinstance(p, str) for p in item) else None
        enc = proc(text=[string], images=pics, return_tensors="pt")
        with torch.no_grad():
            hidden = ref(**enc, output_hidden_states=True).hidden_states[-1]
        want.append(hidden[0, int(enc["attention_mask"].sum()) - 1].numpy())
    assert_parity(got, np.stack(want))
    assert model.spec.prompts["document"] == "Represent the given image."
