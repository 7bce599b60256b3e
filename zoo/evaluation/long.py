"""Long documents: four ways of embedding a document longer than a model's window, compared on one set.

=============  ===================================================================================================
way            what a document becomes
=============  ===================================================================================================
truncate       one vector of its first tokens: ``encode()`` as it always was (``truncate="end"``)
chunk-mean     one vector: ``encode(..., long="chunk")``, the token-weighted mean of full windows read in turn
naive-chunks   one vector per chunk of ``chunk_tokens`` tokens, each chunk embedded on its own (cut with
               ``model.tokenize()``'s offsets); the document scores the best of its chunks
late-chunks    one vector per chunk of ``chunk_tokens`` tokens pooled from one pass over the whole document
               (``model.encode_chunks()``); the document scores the best of its chunks
=============  ===================================================================================================

Every way runs through the model's public calls, so any text model that gives tokenizer offsets (and, for
late chunking, token states) is measured by the same code, in-process or served. Queries are embedded once.
A row is the sweep's (:mod:`.sweep`): ``method`` is the way, ``bytes_per_vector`` the bytes a document costs
(its vectors at float32), ``<metric>_change`` against ``truncate``; ``near``/``far`` hold the metrics of the
queries whose answer starts within / past the document's first :data:`NEAR_TOKENS` tokens (as the model
tokenizes it), when the set's query rows say where the answer is (``longdocs`` does: ``start``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import postprocess as pp
from .. import search
from ..errors import InvalidArgumentError, choices
from ..truncation import TruncationWarning
from .data import RetrievalSet
from .embed import Cache, side_prompt
from .metrics import DEPTH, METRICS, Scorer, run_of

WAYS = ("truncate", "chunk-mean", "naive-chunks", "late-chunks")
CHUNK_TOKENS = 128
NEAR_TOKENS = 256  # MiniLM's window: the queries truncation there can see, and those it cannot
HUB_K = 10
LONG_POSITIONS = 4096  # the window of LongEmbed's e5-base-4k


def check_ways(value: str | list[str]) -> list[str]:
    """``value`` (a comma-separated string or a list) as known ways, in the order given."""
    ways = [w.strip() for w in (value.split(",") if isinstance(value, str) else value) if w.strip()]
    bad = [w for w in ways if w not in WAYS]
    if bad or not ways:
        raise InvalidArgumentError(f"unknown way(s) {bad or value!r}; choose from {choices(WAYS)}", "long")
    return list(dict.fromkeys(ways))


def token_chunks(model: Any, texts: list[str], chunk_tokens: int,
                 prompt_name: str | None = None) -> list[list[tuple[int, int]]]:
    """Character spans of consecutive chunks of at most ``chunk_tokens`` tokens of each text, found with
    ``model.tokenize()`` (which reads at most a window: so the text is tokenized again from each cut).

    A cut never falls inside a word: re-tokenizing from the middle of a word would split it differently."""
    spans: list[list[tuple[int, int]]] = [[] for _ in texts]
    pos = [0] * len(texts)
    todo = list(range(len(texts)))
    while todo:
        views = model.tokenize([texts[i][pos[i]:] for i in todo], prompt_name=prompt_name)
        later = []
        for i, view in zip(todo, views):
            rest = texts[i][pos[i]:]
            offs = [o for o in view.offsets if o is not None and o[1] > o[0]]
            if not offs:
                continue
            if len(offs) <= chunk_tokens and not view.truncated:
                spans[i].append((pos[i] + offs[0][0], pos[i] + offs[-1][1]))
                continue
            if len(offs) <= chunk_tokens:
                raise InvalidArgumentError(f"chunk_tokens {chunk_tokens} does not fit {model.spec.name}'s window "
                                           f"({len(offs)} text tokens at most)", "chunk_tokens")
            k = chunk_tokens
            while k > 1 and offs[k][0] == offs[k - 1][1] and rest[offs[k][0] - 1 : offs[k][0] + 1].isalnum():
                k -= 1  # the next token continues a word: cut before that word instead
            spans[i].append((pos[i] + offs[0][0], pos[i] + offs[k - 1][1]))
            pos[i] += offs[k][0]
            later.append(i)
        todo = later
    return spans


def over_window(model: Any, texts: list[str], prompt: str | None) -> int:
    """How many of ``texts`` are longer than the model's window (what ``truncate`` cuts)."""
    return sum(view.truncated for view in model.tokenize(texts, prompt_name=prompt))


def near_answers(model: Any, data: RetrievalSet, prompt: str | None) -> dict[str, bool] | None:
    """For each query whose row says where its answer starts (``start`` in its document ``doc``): whether that
    is within the document's first :data:`NEAR_TOKENS` tokens (prompt and special tokens included). None when
    the set's queries carry no such fields."""
    starts = {}
    with (data.root / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line) if line.strip() else {}
            if isinstance(row.get("start"), int) and row.get("doc") is not None:
                starts[str(row["_id"])] = (str(row["doc"]), row["start"])
    if not starts:
        return None
    index = {d: i for i, d in enumerate(data.corpus.ids)}
    wanted = sorted({index[d] for d, _ in starts.values() if d in index})
    views = model.tokenize([data.corpus.items[i] for i in wanted], prompt_name=prompt)
    seen = {}  # document -> character where its first NEAR_TOKENS tokens end
    for i, view in zip(wanted, views):
        ends = [o[1] for o in view.offsets[:NEAR_TOKENS] if o is not None]
        seen[data.corpus.ids[i]] = max(ends, default=0)
    return {q: starts[q][1] < seen[starts[q][0]] for q in data.queries.ids if q in starts and starts[q][0] in seen}


def _unit(x: Any) -> np.ndarray:
    return pp.normalize(np.asarray(x, np.float32))


def embed_documents(model: Any, texts: list[str], way: str, *, chunk_tokens: int, overlap: int | None,
                    prompt: str | None, batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(unit vectors [total, d], vectors per document [n])`` of ``texts`` embedded the ``way`` says."""
    common = dict(prompt_name=prompt, batch_size=batch_size)
    if way == "truncate":  # cutting is this way's point: the comparison counts the documents cut instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            vecs = model.encode(texts, "text", normalize=False, **common)
        return _unit(vecs), np.ones(len(texts), np.int64)
    if way == "chunk-mean":
        vecs = model.encode(texts, "text", normalize=False, long="chunk", overlap=overlap, **common)
        return _unit(vecs), np.ones(len(texts), np.int64)
    if way == "naive-chunks":
        spans = token_chunks(model, texts, chunk_tokens, prompt)
        pieces = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
        vecs = model.encode(pieces, "text", normalize=False, **common)
        return _unit(vecs), np.array([len(sp) for sp in spans], np.int64)
    if way == "late-chunks":
        chunks = model.encode_chunks(texts, chunk_tokens=chunk_tokens, overlap=overlap, normalize=False, **common)
        return _unit(np.concatenate([c.vectors for c in chunks])), np.array([len(c.spans) for c in chunks], np.int64)
    raise InvalidArgumentError(f"unknown way {way!r}; choose from {choices(WAYS)}", "long")


def best_chunk_scores(queries: np.ndarray, vectors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[Q, n]``: each query's best cosine over each document's vectors (documents with none score -inf)."""
    sims = queries @ vectors.T
    out = np.full((len(queries), len(lengths)), -np.inf, np.float32)
    has = lengths > 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[has]
    if len(starts):
        out[:, has] = np.maximum.reduceat(sims, starts, axis=1)
    return out


def _cached(cache: Cache | None, key: dict, make) -> tuple[np.ndarray, np.ndarray]:
    name = Cache.key(**key)
    if cache is not None:
        vecs, lens = cache.load(name + "-v"), cache.load(name + "-n")
        if vecs is not None and lens is not None:
            return vecs, lens
    vecs, lens = make()
    if cache is not None:
        cache.save(name + "-v", vecs)
        cache.save(name + "-n", lens)
    return vecs, lens


def compare(model: Any, data: RetrievalSet, ways: str | list[str] = WAYS, *, chunk_tokens: int = CHUNK_TOKENS,
            overlap: int | None = None, backend: str = "local", cache: Cache | None = None,
            batch_size: int | None = None) -> list[dict]:
    """One row per way (see the module notes) for ``model`` on the text set ``data``."""
    ways = check_ways(ways)
    spec = model.spec
    if any(not isinstance(t, str) for t in data.corpus.items + data.queries.items):
        raise InvalidArgumentError("the long-document comparison needs a text set (corpus and queries)")
    q_prompt, d_prompt = side_prompt(spec.prompts, True), side_prompt(spec.prompts, False)
    key = {"model": spec.to_dict(), "backend": backend, "data": data.fingerprint, "long": "v1"}
    queries, _ = _cached(cache, {**key, "side": "queries", "prompt": q_prompt}, lambda: (_unit(model.encode(
        list(data.queries.items), "text", normalize=False, prompt_name=q_prompt, batch_size=batch_size)),
        np.ones(len(data.queries), np.int64)))
    near = near_answers(model, data, d_prompt)
    cut = over_window(model, list(data.corpus.items), d_prompt)
    groups = {} if near is None else {g: {q: data.qrels[q] for q, v in near.items() if v == (g == "near")}
                                      for g in ("near", "far")}
    scorers = {"all": Scorer(data.qrels)} | {g: Scorer(r) for g, r in groups.items() if r}
    rows = []
    for way in ways:
        vecs, lens = _cached(cache, {**key, "side": "corpus", "prompt": d_prompt, "way": way, "overlap": overlap,
                                     "chunk_tokens": chunk_tokens if way.endswith("chunks") else None},
                             lambda way=way: embed_documents(model, list(data.corpus.items), way,
                                                             chunk_tokens=chunk_tokens, overlap=overlap,
                                                             prompt=d_prompt, batch_size=batch_size))
        scores = best_chunk_scores(queries, vecs, lens)
        k = min(DEPTH, scores.shape[1])
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        run = run_of(idx, np.take_along_axis(scores, idx, 1), data.queries.ids, data.corpus.ids)
        per_doc = float(lens.mean())
        row = {"method": way, "dimensions": spec.dim, "precision": "float32",
               "bytes_per_vector": int(round(4 * spec.dim * per_doc)), "vectors_per_doc": round(per_doc, 2),
               "docs_over_window": cut,
               "chunk_tokens": chunk_tokens if way.endswith("chunks") else None}
        row.update(scorers["all"](run))
        for g in groups:
            if g in scorers:
                row[g] = {"queries": len(groups[g]), **scorers[g]({q: run[q] for q in groups[g]})}
        row["k_occurrence_skew"] = search.k_occurrence_skew(idx, len(data.corpus), HUB_K)
        rows.append(row)
    base = next((r for r in rows if r["method"] == "truncate"), None)
    for row in rows:
        row["compression"] = base["bytes_per_vector"] / row["bytes_per_vector"] if base else 1.0
        for m in METRICS:
            row[f"{m}_change"] = (row[m] - base[m]) / base[m] if base and base[m] else None
    return rows


def stretch_positions(src: str | Path, dest: str | Path, positions: int = LONG_POSITIONS) -> Path:
    """A long-context model made without training, the simplest recipe of LongEmbed (position interpolation):
    the BERT-like text encoder in ``src`` with its position table stretched to ``positions`` rows by linear
    interpolation, saved in ``dest`` as a plain transformers folder in the layout of ``dwzhu/e5-base-4k`` (its
    tokenizer's ``model_max_length`` set to ``positions``, mean pooling, ``query: ``/``passage: `` prompts), so
    ``zoo.create(str(dest))`` loads it through the text family with a window of ``positions`` tokens. Stretched
    eightfold with no training, MiniLM becomes a vehicle for long inputs, not a good model (docs/EVAL.md)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    base = AutoModel.from_pretrained(src)
    table = base.embeddings.position_embeddings.weight.detach()  # [old positions, d]
    # row p of the new table is the old one read at p * (old - 1) / (positions - 1): both ends kept
    new = torch.nn.functional.interpolate(table.T[None], size=positions, mode="linear", align_corners=True)[0].T
    config = type(base.config).from_dict({**base.config.to_dict(), "max_position_embeddings": positions})
    model = type(base)(config).eval()
    state = {k: v for k, v in base.state_dict().items() if not k.endswith("position_ids")}
    state["embeddings.position_embeddings.weight"] = new.contiguous()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise InvalidArgumentError(f"{Path(src).name}: not a BERT-like encoder whose positions can be stretched")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(src)
    tokenizer.model_max_length = positions
    tokenizer.save_pretrained(dest)
    (dest / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": "query"}))
    return dest


def _cell(row: dict, m: str) -> str:
    change = row.get(f"{m}_change")
    return f"{row[m]:.4f}" + ("" if change is None or row["method"] == "truncate" else f" {100 * change:+.1f}%")


def table(rows: list[dict]) -> str:
    """A fixed-width table, one line per way: vectors and bytes per document, each metric with its change
    against ``truncate``, and nDCG@10 / Recall@10 of the near and far queries."""
    groups = [g for g in ("near", "far") if any(g in r for r in rows)]
    head = ["way", "vectors/doc", "bytes/doc"] + list(METRICS) + [
        f"{m} {g} ({rows[0][g]['queries']}q)" for g in groups for m in ("ndcg@10", "recall@10")]
    lines = [head]
    for r in rows:
        lines.append([r["method"], f"{r['vectors_per_doc']:g}", str(r["bytes_per_vector"])]
                     + [_cell(r, m) for m in METRICS]
                     + [f"{r[g][m]:.4f}" if g in r else "" for g in groups for m in ("ndcg@10", "recall@10")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def markdown(rows: list[dict], title: str = "") -> str:
    """The rows as a Markdown table (what docs/EVAL.md shows)."""
    groups = [g for g in ("near", "far") if any(g in r for r in rows)]
    head = ["way", "vectors/doc", "nDCG@10", "R@1", "R@10", "MRR@10"] + [f"nDCG@10 {g}" for g in groups]
    out = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['method']}`", f"{r['vectors_per_doc']:g}"] + [_cell(r, m) for m in (
            "ndcg@10", "recall@1", "recall@10", "mrr@10")] + [f"{r[g]['ndcg@10']:.4f}" for g in groups if g in r]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
