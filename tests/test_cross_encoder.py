"""Cross-encoders and ``zoo.rerank``: sequence-classification rerankers equal sentence-transformers'
``CrossEncoder`` in every layout it saves, folders zoo cannot load faithfully are refused, and ``zoo.rerank``
scores with every kind of model as that kind scores."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

import zoo
from tests.tiny_models import make_colbert, make_cross_encoder, make_splade
from zoo import kinds, scoring
from zoo.families.cross import CrossEncoder
from zoo.ranking import bi_scores, pair_chars, pair_from_wire, pair_to_wire, ranked, score_pairs

PAIRS = [("a red circle", "two blue squares on the left"), ("hello", "héllo wörld 🐱 " * 40),
         ("x", ""), ("long " * 300, "short"), ("two blue squares on the left", "a red circle"),
         ("what is gzip", "gzip compresses files with DEFLATE")]
IDENTITY = "torch.nn.modules.linear.Identity"


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    return make_cross_encoder(tmp_path_factory.mktemp("ce") / "ce")


def reference(folder):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return STCrossEncoder(str(folder), device="cpu")


def assert_scores(got, want, atol=1e-5):
    """zoo's scores equal the reference's, and the reference tells the pairs apart (else equality proves little)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.ptp(want) > 0.05, f"the reference gives nearly one score to every pair: {want}"
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_predict_and_rank_equal_sentence_transformers(tiny_ce):
    ours, ref = zoo.create(str(tiny_ce), device="cpu"), reference(tiny_ce)
    assert isinstance(ours, CrossEncoder) and ours.spec.family == "cross-encoder"
    assert ours.spec.outputs == ("score",) and ours.spec.dim == 1 and ours.activation == "sigmoid"
    got = ours.predict(PAIRS)
    assert got.dtype == np.float32 and got.shape == (len(PAIRS),)
    assert_scores(got, ref.predict(PAIRS))  # the long pairs are cut longest-first, as sentence-transformers cuts
    assert np.array_equal(ours.encode(PAIRS, "text"), got)  # encode() of pairs is predict()
    docs = [d for _, d in PAIRS]
    for top_k, with_docs in ((None, False), (3, True)):
        want = ref.rank("what is gzip", docs, top_k=top_k, return_documents=with_docs)
        have = ours.rank("what is gzip", docs, top_k=top_k, return_documents=with_docs)
        assert [r["corpus_id"] for r in have] == [r["corpus_id"] for r in want]
        assert [r.get("text") for r in have] == [r.get("text") for r in want]
        np.testing.assert_allclose([r["score"] for r in have], [r["score"] for r in want], atol=1e-5)
    assert zoo.rerank(ours, "what is gzip", docs, top_k=3) == ours.rank("what is gzip", docs, top_k=3)


def _identity_in_config_json(folder):
    """sentence-transformers 4/5's layout: the activation in config.json's ``sentence_transformers``."""
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    st.pop("activation_fn")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st))
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": IDENTITY, "version": "5.0.0"}
    (folder / "config.json").write_text(json.dumps(config))


def _plain_transformers(folder):
    """A plain transformers save (no sentence-transformers files): one label, the default sigmoid."""
    for name in ("config_sentence_transformers.json", "modules.json", "sentence_bert_config.json", "README.md"):
        (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize("layout", ["st-identity", "config-json-identity", "plain-transformers"])
def test_every_layout_loads_with_the_activation_sentence_transformers_reads(tmp_path, layout):
    folder = make_cross_encoder(tmp_path / "ce", seed=1, activation=IDENTITY if layout == "st-identity" else None)
    if layout == "config-json-identity":
        _identity_in_config_json(folder)
    elif layout == "plain-transformers":
        _plain_transformers(folder)
    ours, ref = zoo.create(str(folder), device="cpu"), reference(folder)
    assert ours.activation == ("sigmoid" if layout == "plain-transformers" else "identity")
    assert_scores(ours.predict(PAIRS), ref.predict(PAIRS))


def test_a_classifier_is_refused_not_loaded_as_a_text_encoder(tmp_path, tiny_ce):
    # a one-label sequence classifier was once mean-pooled as a dense text model
    assert zoo.get_spec(str(tiny_ce)).family == "cross-encoder"
    folder = make_cross_encoder(tmp_path / "nli", labels=3)
    with pytest.raises(zoo.InvalidArgumentError, match="3 labels is a classifier"):
        zoo.create(str(folder))
    odd = tmp_path / "relu"
    shutil.copytree(tiny_ce, odd)
    st = json.loads((odd / "config_sentence_transformers.json").read_text())
    (odd / "config_sentence_transformers.json").write_text(json.dumps(st | {
        "activation_fn": "torch.nn.modules.activation.ReLU"}))
    with pytest.raises(zoo.InvalidArgumentError, match="ReLU is not one zoo reproduces"):
        zoo.create(str(odd))
    headed = tmp_path / "headed"  # a Dense head on the scores, or settings of the tokenizer's call: other scores
    shutil.copytree(tiny_ce, headed)
    modules = json.loads((headed / "modules.json").read_text())
    (headed / "modules.json").write_text(json.dumps(modules + [
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}]))
    with pytest.raises(zoo.InvalidArgumentError, match=r"\['Transformer', 'Dense'\].*not the sequence classifier"):
        zoo.create(str(headed))
    (headed / "modules.json").write_text(json.dumps(modules))
    config = json.loads((headed / "sentence_bert_config.json").read_text())
    (headed / "sentence_bert_config.json").write_text(json.dumps(config | {
        "processing_kwargs": {"text": {"max_length": 8}}}))
    with pytest.raises(zoo.InvalidArgumentError, match=r"processing \['text'\]"):
        zoo.create(str(headed))


def test_bad_pairs_fail_alone_and_controls_that_mean_nothing_are_refused(tiny_ce):
    model = zoo.create(str(tiny_ce), device="cpu")
    got = model.encode_per_item([("a", "b"), "not a pair", ("a",), ("a", 3), pair_to_wire("q", "d")], "text")
    assert isinstance(got[0], np.floating) and isinstance(got[4], np.floating)
    assert np.isclose(got[4], model.predict([("q", "d")])[0])  # the wire form is the same pair
    for k in (1, 2, 3):
        assert isinstance(got[k], zoo.InputError) and got[k].index == k
    with pytest.raises(zoo.InputError, match="input 1: .*pairs"):
        model.predict([("a", "b"), "plain"])
    for controls, name in (({"normalize": True}, "normalize"), ({"dimensions": 1}, "dimensions"),
                           ({"precision": "int8"}, "precision"), ({"truncate": "start"}, "truncate")):
        with pytest.raises(zoo.InvalidArgumentError, match=name):
            model.encode([("a", "b")], "text", **controls)
    with pytest.raises(zoo.InputError, match=r"input 0: text has \d+ tokens.*at most 64"):
        model.predict([("a", "word " * 100)], truncate="none")
    with pytest.raises(zoo.InvalidArgumentError, match="top_k"):
        model.rank("q", ["a"], top_k=0)
    with pytest.raises(zoo.InvalidArgumentError, match="documents is empty"):
        model.rank("q", [])
    with pytest.raises(zoo.InvalidArgumentError, match=r"documents\[1\] must be a string"):
        model.rank("q", ["a", 5])
    with pytest.raises(zoo.InvalidArgumentError, match="cannot give output 'dense'"):
        zoo.rerank(model, "q", ["a"], output="dense")


def test_wire_pairs_are_bounded_before_parsing(tiny_ce):
    assert pair_from_wire(pair_to_wire("q é", 'd "x"'), 0, 10) == ("q é", 'd "x"')
    with pytest.raises(zoo.InputError, match="at most"):
        pair_from_wire(b"[" + b" " * 200 + b"]", 3, 10)
    for bad in (b"not json", b'["only one"]', b'["a", 2]', b"\xff\xfe", b'{"q": "a", "d": "b"}', b"[" * 100_000):
        with pytest.raises(zoo.InputError, match="input 2: .*pairs"):
            pair_from_wire(bad, 2, 1 << 20)
    model = zoo.create(str(tiny_ce), device="cpu")
    with pytest.raises(zoo.InputError, match="input 0: .*pairs"):  # nested arrays: refused, not a RecursionError
        model.predict(["[" * 100_000])
    # a pair repeats its query for every document: it travels cut to what the window could read, plus one
    limit = pair_chars(model.spec)
    wire = pair_to_wire("q" * 300_000, "d", limit)
    assert len(wire) < limit + 16 and pair_from_wire(wire, 0, 1 << 20)[0] == "q" * limit


def test_max_tokens_per_doc_cuts_documents_first(tiny_ce, minilm):
    model = zoo.create(str(tiny_ce), device="cpu")
    doc = "gzip compresses files with the DEFLATE algorithm and writes a small header"
    tokens = model.tokenizer.tokenize(doc)
    kept = model.tokenizer.convert_tokens_to_string(tokens[:4])
    assert np.allclose(model.predict([("what is gzip", doc)], max_tokens_per_doc=4),
                       model.predict([("what is gzip", kept)]), atol=1e-6)
    assert not np.allclose(model.predict([("what is gzip", doc)], max_tokens_per_doc=4),
                           model.predict([("what is gzip", doc)]), atol=1e-6)
    with pytest.raises(zoo.InvalidArgumentError, match="max_tokens_per_doc must be a positive integer"):
        model.predict([("q", "d")], max_tokens_per_doc=0)
    with pytest.raises(zoo.InvalidArgumentError, match="max_tokens_per_doc applies to cross-encoders"):
        zoo.rerank(minilm, "q", ["d"], max_tokens_per_doc=4)
    with pytest.raises(zoo.InvalidArgumentError, match="max_tokens_per_doc applies to"):
        minilm.encode(["d"], "text", max_tokens_per_doc=4)


def test_pairs_are_batched_under_the_token_budget(tiny_ce):
    model = zoo.create(str(tiny_ce), device="cpu")
    whole = model.predict(PAIRS)
    passes: list[int] = []
    forward = model.forward
    model.forward = lambda batch, *a, **k: passes.append(len(batch)) or forward(batch, *a, **k)
    model.spec = dataclasses.replace(model.spec, max_batch_tokens=70)  # a 64-token pair and little else per pass
    np.testing.assert_allclose(model.predict(PAIRS), whole, atol=1e-6)
    assert len(passes) > 1 and sum(passes) == len(PAIRS)
    counts = model._text_tokens(PAIRS, None)
    assert max(counts) == 64 and all(n > 2 for n in counts)


def test_rerank_scores_every_kind_as_its_handler_does(minilm, tmp_path):
    query, docs = "how do I compress a file", ["gzip compresses files", "the cat sat on the mat", "zip archives"]
    got = zoo.rerank(minilm, query, docs, return_documents=True)
    want = (minilm.encode([query], "text") @ minilm.encode(docs, "text").T)[0]
    assert [r["corpus_id"] for r in got] == list(np.argsort(-want, kind="stable"))
    np.testing.assert_allclose([r["score"] for r in got], np.sort(want)[::-1], atol=1e-6)
    assert [r["text"] for r in got] == [docs[r["corpus_id"]] for r in got]
    assert zoo.rerank("sentence-transformers/all-MiniLM-L6-v2", query, docs, top_k=1)[0]["corpus_id"] == 0
    colbert = zoo.create(str(make_colbert(tmp_path / "colbert")), device="cpu")
    mv = zoo.rerank(colbert, query, docs)
    maxsim = scoring.maxsim(colbert.encode([query], "text", prompt_name=kinds.side_prompt(colbert.spec.prompts, True)),
                            colbert.encode(docs, "text", prompt_name=kinds.side_prompt(colbert.spec.prompts, False)))[0]
    np.testing.assert_allclose([r["score"] for r in mv], np.sort(maxsim)[::-1], atol=1e-5)
    splade = zoo.create(str(make_splade(tmp_path / "splade")), device="cpu")
    sp = zoo.rerank(splade, query, docs)
    dots = scoring.sparse_dot(splade.encode([query], "text"), splade.encode(docs, "text"))[0]
    np.testing.assert_allclose([r["score"] for r in sp], np.sort(dots)[::-1], atol=1e-5)
    pairs = [(query, d) for d in docs]
    np.testing.assert_allclose(score_pairs(minilm, pairs), want, atol=1e-6)


def test_rerank_scores_documents_of_another_modality():
    from PIL import Image

    aligned = zoo.create("zoo/shapes-aligned-minilm", device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    got = zoo.rerank(aligned, "a red circle", images, modality="image")
    want = bi_scores("dense", aligned.encode(["a red circle"], "text"), aligned.encode(images, "image"))[0]
    assert [r["corpus_id"] for r in got] == list(np.argsort(-want, kind="stable"))
    with pytest.raises(zoo.UnsupportedModalityError):
        zoo.rerank(zoo.create("sentence-transformers/all-MiniLM-L6-v2"), "q", images, modality="image")


def test_ranked_keeps_ties_in_document_order():
    assert [r["corpus_id"] for r in ranked(np.array([0.5, 0.9, 0.5, 0.1]))] == [1, 0, 2, 3]
    assert ranked(np.array([0.2, 0.3]), ["a", "b"], top_k=1, return_documents=True) == [
        {"corpus_id": 1, "score": pytest.approx(0.3), "text": "b"}]


def test_a_causal_lm_without_pooling_is_refused_by_the_text_fallback(tmp_path):
    """An LLM reranker's hub folder (a causal LM, no pooling declared) is never mean-pooled as a text encoder."""
    from tests.tiny_rerankers import make_qwen3_reranker

    folder = make_qwen3_reranker(tmp_path / "qwen3-reranker")
    with pytest.raises(zoo.InvalidArgumentError, match="declares no pooling.*refusing it rather than mean-pooling"):
        zoo.create(str(folder))


def test_a_lone_surrogate_is_an_input_error_not_a_crash(tiny_ce, minilm):
    """JSON can carry "\\ud800", which has no UTF-8 form: refused by the item, in-process and on the client side."""
    from serving.contract import encode_item

    with pytest.raises(zoo.InputError, match="input 1: text is not valid Unicode"):
        minilm.encode(["fine", "a\ud800"], "text")
    model = zoo.create(str(tiny_ce), device="cpu")
    with pytest.raises(zoo.InputError, match="input 0: text is not valid Unicode"):
        model.predict([("q", "d\udfff")])
    with pytest.raises(zoo.InputError, match="input 2: text is not valid Unicode"):
        encode_item(zoo.Modality.TEXT, ("q\ud800", "d"), 2, pairs=True)
    with pytest.raises(zoo.InputError, match="input 3: text is not valid Unicode"):
        encode_item(zoo.Modality.TEXT, "x\ud800", 3)


def test_the_truncation_warning_counts_each_cut_pair_once(tiny_ce):
    model = zoo.create(str(tiny_ce), device="cpu")
    with pytest.warns(zoo.truncation.TruncationWarning, match="1 of 2 pairs"):
        model.predict([("q", "word " * 200_000), ("q", "d")])  # cut by characters and by tokens: one pair
