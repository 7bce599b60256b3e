"""LLM rerankers scored by yes/no logits (zoo.families.cross_llm) against their references, on tiny random models
saved in each layout: sentence-transformers' ``CrossEncoder`` (its own folder), the Qwen3-Reranker card's code
(written out below from the card) and FlagEmbedding's ``FlagLLMReranker`` (bge-reranker-v2-gemma). Every
reference gives the pairs clearly different scores, pairs over the window included, and each parity check is
shown to fail on a template broken on purpose."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

import zoo
from zoo.families import rerank_layouts
from zoo.ranking import pair_to_wire

from .tiny_models import flagembedding_class
from .tiny_rerankers import (
    CHATML_TEMPLATE,
    GEMMA_PROMPT,
    QWEN3_CHAT_TEMPLATE,
    QWEN3_SYSTEM,
    WEB_SEARCH,
    make_gemma_reranker,
    make_qwen3_reranker,
    make_st_llm_reranker,
)

CODE = "Given a code question, retrieve the snippet that answers it"
LONG = "the big yellow triangle " * 40
PAIRS = [("a red circle", "two blue squares on the left"), ("which shape is red", "a green star"),
         ("x", LONG), ("a", ""), ("the big yellow triangle " * 30, "a red circle"), ("red", "a red circle")]
QUERY, DOCS = "a red circle", ["two blue squares on the left", "a green star", LONG, "", "a red circle"]
HUB = ["Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B", "BAAI/bge-reranker-v2-gemma"]


@pytest.fixture(scope="module", autouse=True)
def cross_llm():
    """The family's module, registered as the ``zoo.families`` entry point registers it (by hand where the
    installed project predates the entry point; undone afterwards, so the rest of the suite sees the registry
    as installed)."""
    from zoo import registry

    registry.list_families()
    added = "llm-reranker" not in registry._FAMILIES
    before = set(registry._MODELS)
    from zoo.families import cross_llm as module

    if added:
        registry.register_family("llm-reranker", module.LLMReranker)
    yield module
    if added:
        del registry._FAMILIES["llm-reranker"]
        for name in set(registry._MODELS) - before:
            del registry._MODELS[name]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm-rerankers")
    return {"st": make_st_llm_reranker(root / "st", prompts={"web_search": WEB_SEARCH, "code": CODE},
                                       default_prompt_name="web_search"),
            "qwen": make_qwen3_reranker(root / "qwen"), "gemma": make_gemma_reranker(root / "gemma"), "root": root}


def assert_scores(got, want, what: str = "") -> None:
    """``got`` equals the reference ``want``, which tells every pair apart (so a pair read wrongly shows)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    gaps = np.diff(np.sort(want))
    assert gaps.min() > 1e-3, f"the reference ({what}) gives two pairs nearly one score: {want}"
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5, err_msg=what)


def assert_ranked(got, want) -> None:
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in want]
    assert [r.get("text") for r in got] == [r.get("text") for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=0, atol=5e-5)


def card_spec(name: str, folder, **fields) -> zoo.EmbedderSpec:
    """A registered hub id's spec (its card's template) pointed at a local folder."""
    return dataclasses.replace(zoo.get_spec(name), name=f"tiny/{name}", source=str(folder), **fields)


def test_registered_by_hub_id_with_their_card_templates(cross_llm):
    for name in HUB:
        spec = zoo.get_spec(name)
        assert (spec.family, spec.outputs, spec.dim, spec.modalities) == ("llm-reranker", ("score",), 1, ("text",))
        assert spec.prompts[spec.default_prompt_name] in (WEB_SEARCH, GEMMA_PROMPT)
    qwen, gemma = zoo.get_spec(HUB[0]), zoo.get_spec(HUB[3])
    assert (qwen.license, qwen.max_length, dict(qwen.options)) == ("apache-2.0", 8192, {
        "template": "qwen3-reranker", "activation": "sigmoid"})
    assert (gemma.license, gemma.max_length, dict(gemma.options)) == ("gemma", 512, {
        "template": "bge-gemma", "activation": "identity"})
    assert QWEN3_SYSTEM in rerank_layouts.QWEN3_PREFIX and rerank_layouts.QWEN3_INSTRUCTION == WEB_SEARCH
    assert rerank_layouts.GEMMA_PROMPT == GEMMA_PROMPT
    assert zoo.get_spec(HUB[2]).batch_tokens < zoo.get_spec(HUB[1]).batch_tokens < qwen.batch_tokens


def test_sentence_transformers_folder_matches_cross_encoder(folders, cross_llm, monkeypatch):
    from sentence_transformers import CrossEncoder

    folder = folders["st"]
    reference = CrossEncoder(str(folder), device="cpu")
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.family == "llm-reranker" and model.max_input_tokens == 160
    for name in ("web_search", "code"):
        want = reference.predict(PAIRS, prompt_name=name)
        assert_scores(model.predict(PAIRS, prompt_name=name), want, name)
        # the very token ids sentence-transformers renders (the pairs over the window cut, the suffix restored)
        sent = reference[0].preprocess(PAIRS, prompt=reference.prompts[name])
        ours = model._pair_batch(PAIRS, model.spec.prompts[name])
        assert ours["input_ids"].tolist() == sent["input_ids"].tolist()
        assert ours["attention_mask"].tolist() == sent["attention_mask"].tolist()
    assert np.abs(model.predict(PAIRS) - model.predict(PAIRS, prompt_name="code")).max() > 0.05
    assert_ranked(model.rank(QUERY, DOCS), reference.rank(QUERY, DOCS))
    assert_ranked(model.rank(QUERY, DOCS, top_k=2, return_documents=True),
                  reference.rank(QUERY, DOCS, top_k=2, return_documents=True))
    assert zoo.rerank(model, QUERY, DOCS, top_k=2) == model.rank(QUERY, DOCS, top_k=2)
    # served, a pair is one text element (what the Triton backend's encode path reads): the same scores
    wire = model.encode([pair_to_wire(q, d) for q, d in PAIRS], "text")
    np.testing.assert_allclose(wire, model.predict(PAIRS), rtol=0, atol=1e-6)
    # a template rendered otherwise fails the bar: the suffix not written back over a pair cut at the window
    monkeypatch.setattr(model.layout, "restore", False)
    assert not np.allclose(model.predict(PAIRS), reference.predict(PAIRS), atol=5e-5)


def qwen3_card(folder, pairs, instruction=None, max_length=8192):
    """The Qwen3-Reranker card's transformers code (``format_instruction``, ``process_inputs``,
    ``compute_logits``), verbatim but for the model path and the window."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        output = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032
            instruction=instruction, query=query, doc=doc)
        return output

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    token_false_id, token_true_id = tokenizer.convert_tokens_to_ids("no"), tokenizer.convert_tokens_to_ids("yes")
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    texts = [format_instruction(instruction, query, doc) for query, doc in pairs]
    inputs = tokenizer(texts, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
    true_vector, false_vector = batch_scores[:, token_true_id], batch_scores[:, token_false_id]
    batch_scores = torch.nn.functional.log_softmax(torch.stack([false_vector, true_vector], dim=1), dim=1)
    return batch_scores[:, 1].exp().numpy(), inputs["attention_mask"].sum(1).tolist()


def test_qwen3_card_layout_matches_the_card(folders, cross_llm, monkeypatch):
    folder = folders["qwen"]
    spec = card_spec(HUB[0], folder, max_length=128, prompts={"web_search": WEB_SEARCH, "code": CODE})
    model = cross_llm.LLMReranker.load(spec, folder, "cpu")
    want, lengths = qwen3_card(folder, PAIRS, max_length=128)
    assert max(lengths) == 128 and model.max_input_tokens == 128  # pairs over the window are cut to it
    assert_scores(model.predict(PAIRS), want, "web_search")
    assert model._pair_lengths(PAIRS, WEB_SEARCH) == lengths
    assert_scores(model.predict(PAIRS, prompt_name="code"), qwen3_card(folder, PAIRS, CODE, 128)[0], "code")
    ranked, _ = qwen3_card(folder, [(QUERY, d) for d in DOCS], max_length=128)
    assert [r["corpus_id"] for r in model.rank(QUERY, DOCS)] == list(np.argsort(-ranked, kind="stable"))
    monkeypatch.setattr(rerank_layouts, "QWEN3_BODY", "<Instruct>: {instruction}\n<Query>:{query}\n<Document>: {doc}")
    assert not np.allclose(model.predict(PAIRS), want, atol=5e-5)  # one space less: the bar fails


def flag_llm_reranker():
    """FlagEmbedding's ``FlagLLMReranker`` (its decoder-only ``BaseLLMReranker``). FlagEmbedding 1.4.2 cannot be
    imported whole beside transformers 5 (its reranker package imports a MiniCPM model needing
    ``transformers.modeling_attn_mask_utils``, which transformers 5 removed; see test_output_kinds'
    ``flagembedding_m3``): its ``decoder_only/base.py`` loads unchanged once the re-exporting ``__init__`` files
    above it are passed over."""
    decoder_only = "FlagEmbedding.inference.reranker.decoder_only"
    return flagembedding_class(["FlagEmbedding", "FlagEmbedding.inference", "FlagEmbedding.inference.reranker",
                                decoder_only], f"{decoder_only}.base", "BaseLLMReranker")


def test_bge_gemma_layout_matches_flagembedding(folders, cross_llm, monkeypatch):
    folder = folders["gemma"]
    spec = card_spec(HUB[3], folder, max_length=64, prompts={"contains_answer": GEMMA_PROMPT, "code": CODE})
    model = cross_llm.LLMReranker.load(spec, folder, "cpu")
    reference = flag_llm_reranker()(str(folder), devices="cpu", max_length=64)
    pairs = [*PAIRS, ("the big yellow triangle " * 4, "a green star " * 7)]  # only the pair's cut applies
    want = reference.compute_score(pairs)
    assert_scores(model.predict(pairs), want, "contains_answer")
    assert_scores(model.predict(pairs, prompt_name="code"), reference.compute_score(pairs, prompt=CODE), "code")
    assert_ranked(model.rank(QUERY, DOCS), sorted(
        ({"corpus_id": i, "score": s} for i, s in enumerate(reference.compute_score([(QUERY, d) for d in DOCS]))),
        key=lambda r: -r["score"]))
    monkeypatch.setattr(model.layout, "sep", model.tokenizer(" ", add_special_tokens=False)["input_ids"])
    assert not np.allclose(model.predict(pairs), want, atol=5e-5)  # a space for the newline: the bar fails


def test_only_marked_folders_load_and_the_rest_are_refused(folders, cross_llm, tmp_path):
    from tests.tiny_models import make_cross_encoder

    for plain in ("qwen", "gemma"):  # a causal LM folder alone is no reranker, nor a text encoder without pooling
        with pytest.raises(zoo.InvalidArgumentError, match="llm-reranker"):
            zoo.get_spec(str(folders[plain]))

    def broken(name, edit):
        folder = shutil.copytree(folders["st"], tmp_path / name)
        edit(folder)
        return str(folder)

    def extra_module(folder):
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules))

    def no_template(folder):
        (folder / "chat_template.jinja").unlink()
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        config["modality_config"].pop("message")
        (folder / "sentence_bert_config.json").write_text(json.dumps(config))

    def lowercase(folder):
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        (folder / "sentence_bert_config.json").write_text(json.dumps(config | {"do_lower_case": True}))

    for edit, match in ((extra_module, "pipeline"), (no_template, "chat template"), (lowercase, "Transformer")):
        with pytest.raises(zoo.InvalidArgumentError, match=match):
            zoo.get_spec(broken(edit.__name__, edit))
    # a template that drops the document: sentence-transformers refuses to score with it, and zoo to load it
    dropping = make_st_llm_reranker(tmp_path / "drops", chat_template=QWEN3_CHAT_TEMPLATE.split("<Document>")[0])
    with pytest.raises(zoo.InvalidArgumentError, match="leaves out the document"):
        zoo.create(str(dropping), device="cpu")
    # ChatML passes every role through: sentence-transformers reads it, and so does zoo
    assert zoo.create(str(make_st_llm_reranker(tmp_path / "chatml", chat_template=CHATML_TEMPLATE)),
                      device="cpu").predict(PAIRS[:2]).shape == (2,)
    classifier = make_cross_encoder(tmp_path / "bert")  # a card template on another architecture
    with pytest.raises(zoo.InvalidArgumentError, match="ForCausalLM"):
        cross_llm.LLMReranker.load(card_spec(HUB[0], classifier), classifier, "cpu")
    bad = dataclasses.replace(card_spec(HUB[0], folders["qwen"]), options={"template": "nope"})
    with pytest.raises(zoo.InvalidArgumentError, match="template"):
        cross_llm.LLMReranker.load(bad, folders["qwen"], "cpu")


def test_windows_truncation_and_token_budget(folders, cross_llm):
    from sentence_transformers import CrossEncoder

    from zoo.front import EncodeOptions

    st = zoo.create(str(folders["st"]), device="cpu")
    qwen = cross_llm.LLMReranker.load(card_spec(HUB[0], folders["qwen"], max_length=128), folders["qwen"], "cpu")
    gemma = cross_llm.LLMReranker.load(card_spec(HUB[3], folders["gemma"], max_length=64), folders["gemma"], "cpu")
    for model in (st, qwen, gemma):
        prompt = model.spec.prompts[model.spec.default_prompt_name]
        # counts are what the model reads, template included; the cheap bounds never undercount
        read = model._pair_batch(PAIRS, prompt)["attention_mask"].sum(1).tolist()
        assert model._pair_lengths(PAIRS, prompt) == read
        bounds = model._token_sizes(PAIRS, zoo.Modality.TEXT, prompt)
        assert all(b >= n for b, n in zip(bounds, read)) and max(read) <= model.max_input_tokens
        with pytest.raises(zoo.InputError) as err:
            model.predict(PAIRS, truncate="none")
        assert err.value.index == 2
        got = model.encode_items(PAIRS, zoo.Modality.TEXT, model.options(truncate="none"), tokens=True)
        assert sorted(got.errors) == [2, 4] and got.tokens == [n for k, n in enumerate(read) if k not in (2, 4)]
        cut = model.encode_items(PAIRS, zoo.Modality.TEXT, model.options(), tokens=True)
        assert cut.truncated == [k in (2, 4) for k in range(len(PAIRS))] and cut.tokens == read
    assert "query" in str(gemma.fit_texts(PAIRS, EncodeOptions(truncate="none")).errors[4])  # under the window
    # batches of pairs under a token budget: each pass holds at most max_batch_tokens (items × padded length)
    budget = cross_llm.LLMReranker.load(dataclasses.replace(st.spec, max_batch_tokens=300), folders["st"], "cpu")
    seen, batch = [], budget._pair_batch

    def recorded(pairs, prompt):
        enc = batch(pairs, prompt)
        seen.append(tuple(enc["input_ids"].shape))
        return enc

    budget._pair_batch = recorded
    pairs = [(f"{'red ' * k}circle", "a green star " * (12 - k)) for k in range(12)] + PAIRS
    reference = CrossEncoder(str(folders["st"]), device="cpu")
    want = reference.predict(pairs)
    np.testing.assert_allclose(budget.predict(pairs, batch_size=8), want, rtol=0, atol=5e-5)
    assert len(seen) > 2 and all(rows == 1 or rows * width <= 300 for rows, width in seen)
    assert any(rows > 1 for rows, _ in seen)
    # documents cut to max_tokens_per_doc tokens before the pair is read
    cut_docs = [(q, st._document_cut(d, 3)) for q, d in PAIRS]
    assert cut_docs[2][1] == "the big yellow" and cut_docs[3][1] == ""
    assert_scores(st.predict(PAIRS, max_tokens_per_doc=3), reference.predict(cut_docs), "max_tokens_per_doc")
