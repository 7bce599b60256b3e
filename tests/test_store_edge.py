"""The embedded vector store on Qdrant Edge: HNSW (and Qdrant's quantization) against exact search, the same
layout, ids and payloads as a server collection, persistence, the folder's lock, snapshots and bad names."""

import json
import os
import tarfile

import numpy as np
import pytest
import scipy.sparse as sps

import zoo
from zoo.store import VectorStore, point_id
from zoo.store import edge as E
from zoo.store.server import ServerBackend

pytest.importorskip("qdrant_edge")
K = 10


@pytest.fixture
def small_index(monkeypatch):
    """Index segments past 100 KB (Qdrant's default is 10 MB): a few thousand test vectors get an HNSW graph,
    and searches over them use it (the full-scan threshold is as low)."""
    monkeypatch.setattr(E, "INDEXING_THRESHOLD_KB", 100)
    monkeypatch.setattr(E, "FULL_SCAN_THRESHOLD_KB", 100)


def clustered(n: int, dim: int, seed: int, centres: int = 50) -> np.ndarray:
    """``n`` unit vectors around ``centres`` random unit centres (real embeddings cluster by topic)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, dim)).astype(np.float32) * (0.6 / dim**0.5)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize(("precision", "bar"), [("float32", 0.95), ("int8", 0.95), ("binary", 0.95)])
def test_hnsw_and_quantization_recall_against_exact_search(small_index, tmp_path, precision, bar):
    """Past the indexing threshold the collection is indexed (every vector in the HNSW graph), and its top 10
    for held-out queries are exact search's at the bar, with exact search's scores for what it finds (the
    quantized candidates are rescored by the float32 rows); a where-filter keeps to its items."""
    n, dim = 3000, 64  # 750 KB of vectors; binary quantization needs ≥ 64 dims to rank at all
    data = clustered(n + 40, dim, seed=0)
    corpus, queries = data[:n], data[n:]
    ids = [f"i{i}" for i in range(n)]
    store = VectorStore(f"qdrant:{tmp_path / 'db'}", indexing_threads=2)
    store.ensure("c", "dense", dim, precision=precision)
    store.upsert("c", "dense", ids, list(corpus), [{"part": i % 3} for i in range(n)])
    hits = [store.search("c", "dense", q, K) for q in queries]  # the first search builds the index
    info = store.backend.info("c")
    assert info.points_count == n and info.indexed_vectors_count >= n
    config = json.loads((tmp_path / "db" / "c" / "edge_config.json").read_text())
    assert next(iter(config["vectors"]["dense"].get("quantization_config") or {"none": 0})) == {
        "float32": "none", "int8": "scalar", "binary": "binary"}[precision]
    exact = queries @ corpus.T
    truth = [[ids[j] for j in np.argsort(-row)[:K]] for row in exact]
    assert recall([[h.id for h in found] for found in hits], truth) >= bar
    for found, row in zip(hits, exact):
        np.testing.assert_allclose([h.score for h in found], [row[int(h.id[1:])] for h in found], atol=1e-4)
    for q in queries[:10]:
        got = store.search("c", "dense", q, K, where={"part": 2})
        assert len(got) == K and all(h.metadata == {"part": 2} and int(h.id[1:]) % 3 == 2 for h in got)
    store.close()


@pytest.mark.filterwarnings("ignore:Local mode performs exact")
@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_a_filtered_search_cut_off_in_the_graph_scores_every_match(small_index, tmp_path, monkeypatch, backend):
    """Qdrant's filtered HNSW walk only steps onto points the filter admits, and on some parallel index builds
    it is cut off after one (1 of 1,000 matches found, about one build in five here). Fewer hits than ``k``
    while more items match is such a cut: the store then scores every match, so the caller gets exact
    search's top ``k`` among them, not one item."""
    n, dim = 3000, 64
    data = clustered(n + 5, dim, seed=0)
    corpus, queries = data[:n], data[n:]
    ids = [f"i{i}" for i in range(n)]
    store = VectorStore(f"qdrant:{tmp_path / 'db'}", indexing_threads=2)
    if backend == "server":
        store.backend.close()
        store.backend = ServerBackend({"location": ":memory:"})
    store.ensure("c", "dense", dim)
    store.upsert("c", "dense", ids, list(corpus), [{"part": i % 3} for i in range(n)])
    graph_walks = []
    search = type(store.backend).search

    def cut_off(self, collection, layout, query, k, where, *, exact=False):
        hits = search(self, collection, layout, query, k, where, exact=exact)
        if where and not exact:
            graph_walks.append(len(hits))
            return hits[:1]  # what a cut-off walk returns
        return hits

    monkeypatch.setattr(type(store.backend), "search", cut_off)
    for q in queries:
        got = store.search("c", "dense", q, K, where={"part": 2})
        exact = np.where(np.arange(n) % 3 == 2, corpus @ q, -np.inf)
        assert [h.id for h in got] == [ids[j] for j in np.argsort(-exact)[:K]]
        np.testing.assert_allclose([h.score for h in got], np.sort(exact)[::-1][:K], atol=1e-4)
    assert graph_walks == [K] * len(queries)
    few = store.search("c", "dense", queries[0], K, where={"part": 2, "missing": 1})  # nothing matches: one walk
    assert few == [] and graph_walks[-1] == 0 and len(graph_walks) == len(queries) + 1
    store.close()


def test_multivector_and_sparse_past_the_threshold_match_exact_search(small_index, tmp_path):
    """MaxSim over an indexed multi-vector collection recalls exact MaxSim's top 10; sparse search (an
    inverted index once optimized) is exact: the same items with the same scores."""
    rng = np.random.default_rng(1)
    store = VectorStore(f"qdrant:{tmp_path / 'db'}", indexing_threads=2)
    multi = [clustered(int(t), 32, seed=10 + i, centres=20) for i, t in enumerate(rng.integers(2, 6, 1500))]
    mids = [str(i) for i in range(len(multi))]
    store.ensure("m", "multivector", 32)
    store.upsert("m", "multivector", mids, multi)
    found, truth = [], []
    for i in range(20):
        qm = clustered(3, 32, seed=1000 + i, centres=20)
        maxsim = np.array([float((qm @ m.T).max(axis=1).sum()) for m in multi])
        hits = store.search("m", "multivector", qm, K)
        np.testing.assert_allclose([h.score for h in hits], maxsim[[int(h.id) for h in hits]], atol=1e-4)
        found.append([h.id for h in hits])
        truth.append([mids[j] for j in np.argsort(-maxsim)[:K]])
    assert store.backend.info("m").indexed_vectors_count > 0 and recall(found, truth) >= 0.95
    sparse = sps.random(4000, 500, density=0.04, random_state=3, dtype=np.float32, format="csr")
    sids = [str(i) for i in range(sparse.shape[0])]
    store.ensure("s", "sparse", 0)
    store.upsert("s", "sparse", sids, [(r.indices, r.data) for r in sparse])
    for qs in sps.random(10, 500, density=0.05, random_state=4, dtype=np.float32, format="csr"):
        exact = (sparse @ qs.T).toarray().ravel()
        hits = store.search("s", "sparse", (qs.indices, qs.data), K)
        np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1][:K], atol=1e-4)
        np.testing.assert_allclose([exact[int(h.id)] for h in hits], [h.score for h in hits], atol=1e-4)
    store.close()


@pytest.mark.filterwarnings("ignore:Local mode performs exact")  # the stand-in ignores search params
def test_the_server_layout_ids_and_payloads_are_the_embedded_ones(tmp_path):
    """The server backend (qdrant-client; its local mode stands in for a server here) makes the same
    collection layout, point ids and payloads as the embedded shard, and both answer a search alike."""
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((50, 16)).astype(np.float32)
    ids, meta = [f"doc-{i}" for i in range(50)], [{"lang": ["en", "fr"][i % 2], "n": i} for i in range(50)]
    embedded = VectorStore(f"qdrant:{tmp_path / 'db'}")
    server = VectorStore("qdrant::memory:")
    server.backend.close()
    server.backend = ServerBackend({"location": ":memory:"})
    for store in (embedded, server):
        store.ensure("c", "dense", 16, precision="int8")
        store.ensure("m", "multivector", 4, precision="binary")
        store.ensure("s", "sparse", 0)
        store.upsert("c", "dense", ids, list(rows), meta)
    for name in ("c", "m", "s"):
        assert embedded.backend.layouts(name) == server.backend.layouts(name)
    assert embedded.backend.layouts("c")["dense"] == zoo.store.Layout("dense", 16, quantization="int8")
    records, _ = server.backend.client.scroll("c", limit=100, with_payload=True)
    import qdrant_edge as Q

    shard = embedded.backend._open("c")
    edge_records, _ = shard.scroll(Q.ScrollRequest(limit=100, with_payload=True))
    assert {r.id: r.payload for r in records} == {str(r.id): r.payload for r in edge_records}
    assert {r.id for r in records} == {point_id(i) for i in ids}
    assert records[0].payload == {"id": ids[int(records[0].payload["id"][4:])], "metadata": meta[
        int(records[0].payload["id"][4:])]}
    for q in rng.standard_normal((5, 16)).astype(np.float32):
        a, b = embedded.search("c", "dense", q, 5, where={"lang": "fr"}), server.search("c", "dense", q, 5,
                                                                                          where={"lang": "fr"})
        assert [m.id for m in a] == [m.id for m in b] and [m.metadata for m in a] == [m.metadata for m in b]
        np.testing.assert_allclose([m.score for m in a], [m.score for m in b], atol=1e-4)
    embedded.close()
    server.close()


def test_persistence_lock_and_memory_store(tmp_path):
    """A closed store reopens with its points and the same answers; a second owner of an open collection's
    folder is refused naming the folder; ``qdrant::memory:`` lives in a folder removed at close."""
    rows = clustered(300, 32, seed=5)
    ids = [str(i) for i in range(300)]
    uri = f"qdrant:{tmp_path / 'db'}"
    store = VectorStore(uri)
    store.ensure("c", "dense", 32)
    store.upsert("c", "dense", ids, list(rows))
    before = [(m.id, m.score) for m in store.search("c", "dense", rows[7], K)]
    other = VectorStore(uri)
    with pytest.raises(zoo.InvalidArgumentError, match=f"collection folder {tmp_path / 'db' / 'c'} is open in "
                                                         "another store"):
        other.count("c")
    other.close()
    store.close()
    with VectorStore(uri) as again:
        assert again.count("c") == 300 and [(m.id, m.score) for m in again.search("c", "dense", rows[7], K)] == before
    memory = VectorStore("qdrant::memory:")
    memory.ensure("c", "sparse", 0)
    memory.upsert("c", "sparse", ["a"], [(np.array([3]), np.array([1.0]))])
    folder = memory.backend.root
    assert memory.count("c") == 1 and (folder / "c").is_dir()
    memory.close()
    assert not folder.exists()


def test_snapshot_round_trip(tmp_path):
    """A snapshot is a plain tar of segments/ and wal/ that keeps the segments' holes; Edge's own unpacker
    takes it, and the shard it gives (or the collection restored from it) holds the same points and answers
    the same searches."""
    rows = clustered(500, 32, seed=6)
    ids = [f"x{i}" for i in range(500)]
    store = VectorStore(f"qdrant:{tmp_path / 'db'}")
    store.ensure("c", "dense", 32)
    store.upsert("c", "dense", ids, list(rows), [{"n": i} for i in range(500)])
    want = [(m.id, round(m.score, 5), m.metadata) for m in store.search("c", "dense", rows[3], K)]
    snap = store.snapshot("c", tmp_path / "snaps" / "c.snapshot")
    with tarfile.open(snap, "r:") as tar:  # uncompressed
        assert {n.split("/")[0] for n in tar.getnames()} == {"segments", "wal"}
    apparent = sum(f.stat().st_size for f in (tmp_path / "db" / "c").rglob("*") if f.is_file())
    assert os.path.getsize(snap) * 20 < apparent  # the holes stay holes (tarfile would write them out)
    assert store.count("c") == 500  # the store reopens the collection after the snapshot
    store.restore("copy", snap)
    assert store.count("copy") == 500
    assert [(m.id, round(m.score, 5), m.metadata) for m in store.search("copy", "dense", rows[3], K)] == want
    with pytest.raises(zoo.InvalidArgumentError, match="already exists"):
        store.restore("copy", snap)
    (tmp_path / "junk.snapshot").write_bytes(b"not a tar")
    with pytest.raises(zoo.InvalidArgumentError, match="not a shard snapshot"):
        store.restore("junk", tmp_path / "junk.snapshot")
    assert not (tmp_path / "db" / "junk").exists()
    store.close()
    import qdrant_edge as Q

    Q.EdgeShard.unpack_snapshot(str(snap), str(tmp_path / "unpacked"))
    shard = Q.EdgeShard.load(str(tmp_path / "unpacked"))
    assert shard.count(Q.CountRequest(exact=True)) == 500
    hits = shard.query(Q.QueryRequest(query=Q.Query.Nearest(rows[3], using="dense"), limit=K, with_payload=True))
    assert [(p.payload["id"], round(p.score, 5), p.payload["metadata"]) for p in hits] == want
    shard.close()


@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", ".", "a b"])
def test_bad_collection_names_are_refused(tmp_path, name):
    with VectorStore(f"qdrant:{tmp_path / 'db'}") as store:
        with pytest.raises(zoo.InvalidArgumentError, match="must be letters, digits"):
            store.ensure(name, "dense", 4)
    assert not (tmp_path / "x").exists()


def test_bad_settings_and_folders_are_refused(tmp_path):
    """A precision Qdrant has no quantization for, quantized sparse vectors, an input of the wrong width,
    a missing collection and a folder of qdrant-client's local mode each say what is wrong."""
    with VectorStore(f"qdrant:{tmp_path / 'db'}") as store:
        with pytest.raises(zoo.InvalidArgumentError, match="'float16' has no quantization"):
            store.ensure("c", "dense", 4, precision="float16")
        with pytest.raises(zoo.InvalidArgumentError, match="sparse vectors are stored as float32"):
            store.ensure("s", "sparse", 0, precision="int8")
        store.ensure("c", "dense", 4)
        with pytest.raises(zoo.InvalidArgumentError, match="dimension"):
            store.upsert("c", "dense", ["a"], [np.ones(5, np.float32)])
        with pytest.raises(zoo.InvalidArgumentError, match="'absent' does not exist"):
            store.search("absent", "dense", np.ones(4, np.float32))
        with pytest.raises(zoo.InvalidArgumentError, match="one of each per item"):
            store.upsert("c", "dense", ["a", "b"], [np.ones(4, np.float32)])
    legacy = tmp_path / "legacy"
    (legacy / "collection" / "c").mkdir(parents=True)
    (legacy / "meta.json").write_text("{}")
    with pytest.raises(zoo.InvalidArgumentError, match="qdrant-client local-mode database"):
        VectorStore(f"qdrant:{legacy}")
