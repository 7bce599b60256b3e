"""Long texts in-process (zoo.long): truncate end/start/none, tokenize/detokenize, chunked embedding and late
chunking, each checked against transformers run by hand on the same weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import zoo
from zoo.errors import InputError, InvalidArgumentError
from zoo.long import chunks_from_arrays, chunks_to_arrays, too_long_counts, too_long_message, windows

from .tiny_models import assert_parity, make_tiny_text_folder

LONG = " ".join(f"item {i} says something {'new' if i % 3 else 'old'} about topic {i % 7}." for i in range(60))
MID = "héllo wörld, a text in between " * 3  # within the window
TEXTS = ["a short one", LONG, MID * 3, LONG[::-1]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random BERT, mean pooling, a window of 64 tokens and a query prompt."""
    return make_tiny_text_folder(tmp_path_factory.mktemp("tiny-long"), pooling="mean",
                                 prompts={"query": "query: ", "document": ""})


@pytest.fixture(scope="module")
def model(folder):
    return zoo.create(str(folder), device="cpu")


@pytest.fixture(scope="module")
def reference(folder):
    """transformers' tokenizer and model on the same folder."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def states(reference, text: str):
    """The reference's last hidden states ``[T, H]`` and offsets of ``text`` (whole, untruncated)."""
    import torch

    tok, net = reference
    enc = tok(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        return net(**enc).last_hidden_state[0].numpy(), offsets


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_truncate_is_checked_and_takes_cohere_spellings(model):
    assert model.options(truncate="END").truncate == "end"
    assert model.options(truncate="Start").truncate == "start"
    assert model.options(truncate="NONE").truncate == "none"
    with pytest.raises(InvalidArgumentError, match="truncate must be one of"):
        model.options(truncate="middle")
    with pytest.raises(InvalidArgumentError, match="chunk_tokens applies with long='chunk' only"):
        model.options(chunk_tokens=8)
    with pytest.raises(InvalidArgumentError, match="long must be one of"):
        model.options(long="mean")


def test_truncate_none_names_item_count_and_limit(model, reference):
    count = len(reference[0](LONG)["input_ids"])
    with pytest.raises(InputError) as err:
        model.encode(TEXTS, "text", truncate="none")
    assert err.value.index == 1 and too_long_counts(str(err.value)) == (count, 64)
    rows = model.encode_per_item(TEXTS, "text", truncate="none")
    assert [isinstance(r, InputError) for r in rows] == [False, True, True, True]
    np.testing.assert_allclose(rows[0], model.encode(TEXTS[:1], "text")[0], atol=1e-6)
    assert too_long_counts(too_long_message(7, 5, at_least=True)) == (7, 5)


def test_every_call_says_which_items_were_cut(model):
    for truncate in ("end", "start"):
        done = model.encode_items(TEXTS, zoo.Modality.TEXT, model.options(truncate=truncate), tokens=True)
        assert done.truncated == [False, True, True, True]
        assert done.tokens[1] == 64
    done = model.encode_items(TEXTS, zoo.Modality.TEXT, model.options(truncate="none"))
    assert done.good == [0] and done.truncated == [False] and set(done.errors) == {1, 2, 3}


def test_truncate_start_equals_the_model_on_the_kept_tokens(model, reference):
    """Keeping the last tokens (prompt and special tokens stay) equals running transformers on those ids."""
    import torch

    tok, net = reference
    for prompt_name in (None, "query"):
        kept = model.tokenize(TEXTS, prompt_name=prompt_name, truncate="start")
        assert all(56 <= k.count <= 64 and k.truncated for k in kept[1:])  # cut where a word starts
        prompt = "query: " if prompt_name else ""
        whole = tok(prompt + LONG)["input_ids"]
        n = len(kept[1].ids) - len(tok(prompt)["input_ids"])  # the text tokens kept
        assert kept[1].ids[-n - 1:] == whole[-n - 1:]  # exactly the whole text's last tokens
        head = tok(prompt)["input_ids"][:-1]  # [CLS] and the prompt's tokens stay in front
        assert kept[1].ids[:len(head)] == head
        want = []
        for k in kept:
            with torch.inference_mode():
                h = net(input_ids=torch.tensor([k.ids])).last_hidden_state[0].numpy()
            want.append(h.mean(0))
        got = model.encode(TEXTS, "text", truncate="start", prompt_name=prompt_name)
        assert_parity(got, unit(want), what=f"truncate=start prompt={prompt_name}")
        assert not np.allclose(got[1], model.encode(TEXTS, "text", prompt_name=prompt_name)[1], atol=1e-3)


def test_truncate_start_cuts_between_words(model, reference):
    """A suffix cut inside a word would read as other tokens (``##34`` alone reads ``34``): the cut falls where
    a word starts, so the kept ids are exactly the whole text's last ids."""
    text = " ".join(f"word{i} is here" for i in range(40))
    whole = reference[0](text)["input_ids"]
    kept = model.tokenize([text], truncate="start")[0]
    assert 56 <= kept.count <= 64 and kept.ids[1:] == whole[-(kept.count - 1):]
    assert text[kept.offsets[1][0] - 1] == " "


def test_tokenize_equals_the_tokenizer_and_offsets_point_into_the_text(model, reference):
    tok = reference[0]
    for got, text in zip(model.tokenize(TEXTS), TEXTS):
        enc = tok(text, truncation=True, max_length=64, return_offsets_mapping=True)
        assert got.ids == enc["input_ids"] and got.tokens == tok.convert_ids_to_tokens(enc["input_ids"])
        assert got.offsets[0] is None and got.offsets[-1] is None  # [CLS], [SEP]
        assert [list(o) for o in got.offsets[1:-1]] == [list(o) for o in enc["offset_mapping"][1:-1]]
    q = model.tokenize(["what is it"], prompt_name="query")[0]
    assert q.ids == tok("query: what is it")["input_ids"]
    assert [q.offsets[i] for i in range(len(q.ids)) if q.offsets[i]] == [(0, 4), (5, 7), (8, 10)]  # prompt: None
    assert model.detokenize([q.ids]) == ["query : what is it"]
    with pytest.raises(InputError, match="token ids"):
        model.detokenize([[1, -2]])
    s = model.tokenize([LONG], truncate="start")[0]
    a, b = s.offsets[1]
    assert LONG[a:b] == s.tokens[1].removeprefix("##") and b > len(LONG) - 400  # offsets into the sent text


def test_chunked_mean_equals_windows_embedded_by_hand(model, reference):
    tok = reference[0]
    enc = tok(LONG, add_special_tokens=False, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    got = model.encode([LONG, "a short one"], "text", long="chunk", chunk_tokens=20, overlap=5)
    parts, weights = [], []
    starts = [j == 0 or spans[j][0] > spans[j - 1][1] for j in range(len(spans))]  # whitespace before
    plan = windows(len(spans), 20, 5, starts)
    assert all(starts[a] and (b == len(spans) or starts[b]) for a, b in plan)  # no word cut in two
    assert any(b - a < 20 for a, b in plan[:-1]) and all(b - a <= 20 for a, b in plan)
    for a, b in plan:
        parts.append(LONG[spans[a][0]:spans[b - 1][1]])
        weights.append(b - a)
    raw = model.encode(parts, "text", normalize=False).astype(np.float64)
    want = unit((np.array(weights)[:, None] * raw).sum(0) / sum(weights))
    short = model.encode(["a short one"], "text")[0]
    assert_parity(got, np.stack([want, short]), what="chunked mean")
    assert len(parts) > 5
    assert np.dot(got[0], model.encode([LONG], "text")[0]) < 0.9999  # not the truncated vector


def test_late_chunks_equal_pooling_over_hidden_states(model, reference):
    """A text within the window: each chunk is the mean of its tokens' states from one pass over the text."""
    text = MID
    hidden, offsets = states(reference, text)
    chunks = model.encode_chunks([text, "a short one"], chunk_tokens=5)
    ranges = windows(len(offsets) - 2, 5, 0)
    want = [hidden[1 + a:1 + b].mean(0) for a, b in ranges]
    assert chunks[0].spans == [(offsets[1 + a][0], offsets[b][1]) for a, b in ranges]
    assert_parity(chunks[0].vectors, unit(want), what="late chunks")
    alone = model.encode([text[s:e] for s, e in chunks[0].spans], "text")
    assert not np.allclose(chunks[0].vectors, alone, atol=1e-3)  # context changed them
    by_span = model.encode_chunks([text], spans=[chunks[0].spans[:2]])[0]
    np.testing.assert_allclose(by_span.vectors, chunks[0].vectors[:2], atol=1e-5)
    vectors, lengths, spans = chunks_to_arrays(chunks)
    back = chunks_from_arrays(vectors, lengths, spans)
    assert [c.spans for c in back] == [c.spans for c in chunks]


def test_late_chunks_past_the_window_come_from_a_macro_window_with_context(model, reference):
    """A text over the window: each chunk equals pooling over the states of the window (read alone by
    transformers) that holds it with the most context on both sides."""
    import zoo.long

    text = " ".join(zoo.long.__doc__.split())  # varied words: a random model tells its chunks apart
    tok = reference[0]
    spans = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    room = 62
    starts = [j == 0 or spans[j][0] > spans[j - 1][1] for j in range(len(spans))]
    wins = [(spans[a][0], spans[b - 1][1]) for a, b in windows(len(spans), room, room // 4, starts)]
    assert len(wins) >= 3
    chunks = model.encode_chunks([text], chunk_tokens=8)[0]
    want = []
    for s, e in chunks.spans:
        k = max((k for k, (ws, we) in enumerate(wins) if ws <= s and e <= we),
                key=lambda k: min(s - wins[k][0], wins[k][1] - e))
        ws, we = wins[k]
        hidden, offsets = states(reference, text[ws:we])
        rows = [j for j, (a, b) in enumerate(offsets) if b > a and a + ws < e and b + ws > s]
        want.append(hidden[rows].mean(0))
    assert_parity(chunks.vectors, unit(want), what="macro-window late chunks")
    with pytest.raises(InvalidArgumentError, match="exactly one of"):
        model.encode_chunks([LONG])
    with pytest.raises(InvalidArgumentError, match="0 <= start < end"):
        model.encode_chunks([LONG], spans=[[(5, 2)]])
    with pytest.raises(InvalidArgumentError, match="0 <= start < end"):
        model.encode_chunks([LONG], spans=[[("0", 5)]])
    with pytest.raises(InputError, match="ends past the text"):
        model.encode_chunks(["short"], spans=[[(0, 50)]])


def test_families_without_offsets_refuse_clearly(tmp_path):
    from .tiny_models import make_open_clip

    clip = zoo.create(str(make_open_clip(tmp_path / "oc")), device="cpu")
    with pytest.raises(InvalidArgumentError, match="does not expose its tokenizer"):
        clip.tokenize(["a cat"])
    with pytest.raises(InvalidArgumentError, match="does not expose its tokenizer"):
        clip.encode(["a cat"], "text", truncate="none")
    with pytest.raises(InvalidArgumentError, match="applies to text inputs"):
        clip.options(truncate="start") and clip._call("image", truncate="start")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = clip.encode_items(["a cat", "word " * 200], zoo.Modality.TEXT, clip.options(), tokens=True)
    assert done.truncated == [False, True]


def test_long_inputs_are_bounded(model):
    """Nothing a caller sends makes the work grow past the text: overlap is at most half a window, a text gives at
    most MAX_CHUNKS chunks, long='chunk' reads the whole text so truncate does not apply to it."""
    from zoo.long import MAX_CHUNKS

    for size, overlap in ((64, 63), (10, 9), (7, 100)):
        plan = windows(1000, size, overlap)
        assert len(plan) <= 2 * 1000 // size + 1 and plan[-1][1] == 1000
        assert all(b - a <= size for a, b in plan) and all(a2 > a1 for (a1, _), (a2, _) in zip(plan, plan[1:]))
    text = "word " * (MAX_CHUNKS + 10)
    with pytest.raises(InputError, match="chunks of 1 tokens; at most"):
        model.encode_chunks([text], chunk_tokens=1)
    with pytest.raises(InvalidArgumentError, match="truncate='start' does not apply"):
        model.encode([text], "text", long="chunk", truncate="start")


def test_chunking_and_late_chunks_report_what_they_read(model):
    """long='chunk' with chunk_tokens splits every text by it, short ones too (whether a text is split never
    depends on its length in characters); late chunking says what it read and whether it cut."""
    from zoo import long as lg

    opts = model.options(long="chunk", chunk_tokens=4)
    plan = lg.chunk_windows(model, ["one two three four five six seven eight nine", "one two"], opts)
    assert [len(p) for p in plan] == [3, 1] and [w for w, _ in plan[0]][0] == "one two three four"
    got = model.encode_chunks([MID, "a short one"], chunk_tokens=8)
    assert [c.tokens for c in got] == [len(t.ids) for t in model.tokenize([MID, "a short one"])]
    assert not any(c.truncated for c in got)
    over = "word " * 100 + " " * lg.MAX_LONG_CHARS + "the cut tail"  # spaces: no tokens to pay for
    cut = model.encode_chunks([over], chunk_tokens=8)[0]
    assert cut.truncated and cut.tokens == 102 and cut.spans[-1][1] <= lg.MAX_LONG_CHARS


def test_word_starts_see_the_leading_space_of_byte_level_tokens():
    """Byte-level BPE (Qwen, KaLM) keeps the space in the token that follows it: that token begins a word."""
    from zoo.long import Tokens, word_starts

    text = "hello world again"
    bpe = Tokens([1, 2, 3], ["hello", "Ġworld", "Ġagain"], [(0, 5), (5, 11), (11, 17)])
    bert = Tokens([1, 2, 3], ["hello", "world", "again"], [(0, 5), (6, 11), (12, 17)])
    assert word_starts(bpe, [0, 1, 2], text) == word_starts(bert, [0, 1, 2], text) == [True, True, True]
    glued = Tokens([1, 2], ["hel", "##lo"], [(0, 3), (3, 5)])
    assert word_starts(glued, [0, 1], "hello") == [True, False]


def test_a_text_cut_by_characters_keeps_its_end(model):
    """truncate='start' on a text longer than the characters the model ever reads, with no space to cut at."""
    text = "0123456789abcdef" * 320
    kept = model.tokenize([text], truncate="start")[0]
    assert kept.truncated and kept.count <= 64 and kept.offsets[-2][1] == len(text)
    assert model.encode([text], "text", truncate="start").shape == (1, 32)


def test_colbert_checks_the_window_of_the_side_it_reads(tmp_path):
    """A ColBERT query is cut at the query's length, not the model's: truncate='none' refuses what would be cut."""
    from .tiny_models import make_pylate_colbert

    m = zoo.create(str(make_pylate_colbert(tmp_path / "colbert")), device="cpu")
    query = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    cap = m.text_limit(m.spec.prompts["query"])
    assert cap < m.text_limit(m.spec.prompts["document"])
    with pytest.raises(InputError, match=f"reads at most {cap}"):
        m.encode([query], "text", prompt_name="query", truncate="none")
    assert m.tokenize([query], prompt_name="query")[0].count == cap
    m.encode([query], "text", prompt_name="document", truncate="none")  # the document side holds it
