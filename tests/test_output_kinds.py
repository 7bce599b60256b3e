"""Multi-vector and sparse output: parity with the reference libraries on tiny random models saved by them,
the output controls, scoring, MUVERA FDE recall, and folders refused rather than loaded differently."""

import json
import shutil

import numpy as np
import pytest
import scipy.sparse as sps
import torch

import zoo
from zoo import fde, kinds, scoring
from zoo import postprocess as pp

from .tiny_models import (
    TEXTS,
    assert_multivector_parity,
    assert_parity,
    assert_tells_apart,
    flagembedding_class,
    make_colbert,
    make_colpali,
    make_colqwen2,
    make_m3,
    make_pylate_colbert,
    make_splade,
    make_tiny_text_folder,
)

pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")
DOCS = ["a red circle, on the left.", "two blue squares", "héllo wörld 🐱", "", "long " * 300, "x . , !"]


def as_csr(t: torch.Tensor) -> sps.csr_matrix:
    t = t.coalesce().cpu()
    i = t.indices().numpy()
    return sps.csr_matrix((t.values().numpy(), (i[0], i[1])), shape=tuple(t.shape))


@pytest.mark.parametrize("variant", [
    dict(),
    dict(expansion={"strategy": "fixed", "length": 16}, skiplist=[",", ".", "!"]),
    dict(expansion={"strategy": "min", "length": 8, "attend": True}, prompts={"query": "q: ", "document": "d: "}),
], ids=["plain", "fixed-expansion-skiplist", "min-expansion-attend-prompts"])
def test_colbert_parity_with_multivectorencoder(tmp_path, variant):
    from sentence_transformers import MultiVectorEncoder

    folder = make_colbert(tmp_path / "colbert", **variant)
    ours, ref = zoo.create(str(folder), device="cpu"), MultiVectorEncoder(str(folder), device="cpu")
    assert ours.spec.outputs == ("multivector",) and ours.spec.dim == 16
    q = ours.encode(TEXTS, "text", prompt_name="query")
    d = ours.encode(DOCS, "text", prompt_name="document")
    ref_q, ref_d = ref.encode_query(TEXTS), ref.encode_document(DOCS)
    assert_multivector_parity(q, ref_q)
    assert_multivector_parity(d, ref_d)
    assert np.allclose(scoring.maxsim(q, d), ref.similarity(ref_q, ref_d).numpy(), atol=1e-4)
    if "skiplist" in variant:  # punctuation is dropped on the document side only
        assert len(d[5]) < len(ours.encode(DOCS[5:], "text", prompt_name="query")[0])


def test_pylate_layout_colbert_parity(tmp_path):
    """A checkpoint in PyLate's layout (what lightonai/colbertv2.0 and most ColBERTs ship) loads as
    MultiVectorEncoder loads it: prefixes as one token, query expansion, punctuation skip list."""
    from sentence_transformers import MultiVectorEncoder

    folder = make_pylate_colbert(tmp_path / "pylate")
    ours, ref = zoo.create(str(folder), device="cpu"), MultiVectorEncoder(str(folder), device="cpu")
    assert ours.spec.prompts == {"query": "[unused0]", "document": "[unused1]"} and ours.spec.dim == 16
    q = ours.encode(TEXTS, "text", prompt_name="query")
    d = ours.encode(DOCS, "text", prompt_name="document")
    assert {len(x) for x in q} == {16}  # expanded to the query length
    assert_multivector_parity(q, ref.encode_query(TEXTS))
    assert_multivector_parity(d, ref.encode_document(DOCS))
    assert ours.tokenizer.tokenize("[unused0]hello")[0] == "[unused0]"
    spec = zoo.get_spec("lightonai/colbertv2.0")
    assert spec.family == "colbert" and spec.outputs == ("multivector",) and spec.prompts["query"] == "[unused0]"


def test_splade_parity_with_sparseencoder(tmp_path):
    from sentence_transformers import SparseEncoder

    folder = make_splade(tmp_path / "splade")
    ours, ref = zoo.create(str(folder), device="cpu"), SparseEncoder(str(folder), device="cpu")
    assert ours.spec.outputs == ("sparse",) and ours.spec.vocab_size == 30522
    got, want = ours.encode(TEXTS, "text"), as_csr(ref.encode(TEXTS, convert_to_sparse_tensor=True))
    assert isinstance(got, sps.csr_matrix) and got.shape == want.shape and got.dtype == np.float32
    assert_tells_apart(want.toarray())
    want.sort_indices()
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    # rtol on the weights; atol covers float rounding of near-zero weights (long texts get a pass of their own)
    assert np.allclose(got.data, want.data, rtol=1e-4, atol=1e-6)
    assert np.allclose(scoring.sparse_dot(got[:3], got), ref.similarity(ref.encode(TEXTS[:3]), ref.encode(TEXTS)),
                       rtol=1e-4)
    top = ours.encode(TEXTS[:2], "text", top_k=4)
    assert top.getnnz(axis=1).tolist() == [4, 4]
    terms, ref_terms = ours.terms(top[:1])[0], ref.decode(ref.encode(TEXTS[:1])[0], top_k=4)
    assert list(terms) == [t for t, _ in ref_terms]  # the same tokens, heaviest first
    assert np.allclose(list(terms.values()), [w for _, w in ref_terms], rtol=1e-4)
    unit = ours.encode(TEXTS[:2], "text", normalize=True)
    assert np.allclose(sps.linalg.norm(unit, axis=1), 1, atol=1e-5)
    with pytest.raises(zoo.InvalidArgumentError, match="sparse output values"):
        ours.encode(TEXTS[:2], "text", precision="float16")


def flagembedding_m3():
    """FlagEmbedding's BGE-M3 embedder, ``BGEM3FlagModel`` (FlagEmbedding's own code, through its public names).

    FlagEmbedding 1.4.2 (the newest release) cannot be imported whole beside transformers 5.x: its top-level
    ``__init__`` re-exports ``FlagEmbedding.inference``, whose ``__init__`` imports the rerankers, and
    ``inference/reranker/decoder_only/models/modeling_minicpm_reranker.py`` (and ``gemma_model.py``) import
    ``transformers.modeling_attn_mask_utils``, which transformers 5 removed. The embedders do not: the public
    subpackage ``FlagEmbedding.inference.embedder`` loads unchanged once the two re-exporting ``__init__`` files
    above it are passed over (bare package objects stand in for them while it loads)."""
    try:
        from FlagEmbedding import BGEM3FlagModel

        return BGEM3FlagModel
    except ModuleNotFoundError as err:
        if err.name != "transformers.modeling_attn_mask_utils":
            raise
    return flagembedding_class(["FlagEmbedding", "FlagEmbedding.inference"], "FlagEmbedding.inference.embedder",
                               "BGEM3FlagModel")


def test_m3_three_kinds_parity_with_flagembedding(tmp_path):
    """Dense, sparse and multi-vector output of one BGE-M3-layout folder against FlagEmbedding's BGEM3FlagModel."""
    BGEM3FlagModel = flagembedding_m3()

    folder = make_m3(tmp_path / "m3")
    ours = zoo.create(str(folder), device="cpu")
    assert ours.spec.family == "m3" and ours.spec.outputs == ("dense", "sparse", "multivector")
    ref = BGEM3FlagModel(str(folder), use_fp16=False, devices="cpu")
    want = ref.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True,
                      max_length=ours.max_length)
    assert_parity(ours.encode(TEXTS, "text"), want["dense_vecs"], what="dense")
    assert_multivector_parity(ours.encode(TEXTS, "text", output="multivector"), want["colbert_vecs"])
    sparse = ours.encode(TEXTS, "text", output="sparse")
    lexical = np.zeros(sparse.shape)
    for r, weights in enumerate(want["lexical_weights"]):
        lexical[r, [int(k) for k in weights]] = list(weights.values())
    assert_tells_apart(lexical[[r for r, w in enumerate(want["lexical_weights"]) if w]])  # "" weighs no term
    for r, weights in enumerate(want["lexical_weights"]):
        row = sparse[r]
        assert sorted(int(k) for k in weights) == row.indices.tolist()
        assert np.allclose([weights[str(k)] for k in row.indices], row.data, rtol=1e-4)
    for r, terms in enumerate(ours.terms(sparse[:3])):  # readable terms, as FlagEmbedding decodes its ids
        ref_terms = ref.convert_id_to_token(want["lexical_weights"][r])  # one dict in, one dict out
        assert len(terms) == len(ref_terms) and list(terms.values()) == sorted(terms.values(), reverse=True)
        for token, weight in terms.items():
            assert np.isclose(ref_terms[ours.tokenizer.decode([ours.tokenizer.convert_tokens_to_ids(token)])],
                              weight, rtol=1e-4)
    mv = ours.encode(TEXTS[:2], "text", output="multivector")
    assert np.allclose(scoring.maxsim(mv, mv), [[ref.colbert_score(a, b) * len(a) for b in mv] for a in mv],
                       rtol=1e-4)


@pytest.mark.parametrize("maker", [make_colqwen2, make_colpali], ids=["colqwen2", "colpali"])
def test_colvision_parity_with_transformers(tmp_path, maker):
    """Pages and queries against transformers' ColPali / ColQwen2 model and processor called directly."""
    import transformers
    from PIL import Image

    folder = maker(tmp_path / "col")
    kind = json.loads((folder / "config.json").read_text())["model_type"]
    model_cls = {"colpali": transformers.ColPaliForRetrieval, "colqwen2": transformers.ColQwen2ForRetrieval}[kind]
    proc_cls = {"colpali": transformers.ColPaliProcessor, "colqwen2": transformers.ColQwen2Processor}[kind]
    ref, processor = model_cls.from_pretrained(folder).eval(), proc_cls.from_pretrained(folder)
    rng = np.random.default_rng(0)
    pages = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 80), (100, 60))]
    ours = zoo.create(str(folder), device="cpu")
    assert ours.spec.family == "colvision" and ours.spec.outputs == ("multivector",)
    for items, modality, batch in ((pages, "image", processor.process_images(pages)),
                                   (TEXTS[:3], "text", processor.process_queries(TEXTS[:3]))):
        batch.pop("labels", None)
        with torch.no_grad():
            emb = ref(**batch).embeddings
        want = [e[m.bool()] for e, m in zip(emb, batch["attention_mask"])]
        assert_multivector_parity(ours.encode(items, modality), want)
    scores = scoring.maxsim(ours.encode(TEXTS[:3], "text"), ours.encode(pages, "image"))
    qs = processor.process_queries(TEXTS[:3])
    ps = processor.process_images(pages)
    ps.pop("labels", None)
    with torch.no_grad():
        ref_scores = processor.score_retrieval(list(ref(**qs).embeddings), list(ref(**ps).embeddings))
    assert np.allclose(scores, ref_scores.float().numpy(), atol=1e-3)


def test_folders_that_cannot_load_faithfully_are_refused(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    colbert = make_colbert(tmp_path / "colbert")
    disguised = shutil.copytree(colbert, tmp_path / "disguised")  # a multi-vector save claimed as dense
    cfg = json.loads((disguised / "config_sentence_transformers.json").read_text())
    cfg["model_type"] = "SentenceTransformer"
    (disguised / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.InvalidArgumentError, match="MultiVectorMask.*not reproduce"):
        zoo.create(str(disguised))
    bert = make_tiny_text_folder(tmp_path / "bert")
    projected = tmp_path / "projected"  # a dense model with a Dense head: mean-pooling it would be wrong
    SentenceTransformer(modules=[Transformer(str(bert)), Pooling(32), Dense(32, 8)]).save(str(projected))
    with pytest.raises(zoo.InvalidArgumentError, match="Dense"):
        zoo.get_spec(str(projected))
    pooled = shutil.copytree(colbert, tmp_path / "pooled")
    modules = json.loads((pooled / "modules.json").read_text())
    modules.append({"idx": 4, "name": "4", "path": "4_Pool", "type": "sentence_transformers.multi_vector_encoder."
                    "modules.token_pooling.HierarchicalTokenPooling"})
    (pooled / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(zoo.InvalidArgumentError, match="HierarchicalTokenPooling"):
        zoo.create(str(pooled))
    assert zoo.get_spec(str(bert)).outputs == ("dense",)  # a plain folder still loads as dense text


def test_output_controls_are_checked_before_any_work(tmp_path):
    colbert = zoo.create(str(make_colbert(tmp_path / "c")), device="cpu")
    text = zoo.create(str(make_tiny_text_folder(tmp_path / "t")), device="cpu")
    cases = [(text, dict(output="sparse"), "cannot give output 'sparse'"),
             (text, dict(output="colbert"), "kinds in general"),
             (text, dict(max_vectors=4), "max_vectors applies to multivector"),
             (colbert, dict(max_vectors=0), "max_vectors must be a positive integer"),
             (colbert, dict(top_k=3), "top_k applies to sparse"),
             (colbert, dict(output="fde", precision="int8"), "FDE is not one"),
             (colbert, dict(dimensions=99), "outside 1..16")]
    for model, controls, message in cases:
        with pytest.raises(zoo.InvalidArgumentError, match=message):
            model.encode(["x"], "text", **controls)


def test_multivector_controls_per_vector(tmp_path):
    from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling

    model = zoo.create(str(make_colbert(tmp_path / "c")), device="cpu")
    full = model.encode(DOCS, "text")
    small = model.encode(DOCS, "text", dimensions=8, precision="int8")
    for f, s in zip(full, small):
        assert s.dtype == np.int8 and s.shape == (len(f), 8)
        assert np.allclose(pp.dequantize(s, "int8"), pp.normalize(f[:, :8]), atol=0.02)
    packed = model.encode(DOCS, "text", precision="ubinary")
    assert all(p.shape == (len(f), 2) for p, f in zip(packed, full))
    pooled = model.encode(DOCS, "text", max_vectors=3)
    long = max(range(len(full)), key=lambda i: len(full[i]))
    assert [len(p) for p in pooled] == [min(3, len(f)) for f in full]
    n = len(full[long])
    pooling = HierarchicalTokenPooling(pool_factor=n / 3 - 1e-9, num_protected_tokens=0, normalize_embeddings=True)
    (ref,) = pooling.pool([torch.from_numpy(full[long])])
    assert ref.shape[0] == 3 and np.allclose(pooled[long], ref.numpy(), atol=1e-5)


def test_first_vectors_budget_for_models_trained_for_it():
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((n, 8)).astype(np.float32) for n in (2, 9)]
    first = kinds.postprocess_multivector(items, normalize_output=True, dimensions=None, precision="float32",
                                          max_vectors=4, budget="first")
    assert np.allclose(first[1], pp.normalize(items[1][:4])) and len(first[0]) == 2


@pytest.mark.parametrize("precision", sorted(pp.PRECISIONS))
def test_maxsim_matches_sentence_transformers_at_every_precision(precision):
    from sentence_transformers.util import maxsim

    rng = np.random.default_rng(1)
    queries = [pp.normalize(rng.standard_normal((n, 16))) for n in (3, 7)]
    docs = [pp.normalize(rng.standard_normal((n, 16))) for n in (1, 5, 40)]
    q = kinds.postprocess_multivector(queries, normalize_output=True, dimensions=None, precision=precision,
                                      max_vectors=None)
    d = kinds.postprocess_multivector(docs, normalize_output=True, dimensions=None, precision=precision,
                                      max_vectors=None)
    want = maxsim([torch.from_numpy(pp.dequantize(x, precision)) for x in q],
                  [torch.from_numpy(pp.dequantize(x, precision)) for x in d]).numpy()
    assert np.allclose(scoring.maxsim(q, d, precision), want, atol=1e-5)
    if precision == "float32":
        assert np.allclose(scoring.maxsim(q, d), maxsim([torch.from_numpy(x) for x in queries],
                                                        [torch.from_numpy(x) for x in docs]).numpy(), atol=1e-5)


def test_reciprocal_rank_fusion():
    fused = scoring.reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=1)
    assert [key for key, _ in fused] == ["b", "c", "a", "d"]  # b: 1/2 + 1/3, c: 1/4 + 1/3, a: 1/2
    assert fused[0][1] == pytest.approx(1 / 3 + 1 / 2)


def test_fde_candidates_recall_exact_maxsim_top10():
    """On a synthetic late-interaction set (2,000 documents of 20–60 token vectors drawn around 4 of 200
    topics; each query 8 of one document's tokens plus 4 random ones; token noise of norm 0.6, i.e. cos ≈ 0.86
    between a token and its topic), the top 100 FDE candidates hold ≥ 90 % of exact MaxSim's top 10."""
    rng = np.random.default_rng(7)
    dim, n_docs, n_queries = 32, 2000, 40
    noise = 0.6 / np.sqrt(dim)
    topics = pp.normalize(rng.standard_normal((200, dim)))
    docs = []
    for _ in range(n_docs):
        centres = topics[rng.choice(200, 4, replace=False)]
        n = int(rng.integers(20, 60))
        docs.append(pp.normalize(centres[rng.integers(0, 4, n)] + noise * rng.standard_normal((n, dim))))
    queries = []
    for _ in range(n_queries):
        source = docs[rng.integers(n_docs)]
        pick = source[rng.choice(len(source), 8, replace=False)]
        queries.append(pp.normalize(np.concatenate([pick + noise * rng.standard_normal(pick.shape),
                                                    rng.standard_normal((4, dim))])))
    exact = scoring.maxsim(queries, docs)
    approx = fde.encode(queries, query=True) @ fde.encode(docs, query=False).T
    recall = np.mean([len(set(np.argsort(-e)[:10]) & set(np.argsort(-a)[:100])) / 10 for e, a in zip(exact, approx)])
    assert recall >= 0.9, recall
    assert fde.FDEConfig().width == 10240
