"""Token budgets: every forward pass holds at most ``spec.batch_tokens`` tokens, counted as items × padded length."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import string

import numpy as np
import pytest

import zoo
from zoo.batching import SPECIAL_TOKENS, budget_batches, length_batches, text_bound
from zoo.spec import DEFAULT_BATCH_TOKENS, EmbedderSpec, Modality
from zoo.truncation import TruncationWarning

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _cost(tokens: list[int], batch: tuple[int, int]) -> int:
    a, b = batch
    return (b - a) * max(tokens[a:b])


def _check_cover(batches: list[tuple[int, int]], n: int) -> None:
    """The batches are consecutive ranges over all n items, in order."""
    assert [a for a, _ in batches] == [0] + [b for _, b in batches[:-1]]
    assert batches[-1][1] == n and all(b > a for a, b in batches)


def test_length_batches_respect_the_token_budget_and_keep_order():
    rng = random.Random(0)
    lengths = sorted((rng.randint(1, 300) for _ in range(200)), reverse=True)
    for budget in (64, 500, 1000, 5000):
        batches = length_batches(lengths, 32, max_tokens=budget)
        _check_cover(batches, len(lengths))
        for a, b in batches:
            assert b - a <= 32
            assert b - a == 1 or _cost(lengths, (a, b)) <= budget, (budget, a, b)
    # without a budget nothing changes: batch_size and the length spread alone
    assert length_batches([100] * 70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert length_batches([100] * 70, 32, max_tokens=10**9) == [(0, 32), (32, 64), (64, 70)]
    # the padded length is the batch's first (longest) item's: 4 × 100 = 400 fits, a fifth item would not
    assert length_batches([100] * 10, 32, max_tokens=400) == [(0, 4), (4, 8), (8, 10)]


def test_an_item_longer_than_the_budget_runs_alone():
    assert length_batches([900, 800, 10, 10, 10], 32, max_tokens=500) == [(0, 1), (1, 2), (2, 5)]
    assert length_batches([900], 32, max_tokens=1) == [(0, 1)]
    # token counts apart from the sort keys: the padded length is the batch's most tokens, wherever it sits
    assert length_batches([50, 40, 30], 32, max_tokens=100, tokens=[10, 60, 10]) == [(0, 1), (1, 2), (2, 3)]


def test_exact_counts_are_asked_only_where_the_bound_could_pass_the_budget():
    asked: list[list[int]] = []

    def count(positions: list[int]) -> list[int]:
        asked.append(positions)
        return [10] * len(positions)

    lengths = [50] * 8
    # bounds well under the budget: nothing is counted, and batch_size alone cuts
    assert budget_batches(lengths, 4, 1000, [50] * 8, count) == [(0, 4), (4, 8)]
    assert asked == []
    # the first batch's bound passes the budget: its items (only) are counted, and fit once counted
    assert budget_batches(lengths, 4, 100, [90, 90, 90, 90, 20, 20, 20, 20], count) == [(0, 4), (4, 8)]
    assert asked == [[0, 1, 2, 3]]
    # not counted at all (None): batches by items only
    assert budget_batches(lengths, 4, 1, None, count) == [(0, 4), (4, 8)]


def test_the_text_bound_holds_for_the_real_tokenizer(minilm):
    rng = random.Random(1)
    alphabet = string.printable + "[CLS][SEP][PAD]##"
    texts = ["", " ", "a", "[CLS]", "...!!!???", "1234567890" * 3, "x" * 400]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(200)]
    cap = minilm.spec.max_length
    counts = minilm._text_tokens(texts, None)
    for text, n in zip(texts, counts):
        assert n <= text_bound(text, cap), (text, n)
    # beyond ASCII no per-character bound is trusted: the cap stands in
    assert text_bound("héllo", cap) == cap
    assert text_bound("hello", cap) == 5 + SPECIAL_TOKENS


@pytest.fixture(scope="module")
def model():
    """Its own MiniLM: the tests swap its spec and spy on its forward passes."""
    return zoo.create(MINILM, device="cpu")


def _spied(m, budget: int | None, monkeypatch) -> list[tuple[int, int]]:
    """Run ``m`` under ``budget`` (None: unbounded) and record each forward pass's (items, padded length)."""
    monkeypatch.setattr(m, "spec", dataclasses.replace(m.spec, max_batch_tokens=budget or 10**12))
    seen: list[tuple[int, int]] = []
    forward = type(m).forward

    def spy(batch, modality, opts, kind):
        texts = [(opts.prompt or "") + t for t in batch]
        padded = m.tokenizer(texts, padding=True, truncation=True, max_length=m.max_length)["input_ids"]
        seen.append((len(batch), len(padded[0])))
        return forward(m, batch, modality, opts, kind)

    monkeypatch.setattr(m, "forward", spy)
    return seen


def test_every_forward_pass_stays_within_the_budget(model, monkeypatch):
    rng = random.Random(2)
    words = ["cat", "dog", "the", "sofa", "quantum", "embedding", "a", "of", "résumé", "日本"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(40)]
    texts += ["word " * 300]  # over the budget by itself (256 tokens after truncation)
    seen = _spied(model, None, monkeypatch)
    with pytest.warns(TruncationWarning):
        want = model.encode(texts, "text")
    assert any(n * t > 300 for n, t in seen)  # unbounded, the batches pass the budget tested below
    seen.clear()
    monkeypatch.setattr(model, "spec", dataclasses.replace(model.spec, max_batch_tokens=300))
    with pytest.warns(TruncationWarning):
        got = model.encode(texts, "text")
    assert sum(n for n, _ in seen) == len(texts)
    for n, t in seen:
        assert n == 1 or n * t <= 300, seen
    assert (1, 256) in seen  # the long text ran alone
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the served path (embed_decoded over decoded texts) goes through the same cut
    seen.clear()
    decoded = model.decode(texts, "text")
    with pytest.warns(TruncationWarning):
        served = model.embed_decoded(decoded, Modality.TEXT, model.options())
    np.testing.assert_allclose(served, want, atol=1e-5)
    assert seen and all(n == 1 or n * t <= 300 for n, t in seen), seen


def test_short_texts_are_not_tokenized_twice(model, monkeypatch):
    counted: list[int] = []
    text_tokens = type(model)._text_tokens

    def spy(self, texts, prompt):
        counted.append(len(texts))
        return text_tokens(self, texts, prompt)

    monkeypatch.setattr(type(model), "_text_tokens", spy)
    texts = [f"sentence number {i} about a cat" for i in range(96)]
    model.encode(texts, "text")  # the default budget: 32 × (a bound of ~40) is nowhere near 16,384
    assert counted == []
    monkeypatch.setattr(model, "spec", dataclasses.replace(model.spec, max_batch_tokens=200))
    model.encode(texts, "text")  # now each batch's bound passes the budget: its items are counted
    assert sum(counted) == len(texts)


def test_a_family_that_cannot_count_tokens_is_cut_by_its_bounds(model, monkeypatch):
    def cannot(self, texts, prompt):
        raise NotImplementedError("no tokenizer")

    seen = _spied(model, 120, monkeypatch)
    monkeypatch.setattr(type(model), "_text_tokens", cannot)
    model.encode(["a cat on a sofa"] * 12, "text")  # bound 23 each: 5 a pass, where counting would allow 12
    assert [n for n, _ in seen] == [5, 5, 2]


def test_media_without_declared_tokens_are_not_counted(model):
    assert model._token_sizes([np.zeros(10, np.float32)], Modality.AUDIO, None) is None
    assert model._token_sizes(["abc"], Modality.TEXT, "query: ") == [len("query: abc") + SPECIAL_TOKENS]


def test_the_default_budget_is_derived_and_shown_by_zoo_info(capsys):
    from zoo.cli import _cmd_info

    assert zoo.get_spec(MINILM).max_batch_tokens is None
    assert zoo.get_spec(MINILM).batch_tokens == DEFAULT_BATCH_TOKENS  # 384 wide: TEI's default
    assert zoo.get_spec("Alibaba-NLP/gme-Qwen2-VL-7B-Instruct").batch_tokens == round(16384 * 1024 / 3584)
    assert zoo.get_spec("naver/splade-v3").batch_tokens == 2048  # set by its family, not derived from its vocab
    assert zoo.get_spec("vidore/colpali-v1.3-hf").batch_tokens == 8192  # Gemma 2B's width, not the 128-d rows
    _cmd_info(argparse.Namespace(name=MINILM, json=True, device="cpu"))
    info = json.loads(capsys.readouterr().out)
    assert info["batch_tokens"] == DEFAULT_BATCH_TOKENS and info["max_batch_tokens"] is None
    _cmd_info(argparse.Namespace(name=MINILM, json=False, device="cpu"))
    assert any(line.split() == ["batch_tokens", str(DEFAULT_BATCH_TOKENS)]
               for line in capsys.readouterr().out.splitlines())


def test_spec_round_trip_and_old_dicts():
    spec = dataclasses.replace(zoo.get_spec(MINILM), max_batch_tokens=1234)
    assert spec.batch_tokens == 1234
    assert EmbedderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    old = zoo.get_spec(MINILM).to_dict()
    del old["max_batch_tokens"]  # a dict written before the field existed (an older server's config)
    assert EmbedderSpec.from_dict(old).max_batch_tokens is None
    for bad in (0, -5, True, 1.5, "16384"):
        with pytest.raises(ValueError, match="max_batch_tokens"):
            dataclasses.replace(spec, max_batch_tokens=bad)


def test_qwen2_vl_image_tokens_are_the_processors(tmp_path):
    from PIL import Image

    from tests.tiny_models import make_qwen2_vl
    from zoo.media import Part

    m = zoo.create(str(make_qwen2_vl(tmp_path / "vl")), device="cpu")
    pad = m.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for size in [(64, 64), (640, 480), (1000, 30)]:
        image = Image.new("RGB", size, (120, 30, 60))
        ids = m.processor(text=[m.write([Part("image", image)], None)], images=[image])["input_ids"][0]
        assert m._media_tokens("image", image) == sum(i == pad for i in ids) + 2  # + its two markup tokens
        # an image item's count covers its whole row, bound and exact alike
        assert m._token_sizes([image], Modality.IMAGE, None, exact=True)[0] >= len(ids)
        assert m._token_sizes([image], Modality.IMAGE, None)[0] >= len(ids)
