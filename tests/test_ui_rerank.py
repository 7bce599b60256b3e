"""The demo's "rerank the top N" toggle: the first stage's top N re-scored and re-ordered by the operator's
``--reranker`` or, for text, the listwise reranker of the search's text model; scores before and after shown;
"no reranker applies" said, not failed; every model call through the demo's backend (in-process or Triton)."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

import zoo
from serving.server import free_ports
from ui import corpus as C
from ui.app import Searcher, build_app
from ui.backend import LocalBackend, TritonBackend
from zoo.data import shapes as S
from zoo.defaults import default_model
from zoo.spec import EmbedderSpec, Modality

TEXT = default_model("text")  # MiniLM: the weights that ship
ALIGNED = default_model("image")
REVERSER = "test/reverser"
QUERY = "a big red circle"
CAPTIONS = [f"a {size} {colour} {shape}" for size in ("small", "big") for colour in ("red", "blue", "green")
            for shape in ("circle", "square")] + ["the stock market fell today", "a recipe for bread"]


class Reverser:
    """A cross-encoder whose scores rise with a document's position: it reverses whatever order it is given."""

    spec = EmbedderSpec(REVERSER, "cross-encoder", (Modality.TEXT,), 1, "mit", "test", outputs=("score",))
    weights_fingerprint = ""

    def __init__(self) -> None:
        self.pairs: list = []

    def encode(self, inputs, modality, **_):
        return self.predict(inputs)

    def predict(self, pairs, **_) -> np.ndarray:
        self.pairs += list(pairs)
        return np.arange(len(pairs), dtype=np.float32) / 10


class Logged:
    """A backend's embedder that logs what it embeds."""

    def __init__(self, inner, log: list) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode(self, inputs, modality, **controls):
        self.log.append((self.inner.spec.name, list(inputs), type(self.inner).__name__))
        return self.inner.encode(inputs, modality, **controls)


class Recording:
    """A backend that adds the reverser to another's models and logs what its embedders embed."""

    def __init__(self, inner) -> None:
        self.inner, self.kind, self.reverser, self.embedded = inner, inner.kind, Reverser(), []

    def models(self) -> list[str]:
        return [*self.inner.models(), REVERSER]

    def spec(self, name: str) -> EmbedderSpec:
        return self.reverser.spec if name == REVERSER else self.inner.spec(name)

    def embedder(self, name: str):
        return self.reverser if name == REVERSER else Logged(self.inner.embedder(name), self.embedded)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Captions, two off-topic texts and six generated scenes."""
    tmp = tmp_path_factory.mktemp("rerank")
    corpus = C.Corpus(tmp / "corpus")
    for text in CAPTIONS:
        corpus.add_text(text)
    rng = np.random.default_rng(0)
    scenes = []
    for n in range(6):
        scenes.append(tmp / f"scene{n}.png")
        S.render(S.sample_scene(rng), rng).save(scenes[-1])
    added, errors = corpus.add_files(scenes)
    assert len(added) == 6 and not errors
    return corpus


@pytest.fixture(scope="module")
def local():
    return LocalBackend("cpu")


@pytest.fixture
def listwise(monkeypatch):
    """``zoo.listwise`` as it is, or where the module is not there yet a stand-in with its signature (an
    E²Rank-style pseudo-query: the query's vector plus the mean of the documents' vectors)."""
    try:
        from zoo import listwise as real

        return real
    except ImportError:
        pass

    def rank(model, query, documents, *, top_k=None, return_documents=False, feedback=3, batch_size=None):
        q = model.encode([query], "text")[0]
        d = model.encode(list(documents), "text")
        pseudo = q + d[:feedback].mean(0)
        return zoo.ranking.ranked(d @ (pseudo / np.linalg.norm(pseudo)), documents, top_k, return_documents)

    standin = types.ModuleType("zoo.listwise")
    standin.rank = rank
    monkeypatch.setitem(sys.modules, "zoo.listwise", standin)
    monkeypatch.setattr(zoo, "listwise", standin, raising=False)
    return standin


def texts_of(corpus, results) -> list[str]:
    return [corpus.by_id[r["id"]].text for r in results]


def test_a_cross_encoder_is_no_search_model(corpus, local, tmp_path):
    """A cross-encoder the backend has reranks only: the model menus never offer it (indexing the corpus with a
    model that reads pairs would fail on every item)."""
    from ui.backend import supporting

    backend = Recording(local)
    assert REVERSER in backend.models() and TEXT in supporting(backend, (Modality.TEXT, Modality.TEXT))
    assert REVERSER not in supporting(backend, (Modality.TEXT, Modality.TEXT))
    before = list(corpus.items)
    with pytest.raises(zoo.InvalidArgumentError, match="cannot index the corpus"):
        Searcher(backend, corpus, tmp_path).search(REVERSER, QUERY, Modality.TEXT, "text", 4, 0, "float32")
    assert corpus.items == before and not backend.reverser.pairs


def test_the_toggle_reorders_the_top_n_and_shows_both_scores(corpus, local, tmp_path):
    """A reranker that reverses its input: the top N come back reversed with the reranker's scores, each
    with its first-stage score and rank; the results beyond N follow as the first stage had them."""
    backend = Recording(local)
    searcher = Searcher(backend, corpus, tmp_path, reranker=REVERSER)
    _, first, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32")
    _, second, latency = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=5)
    assert [r["id"] for r in second[:5]] == [r["id"] for r in first[:5]][::-1]
    assert [r["id"] for r in second[5:]] == [r["id"] for r in first[5:]]
    assert [r["rank"] for r in second] == list(range(1, 9))
    assert [r["rank_before"] for r in second] == [5, 4, 3, 2, 1, 6, 7, 8]
    assert [r["score"] for r in second[:5]] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert [r["score_before"] for r in second] == [first[r["rank_before"] - 1]["score"] for r in second]
    assert [r["reranked"] for r in second] == [True] * 5 + [False] * 3
    assert [p[1] for p in backend.reverser.pairs] == texts_of(corpus, first[:5])  # documents, in first-stage order
    assert all(p[0] == QUERY for p in backend.reverser.pairs)
    assert f"reranked the top 5 by {REVERSER}" in latency
    _, off, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=0)
    assert off == first and "score_before" not in off[0]  # the toggle off: the first stage, as before
    _, deep, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 3, 0, "float32", rerank_n=6)
    assert [r["rank_before"] for r in deep] == [6, 5, 4]  # N beyond k: the first stage fetched N to rerank
    for bad in (51, -1, 2.5, float("nan"), float("inf"), None, "5", True):
        with pytest.raises(zoo.InvalidArgumentError, match="rerank_n must be a whole number in 1..50"):
            searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=bad)
    _, floated, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=5.0)
    assert floated == second  # a slider's float


def test_a_cross_encoder_reranker_gives_its_own_scores(corpus, local, tmp_path):
    """``--reranker`` a (tiny) cross-encoder folder: the shown scores are its scores of the top N."""
    from .tiny_models import make_cross_encoder

    folder = str(make_cross_encoder(tmp_path / "ce"))
    searcher = Searcher(local, corpus, tmp_path / "index", reranker=folder)
    _, first, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 6, 0, "float32")
    _, got, latency = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 6, 0, "float32", rerank_n=6)
    want = zoo.rerank(zoo.create(folder, device="cpu"), QUERY, texts_of(corpus, first))
    assert [r["id"] for r in got] == [first[w["corpus_id"]]["id"] for w in want]
    assert [r["score"] for r in got] == pytest.approx([w["score"] for w in want], abs=1e-4)
    assert [r["id"] for r in got] != [r["id"] for r in first], "the cross-encoder kept the first-stage order"
    assert f"by {folder}" in latency


def test_default_listwise_reranker_of_the_text_model(corpus, local, listwise, tmp_path):
    """No ``--reranker``: text documents of a text query are reranked by the listwise reranker built from the
    search's model (MiniLM), with its scores."""
    searcher = Searcher(local, corpus, tmp_path)
    _, first, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32")
    _, got, latency = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=8)
    want = listwise.rank(local.embedder(TEXT), QUERY, texts_of(corpus, first))
    assert [r["id"] for r in got] == [first[w["corpus_id"]]["id"] for w in want]
    assert [r["score"] for r in got] == pytest.approx([w["score"] for w in want], abs=1e-4)
    assert [r["score_before"] for r in got] == [first[w["corpus_id"]]["score"] for w in want]
    assert not np.allclose([r["score"] for r in got], [r["score_before"] for r in got], atol=1e-3)
    assert f"reranked the top 8 by listwise ({TEXT})" in latency
    _, by_aligned, latency = searcher.search(ALIGNED, QUERY, Modality.TEXT, "text", 8, 0, "float32", rerank_n=8)
    assert f"by listwise ({TEXT})" in latency  # a multimodal search model: the listwise is the text model's
    assert "score_before" in by_aligned[0]


def test_no_reranker_applies_says_so(corpus, local, tmp_path):
    """Image documents without a ``--reranker`` that embeds images: the first stage's results, and why."""
    from .tiny_models import make_cross_encoder

    plain = Searcher(local, corpus, tmp_path / "a")
    _, first, _ = plain.search(ALIGNED, QUERY, Modality.TEXT, "image", 4, 0, "float32")
    _, got, latency = plain.search(ALIGNED, QUERY, Modality.TEXT, "image", 4, 0, "float32", rerank_n=4)
    assert got == first
    assert "not reranked: no reranker applies to image documents of a text query" in latency
    assert "started without --reranker" in latency
    folder = str(make_cross_encoder(tmp_path / "ce"))
    crossed = Searcher(local, corpus, tmp_path / "b", reranker=folder)
    _, got, latency = crossed.search(ALIGNED, QUERY, Modality.TEXT, "image", 4, 0, "float32", rerank_n=4)
    assert got == first and f"--reranker {folder} reads no image documents" in latency
    aligned = Searcher(local, corpus, tmp_path / "c", reranker=ALIGNED)  # it embeds images: it applies
    gallery, got, latency = aligned.search(ALIGNED, QUERY, Modality.TEXT, "image", 4, 0, "float32", rerank_n=4)
    assert "score_before" in got[0] and f"by {ALIGNED}" in latency
    assert gallery[0][1].startswith(f"{got[0]['score']:.3f} (was {got[0]['score_before']:.3f}, #")


def test_reranker_calls_go_through_the_backend(corpus, local, listwise, tmp_path, monkeypatch):
    """The reranker's model comes from the demo's backend, never loaded beside it."""
    backend = Recording(local)
    searcher = Searcher(backend, corpus, tmp_path)
    _, first, _ = searcher.search(TEXT, QUERY, Modality.TEXT, "text", 4, 0, "float32")  # indexed
    monkeypatch.setattr(zoo, "create", lambda *a, **k: pytest.fail("a model loaded beside the backend"))
    backend.embedded.clear()
    searcher.search(TEXT, QUERY, Modality.TEXT, "text", 4, 0, "float32", rerank_n=4)
    embedded = {text for name, inputs, _ in backend.embedded if name == TEXT for text in inputs}
    assert set(texts_of(corpus, first)) <= embedded, backend.embedded  # the documents, by the backend's model


def test_unknown_reranker_stops_the_start(tmp_path):
    from ui.cli import build

    with pytest.raises(zoo.InvalidArgumentError, match="--reranker no/such-model: unknown model"):
        build("local", "", tmp_path, reranker="no/such-model")
    assert not (tmp_path / "corpus").exists()  # said before the corpus is built


@pytest.fixture(scope="module")
def page_url(corpus, local, tmp_path_factory):
    """The page, with the reverser as ``--reranker``, on a free port."""
    demo = build_app(Searcher(Recording(local), corpus, tmp_path_factory.mktemp("page"), reranker=REVERSER))
    config = demo.get_config_file()
    toggle = next(c for c in config["components"] if c["props"].get("elem_id") == "rerank")
    assert toggle["props"]["label"] == "rerank the top N" and REVERSER in toggle["props"]["info"]
    port = free_ports().grpc
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(corpus.root)])
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_endpoint_arguments_reach_the_reranker(page_url):
    """``rerank`` and ``rerank_n`` of a named endpoint: reversed with both scores; on image documents the first
    stage's results, and the latency line says why."""
    from gradio_client import Client

    client = Client(page_url, verbose=False)
    _, first, _ = client.predict(QUERY, "text", api_name="/search_text")
    _, got, latency = client.predict(QUERY, "text", rerank=True, rerank_n=3, api_name="/search_text")
    assert [r["id"] for r in got[:3]] == [r["id"] for r in first[:3]][::-1]
    assert [(r["rank_before"], r["score_before"]) for r in got[:3]] == [(3, first[2]["score"]),
                                                                       (2, first[1]["score"]),
                                                                       (1, first[0]["score"])]
    assert "reranked the top 3" in latency
    gallery, got, latency = client.predict(QUERY, "image", rerank=True, rerank_n=3, api_name="/search_text")
    assert "not reranked: no reranker applies to image documents" in latency and "score_before" not in got[0]
    assert len(gallery) == len(got)


def test_real_browser_toggle(page_url):
    """Headless Chromium: the toggle on the page, then a text → text search; the results show the scores and
    ranks before (all 14 texts reranked at the default N of 20, so the first was the 14th)."""
    from playwright.sync_api import sync_playwright

    from .test_ui import CHROMIUM

    assert CHROMIUM, "chromium is not installed: ./scripts/test.sh installs it (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(page_url, timeout=60_000)
        assert "Reranker:" in page.locator("#rerank").inner_text()
        page.locator('input[type=radio][value="text"]:visible').first.check()
        page.locator("#rerank input[type=checkbox]").check()
        page.locator("#text-query textarea").fill(QUERY)
        page.locator("#btn-search_text").click()
        results = page.locator("#results-json")
        results.get_by_text("rank_before").first.wait_for(timeout=60_000)
        first = re.search(r"rank_before\W+(\d+)", results.inner_text())  # the first result's
        assert first and first[1] == "14", results.inner_text()[:400]
        assert "reranked the top 14" in page.locator("#latency").inner_text()
        browser.close()


def test_served_rerank_equals_local(triton, corpus, local, listwise, tmp_path):
    """On Triton (the main command's backend) the listwise reranker and a ``--reranker`` embed through the served
    models, and rank as in-process."""
    server, _ = triton
    served = Recording(TritonBackend(server.grpc_url, server.admin_headers))
    for reranker, target in ((None, "text"), (ALIGNED, "image")):
        remote = Searcher(served, corpus, tmp_path / f"served-{target}", reranker=reranker)
        here = Searcher(local, corpus, tmp_path / f"local-{target}", reranker=reranker)
        model = TEXT if target == "text" else ALIGNED
        _, first, _ = remote.search(model, QUERY, Modality.TEXT, target, 5, 0, "float32")
        served.embedded.clear()
        _, got, latency = remote.search(model, QUERY, Modality.TEXT, target, 5, 0, "float32", rerank_n=5)
        _, want, _ = here.search(model, QUERY, Modality.TEXT, target, 5, 0, "float32", rerank_n=5)
        assert "triton backend" in latency and "reranked the top 5" in latency
        assert [r["id"] for r in got] == [r["id"] for r in want], (target, got, want)
        assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=2e-3)
        documents = [corpus.by_id[r["id"]].text or str(corpus.file(corpus.by_id[r["id"]])) for r in first]
        embedded = {str(x) for _, inputs, _ in served.embedded for x in inputs}
        assert set(documents) <= embedded, served.embedded  # the reranker's documents went to the server
        assert {how for *_, how in served.embedded} == {"TritonEmbedder"}
