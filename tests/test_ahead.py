"""Tokenization off the critical path (zoo.ahead): a call's next text batch is tokenized on a thread while the
current one runs, with the same vectors and truncation warnings as tokenizing in line."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import zoo
from zoo.data.sentences import mixed_sentences

TEXTS = mixed_sentences(120) + ["word " * 400] * 3  # 7 over MiniLM's 256 tokens: 2 batches of 4


@pytest.fixture
def spied(monkeypatch):
    """A fresh MiniLM on torch whose tokenizer records the thread of each call and its first text."""
    model = zoo.create("sentence-transformers/all-MiniLM-L6-v2", device="cpu", runtime="torch")
    calls: list[tuple[str, str]] = []
    tokenizer = model.tokenizer
    real = type(tokenizer).__call__

    def call(self, *args, **kwargs):
        first = args[0][0] if args and isinstance(args[0], list) and args[0] else ""
        if kwargs.get("padding"):  # the padded batch the model reads (not token counting)
            calls.append((threading.current_thread().name, first))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", call)
    return model, calls


def encode(model, texts, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.encode(texts, "text", **{"batch_size": 4, **kw})
    return out, sorted(str(w.message) for w in caught if "truncated" in str(w.message))


def test_next_batches_are_tokenized_on_a_thread_with_the_same_vectors_and_warnings(spied):
    model, calls = spied
    assert model.tokenize_ahead is None  # on the CPU: off
    inline, warned = encode(model, TEXTS, prompt_name=None)
    assert calls and all(name == threading.current_thread().name for name, _ in calls)
    batches = len(calls)
    assert batches >= 31 and warned == ["7 of 123 inputs exceed 256 tokens and were truncated"]
    calls.clear()
    model.tokenize_ahead = True
    ahead, warned_ahead = encode(model, TEXTS, prompt_name=None)
    np.testing.assert_array_equal(ahead, inline)
    assert warned_ahead == warned  # every batch's cuts, each counted once
    names = sorted(name for name, _ in calls)  # the first batch in line, every later one ahead
    assert len(names) == batches and names.count(threading.current_thread().name) == 1
    assert sum(name.startswith("zoo-ahead") for name in names) == batches - 1
    for t in threading.enumerate():  # the call's thread ends with it
        if t.name.startswith("zoo-ahead"):
            t.join(5)
            assert not t.is_alive()


def test_a_prepared_batch_that_fails_fails_its_call_and_the_next_call_is_whole(spied, monkeypatch):
    """An error while preparing a batch ahead is raised by the call at that batch; nothing it prepared
    leaks into the next call, which gives the in-line vectors."""
    model, calls = spied
    model.tokenize_ahead = True
    want, _ = encode(model, TEXTS[:60])
    real = model._tokenized_on

    def broken(texts, prompt, device):
        if threading.current_thread().name.startswith("zoo-ahead"):
            raise RuntimeError("tokenizer broke")
        return real(texts, prompt, device)

    monkeypatch.setattr(model, "_tokenized_on", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        model.encode(TEXTS[:60], "text", batch_size=16)
    monkeypatch.setattr(model, "_tokenized_on", real)
    got, _ = encode(model, TEXTS[:60])
    np.testing.assert_array_equal(got, want)


def test_calls_from_two_threads_keep_their_own_batches(spied):
    """Prepared inputs belong to the call that asked for them: two threads encoding different texts at once
    each get their own vectors."""
    model, _ = spied
    a_texts, b_texts = TEXTS[:64], [t.upper() for t in TEXTS[:64]]
    model.tokenize_ahead = False
    want = {0: encode(model, a_texts)[0], 1: encode(model, b_texts)[0]}
    model.tokenize_ahead = True
    got: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda k=k, t=t: got.__setitem__(k, model.encode(t, "text", batch_size=8)))
               for k, t in enumerate((a_texts, b_texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in (0, 1):
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)


def test_a_call_with_a_progress_bar_over_its_batches_prepares_ahead_too(spied):
    """``embed_decoded`` (a served group's one call) shows a bar over its batches when asked or from 1,000
    items; the batches are still prepared ahead, and the bar counts every batch."""
    from zoo.spec import Modality

    model, calls = spied
    model.tokenize_ahead = True
    got = model.embed_decoded(TEXTS[:60], Modality.TEXT, model.options(), batch_size=8, show_progress=True)
    names = [name for name, _ in calls]
    assert len(names) >= 8 and sum(name.startswith("zoo-ahead") for name in names) == len(names) - 1
    model.tokenize_ahead = False
    np.testing.assert_allclose(got, model.embed_decoded(TEXTS[:60], Modality.TEXT, model.options(), batch_size=8),
                               atol=1e-6)


def test_a_call_holds_at_most_two_prepared_batches_and_only_families_that_take_them_prepare():
    """A prepared batch no forward took is dropped once the next after it is asked for, so a call never holds
    more than two; families whose forward() tokenizes otherwise (ColBERT, CLIP) are never asked to prepare."""
    from zoo import ahead
    from zoo.families.clip import HFClipEmbedder
    from zoo.families.colbert import ColbertEmbedder
    from zoo.families.common import TokenizedText

    started = threading.Event()
    with ahead.call() as call:
        for k in range(5):
            ahead.submit(k, lambda k=k: started.wait(5) and k)
            assert len(call.ready) <= 2
        assert list(call.ready) == [3, 4]
        started.set()
        assert ahead.take(4) == 4 and ahead.take(0) is None
    assert ahead.take(3) is None  # outside the call: nothing
    assert not TokenizedText.tokenized_in_forward
    assert not ColbertEmbedder.tokenized_in_forward and not HFClipEmbedder.tokenized_in_forward
