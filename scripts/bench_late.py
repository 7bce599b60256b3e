"""What multi-vector output costs and keeps: MUVERA FDE candidates and token pooling, measured on real text.

Data: Python standard-library docstrings present on this machine (human-written): the query is a function's
one-line summary, its document the rest of the docstring. Model: the shipped MiniLM's token vectors (a
sentence-transformers MultiVectorEncoder over the same weights, saved to a temporary folder and loaded
through zoo's ColBERT family). It was not trained for late interaction, so the absolute quality is modest;
the figures that matter are the ratios, all measured side by side in this one run:

- FDE: recall of exact MaxSim's top 10 among the top 100 FDE candidates;
- ``max_vectors=k`` (hierarchical token pooling of the documents): MRR@10 of the true document and overlap
  of the top 10 with unpooled MaxSim, against bytes per document;
- per-vector precision (float16, int8, binary) at full width;
- the dense MiniLM (mean pooling) on the same pairs, for reference.

Run: ``python scripts/bench_late.py [--pairs 600]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from zoo.data.docstrings import MODULES, docstring_pairs


def multivector_folder(dest: Path) -> Path:
    """The shipped MiniLM as a token-level (multi-vector) model: Transformer → MultiVectorMask → Normalize."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    import zoo
    from zoo.defaults import default_model
    from zoo.weights import resolve

    src = resolve(zoo.get_spec(default_model("text")))
    tokens = dict(module_input_name="token_embeddings", module_output_name="token_embeddings")
    model = MultiVectorEncoder(modules=[Transformer(str(src), max_seq_length=256), MultiVectorMask(),
                                        Normalize(**tokens)], prompts={"query": "", "document": ""})
    model.save(str(dest))
    return dest


def mrr_at_10(scores: np.ndarray) -> float:
    """Mean reciprocal rank of the true document (query i ↔ document i) within the top 10."""
    ranks = (scores > scores[np.arange(len(scores)), np.arange(len(scores))][:, None]).sum(1)
    return float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0)))


def overlap10(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of one ranking's top 10 found in the other's."""
    return float(np.mean([len(set(np.argsort(-x)[:10]) & set(np.argsort(-y)[:10])) / 10 for x, y in zip(a, b)]))


def main() -> None:
    """Measure and print the table."""
    import warnings

    import zoo
    from zoo import fde, scoring
    from zoo import postprocess as pp
    from zoo.defaults import default_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=600)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    pairs = docstring_pairs(args.pairs)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    print(f"{len(pairs)} docstring pairs from {len(MODULES)} standard-library modules")
    with tempfile.TemporaryDirectory() as tmp:
        model = zoo.create(str(multivector_folder(Path(tmp) / "minilm-tokens")), device="cpu")
        t0 = time.perf_counter()
        q = model.encode(queries, "text", prompt_name="query")
        d = model.encode(docs, "text")
        print(f"multi-vector encode: {time.perf_counter() - t0:.1f} s; vectors per document: mean "
              f"{np.mean([len(x) for x in d]):.1f}, per query {np.mean([len(x) for x in q]):.1f}")
        exact = scoring.maxsim(q, d)
        dense = zoo.create(default_model("text"), device="cpu")
        dense_scores = dense.encode(queries, "text") @ dense.encode(docs, "text").T
        rows = [("dense MiniLM (mean pooling)", mrr_at_10(dense_scores), float("nan"), 384 * 4)]
        width = model.spec.dim
        full_bytes = np.mean([len(x) for x in d]) * width * 4
        rows.append(("multi-vector, exact MaxSim", mrr_at_10(exact), 1.0, full_bytes))
        for precision in ("float16", "int8", "binary"):
            qq = model.encode(queries, "text", prompt_name="query", precision=precision)
            dq = model.encode(docs, "text", precision=precision)
            s = scoring.maxsim(qq, dq, precision)
            per_vector = pp.output_width(width, precision) * pp.PRECISIONS[precision].itemsize
            rows.append((f"multi-vector, {precision} per vector", mrr_at_10(s), overlap10(s, exact),
                         np.mean([len(x) for x in dq]) * per_vector))
        for k in (32, 16, 8, 4):
            dp = model.encode(docs, "text", max_vectors=k)
            s = scoring.maxsim(q, dp)
            rows.append((f"multi-vector, max_vectors={k} (pooled)", mrr_at_10(s), overlap10(s, exact),
                         np.mean([len(x) for x in dp]) * width * 4))
        codes_q, codes_d = fde.encode(q, query=True), fde.encode(d, query=False)
        approx = codes_q @ codes_d.T
        recall = np.mean([len(set(np.argsort(-e)[:10]) & set(np.argsort(-a)[:100])) / 10
                          for e, a in zip(exact, approx)])
        rows.append(("FDE alone (10,240-d float32)", mrr_at_10(approx), overlap10(approx, exact),
                     fde.FDEConfig().width * 4))
    print(f"\n{'setting':44s} {'MRR@10':>7s} {'top-10 overlap':>15s} {'bytes/doc':>10s}")
    for name, mrr, ov, size in rows:
        print(f"{name:44s} {mrr:7.3f} {ov:15.3f} {size:10,.0f}")
    print(f"\nFDE top-100 candidates hold {recall:.3f} of exact MaxSim's top 10 (then reranked exactly)")


if __name__ == "__main__":
    main()
