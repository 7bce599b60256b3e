"""Output kinds are handlers in one place (zoo.kinds): a kind registered by a test alone works through
``encode()``, the wire, the door's JSON, scoring, the demo's index, the vector database and Parquet; every
built-in handler keeps its own invariants; and no module outside zoo/kinds dispatches on kind names."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import kinds, scoring
from zoo import postprocess as pp
from zoo.front import EncodeOptions

from .tiny_models import make_colbert

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("dense", "multivector", "sparse", "score", "fde")
pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")


class Centroid(kinds.OutputKind):
    """A toy kind: the mean of an item's multi-vector output, post-processed like a dense row. Everything else
    (wire, JSON, scoring, index, store, Parquet) is the base class's one-vector-per-item layout."""

    name = "centroid"
    raw = "multivector"

    def finish(self, raw, opts, spec, *, query):
        means = np.stack([np.asarray(x, np.float32).mean(0) for x in raw])
        return pp.postprocess(means, normalize_output=opts.normalize, dimensions=opts.dimensions,
                              precision=opts.precision)


@pytest.fixture
def centroid():
    kind = kinds.register(Centroid())
    yield kind
    kinds.unregister(kind.name)


@pytest.fixture(scope="module")
def colbert(tmp_path_factory):
    return zoo.create(str(make_colbert(tmp_path_factory.mktemp("kinds") / "colbert")), device="cpu")


TEXTS = ["a red circle", "two blue squares", "a green star on the left", "héllo wörld"]


def test_a_kind_registered_alone_works_in_process_and_over_the_wire(centroid, colbert):
    """encode(output="centroid") is the handler's post-processing of the multi-vector output; the wire round
    trip, the door's JSON and the CLI's choices follow from the handler alone."""
    from serving import contract
    from serving.openai_api import embedding_value
    from zoo.cli import build_parser

    vectors = colbert.encode(TEXTS, "text", output="multivector", normalize=False)
    got = colbert.encode(TEXTS, "text", output="centroid")
    want = pp.normalize(np.stack([v.mean(0) for v in vectors]))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert colbert.encode(TEXTS[:2], "text", output="centroid", precision="int8").dtype == np.int8
    per_item = colbert.encode_per_item(TEXTS, "text", output="centroid")
    np.testing.assert_allclose(np.stack(per_item), got, atol=1e-6)
    with pytest.raises(zoo.InvalidArgumentError, match="max_vectors applies to multivector output, not 'centroid'"):
        colbert.encode(TEXTS, "text", output="centroid", max_vectors=2)

    for precision in ("float32", "float8", "binary"):
        opts = EncodeOptions(output="centroid", precision=precision)
        result = colbert.encode(TEXTS, "text", output="centroid", precision=precision)
        wire = contract.result_to_wire(result, opts)
        assert tuple(wire) == contract.KIND_OUTPUTS["centroid"] == (contract.OUTPUT,)
        back = contract.result_from_wire(wire, opts)
        assert back.dtype == result.dtype and np.array_equal(back.view(np.uint8), result.view(np.uint8))
    assert contract.declared_outputs(colbert.spec.outputs) == {"TOKENS": "INT32", "LENGTHS": "INT32", "SPEC": "BYTES"}

    assert embedding_value(got[0], "float", "centroid") == pytest.approx(got[0].tolist())
    assert isinstance(embedding_value(got[0], "base64", "centroid"), str)
    sub = build_parser()._subparsers._group_actions[0].choices
    assert "centroid" in next(a for a in sub["encode"]._actions if a.dest == "output").choices
    assert "centroid" in next(a for a in sub["embed"]._actions if a.dest == "output").choices
    assert "centroid" in contract.KIND_OUTPUTS and "centroid" in kinds.DERIVED


def test_a_kind_registered_alone_is_scored_indexed_stored_and_written(centroid, colbert, tmp_path):
    """Scoring, the demo's index (saved, reloaded, searched), the vector database and a Parquet shard take the
    new kind through its handler, with no change to their modules."""
    import pyarrow.parquet as pq

    from ui import corpus as C
    from ui.layouts import ArrayIndex, open_index
    from zoo.batch import dest, job, sources

    docs = colbert.encode(TEXTS, "text", output="centroid")
    query = colbert.encode(["a red circle"], "text", output="centroid")
    scores = scoring.score("centroid", query, docs)
    np.testing.assert_allclose(scores, query @ docs.T, atol=1e-6)
    assert centroid.bytes_per_item(None, colbert.spec.dim, None, "int8") == colbert.spec.dim

    corpus = C.Corpus(tmp_path / "corpus")
    for text in TEXTS:
        corpus.add_text(text)
    index = open_index("centroid", tmp_path / "index", colbert.spec)
    assert isinstance(index, ArrayIndex) and index.kind == "centroid"
    index.update(corpus, lambda x, m: colbert.encode(x, m, output="centroid"))
    hits = index.search(query[0], corpus, "text", k=2)
    assert hits[0].item.text == "a red circle" and hits[0].score == pytest.approx(float(scores.max()), abs=1e-5)
    reloaded = open_index("centroid", tmp_path / "index", colbert.spec)
    assert reloaded.ids == index.ids and np.array_equal(reloaded.result, index.result)
    assert reloaded.bytes_per_item() == 4 * colbert.spec.dim
    with pytest.raises(zoo.InvalidArgumentError, match="full-width float32"):
        reloaded.search(query[0], corpus, "text", dimensions=8)

    pytest.importorskip("qdrant_client")
    from zoo.store import VectorStore

    store = VectorStore("qdrant::memory:")
    try:
        store.ensure("c", "centroid", docs.shape[1])
        store.upsert("c", "centroid", [str(i) for i in range(len(docs))], list(docs))
        assert [m.id for m in store.search("c", "centroid", query[0], k=1)] == ["0"]
        with pytest.raises(zoo.InvalidArgumentError, match="choose another --collection"):
            store.ensure("c", "multivector", docs.shape[1])
    finally:
        store.close()

    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n"
                                              for i, t in enumerate(TEXTS)))
    settings = job.Settings(model=colbert.spec.name, input=str(tmp_path / "t.jsonl"), output="centroid")
    schema = dest.shard_schema(colbert.spec, settings)
    dest.check_dest(tmp_path / "out", settings, schema)
    [shard] = sources.plan(settings.input, 10)
    assert job.embed_shard(colbert, shard, tmp_path / "out", settings, schema, 4)["rows"] == len(TEXTS)
    table = pq.read_table(dest.shard_path(tmp_path / "out", 0))
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), docs, atol=1e-6)


def test_a_raw_kind_registered_alone_is_one_a_spec_may_list():
    """OUTPUT_KINDS and the spec's check read the registry: a raw kind registered later is accepted, a
    derived one never is (families produce raw kinds only)."""
    from zoo import spec as S

    class Norm(kinds.OutputKind):
        name = "norm"

    base = dict(name="toy", family="x", modalities=("text",), dim=4, license="MIT", source="toy")
    with pytest.raises(ValueError, match="must be distinct kinds"):
        zoo.EmbedderSpec(**base, outputs=("norm",))
    kinds.register(Norm())
    try:
        assert "norm" in S.OUTPUT_KINDS and zoo.EmbedderSpec(**base, outputs=("norm",)).output == "norm"
        with pytest.raises(ValueError, match="must be distinct kinds"):
            zoo.EmbedderSpec(**base, outputs=("fde",))
    finally:
        kinds.unregister("norm")
    assert "norm" not in S.OUTPUT_KINDS


def _result(name: str, rng: np.random.Generator, n: int = 3, dim: int = 16):
    """A float32 result of a built-in kind, as encode() gives it (no model needed)."""
    if name == "multivector":
        return [pp.normalize(rng.standard_normal((1 + i, dim)).astype(np.float32)) for i in range(n)]
    if name == "sparse":
        rows = [(np.array(sorted(rng.choice(50, 2 + i, replace=False))), rng.random(2 + i).astype(np.float32))
                for i in range(n)]
        return kinds.sparse_rows(rows, 50)
    if name == "score":
        return rng.standard_normal(n).astype(np.float32)
    return pp.normalize(rng.standard_normal((n, dim)).astype(np.float32))


@pytest.mark.parametrize("name", BUILTIN)
def test_each_builtin_handler_keeps_its_invariants(name):
    """Every handler: items split and join back, the wire form round-trips, an item has a JSON form, a result
    scores against itself as a square matrix (a score refuses to), bytes per item are positive."""
    import scipy.sparse as sps

    handler = kinds.get(name)
    result = _result(name, np.random.default_rng(0))
    items = handler.items_of(result)
    assert len(items) == handler.count(result) == 3

    def same(a, b) -> bool:
        if isinstance(a, list):
            return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
        if sps.issparse(a):
            return a.shape == b.shape and np.array_equal(a.toarray(), b.toarray())
        return np.array_equal(a, b)

    assert same(handler.of_items(items), result)
    assert same(handler.concat([handler.take(result, [0]), handler.take(result, [1, 2])]), result)
    arrays = handler.to_arrays(result)
    assert tuple(arrays) == handler.wire_roles
    assert same(handler.from_arrays(arrays, vocab_size=50), result)
    json.dumps([handler.to_json(x) for x in items])
    if handler.pairs:  # a score is the end of a comparison: not compared again
        with pytest.raises(zoo.InvalidArgumentError, match="already a score"):
            handler.score(result, result)
    else:
        assert handler.score(result, result).shape == (3, 3)
    assert handler.bytes_per_item(result, 16) > 0
    assert handler.produced_from in kinds.raw_names()


def test_every_builtin_kind_is_registered_with_its_raw_kind():
    assert kinds.names() == BUILTIN and kinds.raw_names() == BUILTIN[:4]
    assert dict(kinds.DERIVED) == {"fde": "multivector"}
    with pytest.raises(zoo.InvalidArgumentError, match="unknown output kind"):
        kinds.get("nope")
    assert kinds.check_output(None, ("multivector",), "m") == "multivector"
    assert kinds.check_output("fde", ("multivector",), "m") == "fde"
    with pytest.raises(zoo.InvalidArgumentError, match="cannot give output 'fde'; it gives 'dense'"):
        kinds.check_output("fde", ("dense",), "m")


# ---- nothing outside zoo/kinds dispatches on kind names --------------------------------------------------
#: modules that still name kinds in comparisons, and why (anything else doing so fails the test below)
ALLOWED = {
    "zoo/families/": "families produce the raw kinds (`forward(..., kind)`): the one place besides its handler "
                     "that a new raw kind touches",
    "zoo/evaluation/embed.py": "`zoo eval` measures dense vectors only (Matryoshka × precision): it asks for the "
                               "dense kind by name, it does not dispatch between kinds",
    "zoo/evaluation/sparse.py": "`zoo eval` of a sparse model (SPLADE, BM25) measures its sparse rows only: it asks "
                                "for the sparse kind by name, it does not dispatch between kinds",
    "zoo/evaluation/hybrid.py": "`zoo eval --hybrid` fuses a dense and a sparse search, each asked for by name",
    "zoo/evaluation/rerank.py": "`zoo eval --rerank` compares a reranker with the dense first stage; its rows are "
                                "named after it",
    "zoo/extras.py": "the `sparse` extra is named after the sparse models it installs (SPLADE-tiny's weights, BM25); "
                     "its table is keyed by extra names, not dispatched on",
    "zoo/listwise.py": "the listwise reranker reads dense vectors only (the cosine against a pseudo-query): it "
                       "checks for the dense kind by name, it does not dispatch between kinds",
}
#: single expressions that name a kind without dispatching on it
ALLOWED_CODE = {
    ("ui/layouts.py", "{'sparse': '.npz'}"): "the sparse index's file role: the name its files on disk carry",
}


def _kind_dispatch(tree: ast.AST) -> list[tuple[int, str]]:
    """Comparisons against kind-name literals (``x == "sparse"``, ``x in ("dense", "fde")``), dict literals
    keyed by kind names (dispatch tables), and ``hasattr(x, "tocsr")``."""
    def named(node: ast.AST, names: tuple[str, ...] = BUILTIN) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e, names) for e in node.elts)
        return False

    # "score" is also the key every ranking answer gives its number under (sentence-transformers' rank, vLLM's
    # /score): a dict keyed by it is a result, not a table of kinds
    table_keys = tuple(n for n in BUILTIN if n != "score")

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(x) for x in (node.left, *node.comparators)):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Dict) and any(k is not None and named(k, table_keys) for k in node.keys):
            found.append((node.lineno, ast.unparse(node)[:80]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"
              and len(node.args) == 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "tocsr"):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_outside_zoo_kinds_dispatches_on_kind_names():
    offenders = []
    for package in ("zoo", "serving", "ui", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("zoo/kinds/") or any(rel.startswith(prefix) for prefix in ALLOWED):
                continue
            offenders += [f"{rel}:{line}: {code}" for line, code in _kind_dispatch(ast.parse(path.read_text()))
                          if (rel, code) not in ALLOWED_CODE]
    assert not offenders, "dispatch on output kinds belongs to their handlers (zoo.kinds):\n" + "\n".join(offenders)


def test_the_dispatch_check_sees_what_it_should():
    code = 'if out == "sparse": pass\nif k in ("dense", "fde"): pass\nT = {"multivector": 1}\nhasattr(r, "tocsr")\n'
    assert [line for line, _ in _kind_dispatch(ast.parse(code))] == [1, 2, 3, 4]
    assert _kind_dispatch(ast.parse('f(kind="dense")\nx = ("dense", "sparse")\n')) == []
