"""The demo's corpus under hostile uploads: a file that probes but does not decode (an MKV with a video track
and no frame) is rejected at upload and, if it got in some other way, quarantined at indexing (listed, not
indexed) without stopping start-up; uploads are cleaned; added files share a quota; index files are written
atomically (a save cut short leaves the previous index in force)."""

from __future__ import annotations

import dataclasses
import fractions
import functools
import hashlib
import io
import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import zoo
from serving.server import free_ports
from ui import corpus as C
from ui import index as X
from ui import layouts as L
from ui import uploads as U
from ui.app import Searcher, build_app
from ui.backend import LocalBackend
from zoo.data import shapes as S
from zoo.defaults import default_model

ALIGNED = default_model("image")


@functools.cache
def empty_mkv() -> bytes:
    """A Matroska file with a video track and no frame (one empty packet: the container opens, nothing
    decodes), the kind of file that used to pass the upload check and break indexing. Made once: the muxer
    writes a random segment id, and the tests need the same file each time."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
        packet = av.Packet(b"")
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, fractions.Fraction(1, 8)
        out.mux(packet)
    return buf.getvalue()


def scene(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    S.render(S.sample_scene(rng, 1), rng, S.HELDOUT_RENDER).save(path)
    return path


def small_corpus(root: Path, tmp: Path) -> C.Corpus:
    """Three single-shape scenes with their captions and one generated clip: a corpus for every default model,
    made in a second (the default one takes a minute)."""
    from zoo.media.sampling import encode_frames

    corpus = C.Corpus(root)
    rng = np.random.default_rng(3)
    gallery = {(s.objects[0].color, s.objects[0].shape): s for s in S.single_object_gallery(rng)}
    for i, combo in enumerate([("red", "circle"), ("blue", "square"), ("yellow", "triangle")]):
        path = tmp / f"scene{i}.png"
        S.render(gallery[combo], rng, S.HELDOUT_RENDER).save(path)
        caption = S.captions(gallery[combo], S.EVAL_TEMPLATES)[0]
        corpus.add_file(path, label=caption)
        corpus.add_text(caption)
    clip = tmp / "clip.mp4"
    clip.write_bytes(encode_frames(S.moving_clip("red", "circle", 8), 8, lossless=False))
    corpus.add_file(clip, label="clip: a red circle moving")
    return corpus


def sneak_in(corpus_root: Path, data: bytes, name: str = "sneaky.mkv", source: str = "upload") -> str:
    """Put a file in a corpus folder the way an earlier version's check let it in: copied and listed in the
    manifest, never decoded. Returns its id."""
    digest = hashlib.sha256(data).hexdigest()[:12]
    rel = f"video/{digest}{Path(name).suffix}"
    (corpus_root / "video").mkdir(parents=True, exist_ok=True)
    (corpus_root / rel).write_bytes(data)
    with open(corpus_root / "items.jsonl", "a") as fh:
        fh.write(json.dumps({"id": f"video-{digest}", "modality": "video", "label": name, "path": rel,
                             "source": source}) + "\n")
    return f"video-{digest}"


def probe_only(data: bytes, modality: zoo.Modality, name: str) -> None:
    """The upload check before this fix: a container probe (``zoo.media.to_wire``), not a decode."""
    from zoo import media

    try:
        media.to_wire(data, 0, modality)
    except zoo.InputError as err:
        raise zoo.InvalidArgumentError(f"{name}: {err.reason}") from None


# ---- the file itself --------------------------------------------------------------------------------------

def test_the_empty_mkv_probes_but_does_not_decode():
    from zoo import media

    data = empty_mkv()
    assert len(data) < 1024, len(data)  # ~600 bytes, as in the report
    media.video.probe(data, 0)  # what the old check (and a client, before sending) accepts
    assert media.to_wire(data, 0, zoo.Modality.VIDEO) == data
    with pytest.raises(zoo.InputError, match="no frames"):
        media.decode(data, 0, zoo.Modality.VIDEO)


def test_upload_check_decodes_as_the_model_does(tmp_path):
    """add_file/add_folder run the model-side decode: the empty MKV is rejected with the reason, never stored
    (uploads and the operator's imports alike); the good files beside it get in (the default corpus, built
    through the same check in tests/test_ui.py, holds photos, clips, sounds and speech)."""
    corpus = C.Corpus(tmp_path / "c")
    bad = tmp_path / "probe-ok.mkv"
    bad.write_bytes(empty_mkv())
    good = scene(tmp_path / "ok.png", 0)
    added, errors = corpus.add_files([bad, good])
    assert [i.label for i in added] == ["ok.png"]
    assert errors == ["probe-ok.mkv: the video has no frames"]
    assert not (corpus.root / "video").exists() and "probe-ok" not in corpus.manifest.read_text()
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "broken.mkv").write_bytes(empty_mkv())
    (folder / "note.txt").write_text("a note about stars")
    added, errors = corpus.add_folder(folder)
    assert [i.modality for i in added] == ["text"] and errors == ["broken.mkv: the video has no frames"]
    assert all(i.source == "import" for i in added)


# ---- quarantine at indexing -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend():
    """One in-process backend for the module: each model loads once."""
    return LocalBackend("cpu")


def test_an_item_that_got_in_before_is_quarantined_at_indexing(backend, tmp_path, monkeypatch):
    """The bad clip in the manifest (an earlier version let it in): indexing quarantines it with the reason,
    indexes the others, and they are searchable; the quarantine survives a reload, the file leaves the served
    folder, and the same file cannot come back."""
    corpus = small_corpus(tmp_path / "corpus", tmp_path)
    bad = sneak_in(corpus.root, empty_mkv())
    corpus = C.Corpus(corpus.root)  # what the next start reads
    assert bad in corpus.by_id
    searcher = Searcher(backend, corpus, tmp_path / "index")
    index = searcher.index(ALIGNED)
    assert bad not in index.ids and bad not in corpus.by_id
    assert sorted(index.ids) == sorted(i.id for i in corpus.items)
    reason = corpus.quarantined[bad].reason
    assert "no frames" in reason and ALIGNED in reason and str(tmp_path) not in reason
    _, results, _ = searcher.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "video", 3, 0, "float32")
    assert [r["label"] for r in results] == ["clip: a red circle moving"]
    _, results, _ = searcher.search(ALIGNED, "a picture of a blue square", zoo.Modality.TEXT, "image", 3, 0, "float32")
    assert "blue square" in results[0]["label"]
    again = C.Corpus(corpus.root)
    assert bad in again.quarantined and bad not in again.by_id and again.items == corpus.items
    item = again.quarantined[bad].item
    assert not (again.root / item.path).exists() and (again.quarantine_root / item.path).is_file()
    assert not again.quarantine_root.is_relative_to(again.root)  # Gradio serves the corpus folder, not this
    (tmp_path / "again.mkv").write_bytes(empty_mkv())
    monkeypatch.setattr(C, "check_decodes", probe_only)  # even past the old check, it stays out
    _, errors = again.add_files([tmp_path / "again.mkv"])
    assert len(errors) == 1 and "again.mkv: was quarantined before" in errors[0]
    assert type(index)(index.folder, index.spec).ids == index.ids  # the saved index: the good items only


def test_a_model_that_chokes_on_one_item_quarantines_it_alone(tmp_path):
    """Any failure of one item (not only an InputError) quarantines that item; a failure of the backend is
    raised and quarantines nothing; a model that embeds nothing at all is raised, not blamed on the items."""
    spec = zoo.get_spec(ALIGNED)
    corpus = C.Corpus(tmp_path / "c")
    for text in ("one", "two", "choke", "four"):
        corpus.add_text(text)

    def encode(inputs, modality):
        if "choke" in inputs:
            raise RuntimeError("the model choked")
        return np.ones((len(inputs), spec.dim), np.float32)

    def down(inputs, modality):
        raise zoo.ServerError("no ready tritonserver")

    with pytest.raises(zoo.ServerError):
        L.ModelIndex(tmp_path / "i0", spec).update(corpus, down)
    assert not corpus.quarantined
    with pytest.raises(RuntimeError, match="broken"):
        L.ModelIndex(tmp_path / "i1", spec).update(corpus, lambda *_: (_ for _ in ()).throw(RuntimeError("broken")))
    assert not corpus.quarantined
    index = L.ModelIndex(tmp_path / "i2", spec)
    assert index.update(corpus, encode) == 3
    (choked,) = corpus.quarantined.values()
    assert choked.item.text == "choke" and choked.reason.endswith("RuntimeError: the model choked")
    assert [corpus.by_id[i].text for i in index.ids] == ["one", "two", "four"]


def test_search_skips_an_item_quarantined_after_it_was_indexed(backend, tmp_path):
    """Another model's indexing may quarantine an item this index already holds: searches leave it out."""
    corpus = small_corpus(tmp_path / "corpus", tmp_path)
    searcher = Searcher(backend, corpus, tmp_path / "index")
    before = searcher.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "text", 8, 0, "float32")[1]
    victim = corpus.by_id[before[0]["id"]]
    corpus.quarantine(victim, "quarantined by hand")
    after = searcher.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "text", 8, 0, "float32")[1]
    assert [r["id"] for r in after] == [r["id"] for r in before[1:]]
    assert victim.id in searcher.indexes[ALIGNED].ids  # still stored, never shown


def test_the_page_says_how_many_items_are_quarantined_without_server_paths(backend, tmp_path):
    corpus = small_corpus(tmp_path / "corpus", tmp_path)
    bad = sneak_in(corpus.root, empty_mkv(), name="holiday.mkv")
    corpus = C.Corpus(corpus.root)
    corpus.quarantine(corpus.by_id[bad], f"cannot read {corpus.file(corpus.by_id[bad])}: the video has no frames")
    config = build_app(Searcher(backend, corpus, tmp_path / "index")).get_config_file()
    texts = [str(c["props"].get("value", "")) for c in config["components"] if c["type"] == "markdown"]
    header = next(t for t in texts if t.startswith("# "))
    assert f"corpus: {len(corpus.items)} items · 1 item quarantined" in header
    summary = next(t for t in texts if "quarantined** (not indexed)" in t)
    assert "holiday.mkv" in summary and "no frames" in summary
    assert str(tmp_path) not in json.dumps(texts)


# ---- start-up ---------------------------------------------------------------------------------------------

def test_build_quarantines_and_a_second_start_works(tmp_path, monkeypatch, capsys):
    """`zoo demo`'s start (build()) on a data folder whose corpus holds the bad clip (an earlier version let an
    upload in) and an operator's --corpus folder holding another one that passes the old probe-only check:
    both are quarantined, the rest indexed; stale uploads go; the second start reuses the indexes."""
    from ui.cli import build

    data = tmp_path / "data"
    small_corpus(data / "corpus", tmp_path)
    legacy = sneak_in(data / "corpus", empty_mkv(), name="old-upload.mkv")
    imports = tmp_path / "mine"
    imports.mkdir()
    (imports / "theirs.mkv").write_bytes(empty_mkv() + b"\0")  # another file, the same kind of trouble
    (imports / "note.txt").write_text("an operator's note about triangles")
    uploads = data / "uploads"
    (uploads / "abc").mkdir(parents=True)
    old, fresh = uploads / "abc" / "old.png", uploads / "fresh.png"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * U.UPLOAD_MAX_AGE_S,) * 2)
    monkeypatch.setattr(C, "check_decodes", probe_only)  # the import gets past the old check
    searcher, got_uploads = build("local", "", data, corpus_dirs=[str(imports)])
    monkeypatch.undo()
    out = capsys.readouterr().out
    corpus = searcher.corpus
    assert got_uploads == uploads.resolve() and not old.exists() and not (uploads / "abc").exists()
    assert fresh.exists() and "removed 1 stale upload file(s)" in out
    assert "imported 2 file(s)" in out and "2 corpus item(s) quarantined" in out
    assert legacy in corpus.quarantined and len(corpus.quarantined) == 2
    assert all("no frames" in q.reason for q in corpus.quarantined.values())
    for model in dict.fromkeys(zoo.defaults.DEFAULT_MODELS.values()):
        index = searcher.indexes[model]
        assert not set(index.ids) & set(corpus.quarantined)
        assert set(index.ids) == {i.id for i in corpus.items if index.spec.supports(i.modality)}
    note = next(i for i in corpus.items if i.label == "note.txt")
    assert note.source == "import" and all(note.id in index.ids for index in searcher.indexes.values())
    _, results, _ = searcher.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "video", 3, 0, "float32")
    assert [r["label"] for r in results] == ["clip: a red circle moving"]

    monkeypatch.setattr(X._CorpusIndex, "_save", lambda self: pytest.fail("re-embedded on the second start"))
    again, _ = build("local", "", data, corpus_dirs=[str(imports)])
    out = capsys.readouterr().out
    assert "failed" not in out and "theirs.mkv: was quarantined before" in out
    assert "2 corpus item(s) quarantined" in out and again.corpus.quarantined.keys() == corpus.quarantined.keys()
    assert {m: again.indexes[m].ids for m in again.indexes} == {m: searcher.indexes[m].ids for m in searcher.indexes}


def test_a_model_that_fails_on_everything_does_not_stop_the_start(tmp_path, monkeypatch, capsys):
    """Not an item's fault (the model embeds nothing): nothing is quarantined, the start goes on with the other
    models, and the failed index is built at its first search."""
    import ui.search
    from ui.cli import build

    small_corpus(tmp_path / "corpus", tmp_path)
    real = ui.search.kind_outputs

    def broken(embedder, inputs, modality, kind, query=False):
        if embedder.spec.name == ALIGNED:
            raise RuntimeError("the model is broken")
        return real(embedder, inputs, modality, kind, query)

    monkeypatch.setattr(ui.search, "kind_outputs", broken)
    searcher, _ = build("local", "", tmp_path)
    out = capsys.readouterr().out
    assert f"indexing for {ALIGNED} failed (RuntimeError: the model is broken)" in out
    assert not searcher.corpus.quarantined and searcher.indexes[default_model("text")].ids
    monkeypatch.undo()
    _, results, _ = searcher.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "video", 3, 0, "float32")
    assert [r["label"] for r in results] == ["clip: a red circle moving"]


def test_zoo_demo_starts_with_a_bad_item_in_the_corpus(tmp_path):
    """The reported failure as a user sees it: `zoo demo` used to exit at every start once the bad clip was in
    the corpus; now it starts, says one item is quarantined, and serves the page."""
    from .processes import start_and_wait, stop_group

    small_corpus(tmp_path / "corpus", tmp_path)
    sneak_in(tmp_path / "corpus", empty_mkv())
    port = free_ports().grpc
    proc, lines = start_and_wait(["demo", "--backend", "local", "--port", str(port), "--data-dir", str(tmp_path)],
                                 "demo: http")
    try:
        text = "".join(lines)
        assert lines and lines[-1].strip() == f"demo: http://127.0.0.1:{port}", text
        assert "1 corpus item(s) quarantined" in text
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "1 item quarantined" in page
    finally:
        stop_group(proc)


# ---- uploads: through the page, cleaned, within the quota ------------------------------------------------

@pytest.fixture
def app(backend, tmp_path, monkeypatch):
    """The page on a small corpus indexed by the aligned model, with Gradio's upload folder where `zoo demo`
    puts it."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    searcher = Searcher(backend, small_corpus(tmp_path / "corpus", tmp_path), tmp_path / "index")
    searcher.index(ALIGNED)
    demo = build_app(searcher, uploads=uploads)
    port = free_ports().grpc
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(searcher.corpus.root), str(uploads)])
    yield f"http://127.0.0.1:{port}/", uploads, searcher
    demo.close()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_uploads_are_checked_indexed_and_their_temporary_copies_deleted(app, tmp_path, monkeypatch):
    """Through the page: the empty MKV is rejected with its reason, a good image is added, indexed and found;
    Gradio's temporary copies are gone once the call returns. With the old probe-only check the MKV gets in,
    and indexing quarantines it (the page says so) instead of failing."""
    from gradio_client import Client, handle_file

    url, uploads, searcher = app
    corpus = searcher.corpus
    client = Client(url, verbose=False)
    bad = tmp_path / "probe-ok.mkv"
    bad.write_bytes(empty_mkv())
    good = scene(tmp_path / "mine.png", 42)
    cached = files_under(uploads)  # Gradio's copies of the corpus files the examples show: not uploads
    status = client.predict([handle_file(str(bad)), handle_file(str(good))], api_name="/add_files")
    assert status.startswith("added 1 item(s); rejected 1") and "probe-ok.mkv: the video has no frames" in status
    assert files_under(uploads) == cached  # the uploaded copies (and Gradio's empty tmp files) are gone
    item = next(i for i in corpus.items if i.label == "mine.png")
    assert item.source == "upload" and item.id in searcher.indexes[ALIGNED].ids
    _, results, _ = client.predict(handle_file(str(good)), api_name="/search_image")
    assert results[0]["id"] == item.id and results[0]["score"] > 0.99
    cached = files_under(uploads)  # and now the query's upload (Gradio removes it after UPLOAD_MAX_AGE_S)

    monkeypatch.setattr(C, "check_decodes", probe_only)
    status = client.predict([handle_file(str(bad))], api_name="/add_files")
    assert "quarantined 1" in status and "no frames" in status and str(corpus.root) not in status, status
    assert files_under(uploads) == cached
    assert any(q.item.label == "probe-ok.mkv" for q in corpus.quarantined.values())
    _, results, _ = client.predict("a red circle", "video", api_name="/search_text")
    assert [r["label"] for r in results] == ["clip: a red circle moving"]


def test_discard_uploads_touches_only_the_upload_folder(tmp_path):
    uploads = tmp_path / "uploads"
    (uploads / "h1").mkdir(parents=True)
    mine = uploads / "h1" / "a.png"
    mine.write_bytes(b"a")
    outside = tmp_path / "keep.txt"
    outside.write_text("server file")
    link = uploads / "link.txt"
    link.symlink_to(outside)
    assert U.discard_uploads([mine, outside, link, uploads / ".." / "keep.txt", uploads], uploads) == 1
    assert not mine.exists() and not (uploads / "h1").exists() and uploads.is_dir()
    assert outside.read_text() == "server file" and link.is_symlink()


def test_gradios_empty_tmp_files_go_unless_open(tmp_path):
    """Gradio's File component leaves an empty ``tmp*`` file per upload; one still open (an upload being
    received) stays, and so does anything else."""
    uploads = tmp_path / "uploads"
    (uploads / "h").mkdir(parents=True)
    leaked, receiving, other, data = (uploads / "tmpabc123", uploads / "tmpdef456", uploads / "notes",
                                      uploads / "tmpfull")
    for p in (leaked, receiving, other, uploads / "h" / "tmpnested"):
        p.write_bytes(b"")
    data.write_bytes(b"data")
    with open(receiving, "ab"):
        assert U.discard_leftovers(uploads) == 1
    assert not leaked.exists() and receiving.exists() and other.exists() and data.exists()
    assert (uploads / "h" / "tmpnested").exists()


def test_clean_uploads_removes_only_stale_files(tmp_path):
    uploads = tmp_path / "uploads"
    (uploads / "old").mkdir(parents=True)
    (uploads / "new").mkdir()
    stale, recent = uploads / "old" / "x.wav", uploads / "new" / "y.wav"
    stale.write_bytes(b"x")
    recent.write_bytes(b"y")
    os.utime(stale, (time.time() - 7200,) * 2)
    assert U.clean_uploads(uploads, 3600) == 1
    assert not (uploads / "old").exists() and recent.exists()
    assert U.clean_uploads(tmp_path / "missing") == 0


def test_added_files_share_a_quota(tmp_path, monkeypatch):
    """Uploads and imports count (their bytes and how many), quarantined ones included, across restarts; the
    default corpus and a file already there do not; beyond the quota a file is refused with the reason."""
    corpus = C.Corpus(tmp_path / "c")
    corpus.add_file(scene(tmp_path / "default.png", 1))  # the default corpus: source None, not counted
    files = [scene(tmp_path / f"u{i}.png", 10 + i) for i in range(4)]
    sizes = [p.stat().st_size for p in files]
    monkeypatch.setattr(C, "MAX_CORPUS_ITEMS", 3)
    monkeypatch.setattr(C, "MAX_CORPUS_BYTES", sizes[0] + sizes[1] + sizes[2] - 1)
    added, errors = corpus.add_files(files[:2])
    assert len(added) == 2 and not errors and corpus.added_bytes == sizes[0] + sizes[1]
    added, errors = corpus.add_files([files[0], files[2]])  # a file already there is not counted again
    assert len(added) == 1 and len(errors) == 1 and "corpus is full" in errors[0] and "MiB" in errors[0]
    assert "u2.png" in errors[0] and not any(i.label == "u2.png" for i in corpus.items)
    monkeypatch.setattr(C, "MAX_CORPUS_BYTES", 10 * sum(sizes))
    assert (C.Corpus(corpus.root).added_items, C.Corpus(corpus.root).added_bytes) == (2, sizes[0] + sizes[1])
    corpus.quarantine(corpus.items[1], "quarantined by hand")  # still counted: it still takes room on disk
    (tmp_path / "t.txt").write_text("a note")
    restarted = C.Corpus(corpus.root)
    assert restarted.added_bytes == sizes[0] + sizes[1]
    added, errors = restarted.add_files([files[2], tmp_path / "t.txt"], source="import")
    assert [i.label for i in added] == ["u2.png"] and len(errors) == 1
    assert errors[0] == "t.txt: the corpus is full (3 added items, the quota is 3); nothing more can be added"
    again = C.Corpus(corpus.root)
    assert again.added_items == 3 and [i.label for i in again.items] == ["default.png", "u1.png", "u2.png"]


def test_the_page_refuses_an_upload_over_the_quota(app, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    url, uploads, searcher = app
    monkeypatch.setattr(C, "MAX_CORPUS_ITEMS", searcher.corpus.added_items)
    cached = files_under(uploads)
    status = Client(url, verbose=False).predict([handle_file(str(scene(tmp_path / "full.png", 77)))],
                                                api_name="/add_files")
    assert status.startswith("added 0 item(s); rejected 1") and "corpus is full" in status
    assert files_under(uploads) == cached


# ---- atomic index files -----------------------------------------------------------------------------------

def fake_encoder(spec, kind):
    """Deterministic outputs of ``kind`` for texts (no model needed to test what reaches the disk)."""
    import scipy.sparse as sps

    def encode(inputs, modality):
        seeds = [int(hashlib.sha256(x.encode()).hexdigest()[:8], 16) for x in inputs]
        if kind == "dense":
            return np.stack([np.random.default_rng(s).standard_normal(spec.dim) for s in seeds]).astype(np.float32)
        if kind == "multivector":
            return [np.random.default_rng(s).standard_normal((1 + s % 4, spec.dim)).astype(np.float32)
                    for s in seeds]
        rows = [sps.random(1, spec.vocab_size, density=0.1, random_state=s % 2**31, format="csr", dtype=np.float32)
                for s in seeds]
        return sps.vstack(rows, format="csr")

    return encode


def outputs_of(index):
    if isinstance(index, L.ModelIndex):
        return [index.vectors]
    if isinstance(index, L.MultiVectorIndex):
        return list(index.items)
    return [index.matrix.toarray()]


def same(a, b) -> bool:
    return a.ids == b.ids and all(np.array_equal(x, y) for x, y in zip(outputs_of(a), outputs_of(b), strict=True))


KINDS = [L.ModelIndex, L.MultiVectorIndex, L.SparseIndex]


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.kind)
@pytest.mark.parametrize("where", ["replace-first", "replace-manifest", "writer"])
def test_an_interrupted_index_write_leaves_the_previous_index(tmp_path, monkeypatch, cls, where):
    """A save cut short (the rename of the first file, of the manifest, or a writer failing halfway through a
    file) leaves on disk the index as it was before, loadable and correct, and no stray files; the index in
    memory keeps working and is written at its next change."""
    spec = dataclasses.replace(zoo.get_spec(ALIGNED), vocab_size=64)
    encode = fake_encoder(spec, cls.kind)
    corpus = C.Corpus(tmp_path / "c")
    for text in ("a red circle", "two blue squares", "a green star"):
        corpus.add_text(text)
    index = cls(tmp_path / "i", spec)
    assert index.update(corpus, encode) == 3
    before = cls(index.folder, spec)
    assert same(before, index) and len(before.ids) == 3
    listing = sorted(p.name for p in index.folder.iterdir())

    corpus.add_text("a yellow square")
    real_replace, real_write = os.replace, cls._write
    calls = []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if (where == "replace-first" and len(calls) == 1) or (where == "replace-manifest" and Path(dst).name ==
                                                               X.MANIFEST):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    def failing_write(self, role, fh):
        fh.write(b"\x93NUMPY half of a file")
        raise OSError(5, "Input/output error")

    if where == "writer":
        monkeypatch.setattr(cls, "_write", failing_write)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.warns(X.IndexSaveWarning, match="not saved"):
        assert index.update(corpus, encode) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(cls, "_write", real_write)
    assert sorted(p.name for p in index.folder.iterdir()) == listing  # nothing half-written left behind
    reloaded = cls(index.folder, spec)
    assert same(reloaded, before)  # the previous index, whole
    assert len(index.ids) == 4  # in memory: the new item is searchable

    corpus.add_text("a purple triangle")
    assert index.update(corpus, encode) == 1  # the next change writes everything
    final = cls(index.folder, spec)
    assert same(final, index) and len(final.ids) == 5
    names = sorted(p.name for p in index.folder.iterdir())
    assert len(names) == 1 + len(cls.files) and X.MANIFEST in names  # the old set was removed


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.kind)
def test_an_index_file_that_does_not_verify_is_embedded_again(tmp_path, cls, capsys):
    """A file the manifest names that is not what was written (cut, changed, missing), or a manifest cut
    short: the index loads empty and re-embeds, never an exception."""
    spec = dataclasses.replace(zoo.get_spec(ALIGNED), vocab_size=64)
    encode = fake_encoder(spec, cls.kind)
    corpus = C.Corpus(tmp_path / "c")
    for text in ("a red circle", "two blue squares"):
        corpus.add_text(text)
    index = cls(tmp_path / "i", spec)
    index.update(corpus, encode)
    record = json.loads((index.folder / X.MANIFEST).read_text())
    first = index.folder / next(iter(record["files"].values()))["name"]
    good = first.read_bytes()
    first.write_bytes(good[:-5] + bytes([good[-5] ^ 0x40]) + good[-4:])  # same size, one value changed
    broken = cls(index.folder, spec)
    assert broken.ids == [] and "is not the file written" in capsys.readouterr().err
    first.write_bytes(good[:-7])
    assert cls(index.folder, spec).ids == []
    first.unlink()
    assert cls(index.folder, spec).ids == []
    assert broken.update(corpus, encode) == 2 and same(cls(index.folder, spec), index)
    (index.folder / X.MANIFEST).write_text((index.folder / X.MANIFEST).read_text()[:40])
    assert cls(index.folder, spec).ids == []


def test_an_index_in_the_layout_before_the_manifest_still_loads(tmp_path):
    """ids.json + vectors.npy (written in place by earlier versions): loaded when consistent, rewritten in the
    new layout at the next update; inconsistent, it is embedded again."""
    spec = zoo.get_spec(ALIGNED)
    encode = fake_encoder(spec, "dense")
    corpus = C.Corpus(tmp_path / "c")
    for text in ("a red circle", "two blue squares"):
        corpus.add_text(text)
    folder = tmp_path / "i"
    folder.mkdir()
    ids = [i.id for i in corpus.items]
    vectors = encode([i.text for i in corpus.items], "text")
    (folder / "ids.json").write_text(json.dumps(ids))
    np.save(folder / "vectors.npy", vectors)
    index = L.ModelIndex(folder, spec)
    assert index.ids == ids and np.array_equal(index.vectors, vectors)
    assert index.update(corpus, lambda *_: pytest.fail("re-embedded")) == 0
    assert (folder / X.MANIFEST).is_file() and not (folder / "ids.json").exists()
    assert same(L.ModelIndex(folder, spec), index)
    half = tmp_path / "half"
    half.mkdir()
    (half / "ids.json").write_text(json.dumps(ids))
    np.save(half / "vectors.npy", vectors[:1])  # the second write of the old two-step save never happened
    assert L.ModelIndex(half, spec).ids == []


def test_a_manifest_line_cut_short_does_not_stop_the_corpus(tmp_path):
    corpus = C.Corpus(tmp_path / "c")
    corpus.add_text("a red circle")
    with open(corpus.manifest, "a") as fh:
        fh.write('{"id": "text-12", "modal')  # a crash while appending
    again = C.Corpus(corpus.root)
    assert again.items == corpus.items
    again.add_text("two blue squares")  # a later append still makes a line of its own
    assert [i.text for i in C.Corpus(corpus.root).items] == ["a red circle", "two blue squares"]
