"""Text family: parity with sentence-transformers, batching, prompts, truncation, errors."""

import warnings

import numpy as np
import pytest

import zoo
from zoo.truncation import TruncationWarning

from .tiny_models import assert_parity, make_tiny_text_folder

VARIED = [
    "a cat on a sofa",
    "A",
    "",  # empty and whitespace-only: embedded as the bare special tokens, like sentence-transformers
    "   \t\n ",
    "naïve café — Ünïcödé, 日本語のテキスト, Ελληνικά, русский текст",
    "emoji 🐱🚀🎉👩‍👩‍👧 and symbols ∑∫√",
    " ".join(f"word{i}" for i in range(400)),  # > 256 tokens: truncated
    "The quick brown fox jumps over the lazy dog. " * 20,
    "short",
    "retrieval of images and sounds with text queries",
]


@pytest.fixture(scope="module")
def st_reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_parity_with_sentence_transformers(minilm, st_reference):
    with warnings.catch_warnings(record=True):
        ours = minilm.encode(VARIED, "text", batch_size=3)
    ref = st_reference.encode(VARIED, normalize_embeddings=True, batch_size=3)
    distinct = [i for i in range(len(VARIED)) if i != 3]  # empty and whitespace-only read as the same tokens
    assert_parity(ours[distinct], ref[distinct])
    np.testing.assert_allclose(ours[3], ref[3], atol=1e-4)


def test_truncation_warns_with_count(minilm):
    with pytest.warns(TruncationWarning, match=r"^2 of 3 inputs exceed 256 tokens"):
        minilm.encode(["x " * 300, "y " * 600, "z"], "text")


def test_order_restored_whatever_the_batching(minilm):
    texts = VARIED[:2] + VARIED[4:6] + VARIED[7:]
    one_by_one = np.concatenate([minilm.encode([t], "text") for t in texts])
    batched = minilm.encode(texts, "text", batch_size=2)
    assert np.allclose(one_by_one, batched, atol=1e-5)


def test_dimensions_and_precision(minilm):
    full = minilm.encode(["hello"], "text")
    cut = minilm.encode(["hello"], "text", dimensions=128)
    assert cut.shape == (1, 128) and np.isclose(np.linalg.norm(cut), 1, atol=1e-5)
    assert np.allclose(cut, full[:, :128] / np.linalg.norm(full[:, :128]), atol=1e-6)
    raw = minilm.encode(["hello"], "text", normalize=False)
    assert not np.isclose(np.linalg.norm(raw), 1)
    b = minilm.encode(["hello", "world"], "text", precision="ubinary")
    assert b.dtype == np.uint8 and b.shape == (2, 48)


def test_bytes_input_is_utf8(minilm):
    assert np.allclose(minilm.encode(["café".encode()], "text"), minilm.encode(["café"], "text"))
    with pytest.raises(zoo.InputError, match="input 1: text is not valid UTF-8"):
        minilm.encode(["ok", b"\xff\xfe"], "text")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"inputs": []}, zoo.InvalidArgumentError, "empty"),
    ({"inputs": "a string"}, zoo.InvalidArgumentError, "list"),
    ({"modality": "image"}, zoo.UnsupportedModalityError, "supports 'text'"),
    ({"precision": "int4"}, zoo.InvalidArgumentError, "float32"),
    ({"dimensions": 1000}, zoo.InvalidArgumentError, "1..384"),
    ({"prompt_name": "query"}, zoo.InvalidArgumentError, "no prompts"),
    ({"batch_size": 0}, zoo.InvalidArgumentError, "batch_size"),
    ({"inputs": ["ok", 3]}, zoo.InputError, "input 1"),
])
def test_errors_are_clear(minilm, kwargs, error, match):
    call = {"inputs": ["hello"], "modality": "text"} | kwargs
    with pytest.raises(error, match=match):
        minilm.encode(call.pop("inputs"), **call)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "last"])
def test_tiny_folder_pooling_matches_reference(tmp_path, pooling):
    """A random model saved to a folder: the same loading path as a hub checkpoint."""
    from sentence_transformers import SentenceTransformer

    folder = make_tiny_text_folder(tmp_path / "tiny", pooling=pooling)
    model = zoo.create(str(folder), device="cpu")
    assert model.spec.dim == 32 and model.pooling == pooling
    texts = ["one", "two words", "a somewhat longer sentence here", "é 🐱"]
    ref = SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert_parity(model.encode(texts, "text", normalize=False), ref)


def test_folder_prompts(tmp_path):
    folder = make_tiny_text_folder(tmp_path / "p", prompts={"query": "query: ", "document": "passage: "})
    model = zoo.create(str(folder), device="cpu")
    assert set(model.spec.prompts) == {"query", "document"}
    assert np.allclose(model.encode(["cats"], "text", prompt_name="query"),
                       model.encode(["query: cats"], "text"), atol=1e-6)
    with pytest.raises(zoo.InvalidArgumentError, match="'document', 'query'|'query', 'document'"):
        model.encode(["cats"], "text", prompt_name="passage")


def test_progress_bar_when_asked(minilm, capsys):
    minilm.encode(["a", "b", "c"], "text", batch_size=1, show_progress=True)
    assert "encode text" in capsys.readouterr().err
    minilm.encode(["a", "b"], "text")
    assert "encode text" not in capsys.readouterr().err


def test_texts_are_tokenized_once_and_only_cut_ones_again(minilm, monkeypatch):
    calls = []
    real = minilm.tokenizer

    class Counting:
        def __call__(self, texts, **kw):
            calls.append(len(texts))
            return real(texts, **kw)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(minilm, "tokenizer", Counting())
    minilm.encode(["a cat", "a dog", "a bird"], "text", batch_size=2)
    assert calls == [2, 1]  # one truncating pass per batch; the sort keys tokenize nothing
    calls.clear()
    with pytest.warns(TruncationWarning, match=r"^1 of 3 inputs exceed 256 tokens"):
        minilm.encode(["x " * 300, "a dog", "a bird"], "text")
    # the long text has a pass of its own, the short ones share one; the cut is read off the fast
    # tokenizer's own overflow, with no second pass
    assert calls == [1, 2]


def test_length_batches_keep_short_items_away_from_long_ones():
    from zoo.base import length_batches

    # one long text among short ones gets a pass of its own; similar lengths share batches up to batch_size
    assert length_batches([1000, 60, 50, 40, 30, 20], 32) == [(0, 1), (1, 6)]
    assert length_batches([100] * 70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert length_batches([300, 200, 150, 140, 100, 30], 3) == [(0, 3), (3, 6)]
    assert length_batches([], 4) == []


def test_mixed_lengths_embed_as_they_do_alone(minilm):
    texts = ["word " * 300, "a cat", "the dog sat", "short", "word " * 280]
    alone = np.concatenate([minilm.encode([t], "text") for t in texts])
    np.testing.assert_allclose(minilm.encode(texts, "text"), alone, atol=1e-5)
