"""Long documents from this machine's Python: each document is one standard-library module's documentation (its
module docstring, then its classes', functions' and methods' docstrings in source order, read with :mod:`ast`
from the source files, never imported); each query is one function's or class's summary from inside it.

The summary (the docstring's first paragraph, as PEP 257 writes it) is **removed** from the document and the
rest of that docstring stays: left in, the query would be a verbatim substring of its positive and any
model would find it by surface overlap; taken out with its whole docstring, nothing in the document would be
about it any more. A query is also dropped when its text is found verbatim in any document (a summary
repeated by another function or module). Each query row carries ``doc`` (its module) and ``start`` (the
character offset of its entry in that document), so an evaluation can tell the queries truncation can see
(their entry within the model's first tokens) from those it cannot.

Selection is seeded: documents are drawn from the eligible modules (:data:`MIN_CHARS`..:data:`MAX_CHARS`
characters once cut at an entry boundary), and queries are drawn half from entries near the start of their
document and half from entries far into it (by a model-free token estimate; the evaluation measures the real
position with the model's own tokenizer). The same Python gives the same set.
"""

from __future__ import annotations

import ast
import math
import random
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

MIN_CHARS = 1_500  # a document shorter than this is not long (about 400 BERT tokens)
MAX_CHARS = 12_000  # documents are cut at an entry boundary here (about 3,000 BERT tokens)
SUMMARY_CHARS = (20, 200)  # a query is a summary of this many characters
MIN_REST = 40  # ...whose docstring keeps at least this much text in the document
HEAD_BELOW, TAIL_ABOVE = 180, 320  # estimated token position of a "near" / "far" query's entry (around 256)
PER_DOC = 2  # queries at most per document and per group (near, far)
QUERIES_PER_DOC = 8 / 3  # 150 documents -> 400 queries
#: parts of the standard library that are not documentation of a module (tests, generated tables, tools)
SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "encodings", "pydoc_data",
        "ensurepip", "__phello__", "__pycache__", "distutils"}
_WORDS = re.compile(r"\w+|[^\w\s]")


@dataclass
class Entry:
    """One docstring of a module, as it sits in the document."""

    name: str  # qualified name ("" for the module docstring)
    text: str  # what the document holds for it (the summary removed when it is a query)
    summary: str | None = None  # the query, when this entry can be one


@dataclass
class LongDoc:
    """A module's documentation and the entries a query may come from."""

    module: str
    text: str
    queries: list[tuple[str, str, int]] = field(default_factory=list)  # (summary, qualified name, start)


def stdlib_dir() -> Path:
    """The folder of this Python's standard-library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(dotted module name, source file) of every documentation-bearing stdlib module, sorted by name."""
    root = root or stdlib_dir()
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(p in SKIP or p.startswith(("test_", "config-", "_sysconfigdata")) for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and not any(p.startswith("_") for p in parts):  # private modules are implementation
            out.append((".".join(parts), path))
    return sorted(out)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _entries(tree: ast.Module) -> list[Entry]:
    """The module docstring, then each class's and function's (methods too), in source order."""
    out = []
    doc = ast.get_docstring(tree)
    if doc:
        out.append(Entry("", _flat(doc)))

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_") and node.name != "__init__":
                continue  # private helpers are not the module's documentation
            name = f"{prefix}{node.name}"
            doc = ast.get_docstring(node)
            if doc:
                head, _, rest = doc.strip().partition("\n\n")
                head, rest = _flat(head), _flat(rest)
                ok = SUMMARY_CHARS[0] <= len(head) <= SUMMARY_CHARS[1] and len(rest) >= MIN_REST
                out.append(Entry(name, f"{name}: {rest}", head) if ok else Entry(name, f"{name}: {_flat(doc)}"))
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{name}.")

    visit(tree.body, "")
    return out


def module_doc(module: str, path: Path, max_chars: int = MAX_CHARS) -> LongDoc | None:
    """The document of one module (cut at the last entry that fits ``max_chars``), or None when unreadable."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    doc = LongDoc(module, module)  # the document opens with its module's name, as a documentation page does
    for entry in _entries(tree):
        if len(doc.text) + 2 + len(entry.text) > max_chars:
            break
        doc.text += "\n\n"
        if entry.summary:
            doc.queries.append((entry.summary, entry.name, len(doc.text)))
        doc.text += entry.text
    return doc


def estimated_tokens(text: str) -> int:
    """A model-free estimate of a text's token count: its words and punctuation marks (BERT's pre-tokenizer
    splits there; WordPiece may split a word further, so real counts are higher)."""
    return len(_WORDS.findall(text))


def long_docs(documents: int | None = 150, seed: int = 0, root: Path | None = None,
              queries: int | None = None) -> tuple[list[LongDoc], list[tuple[str, str, int, str]]]:
    """``documents`` long documents and about ``queries`` queries (default 8/3 per document) as
    ``(docs, [(summary, module, start, qualified name)])``; every query's text is in no document."""
    files = module_files(root)
    docs = [d for d in (module_doc(m, p) for m, p in files) if d is not None and len(d.text) >= MIN_CHARS]
    rng = random.Random(seed)
    rng.shuffle(docs)
    docs = sorted(docs[:documents], key=lambda d: d.module)
    wanted = queries if queries is not None else math.ceil(len(docs) * QUERIES_PER_DOC)
    texts = [d.text for d in docs]
    seen: dict[str, int] = {}
    for d in docs:
        for summary, _, _ in d.queries:
            seen[summary] = seen.get(summary, 0) + 1
    near, far = [], []
    for d in docs:
        for summary, name, start in d.queries:
            if seen[summary] > 1 or any(summary in t for t in texts):
                continue  # asked twice, or readable verbatim somewhere: not an honest query
            at = estimated_tokens(d.text[:start])
            if at < HEAD_BELOW:
                near.append((summary, d.module, start, name))
            elif at > TAIL_ABOVE:
                far.append((summary, d.module, start, name))
    picked: list[tuple[str, str, int, str]] = []

    def take(group: list, share: int, cap: int) -> None:
        per = {m: sum(q[1] == m for q in picked) for m in {q[1] for q in group}}
        for q in group:
            if share <= 0 or len(picked) >= wanted:
                return
            if q not in picked and per[q[1]] < cap:
                per[q[1]] += 1
                picked.append(q)
                share -= 1

    rng.shuffle(near)
    rng.shuffle(far)
    take(near, wanted // 2, PER_DOC)
    take(far, wanted - len(picked), PER_DOC)
    # too few near ones (most modules open with one long docstring): more far ones, still spread over documents
    take(far, wanted - len(picked), 2 * PER_DOC)
    return docs, sorted(picked, key=lambda q: (q[1], q[2]))
