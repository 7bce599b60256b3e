"""Past one machine: the vector database (embedded Qdrant), ``zoo embed`` on local Ray Data, the demo on the
database index."""

import base64
import io
import json
import os
import shutil
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

from . import processes

ALIGNED = default_model("image")  # the offline aligned model: text, image and audio


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (two CPUs, no dashboard), every process of it listening on
    127.0.0.1 only, always shut down.

    Started as `zoo embed` starts it (:func:`zoo.batch.job.init_ray`); tests/conftest.py sets the one-machine
    variable before Ray is imported, as `zoo embed` does."""
    import ray

    from zoo.batch.job import init_ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        init_ray(ray)  # what `zoo embed` does without RAY_ADDRESS (conftest sets ONE_MACHINE_RAY before Ray loads)
        try:
            yield ray
        finally:
            ray.shutdown()


def _assert_exact_top_k(hits, ids: list[str], scores: np.ndarray, k: int, tol: float = 1e-4) -> None:
    """``hits`` are the ``k`` best of ``ids`` under the exact ``scores``, best first, with those scores: the
    same scores in the same order, every hit scored as exact search scores it, and every item that beats the
    k-th best score among the hits (items tied at the k-th score may come in any order)."""
    order = np.argsort(-scores, kind="stable")[:k]
    got = np.array([h.score for h in hits])
    assert len(hits) == len(order) and len({h.id for h in hits}) == len(hits)
    np.testing.assert_allclose(got, scores[order], atol=tol)  # best first, the exact k best scores
    exact = dict(zip(ids, scores))
    np.testing.assert_allclose([exact[h.id] for h in hits], got, atol=tol)  # each hit is what it says
    assert {ids[i] for i in np.flatnonzero(scores > scores[order[-1]] + tol)} <= {h.id for h in hits}


@pytest.fixture(scope="module")
def aligned():
    return zoo.create(ALIGNED, device="cpu")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    S.render(S.sample_scene(np.random.default_rng(seed)), np.random.default_rng(seed)).save(buf, format="PNG")
    return buf.getvalue()


def test_store_kinds_match_exact_search(tmp_path):
    """Each kind's search gives exact search's top 10 for held-out queries (never rows it stores), in order,
    with exact search's scores: a dot product, MaxSim, a sparse dot product."""
    rng = np.random.default_rng(0)
    k = 10
    dense = rng.standard_normal((200, 16)).astype(np.float32)
    ids = [f"id{i}" for i in range(200)]
    store = VectorStore(f"qdrant:{tmp_path / 'db'}")
    store.ensure("d", "dense", 16)
    store.upsert("d", "dense", ids, list(dense), [{"n": i} for i in range(200)])
    for q in rng.standard_normal((8, 16)).astype(np.float32):
        exact = dense @ q
        hits = store.search("d", "dense", q, k)
        assert [h.id for h in hits] == [ids[i] for i in np.argsort(-exact)[:k]]  # random floats: no ties
        _assert_exact_top_k(hits, ids, exact, k)
        assert hits[0].metadata == {"n": int(np.argmax(exact))}
    assert store.search("d", "dense", q, 3, where={"n": 7})[0].id == "id7"
    store.upsert("d", "dense", ["id0"], [dense[1]])  # the same id again replaces the point
    assert store.count("d") == 200
    multi = [rng.standard_normal((int(n), 4)).astype(np.float32) for n in rng.integers(1, 6, 60)]
    mids = [str(i) for i in range(60)]
    store.ensure("m", "multivector", 4)
    store.upsert("m", "multivector", mids, multi)
    for _ in range(5):
        qm = rng.standard_normal((int(rng.integers(2, 5)), 4)).astype(np.float32)
        maxsim = np.array([float((qm @ m.T).max(axis=1).sum()) for m in multi])
        hits = store.search("m", "multivector", qm, k)
        assert [h.id for h in hits] == [mids[i] for i in np.argsort(-maxsim)[:k]]
        _assert_exact_top_k(hits, mids, maxsim, k)
    # documents of ~20 of 100 terms, held-out queries of ~15: most documents share a few terms with a query
    sparse = sps.random(200, 100, density=0.2, random_state=1, dtype=np.float32, format="csr")
    sids = [str(i) for i in range(200)]
    store.ensure("s", "sparse", 0)
    store.upsert("s", "sparse", sids, [(r.indices, r.data) for r in sparse])
    queries = sps.random(10, 100, density=0.15, random_state=2, dtype=np.float32, format="csr")
    for qs in queries:
        exact = (sparse @ qs.T).toarray().ravel()
        top = np.sort(exact)[::-1][:k + 1]
        assert top[k - 1] > 0 and np.diff(top).max() < -1e-6  # the top 10 and the 11th are all apart
        hits = store.search("s", "sparse", (qs.indices, qs.data), k)
        assert [h.id for h in hits] == [sids[i] for i in np.argsort(-exact)[:k]]
        _assert_exact_top_k(hits, sids, exact, k)
    with pytest.raises(zoo.InvalidArgumentError, match="not dense of width 9"):
        store.ensure("d", "dense", 9)
    store.close()
    reopened = VectorStore(f"qdrant:{tmp_path / 'db'}")  # embedded mode persists in its folder
    assert reopened.count("d") == 200 and reopened.count("absent") == 0
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
    sf.write(tmp_path / "short.wav", np.zeros(50, np.float32), 16000)  # shorter than one mel frame: padded
    lines += [json.dumps({"id": "a0", "audio": "a0.wav"}), json.dumps({"id": "short", "audio": "short.wav"})]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "corpus.jsonl"


def test_embed_jsonl_shards_errors_resume_and_store(ray_local, aligned, tmp_path):
    source = _corpus(tmp_path)
    out, db = tmp_path / "out", f"qdrant:{tmp_path / 'db'}"
    settings = Settings(model=ALIGNED, input=str(source), rows_per_shard=6)
    report = run(settings, out, to=db, collection="c", actors=2, batch_size=4, progress=False)
    assert (report.shards, report.skipped, report.rows, report.errors, report.stored) == (4, 0, 19, 4, 19)
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("shard-*.parquet"))]).to_pydict()
    by_id = dict(zip(table["id"], table["embedding"]))
    texts = [f"{list(S.COLORS)[i % 8]} {S.SHAPES[i % len(S.SHAPES)]}" for i in range(12)]
    expected = aligned.encode(texts, "text")
    np.testing.assert_allclose(np.array([by_id[f"t{i}"] for i in range(12)]), expected, atol=1e-5)
    images = aligned.encode([str(tmp_path / "img" / f"{i}.png") for i in range(4)] + [_png(9)], "image")
    np.testing.assert_allclose(np.array([by_id[k] for k in ("i0", "i1", "i2", "i3", "uri")]), images, atol=1e-5)
    meta = dict(zip(table["id"], table["metadata"]))
    assert json.loads(meta["t3"]) == {"source": "captions", "n": 3} and json.loads(meta["i0"]) == {}
    errors = {e["id"]: e["reason"] for e in map(json.loads, (out / "_zoo" / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"line:6", "two", "broken", "line:21"}
    np.testing.assert_allclose(by_id["short"], aligned.encode([str(tmp_path / "short.wav")], "audio")[0], atol=1e-5)
    np.testing.assert_allclose(by_id["a0"], aligned.encode([str(tmp_path / "a0.wav")], "audio")[0], atol=1e-5)
    assert "not JSON" in errors["line:6"] and "exactly one of" in errors["two"]
    assert "image" in errors["broken"] and "no scalar 'id'" in errors["line:21"]
    store = VectorStore(db)
    assert store.count("c") == 19
    # held-out queries (no stored row among them): the database gives exact search's 10 best of the 19 rows
    # the job wrote, with their scores; the corpus repeats some captions, so tied rows may come in any order
    stored_vecs = np.array(table["embedding"], np.float32)
    held_out = [*aligned.encode(["a purple star on the right", "two small shapes", "green"], "text"),
                *aligned.encode([_png(42)], "image")]
    for q in held_out:
        _assert_exact_top_k(store.search("c", "dense", q, 10), table["id"], stored_vecs @ q, 10)
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
    from zoo.media.sampling import encode_frames

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
    errors = (tmp_path / "o2" / "_zoo" / "errors.jsonl").read_text()
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
    from ui.app import Searcher
    from ui.backend import LocalBackend
    from ui.default_corpus import build_default

    corpus = build_default(tmp_path / "corpus", scenes=36, spoken=2)
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


def test_a_row_the_model_chokes_on_fails_alone(aligned, tmp_path):
    """A batch the model raises on is embedded again row by row: the row at fault becomes an error with the
    model's message, the others of its batch are embedded as encode() embeds them."""
    from zoo.batch import dest, job, sources

    class Choking:  # the aligned model, but it raises on any batch that holds the text "choke"
        spec = aligned.spec

        def encode_per_item(self, items, modality, **controls):
            if "choke" in items:
                raise RuntimeError("the model choked")
            return aligned.encode_per_item(items, modality, **controls)

    texts = ["a red circle", "choke", "a blue square", "a green star"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n"
                                              for i, t in enumerate(texts)))
    settings = Settings(model=ALIGNED, input=str(tmp_path / "t.jsonl"), rows_per_shard=4)
    schema = dest.shard_schema(aligned.spec, settings)
    dest.check_dest(tmp_path / "out", settings, schema)
    [shard] = sources.plan(settings.input, 4)
    assert job.embed_shard(Choking(), shard, tmp_path / "out", settings, schema, 4)["errors"] == 1
    table = pq.read_table(tmp_path / "out" / "shard-00000.parquet")
    assert table.schema.equals(schema) and table.column("id").to_pylist() == ["t0", "t2", "t3"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()),
                               aligned.encode([texts[0], texts[2], texts[3]], "text"), atol=1e-5)
    [error] = map(json.loads, (tmp_path / "out" / "_zoo" / "errors" / "shard-00000.jsonl").read_text().splitlines())
    assert error == {"id": "t1", "reason": "embedding failed: RuntimeError: the model choked", "shard": 0}


def test_a_failed_shard_is_reported_and_retried(ray_local, tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": f"a shape number {i}"}) + "\n" for i in range(9)))
    out = tmp_path / "out"
    (out / "_zoo" / "errors" / "shard-00001.jsonl").mkdir(parents=True)  # shard 1 cannot be written: it fails
    settings = Settings(model=ALIGNED, input=str(source), rows_per_shard=3)
    with pytest.raises(zoo.ServerError, match=r"1 of 3 shards failed \(shard 1: IsADirectoryError.*retries"):
        run(settings, out, progress=False)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["shard-00000.parquet", "shard-00002.parquet"]
    (out / "_zoo" / "errors" / "shard-00001.jsonl").rmdir()
    again = run(settings, out, progress=False)
    assert (again.skipped, again.rows) == (2, 3)


LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _read_as_a_user(out: Path, ray) -> dict[str, pa.Table]:
    """DEST read the ways users point readers at a folder of Parquet files, each as an Arrow table."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    files = sorted(out.glob("shard-*.parquet"))
    dataset = ds.dataset(out, format="parquet")
    assert dataset.files == [str(f) for f in files]  # the job's own files are not taken for data
    return {
        "pyarrow.dataset": dataset.to_table(),
        "pyarrow.concat_tables": pa.concat_tables([pq.read_table(f) for f in files]),
        "pyarrow.parquet.read_table": pq.read_table(out),
        "pandas": pa.Table.from_pandas(pd.read_parquet(out), preserve_index=False),
        "duckdb glob": duckdb.sql(f"select * from read_parquet('{out}/*.parquet')").to_arrow_table(),
        "duckdb folder": duckdb.sql(f"select * from read_parquet('{out}')").to_arrow_table(),
        "ray.data": pa.concat_tables(ray.get(ray.data.read_parquet(str(out)).to_arrow_refs())),
    }


def _vectors(column) -> np.ndarray:
    return np.array(column.to_pylist() if hasattr(column, "to_pylist") else list(column), np.float32)


def test_embed_output_reads_as_one_parquet_dataset(ray_local, aligned, tmp_path):
    """A shard whose rows all failed is written with the job's schema, and the job's own files stay out of
    the way: the folder reads as one dataset with pyarrow, pandas, DuckDB and Ray Data. A rerun over a
    folder of the layout before moves it into this one."""
    texts = ["a red circle", "a blue square", "a green star", "a yellow triangle", "two purple shapes"]
    junk = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
    lines = [json.dumps({"id": f"t{i}", "text": t}) for i, t in enumerate(texts[:3])]
    lines += [json.dumps({"id": f"broken{i}", "image": junk}) for i in range(3)]  # shard 1: none decodes
    lines += [json.dumps({"id": "t3", "text": texts[3]}),
              json.dumps({"id": "i0", "image": "data:image/png;base64," + base64.b64encode(_png(3)).decode()}),
              json.dumps({"id": "t4", "text": texts[4]})]
    lines += ["{not json", json.dumps({"text": "no id"}), json.dumps({"id": "two", "text": "a", "image": "b"})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")  # shard 3: no row even reaches the model
    out = tmp_path / "out"
    settings = Settings(model=ALIGNED, input=str(tmp_path / "c.jsonl"), rows_per_shard=3)
    report = run(settings, out, progress=False)
    assert (report.shards, report.rows, report.errors) == (4, 6, 6)
    listeners = processes.listeners(processes.process_tree(os.getpid()) - {os.getpid()})  # Ray's
    assert listeners and all(ip in LOOPBACK for ip, _, _ in listeners), listeners  # Ray stays on this machine

    shards = [f"shard-{i:05d}.parquet" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == ["_zoo", *shards]
    assert {"job.json", "errors.jsonl", "errors"} <= {p.name for p in (out / "_zoo").iterdir()}
    want = pa.list_(pa.float32(), aligned.spec.dim)  # fixed_size_list<float>[384]
    schemas = [pq.read_schema(out / name) for name in shards]
    assert all(sch.equals(schemas[0]) for sch in schemas) and schemas[1].field("embedding").type == want
    assert [pq.read_metadata(out / name).num_rows for name in shards] == [3, 0, 3, 0]

    ids = ["t0", "t1", "t2", "t3", "i0", "t4"]
    expected = dict(zip(["t0", "t1", "t2", "t3", "t4"], aligned.encode(texts, "text")))
    for reader, table in _read_as_a_user(out, ray_local).items():
        assert table.num_rows == 6 and sorted(table.column("id").to_pylist()) == sorted(ids), reader
        assert table.column_names == ["id", "modality", "embedding", "metadata"], reader
        vectors = _vectors(table.column("embedding"))
        assert vectors.shape == (6, aligned.spec.dim), reader
        by_id = dict(zip(table.column("id").to_pylist(), vectors))
        for key, vec in expected.items():
            np.testing.assert_allclose(by_id[key], vec, atol=1e-5, err_msg=reader)
        if reader.startswith("py") or reader == "ray.data":  # readers that keep Arrow's types
            assert table.schema.field("embedding").type == want, reader
    errors = [json.loads(line) for line in (out / "_zoo" / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["broken0", "broken1", "broken2", "line:10", "line:11", "two"]

    # the layout zoo embed wrote before: job.json and the errors beside the shards, an all-failed shard as
    # list<float>. A rerun with other settings is refused and moves nothing; with the same settings it moves
    # the folder into the layout above and goes on where it stopped.
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    side = legacy / "_zoo"
    (side / "job.json").rename(legacy / "job.json")
    (side / "errors.jsonl").rename(legacy / "errors.jsonl")
    for f in (side / "errors").iterdir():
        f.rename(legacy / f"{f.stem}.errors.jsonl")
    shutil.rmtree(side)
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "modality": pa.array([], pa.string()),
                             "embedding": pa.array([], pa.list_(pa.float32())),
                             "metadata": pa.array([], pa.string())}), legacy / "shard-00001.parquet")
    with pytest.raises(zoo.InvalidArgumentError, match="other settings .*dimensions"):
        run(Settings(model=ALIGNED, input=settings.input, rows_per_shard=3, dimensions=64), legacy, progress=False)
    assert (legacy / "job.json").exists() and not (legacy / "_zoo").exists()
    (legacy / "shard-00002.parquet").unlink()
    again = run(settings, legacy, progress=False)
    assert (again.skipped, again.rows, again.errors) == (3, 3, 0)
    assert sorted(p.name for p in legacy.iterdir()) == ["_zoo", *shards]
    assert json.loads((legacy / "_zoo" / "job.json").read_text()) == settings.key()
    assert all(pq.read_schema(legacy / name).equals(schemas[0]) for name in shards)
    assert sorted(e["id"] for e in map(json.loads, (legacy / "_zoo" / "errors.jsonl").read_text().splitlines())
                  ) == sorted(e["id"] for e in errors)
    import pyarrow.dataset as ds

    assert ds.dataset(legacy, format="parquet").to_table().num_rows == 6
    (tmp_path / "stray").mkdir()  # shards of no job: refused rather than taken as done
    (out / "shard-00000.parquet").rename(tmp_path / "stray" / "shard-00000.parquet")
    with pytest.raises(zoo.InvalidArgumentError, match="no record of the job"):
        run(settings, tmp_path / "stray", progress=False)


def test_every_output_kind_has_one_schema_from_its_settings(ray_local, tmp_path):
    """Dense (every Parquet precision, Matryoshka widths), multivector, sparse and FDE output: each shard
    holds the schema the settings give, the all-failed shard too, the folder reads as one dataset, and the
    rows hold what encode() gives."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    from zoo.batch import dest, job, sources

    from .tiny_models import make_m3

    folder = str(make_m3(tmp_path / "m3"))  # text only: dense, sparse and multivector output, 32-d
    model = zoo.create(folder, device="cpu")
    texts = ["a red circle", "two blue squares and a star", "green"]
    rows = [{"id": "t0", "text": texts[0]}, {"id": "t1", "text": texts[1]},
            {"id": "p0", "image": "a.png"}, {"id": "p1", "image": "b.png"},  # shard 1: a modality m3 lacks
            {"id": "t2", "text": texts[2]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    i8, u8, f16, f32 = pa.int8(), pa.uint8(), pa.float16(), pa.float32()
    cases = [  # (settings, the embedding column's type, or None for sparse)
        ({}, pa.list_(f32, 32)),
        ({"dimensions": 16, "precision": "float16"}, pa.list_(f16, 16)),
        ({"precision": "int8"}, pa.list_(i8, 32)),
        ({"precision": "uint8"}, pa.list_(u8, 32)),
        ({"precision": "binary"}, pa.list_(i8, 4)),
        ({"dimensions": 16, "precision": "ubinary"}, pa.list_(u8, 2)),
        ({"output": "multivector"}, pa.list_(pa.list_(f32, 32))),
        ({"output": "multivector", "dimensions": 8, "precision": "float16"}, pa.list_(pa.list_(f16, 8))),
        ({"output": "multivector", "precision": "binary"}, pa.list_(pa.list_(i8, 4))),
        ({"output": "sparse"}, None),
        ({"output": "fde", "precision": "float16"}, pa.list_(f16, 10240)),
    ]
    for n, (controls, kind) in enumerate(cases):
        settings = Settings(model=folder, input=str(tmp_path / "c.jsonl"), rows_per_shard=2, **controls)
        schema = dest.shard_schema(model.spec, settings)
        out = tmp_path / f"o{n}"
        dest.check_dest(out, settings, schema)
        for shard in sources.plan(settings.input, 2):
            done = job.embed_shard(model, shard, out, settings, schema, 8)
            assert done["rows"] == [2, 0, 1][shard.index], controls
        files = sorted(out.glob("shard-*.parquet"))
        assert all(pq.read_schema(f).equals(schema) for f in files), controls
        assert pq.read_metadata(files[1]).num_rows == 0
        if kind is None:
            assert (schema.field("indices").type, schema.field("values").type) == (pa.list_(pa.int32()),
                                                                                  pa.list_(f32))
        else:
            assert schema.field("embedding").type == kind, controls
        table = ds.dataset(out, format="parquet").to_table()
        assert table.num_rows == 3 and pa.concat_tables([pq.read_table(f) for f in files]).num_rows == 3
        assert ray_local.data.read_parquet(str(out)).count() == 3 and len(pd.read_parquet(out)) == 3
        assert duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall() == [(3,)]
        # the rows hold what encode() gives for the same batches (the job embeds shard by shard)
        encode = dict(controls, output=controls.get("output"))
        got = table.to_pydict()
        assert got["id"] == ["t0", "t1", "t2"]
        want = [model.encode(texts[:2], "text", **encode), model.encode(texts[2:], "text", **encode)]
        if kind is None:
            want = sps.vstack(want, format="csr")
            for i in range(3):
                assert got["indices"][i] == want[i].indices.tolist()
                np.testing.assert_allclose(got["values"][i], want[i].data, rtol=1e-6)
        elif pa.types.is_list(kind) and not pa.types.is_fixed_size_list(kind):
            want = want[0] + want[1]
            for i in range(3):
                np.testing.assert_array_equal(np.array(got["embedding"][i], want[i].dtype), want[i])
        else:
            want = np.concatenate(want)
            np.testing.assert_array_equal(np.array(got["embedding"], want.dtype), want)
