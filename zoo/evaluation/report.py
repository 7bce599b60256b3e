"""The sweep's rows as a table, as JSON, and as a plot of quality against bytes per vector."""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import METRICS
from .sweep import pareto


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}%"


def table(rows: list[dict]) -> str:
    """A fixed-width table: one line per row, each metric with its relative change; a ``model`` column when the
    rows name their models (``--hybrid``) and ``ms/query`` when they carry ``query_ms`` (``--latency``)."""
    named = any("model" in r for r in rows)
    timed = any(r.get("query_ms") is not None for r in rows)
    head = (["model"] if named else []) + ["method", "dims", "precision", "bytes", "compr."] + list(METRICS) + [
        "skew"] + (["ms/query"] if timed else [])
    lines = [head]
    for r in rows:
        dims = "-" if r["dimensions"] is None else str(r["dimensions"])  # a hybrid row has two spaces
        lines.append(([r.get("model", "")] if named else [])
                     + [r["method"], dims, r["precision"], str(r["bytes_per_vector"]),
                        f"{r['compression']:.0f}x" if r["compression"] else "-"]  # sparse rows: no dense base
                     + [f"{r[m]:.4f} {_pct(r[f'{m}_change'])}".strip() for m in METRICS]
                     + [f"{r['k_occurrence_skew']:.2f}"]
                     + ([_ms(r.get("query_ms"))] if timed else []))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def summary(rows: list[dict]) -> str:
    """Hubness of the plain search and what each correction changes (when those rows were measured)."""
    base = next((r for r in rows if r["method"] == "truncate" and r["compression"] == 1), None)
    if base is None:
        return ""
    out = [f"hubness: k-occurrence skewness (k=10) of the corpus {base['k_occurrence_skew']:.2f}"]
    for r in rows:
        if r["method"] in ("csls", "isoftmax"):
            out.append(f"  {r['method']}: skewness {r['k_occurrence_skew']:.2f}, nDCG@10 {r['ndcg@10']:.4f} "
                       f"({_pct(r['ndcg@10_change'])}), Recall@1 {r['recall@1']:.4f} ({_pct(r['recall@1_change'])})")
    return "\n".join(out)


def write_json(rows: list[dict], path: str | Path) -> None:
    """The rows as a JSON list (keys as in :mod:`.sweep`)."""
    Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def plot(rows: list[dict], path: str | Path, title: str, metric: str = "ndcg@10") -> None:
    """``metric`` against bytes per vector (log scale), one marker per method, the Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    markers = {"truncate": "o", "pca": "s", "binary+rescore": "^", "csls": "D", "isoftmax": "P"}
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method]
        ax.scatter([r["bytes_per_vector"] for r in pts], [r[metric] for r in pts], label=method,
                   marker=markers.get(method, "x"), alpha=0.75)
    front = pareto(rows, metric)
    ax.step([r["bytes_per_vector"] for r in front], [r[metric] for r in front], where="post", color="black",
            linewidth=1, label="Pareto front")
    for r in front:
        ax.annotate(f"{r['method'].replace('truncate', '')} {r['dimensions']}/{r['precision']}".strip(),
                    (r["bytes_per_vector"], r[metric]), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
