"""What ``zoo embed`` reads: the input split into shards, and a shard's rows as ``(id, modality, item, metadata)``.

Inputs:

- a JSONL file: one object per line with ``"id"`` and exactly one of ``"text"``, ``"image"``, ``"audio"``,
  ``"video"`` (a path relative to the file's folder, or a ``data:`` URI) or ``"content"`` (interleaved parts: strings
  and ``{"text": …}`` / ``{"image": …}``); other keys are passed through as metadata;
- a Parquet file, or a folder of them (a dataset): columns ``id`` and one of ``text`` / ``image`` / ``audio`` /
  ``video`` (bytes or a path) / ``content`` (JSON text of the parts); other columns are metadata;
- any other folder: every file under it, its path relative to the folder as its id, its modality from its
  extension (``.txt``/``.md`` text, image, audio and video suffixes below).

A shard is a fixed slice of the input (byte offsets of a JSONL file, rows of a Parquet file, a run of sorted
file names), planned once from the input alone, so a rerun finds the same shards and skips those already
written. A row that cannot be read becomes an :class:`RowError` and never stops the shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError

FIELDS = {"text": "text", "image": "image", "audio": "audio", "video": "video",
          "content": "interleaved"}  # row key → modality
SUFFIXES = {
    "text": (".txt", ".md"),
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3"),
    "video": (".mp4", ".mkv", ".webm", ".mov", ".avi"),
}
MAX_LINE_BYTES = 64 << 20  # a JSONL line longer than this is an error, not an allocation


@dataclass(frozen=True)
class Shard:
    """One slice of the input: rows ``start``..``stop`` of ``source`` (byte offsets for JSONL)."""

    index: int
    kind: str  # "jsonl" | "parquet" | "files"
    source: str
    start: int = 0
    stop: int = 0
    files: tuple[str, ...] = field(default=())
    first_line: int = 0  # JSONL: the 1-based number of the shard's first line (ids of unreadable lines)

    def to_json(self) -> str:
        """The shard as one JSON string (what travels through the Ray dataset)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(**(data | {"files": tuple(data["files"])}))


@dataclass
class Row:
    """One readable input row."""

    id: str
    modality: str
    item: Any
    metadata: dict


@dataclass
class RowError:
    """One row that cannot be embedded, and why."""

    id: str
    reason: str


def _jsonl_shards(path: Path, rows: int) -> list[Shard]:
    shards, start, count, line_no, first = [], 0, 0, 0, 1
    with path.open("rb") as f:
        offset = 0
        for line in f:
            line_no += 1
            offset += len(line)
            count += bool(line.strip())
            if count == rows:
                shards.append(Shard(len(shards), "jsonl", str(path), start, offset, first_line=first))
                start, count, first = offset, 0, line_no + 1
    if count:
        shards.append(Shard(len(shards), "jsonl", str(path), start, offset, first_line=first))
    return shards


def _parquet_shards(files: list[Path], rows: int) -> list[Shard]:
    import pyarrow.parquet as pq

    shards = []
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        shards += [Shard(len(shards) + i, "parquet", str(f), a, min(a + rows, n))
                   for i, a in enumerate(range(0, n, rows))]
    return shards


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def plan(input_path: str | Path, rows_per_shard: int) -> list[Shard]:
    """The input's shards, in a fixed order."""
    path = Path(input_path).expanduser().resolve()
    if not path.exists():
        raise InvalidArgumentError(f"input {str(input_path)!r} does not exist", "input")
    if path.is_file():
        if path.suffix == ".parquet":
            return _parquet_shards([path], rows_per_shard)
        return _jsonl_shards(path, rows_per_shard)
    files = _files(path)
    if files and all(f.suffix == ".parquet" for f in files):
        return _parquet_shards(files, rows_per_shard)
    names = [str(f.relative_to(path)) for f in files]
    return [Shard(i, "files", str(path), files=tuple(names[a:a + rows_per_shard]))
            for i, a in enumerate(range(0, len(names), rows_per_shard))]


def _local(value: Any, base: Path) -> Any:
    """A relative path in a JSONL row, made relative to the file's folder; data and absolute paths as they are."""
    if isinstance(value, str) and not value.startswith("data:") and not Path(value).is_absolute():
        return str(base / value)
    return value


def _from_record(record: dict, fallback_id: str, base: Path | None) -> Row | RowError:
    if not isinstance(record, dict):
        return RowError(fallback_id, "row is not a JSON object")
    row_id = record.get("id")
    if row_id is None or isinstance(row_id, (dict, list)):
        return RowError(fallback_id, "row has no scalar 'id'")
    keys = [k for k in FIELDS if record.get(k) is not None]
    if len(keys) != 1:
        return RowError(str(row_id), f"row needs exactly one of {', '.join(FIELDS)}; it has {keys or 'none'}")
    key = keys[0]
    item = record[key]
    if key == "content" and isinstance(item, str):  # Parquet keeps the parts as JSON text
        try:
            item = json.loads(item)
        except json.JSONDecodeError as err:
            return RowError(str(row_id), f"content is not JSON: {err.msg}")
    if base is not None and key in ("image", "audio", "video"):
        item = _local(item, base)
    if base is not None and key == "content" and isinstance(item, list):
        item = [p | {"image": _local(p["image"], base)} if isinstance(p, dict) and "image" in p else p for p in item]
    meta = {k: v for k, v in record.items() if k not in FIELDS and k != "id"}
    return Row(str(row_id), FIELDS[key], item, meta)


def _jsonl_rows(shard: Shard) -> Iterator[Row | RowError]:
    path = Path(shard.source)
    with path.open("rb") as f:
        f.seek(shard.start)
        line_no = shard.first_line - 1
        while f.tell() < shard.stop:
            line = f.readline(MAX_LINE_BYTES + 1)
            line_no += 1
            if len(line) > MAX_LINE_BYTES:
                f.readline()  # the rest of the oversized line
                yield RowError(f"line:{line_no}", f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                yield RowError(f"line:{line_no}", f"not JSON: {getattr(err, 'msg', err)}")
                continue
            yield _from_record(record, f"line:{line_no}", path.parent)


def _parquet_rows(shard: Shard) -> Iterator[Row | RowError]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(shard.source)
    groups, first, offset = [], None, 0  # only the row groups the shard overlaps are read
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset < shard.stop and offset + n > shard.start:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups).slice(shard.start - (first or 0), shard.stop - shard.start)
    for n, record in enumerate(table.to_pylist()):
        yield _from_record(record, f"row:{shard.start + n}", None)


def _file_rows(shard: Shard) -> Iterator[Row | RowError]:
    folder = Path(shard.source)
    for name in shard.files:
        suffix = Path(name).suffix.lower()
        modality = next((m for m, sfx in SUFFIXES.items() if suffix in sfx), None)
        if modality is None:
            yield RowError(name, f"unknown file type {suffix or '(none)'!r}")
        elif modality == "text":
            try:
                yield Row(name, "text", (folder / name).read_text(encoding="utf-8"), {})
            except (OSError, UnicodeDecodeError) as err:
                yield RowError(name, f"cannot read text: {type(err).__name__}")
        else:
            yield Row(name, modality, str(folder / name), {})


def rows(shard: Shard) -> Iterator[Row | RowError]:
    """The shard's rows, in input order."""
    return {"jsonl": _jsonl_rows, "parquet": _parquet_rows, "files": _file_rows}[shard.kind](shard)
