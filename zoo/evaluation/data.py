"""Retrieval sets in the BEIR layout, read strictly: every problem is named with its file and line.

A set is a folder::

    corpus.jsonl         {"_id": "d1", "title": "...", "text": "..."}   or {"_id": "d2", "image": "img/d2.png"}
    queries.jsonl        {"_id": "q1", "text": "..."}                    or {"_id": "q2", "audio": "wav/q2.wav"}
    qrels/test.tsv       query-id <TAB> corpus-id <TAB> score   (with that header line)

A row carries exactly one of ``text``, ``image`` or ``audio``; media paths are relative to the folder and must
stay inside it. A document's text is its title and text joined by a space (as BEIR and mteb join them).
Only queries with a judgement in the qrels are evaluated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..spec import Modality

CONTENT = ("text", "image", "audio")  # the row fields that carry an item, and its modality
MAX_MEDIA_BYTES = 64 * 1024 * 1024  # per image or audio file
MAX_LINE_BYTES = 16 * 1024 * 1024  # per JSONL line
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass
class Side:
    """The corpus or the queries: ids, items (a text, or the Path of a media file) and their modalities."""

    ids: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    modalities: list[Modality] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: list[int]) -> Side:
        """The rows at ``keep``, in that order."""
        return Side([self.ids[i] for i in keep], [self.items[i] for i in keep], [self.modalities[i] for i in keep])


@dataclass
class RetrievalSet:
    """A loaded set: the corpus, the judged queries and their relevance judgements."""

    root: Path
    corpus: Side
    queries: Side
    qrels: dict[str, dict[str, int]]
    fingerprint: str  # changes whenever a file of the set changes

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.root.name


def _where(path: Path, line: int) -> str:
    return f"{path.name}:{line}"


def _media(root: Path, value: Any, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{where}: {key!r} must be a path relative to the set's folder")
    rel = Path(value)
    path = (root / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(root):
        raise InvalidArgumentError(f"{where}: {key} path {value!r} leaves the set's folder")
    if not path.is_file():
        raise InvalidArgumentError(f"{where}: {key} file {value!r} does not exist")
    if path.stat().st_size > MAX_MEDIA_BYTES:
        raise InvalidArgumentError(f"{where}: {key} file {value!r} is over {MAX_MEDIA_BYTES >> 20} MiB")
    return path


def _read_side(root: Path, path: Path, titled: bool, digest) -> Side:
    if not path.is_file():
        raise InvalidArgumentError(f"{path.name} is missing from the set folder {root.name!r}")
    side, seen = Side(), set()
    digest.update(path.name.encode())  # a line moved between files changes the fingerprint
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            digest.update(raw)  # the fingerprint is taken in the same pass as the parse
            where = _where(path, n)
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidArgumentError(f"{where}: line is over {MAX_LINE_BYTES >> 20} MiB")
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InvalidArgumentError(f"{where}: not a JSON object ({err.__class__.__name__})") from None
            if not isinstance(row, dict) or not isinstance(row.get("_id"), (str, int)) or row["_id"] == "":
                raise InvalidArgumentError(f"{where}: each row must be a JSON object with an \"_id\"")
            rid = str(row["_id"])
            if rid in seen:
                raise InvalidArgumentError(f"{where}: _id {rid!r} appears twice")
            found = [k for k in CONTENT if row.get(k) not in (None, "")]
            if len(found) != 1:
                raise InvalidArgumentError(f"{where}: a row carries exactly one of {', '.join(CONTENT)}, got "
                                           f"{found or 'none'}")
            key = found[0]
            if key == "text":
                if not isinstance(row["text"], str) or not isinstance(row.get("title") or "", str):
                    raise InvalidArgumentError(f"{where}: text and title must be strings")
                title = (row.get("title") or "") if titled else ""
                item = f"{title} {row['text']}".strip() if title else row["text"]
            else:
                item = _media(root, row[key], where, key)
            seen.add(rid)
            side.ids.append(rid)
            side.items.append(item)
            side.modalities.append(Modality(key))
    if not side.ids:
        raise InvalidArgumentError(f"{path.name} has no rows")
    return side


def _read_qrels(path: Path, queries: set[str], corpus: set[str], digest) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise InvalidArgumentError(f"qrels/{path.name} is missing from the set folder")
    qrels: dict[str, dict[str, int]] = {}
    digest.update(path.name.encode())
    with path.open(encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, start=1):
            digest.update(line.encode())
            where = f"qrels/{_where(path, n)}"
            cells = line.rstrip("\r\n").split("\t")
            if n == 1:
                if tuple(c.strip() for c in cells) != QRELS_HEADER:
                    raise InvalidArgumentError(f"{where}: the header must be {' '.join(QRELS_HEADER)} (tab-separated)")
                continue
            if not line.strip():
                continue
            if len(cells) != 3:
                raise InvalidArgumentError(f"{where}: expected 3 tab-separated fields, got {len(cells)}")
            qid, did, score = (c.strip() for c in cells)
            try:
                value = int(float(score))
            except ValueError:
                raise InvalidArgumentError(f"{where}: score {score!r} is not a number") from None
            if qid not in queries:
                raise InvalidArgumentError(f"{where}: query-id {qid!r} is not in queries.jsonl")
            if did not in corpus:
                raise InvalidArgumentError(f"{where}: corpus-id {did!r} is not in corpus.jsonl")
            qrels.setdefault(qid, {})[did] = value
    if not any(v > 0 for rel in qrels.values() for v in rel.values()):
        raise InvalidArgumentError(f"qrels/{path.name} judges no document relevant (score > 0)")
    return qrels


def _media_identity(digest, paths: list[Path]) -> None:
    for path in paths:  # media: cheap identity (size, mtime) rather than re-reading every file
        st = path.stat()
        digest.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())


def load(root: str | Path, split: str = "test", max_queries: int | None = None) -> RetrievalSet:
    """Read the set in folder ``root``; ``max_queries`` keeps the first judged queries (quick runs)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InvalidArgumentError(f"{root.name!r} is not a folder with corpus.jsonl, queries.jsonl and qrels/")
    if not split.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgumentError(f"split {split!r} must be a plain name such as 'test'", "split")
    digest = hashlib.sha256()
    corpus = _read_side(root, root / "corpus.jsonl", titled=True, digest=digest)
    queries = _read_side(root, root / "queries.jsonl", titled=False, digest=digest)
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_path, set(queries.ids), set(corpus.ids), digest)
    judged = [i for i, q in enumerate(queries.ids) if q in qrels]
    if max_queries is not None:
        if max_queries < 1:
            raise InvalidArgumentError("max_queries must be at least 1", "max_queries")
        judged = judged[:max_queries]
    queries = queries.subset(judged)
    qrels = {q: qrels[q] for q in queries.ids}
    _media_identity(digest, [p for p in corpus.items + queries.items if isinstance(p, Path)])
    return RetrievalSet(root, corpus, queries, qrels, f"{digest.hexdigest()[:16]}-{len(queries)}")


def write(root: str | Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]],
          split: str = "test") -> Path:
    """Write a set in the layout :func:`load` reads (rows as in the module notes)."""
    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with (root / name).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
        f.write("\t".join(QRELS_HEADER) + "\n")
        for qid, did, score in qrels:
            f.write(f"{qid}\t{did}\t{score}\n")
    return root
