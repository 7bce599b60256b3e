"""The demo: corpus, FAISS index, named API endpoints, file-serving limits, and a real browser."""

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import zoo
from serving.server import free_ports
from ui import corpus as C
from ui.app import Searcher, build_app
from ui.backend import LocalBackend, TritonBackend
from ui.default_corpus import build_default
from ui.layouts import ModelIndex
from zoo.data import shapes as S
from zoo.defaults import default_model

ALIGNED = default_model("image")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_default(tmp_path_factory.mktemp("data") / "corpus", scenes=36, spoken=2)


@pytest.fixture(scope="module")
def searcher(corpus, tmp_path_factory):
    return Searcher(LocalBackend("cpu"), corpus, tmp_path_factory.mktemp("index"))


def test_default_corpus_is_offline_and_varied(corpus):
    mods = {i.modality for i in corpus.items}
    assert mods == {"text", "image", "audio", "video"}
    labels = [i.label for i in corpus.items]
    assert "photo: astronaut" in labels and "photo: chelsea" in labels  # scikit-image's own photos
    assert any(lbl.startswith("sound: ") for lbl in labels)  # pygame's shipped sounds
    assert any(lbl.startswith("spoken: ") for lbl in labels)  # espeak-ng spoken captions
    assert "clip: a red circle moving" in labels  # generated video clips
    assert all(corpus.file(i).is_file() for i in corpus.items if i.path)
    assert C.Corpus(corpus.root).items == corpus.items  # manifest reloads identically


def test_upload_limits_and_bad_files(tmp_path, monkeypatch):
    corpus = C.Corpus(tmp_path / "c")
    good = tmp_path / "ok.png"
    S.render(S.sample_scene(np.random.default_rng(0)), np.random.default_rng(0)).save(good)
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    weird = tmp_path / "notes.exe"
    weird.write_bytes(b"MZ")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    added, errors = corpus.add_files([good, corrupt, weird, empty])
    assert [i.label for i in added] == ["ok.png"]
    assert len(errors) == 3 and "bad.png" in errors[0] and "unsupported file type" in errors[1]
    monkeypatch.setattr(C, "MAX_UPLOAD_BYTES", 10)
    assert "limit" in corpus.add_files([good])[1][0]
    with pytest.raises(zoo.InvalidArgumentError, match="over the limit"):
        corpus.add_files([good] * (C.MAX_UPLOAD_FILES + 1))


def test_text_to_image_and_persistence(searcher, corpus):
    gallery, results, latency = searcher.search(ALIGNED, "a picture of a yellow star", zoo.Modality.TEXT,
                                                "image", 3, 0, "float32")
    assert "yellow star" in results[0]["label"] and results[0]["score"] >= results[1]["score"]
    assert gallery[0][0].startswith(str(corpus.root)) and "ms" in latency
    index = searcher.indexes[ALIGNED]
    reloaded = ModelIndex(index.folder, index.spec)  # what a restart sees: no re-embedding needed
    assert reloaded.ids == index.ids and np.array_equal(reloaded.vectors, index.vectors)
    assert reloaded.update(corpus, lambda *_: pytest.fail("re-embedded on restart")) == 0


@pytest.mark.parametrize("precision", ["float32", "int8", "float8", "ubinary", "binary"])
def test_dimensions_and_precision_views(searcher, corpus, precision):
    """The scores are those of the truncated, quantized view — recomputed here from the stored full vectors —
    and differ from the full-width float32 scores (so a search that ignored either control would fail)."""
    from ui.backend import full_vectors
    from zoo import postprocess as pp

    query = "a picture of a red circle"
    _, results, _ = searcher.search(ALIGNED, query, zoo.Modality.TEXT, "image", 5, 128, precision)
    assert len(results) == 5
    index = searcher.indexes[ALIGNED]
    q = full_vectors(searcher.backend.embedder(ALIGNED), [query], "text")
    images = [r for r, i in enumerate(index.ids) if corpus.by_id[i].modality == "image"]
    view = pp.postprocess(index.vectors[images], normalize_output=True, dimensions=128, precision=precision)
    want = pp.similarity(pp.postprocess(q, normalize_output=True, dimensions=128, precision=precision), view,
                         precision)[0]
    scores = np.array([r["score"] for r in results])
    assert np.allclose(scores, np.sort(want)[::-1][:5], atol=2e-3), (scores, np.sort(want)[::-1][:5])
    got_rows = [images.index(index.ids.index(r["id"])) for r in results]
    assert np.allclose(want[got_rows], scores, atol=2e-3)  # each hit carries its own score under the view
    full = (q @ index.vectors[[images[g] for g in got_rows]].T)[0]
    assert not np.allclose(scores, full, atol=2e-3), "dimensions/precision made no difference"


def test_approximate_index_agrees_on_top_hit(searcher, corpus, tmp_path):
    """The approximate (HNSW) view finds what exact search finds for queries it does not hold (captions embedded
    fresh: a stored vector finds itself in almost any index): the same top hit with the same score, and nearly the
    same top 5; and the view searched is the HNSW graph, not the exact index."""
    import faiss

    from ui.backend import full_vectors

    exact = searcher.indexes.get(ALIGNED) or searcher.index(ALIGNED)
    approx = ModelIndex(tmp_path, exact.spec, approximate=True)
    approx.ids, approx.vectors = list(exact.ids), exact.vectors.copy()
    captions = ["a small green star near the top", "two large purple triangles", "something round and blue",
                "a dog barking in the rain", "an orange square below a yellow circle", "a rocket in the sky"]
    queries = full_vectors(searcher.backend.embedder(ALIGNED), captions, "text")
    assert (queries @ exact.vectors.T).max() < 0.999  # held out: no query is (nearly) a stored vector
    overlaps = []
    for target in ("image", "text", "audio"):
        for caption, q in zip(captions, queries):
            want, got = exact.search(q, corpus, target, 5), approx.search(q, corpus, target, 5)
            assert len(got) == len(want) == 5
            assert got[0].item.id == want[0].item.id and abs(got[0].score - want[0].score) < 1e-5, (target, caption)
            overlaps.append(len({h.item.id for h in got} & {h.item.id for h in want}) / 5)
    assert np.mean(overlaps) >= 0.9, overlaps
    assert len(approx._views) == 3 and all(isinstance(v, faiss.IndexHNSWFlat) for v in approx._views.values())


@pytest.fixture(scope="module")
def app_url(searcher, corpus, tmp_path_factory):
    uploads = tmp_path_factory.mktemp("uploads")
    demo = build_app(searcher)
    port = free_ports().grpc
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(corpus.root), str(uploads)])
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_named_endpoints_with_the_query_alone(app_url, corpus):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/search_text", "/search_image", "/search_audio", "/search_video", "/search_interleaved"} <= names
    _, results, latency = client.predict("a picture of a blue square", api_name="/search_text")
    assert "blue square" in results[0]["label"] and "ms" in latency
    scene = next(i for i in corpus.items if i.modality == "image" and i.label.startswith("a picture of a green"))
    _, results, _ = client.predict(handle_file(str(corpus.file(scene))), api_name="/search_image")
    assert results[0]["id"] == scene.id and results[0]["score"] > 0.99, results[:3]
    spoken = next(i for i in corpus.items if i.modality == "audio" and i.label.startswith("spoken"))
    _, results, _ = client.predict(handle_file(str(corpus.file(spoken))), api_name="/search_audio")
    assert len(results) == 8
    _, results, _ = client.predict(handle_file(str(corpus.file(scene))), "", api_name="/search_interleaved")
    assert results[0]["id"] == scene.id
    from gradio_client.exceptions import AppError

    _, results, _ = client.predict("a red circle", "video", api_name="/search_text")
    assert results[0]["label"] == "clip: a red circle moving", results[:3]
    clip = next(i for i in corpus.items if i.label == "clip: a blue star moving")
    _, results, _ = client.predict(handle_file(str(corpus.file(clip))), api_name="/search_video")
    assert "blue star" in results[0]["label"] and results[0]["modality"] == "text", results[:3]
    with pytest.raises(AppError, match="'audio'.*(not in the list of choices|can search for)"):
        client.predict(handle_file(str(corpus.file(clip))), "audio", api_name="/search_video")
    with pytest.raises(AppError, match="outside 1..384"):
        client.predict("a cat", "image", None, 999, api_name="/search_text")


def test_only_corpus_and_uploads_are_served(app_url, corpus):
    item = next(i for i in corpus.items if i.path)
    ok = urllib.request.urlopen(f"{app_url}gradio_api/file={corpus.file(item)}", timeout=30)
    assert ok.status == 200
    for path in ("/etc/passwd", str(Path(__file__).resolve()), str(Path(zoo.__file__).resolve())):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{app_url}gradio_api/file={path}", timeout=30)
        assert err.value.code in (403, 404)


def test_triton_backend_matches_local(triton, searcher, corpus, tmp_path):
    """The same searches through the served model and in-process rank the same items with the same scores."""
    server, models = triton
    backend = TritonBackend(server.grpc_url, server.admin_headers)
    assert ALIGNED in backend.models()
    remote = Searcher(backend, corpus, tmp_path)
    for query, target, dims, precision in [("a picture of a yellow star", "image", 0, "float32"),
                                           ("two blue squares", "text", 128, "int8"),
                                           ("a loud explosion", "audio", 0, "float16")]:
        _, got, latency = remote.search(ALIGNED, query, zoo.Modality.TEXT, target, 5, dims, precision)
        _, want, _ = searcher.search(ALIGNED, query, zoo.Modality.TEXT, target, 5, dims, precision)
        assert [r["id"] for r in got] == [r["id"] for r in want], (query, got, want)
        assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=2e-3)
        assert "triton backend" in latency
    assert np.allclose(remote.indexes[ALIGNED].vectors, searcher.indexes[ALIGNED].vectors, atol=1e-4)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def top_label(page) -> str:
    """The label of the first ranked result, as the JSON component shows it ("" before any result)."""
    text = page.locator("#results-json").inner_text()
    if '"label"' not in text:
        return ""
    return text.split('"label"', 1)[1].split('"modality"', 1)[0].strip(" \n:,").strip('"')


def wait_top_label(page, done, timeout: float = 60.0) -> str:
    """Poll the page until ``done(top label)`` holds (results arrive asynchronously); return the label."""
    import time

    deadline = time.monotonic() + timeout
    label = top_label(page)
    while not done(label) and time.monotonic() < deadline:
        time.sleep(0.25)
        label = top_label(page)
    return label


def test_real_browser_text_and_image_queries(app_url, corpus, tmp_path):
    """Headless Chromium (Debian package) driven by Playwright: a text query and an image query."""
    assert CHROMIUM, "chromium is not installed: ./scripts/test.sh installs it (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--no-first-run", "--disable-sync", "--disable-quic"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(app_url, timeout=60_000)
        page.locator("#text-query textarea").fill("a picture of a red triangle")
        page.locator("#btn-search_text").click()
        assert "red triangle" in wait_top_label(page, lambda label: "red triangle" in label)
        page.locator("#results-gallery img").first.wait_for(timeout=30_000)
        assert "ms" in page.locator("#latency").inner_text()

        scene = next(i for i in corpus.items if i.modality == "image" and "purple circle" in i.label)
        page.get_by_role("tab", name="Image → image / text").click()
        page.locator("#image-query input[type=file]").set_input_files(str(corpus.file(scene)))
        page.locator("#btn-search_image").click()
        assert wait_top_label(page, lambda label: label == scene.label) == scene.label
        browser.close()


def test_real_browser_every_tab_has_examples_that_run_with_one_click(app_url, corpus):
    """A first visit shows example queries on each tab; one click fills the query and runs the search."""
    from playwright.sync_api import sync_playwright

    from ui.app import examples

    samples = examples(corpus)
    assert all(len(samples[m][0]) >= 1 for m in zoo.Modality), {m: samples[m][1] for m in zoo.Modality}
    modifier = samples[zoo.Modality.INTERLEAVED][0][0][1]  # "but <colour>"
    clip_label = samples[zoo.Modality.VIDEO][1][0]  # "clip: a <colour> <shape> moving"
    tabs = [("Text → image / audio / video / text", "search_text", lambda label: "yellow star" in label),
            ("Video → text / image / video", "search_video",
             lambda label: " ".join(clip_label.split()[2:4]) in label),
            ("Image → image / text", "search_image", lambda label: label == samples[zoo.Modality.IMAGE][1][0]),
            ("Audio → image / text", "search_audio", lambda label: label != ""),
            ("Image + text → image", "search_interleaved", lambda label: modifier.split()[-1] in label.split())]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        for tab, endpoint, expect in tabs:
            page.goto(app_url, timeout=60_000)  # a first visit: no query, no results
            page.get_by_role("tab", name=tab).click()
            assert top_label(page) == ""
            page.locator(f"#examples-{endpoint} button").first.click()
            label = wait_top_label(page, expect)
            assert expect(label), (tab, label)
        browser.close()


def test_page_cannot_import_server_files(app_url, corpus):
    """The Corpus tab takes uploads only: the endpoint has no folder argument, and a file reference to a
    server path (not an upload) is refused without adding anything."""
    import json

    from gradio_client import Client

    params = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)[
        "named_endpoints"]["/add_files"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["files"]
    before = len(corpus.items)
    secret = str(Path(__file__).resolve().parent.parent / "README.md")
    body = json.dumps({"data": [[{"path": secret, "meta": {"_type": "gradio.FileData"}}]]}).encode()
    request = urllib.request.Request(f"{app_url}gradio_api/call/add_files", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        event = json.load(urllib.request.urlopen(request, timeout=30))["event_id"]
        stream = urllib.request.urlopen(f"{app_url}gradio_api/call/add_files/{event}", timeout=60).read().decode()
    except urllib.error.HTTPError as err:
        stream = f"event: error {err.code}"
    assert "event: error" in stream, stream
    assert len(corpus.items) == before and not any(i.label == "README.md" for i in corpus.items)


def test_add_folder_copies_supported_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(2)
    S.render(S.sample_scene(rng), rng).save(src / "one.png")
    (src / "note.txt").write_text("a note about circles")
    (src / "skip.exe").write_bytes(b"MZ")
    corpus = C.Corpus(tmp_path / "corpus")
    added, errors = corpus.add_folder(src)
    assert sorted(i.modality for i in added) == ["image", "text"] and not errors
    assert all(corpus.file(i).is_relative_to(corpus.root) for i in added if i.path)
    with pytest.raises(zoo.InvalidArgumentError, match="not a folder"):
        corpus.add_folder(tmp_path / "missing")


def test_zoo_demo_command_local_backend(tmp_path):
    """`zoo demo --backend local` as a user runs it: builds the corpus, indexes, serves the page."""
    from .processes import start_and_wait, stop_group

    port = free_ports().grpc
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "note.txt").write_text("an operator's own note about triangles")
    proc, lines = start_and_wait(["demo", "--backend", "local", "--port", str(port), "--data-dir", str(tmp_path),
                                  "--corpus", str(extra), "--index", f"qdrant:{tmp_path / 'db'}"], "demo: http")
    try:
        assert lines and lines[-1].strip() == f"demo: http://127.0.0.1:{port}", "".join(lines)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "gradio" in page.lower()
        assert (tmp_path / "index" / "local-store").is_dir() and (tmp_path / "corpus" / "items.jsonl").is_file()
        assert f"dense vectors in qdrant:{tmp_path / 'db'}" in "".join(lines)  # --index: the vector database
        assert any((tmp_path / "db").glob("*/edge_config.json"))  # a Qdrant Edge shard per collection
        assert "imported 1 file(s) from" in "".join(lines)  # --corpus: the operator's folder, on the command line
        assert "triangles" in (tmp_path / "corpus" / "items.jsonl").read_text()
    finally:
        stop_group(proc)


def test_text_search_dense_sparse_and_hybrid_on_the_default_models(triton, searcher, corpus, tmp_path):
    """Text search on real weights, as the main command serves them: dense (MiniLM), sparse (SPLADE-tiny, its
    own model) and hybrid, where the dense model's ranking is fused with SPLADE-tiny's by reciprocal rank
    fusion; the served models rank as in-process."""
    from zoo import scoring
    from zoo.defaults import SPARSE_TEXT_MODEL

    text_model, query, k = default_model("text"), "a cat looking at the camera", 8
    ids = [i.id for i in corpus.items if i.modality == "text"]
    texts = [i.text for i in corpus.items if i.modality == "text"]
    _, dense, _ = searcher.search(text_model, query, zoo.Modality.TEXT, "text", k, 0, "float32")
    _, sparse, said = searcher.search(SPARSE_TEXT_MODEL, query, zoo.Modality.TEXT, "text", k, 0, "float32")
    splade = zoo.create(SPARSE_TEXT_MODEL, device="cpu")
    dots = scoring.sparse_dot(splade.encode([query], "text", prompt_name="query"),
                              splade.encode(texts, "text"))[0]
    assert [r["id"] for r in sparse] == [ids[j] for j in np.argsort(-dots, kind="stable")[:k]] and "sparse" in said
    assert sparse[0]["label"] == "a tabby cat looking at the camera"
    _, hybrid, said = searcher.search(text_model, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="hybrid")
    fused = scoring.reciprocal_rank_fusion([[r["id"] for r in dense], [r["id"] for r in sparse]])[:k]
    assert [r["id"] for r in hybrid] == [key for key, _ in fused]
    assert f"dense+sparse of {SPARSE_TEXT_MODEL}" in said
    with pytest.raises(zoo.InvalidArgumentError, match="no other model here gives sparse output for text → image"):
        searcher.search(text_model, query, zoo.Modality.TEXT, "image", k, 0, "float32", mode="hybrid")

    server, _ = triton
    remote = Searcher(TritonBackend(server.grpc_url, server.admin_headers), corpus, tmp_path)
    for model, mode, want in [(text_model, "auto", dense), (SPARSE_TEXT_MODEL, "auto", sparse),
                              (text_model, "hybrid", hybrid)]:
        _, got, _ = remote.search(model, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode=mode)
        assert [r["id"] for r in got] == [r["id"] for r in want], (model, mode)


def test_triton_backend_without_a_server_says_what_to_do():
    with pytest.raises(zoo.ServerError, match="zoo serve.*--backend local"):
        TritonBackend(f"127.0.0.1:{free_ports().grpc}")


def test_saved_vectors_are_keyed_by_the_weights(tmp_path):
    from .tiny_models import make_tiny_text_folder

    folder = make_tiny_text_folder(tmp_path / "model", seed=0)
    corpus = C.Corpus(tmp_path / "corpus")
    texts = ["a red circle", "two blue squares"]
    for text in texts:
        corpus.add_text(text)
    first = Searcher(LocalBackend("cpu"), corpus, tmp_path / "index").index(str(folder))
    make_tiny_text_folder(folder, seed=1)  # retrained in place: the same name, new weights
    second = Searcher(LocalBackend("cpu"), corpus, tmp_path / "index").index(str(folder))
    assert second.folder != first.folder
    assert np.allclose(second.vectors, zoo.create(str(folder), device="cpu").encode(texts, "text"), atol=1e-5)
    assert not np.allclose(second.vectors, first.vectors, atol=1e-3)


def test_zoo_serve_ui_starts_the_demo_as_an_add_on(tmp_path):
    """`zoo serve --ui` (the main command): the demo plugs into `zoo serve` through its entry point, on the
    served models, and stops with the server."""
    from .processes import start_serve, stop_group

    port = free_ports().grpc
    served = start_serve("--ui", "--ui-port", str(port), "--data-dir", str(tmp_path), wait_for="demo: http")
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "gradio" in page.lower()
        assert (tmp_path / "index" / "triton").is_dir()  # the demo indexed through the served models
    finally:
        assert stop_group(served.proc) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_multivector_sparse_and_hybrid_search(tmp_path):
    """A model with dense, sparse and multi-vector output (BGE-M3 layout): each retrieval ranks as exact
    MaxSim / sparse dot / reciprocal rank fusion over the same items, reports bytes per item, and reloads."""
    from ui.layouts import MultiVectorIndex, SparseIndex
    from zoo import scoring

    from .tiny_models import make_m3

    folder = str(make_m3(tmp_path / "m3"))
    corpus = C.Corpus(tmp_path / "corpus")
    captions = [f"a {size} {color} {shape}" for size in ("small", "big") for color in list(S.COLORS)[:4]
                for shape in S.SHAPES[:3]]
    for text in captions:
        corpus.add_text(text)
    searcher = Searcher(LocalBackend("cpu"), corpus, tmp_path / "index")
    model = zoo.create(folder, device="cpu")
    query, k = "a big red circle", 5
    ids = [i.id for i in corpus.items]

    def top(scores):
        return [ids[j] for j in np.argsort(-np.asarray(scores), kind="stable")[:k]]

    _, multi, latency = searcher.search(folder, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="multivector")
    exact = scoring.maxsim(model.encode([query], "text", output="multivector"),
                           model.encode(captions, "text", output="multivector"))[0]
    assert [r["id"] for r in multi] == top(exact) and np.allclose([r["score"] for r in multi],
                                                                  np.sort(exact)[::-1][:k], atol=1e-3)
    assert "multivector" in latency and " B per item" in latency
    _, sparse, _ = searcher.search(folder, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="sparse")
    dots = scoring.sparse_dot(model.encode([query], "text", output="sparse"),
                              model.encode(captions, "text", output="sparse"))[0]
    assert [r["id"] for r in sparse] == top(dots)
    _, dense, _ = searcher.search(folder, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="auto")
    _, hybrid, latency = searcher.search(folder, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="hybrid")
    fused = scoring.reciprocal_rank_fusion([[r["id"] for r in dense], [r["id"] for r in sparse]])[:k]
    assert [r["id"] for r in hybrid] == [key for key, _ in fused] and "dense" in latency and "sparse" in latency
    mv_index, sp_index = searcher.indexes[(folder, "multivector")], searcher.indexes[(folder, "sparse")]
    reloaded = MultiVectorIndex(mv_index.folder, mv_index.spec)
    assert reloaded.ids == mv_index.ids and all(np.array_equal(a, b) for a, b in zip(reloaded.items, mv_index.items))
    assert (SparseIndex(sp_index.folder, sp_index.spec).matrix != sp_index.matrix).nnz == 0
    assert mv_index.bytes_per_item(None, "float32") > mv_index.bytes_per_item(16, "int8") > 0
    with pytest.raises(zoo.InvalidArgumentError, match="retrieval 'sparse' needs outputs"):
        searcher.search(ALIGNED, query, zoo.Modality.TEXT, "text", k, 0, "float32", mode="sparse")


def test_page_header_shows_the_corpus_size_not_server_folders(searcher, corpus):
    """Page users see how many items the corpus holds, never the server's folder or backend address."""
    import json

    config = build_app(searcher).get_config_file()
    headers = [c["props"]["value"] for c in config["components"] if c["type"] == "markdown"
               and str(c["props"].get("value", "")).startswith("# ")]
    assert len(headers) == 1 and f"corpus: {len(corpus.items)} items" in headers[0], headers
    text = json.dumps(config["components"])
    assert str(corpus.root) not in headers[0] and str(corpus.root.parent) not in headers[0]
    assert "127.0.0.1" not in text
