"""Past one machine: the vector database (embedded Qdrant), ``zoo embed`` on local Ray Data, the demo on the
database index."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sps
import soundfile as sf

import zoo
from zoo.batch.job import Settings, run
from zoo.data import shapes as S
from zoo.defaults import default_model
from zoo.store import VectorStore, parse_uri, point_id

ALIGNED = default_model("image")  # the offline aligned model: text, image and audio


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (two CPUs, no dashboard), always shut down."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def aligned():
    return zoo.create(ALIGNED, device="cpu")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    S.render(S.sample_scene(np.random.default_rng(seed)), np.random.default_rng(seed)).save(buf, format="PNG")
    return buf.getvalue()


def test_store_kinds_match_exact_search(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((50, 8)).astype(np.float32)
    store = VectorStore(f"qdrant:{tmp_path / 'db'}")
    store.ensure("d", "dense", 8)
    store.upsert("d", "dense", [f"id{i}" for i in range(50)], list(dense), [{"n": i} for i in range(50)])
    q = rng.standard_normal(8).astype(np.float32)
    hits = store.search("d", "dense", q, 5)
    assert [h.id for h in hits] == [f"id{i}" for i in np.argsort(-(dense @ q))[:5]]
    assert hits[0].metadata == {"n": int(np.argmax(dense @ q))}
    assert store.search("d", "dense", q, 3, where={"n": 7})[0].id == "id7"
    store.upsert("d", "dense", ["id0"], [dense[1]])  # the same id again replaces the point
    assert store.count("d") == 50
    multi = [rng.standard_normal((int(n), 4)).astype(np.float32) for n in rng.integers(1, 6, 20)]
    store.ensure("m", "multivector", 4)
    store.upsert("m", "multivector", [str(i) for i in range(20)], multi)
    qm = rng.standard_normal((3, 4)).astype(np.float32)
    maxsim = [float((qm @ m.T).max(axis=1).sum()) for m in multi]
    assert [h.id for h in store.search("m", "multivector", qm, 4)] == [str(i) for i in np.argsort(maxsim)[::-1][:4]]
    sparse = sps.random(30, 100, density=0.1, random_state=1, dtype=np.float32, format="csr")
    store.ensure("s", "sparse", 0)
    store.upsert("s", "sparse", [str(i) for i in range(30)], [(r.indices, r.data) for r in sparse])
    qs = sparse[3]
    best = np.argsort(-(sparse @ qs.T).toarray().ravel(), kind="stable")[0]
    assert store.search("s", "sparse", (qs.indices, qs.data), 1)[0].id == str(best)
    with pytest.raises(zoo.InvalidArgumentError, match="not dense of width 9"):
        store.ensure("d", "dense", 9)
    store.close()
    reopened = VectorStore(f"qdrant:{tmp_path / 'db'}")  # embedded mode persists in its folder
    assert reopened.count("d") == 50 and reopened.count("absent") == 0
    reopened.close()
    assert point_id("a") == point_id("a") != point_id("b")
    assert parse_uri("qdrant+http://10.0.0.5:6333") == {"url": "http://10.0.0.5:6333"}
    with pytest.raises(zoo.InvalidArgumentError, match="qdrant:PATH"):
        parse_uri("redis://x")


def _corpus(tmp_path: Path) -> Path:
    """A JSONL corpus: texts with metadata, images by relative path and as data URIs, and bad rows."""
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(12):
        rows.append({"id": f"t{i}", "text": f"{list(S.COLORS)[i % 8]} {S.SHAPES[i % len(S.SHAPES)]}",
                     "source": "captions", "n": i})
    for i in range(4):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(i))
        rows.append({"id": f"i{i}", "image": f"img/{i}.png"})
    rows.append({"id": "uri", "image": "data:image/png;base64," + base64.b64encode(_png(9)).decode()})
    lines = [json.dumps(r) for r in rows]
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"id": "two", "text": "a", "audio": "b.wav"}))
    lines.append(json.dumps({"id": "broken", "image": "data:image/png;base64," + base64.b64encode(b"junk").decode()}))
    lines.append(json.dumps({"text": "no id here"}))
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a0.wav", rng.uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(50, np.float32), 16000)  # decodes, but the model's STFT fails on it
    lines += [json.dumps({"id": "a0", "audio": "a0.wav"}), json.dumps({"id": "short", "audio": "short.wav"})]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "corpus.jsonl"


def test_embed_jsonl_shards_errors_resume_and_store(ray_local, aligned, tmp_path):
    source = _corpus(tmp_path)
    out, db = tmp_path / "out", f"qdrant:{tmp_path / 'db'}"
    settings = Settings(model=ALIGNED, input=str(source), rows_per_shard=6)
    report = run(settings, out, to=db, collection="c", actors=2, batch_size=4, progress=False)
    assert (report.shards, report.skipped, report.rows, report.errors, report.stored) == (4, 0, 18, 5, 18)
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("shard-*.parquet"))]).to_pydict()
    by_id = dict(zip(table["id"], table["embedding"]))
    texts = [f"{list(S.COLORS)[i % 8]} {S.SHAPES[i % len(S.SHAPES)]}" for i in range(12)]
    expected = aligned.encode(texts, "text")
    np.testing.assert_allclose(np.array([by_id[f"t{i}"] for i in range(12)]), expected, atol=1e-5)
    images = aligned.encode([str(tmp_path / "img" / f"{i}.png") for i in range(4)] + [_png(9)], "image")
    np.testing.assert_allclose(np.array([by_id[k] for k in ("i0", "i1", "i2", "i3", "uri")]), images, atol=1e-5)
    meta = dict(zip(table["id"], table["metadata"]))
    assert json.loads(meta["t3"]) == {"source": "captions", "n": 3} and json.loads(meta["i0"]) == {}
    errors = {e["id"]: e["reason"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"line:6", "two", "broken", "line:21", "short"}
    assert errors["short"].startswith("embedding failed: RuntimeError")  # the model choked on it: that row only
    np.testing.assert_allclose(by_id["a0"], aligned.encode([str(tmp_path / "a0.wav")], "audio")[0], atol=1e-5)
    assert "not JSON" in errors["line:6"] and "exactly one of" in errors["two"]
    assert "image" in errors["broken"] and "no scalar 'id'" in errors["line:21"]
    store = VectorStore(db)
    assert store.count("c") == 18
    assert store.search("c", "dense", expected[5], 1)[0].id == "t5"
    store.close()

    again = run(settings, out, to=db, collection="c", progress=False)  # everything done: nothing to do
    assert (again.skipped, again.rows, again.stored) == (4, 0, 0)
    (out / "shard-00002.parquet").unlink()
    redo = run(settings, out, progress=False)  # one shard lost: only it runs again
    assert (redo.skipped, redo.rows) == (3, 6)  # t10, t11 and i0..i3
    assert pq.read_table(out / "shard-00002.parquet").num_rows == 6
    with pytest.raises(zoo.InvalidArgumentError, match="other settings .*dimensions"):
        run(Settings(model=ALIGNED, input=str(source), rows_per_shard=6, dimensions=64), out, progress=False)
    with pytest.raises(zoo.InvalidArgumentError, match="other settings .*controls"):
        run(Settings(model=ALIGNED, input=str(source), rows_per_shard=6, controls={"normalize": False}), out,
            progress=False)
    with pytest.raises(zoo.InvalidArgumentError, match="vector database stores"):
        run(Settings(model=ALIGNED, input=str(source), precision="int8"), tmp_path / "o2", to=db, progress=False)


def test_embed_parquet_folder_and_cli(ray_local, aligned, tmp_path, capsys):
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["a red circle", None, "a blue square"],
                             "image": [None, _png(1), None], "lang": ["en", "en", "fr"]}), tmp_path / "rows.parquet")
    report = run(Settings(model=ALIGNED, input=str(tmp_path / "rows.parquet")), tmp_path / "o1", progress=False)
    assert (report.rows, report.errors) == (3, 0)
    t = pq.read_table(tmp_path / "o1" / "shard-00000.parquet").to_pydict()
    np.testing.assert_allclose(t["embedding"][1], aligned.encode([_png(1)], "image")[0], atol=1e-5)
    assert json.loads(t["metadata"][2]) == {"lang": "fr"}

    folder = tmp_path / "files"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.png").write_bytes(_png(2))
    (folder / "note.txt").write_text("a green triangle")
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "tool.exe").write_bytes(b"MZ")
    from zoo.data import shapes as S
    from zoo.video import encode_frames

    clip = encode_frames(S.moving_clip("red", "circle", 8), 4, lossless=False)
    (folder / "clip.mp4").write_bytes(clip)
    from zoo.cli import main

    assert main(["embed", str(folder), "--model", ALIGNED, "--out", str(tmp_path / "o2"), "--dimensions", "64",
                 "--precision", "float16", "--no-progress"]) == 0
    assert "3 rows embedded, 2 errors" in capsys.readouterr().out
    t = pq.read_table(tmp_path / "o2" / "shard-00000.parquet")
    assert t.column("id").to_pylist() == ["clip.mp4", "note.txt", "sub/x.png"]
    assert t.column("modality").to_pylist()[0] == "video"
    np.testing.assert_allclose(np.array(t.column("embedding").to_pylist()[0], np.float32),
                               aligned.encode([clip], "video", dimensions=64, precision="float16")[0]
                               .astype(np.float32), atol=1e-3)
    assert t.schema.field("embedding").type == pa.list_(pa.float16(), 64)
    np.testing.assert_allclose(np.array(t.column("embedding").to_pylist()[1], np.float32),
                               aligned.encode(["a green triangle"], "text", dimensions=64, precision="float16")[0]
                               .astype(np.float32), atol=1e-3)
    errors = (tmp_path / "o2" / "errors.jsonl").read_text()
    assert '"bad.png"' in errors and "unknown file type '.exe'" in errors
    assert main(["embed", str(tmp_path / "absent.jsonl"), "--model", ALIGNED, "--out", str(tmp_path / "o3")]) == 2
    assert main(["embed", str(folder), "--model", ALIGNED, "--out", str(tmp_path / "o4"),
                 "--precision", "float8"]) == 2
    assert main(["embed", str(folder), "--model", ALIGNED, "--out", str(tmp_path / "o5"),
                 "--dimensions", "4096"]) == 2  # checked like encode() does, before any work
    assert "4096" in capsys.readouterr().err and not (tmp_path / "o5").exists()


@pytest.mark.server
def test_embed_through_triton_actors(ray_local, triton, tmp_path):
    server, models = triton
    text = default_model("text")
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": f"sentence {i}"}) + "\n" for i in range(10)))
    report = run(Settings(model=text, input=str(source), backend="triton", url=server.grpc_url, rows_per_shard=4),
                 tmp_path / "o", actors=2, progress=False)
    assert (report.shards, report.rows, report.errors) == (3, 10, 0)
    rows = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "o").glob("shard-*.parquet"))])
    local = zoo.create(text, device="cpu").encode([f"sentence {i}" for i in range(10)], "text")
    np.testing.assert_allclose(np.array(rows.column("embedding").to_pylist()), local, atol=1e-4)


def test_demo_on_the_database_index_matches_exact_search(tmp_path):
    from ui import corpus as C
    from ui.app import Searcher
    from ui.backend import LocalBackend

    corpus = C.build_default(tmp_path / "corpus", scenes=36, spoken=2)
    backend = LocalBackend("cpu")
    exact = Searcher(backend, corpus, tmp_path / "faiss")
    store = VectorStore(f"qdrant:{tmp_path / 'db'}")
    stored = Searcher(backend, corpus, tmp_path / "store", store=store)
    queries = [f"a {c} {s}" for c in S.COLORS for s in S.SHAPES]
    overlaps = []
    for target in ("image", "audio", "video", "text"):
        for q in queries:
            a = exact.search(ALIGNED, q, zoo.Modality.TEXT, target, 10, 0, "float32")[1]
            b = stored.search(ALIGNED, q, zoo.Modality.TEXT, target, 10, 0, "float32")[1]
            overlaps.append(len({r["id"] for r in a} & {r["id"] for r in b}) / max(1, len(a)))
    assert len(overlaps) == 4 * len(queries) and np.mean(overlaps) >= 0.95
    # the aligned model embeds every modality of the corpus, clips included
    assert stored.indexes[ALIGNED].store is store and store.count(stored.indexes[ALIGNED].collection) == len(
        corpus.items) and {i.modality for i in corpus.items} == set(zoo.Modality) - {zoo.Modality.INTERLEAVED}
    with pytest.raises(zoo.InvalidArgumentError, match="full-width float32"):
        stored.search(ALIGNED, "a red circle", zoo.Modality.TEXT, "image", 5, 64, "float32")
    store.close()


def test_shards_cover_every_row_once(tmp_path):
    from zoo.batch import sources

    pq.write_table(pa.table({"id": [str(i) for i in range(100)], "text": [f"t{i}" for i in range(100)]}),
                   tmp_path / "x.parquet", row_group_size=7)  # shards cut across row groups
    shards = sources.plan(tmp_path / "x.parquet", 30)
    assert [r.id for s in shards for r in sources.rows(s)] == [str(i) for i in range(100)]
    (tmp_path / "x.jsonl").write_text("".join(json.dumps({"id": i, "text": "x"}) + "\n\n" for i in range(25)))
    shards = sources.plan(tmp_path / "x.jsonl", 10)
    assert [len(list(sources.rows(s))) for s in shards] == [10, 10, 5]  # blank lines are not rows
    assert sources.Shard.from_json(shards[1].to_json()) == shards[1]


def test_a_failed_shard_is_reported_and_retried(ray_local, tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": f"a shape number {i}"}) + "\n" for i in range(9)))
    out = tmp_path / "out"
    (out / "shard-00001.errors.jsonl").mkdir(parents=True)  # shard 1 cannot be written: it fails as a whole
    settings = Settings(model=ALIGNED, input=str(source), rows_per_shard=3)
    with pytest.raises(zoo.ServerError, match=r"1 of 3 shards failed \(shard 1: IsADirectoryError.*retries"):
        run(settings, out, progress=False)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["shard-00000.parquet", "shard-00002.parquet"]
    (out / "shard-00001.errors.jsonl").rmdir()
    again = run(settings, out, progress=False)
    assert (again.skipped, again.rows) == (2, 3)
