"""DEST, the folder a ``zoo embed`` job (:mod:`zoo.batch.job`) writes: its layout, the shards' Arrow schema,
writing a file atomically, making DEST ready for a run, and writing finished shards into a vector database.

DEST reads as one Parquet dataset: its top level holds only ``shard-NNNNN.parquet`` files (columns ``id``,
``modality``, the output's column(s), ``metadata`` as JSON text), every one with the schema the job's settings
give (:func:`shard_schema`: the model's width, the output kind, the precision), a shard whose rows all failed
included (an empty table of that schema). The job's own files sit in the sub-folder ``_zoo/``, which
``pyarrow.dataset``, ``pandas.read_parquet``, Ray Data and a ``*.parquet`` glob (DuckDB, Polars) skip:
``job.json`` (the settings; a rerun with other settings is refused), ``errors/shard-NNNNN.jsonl`` per shard
with its bad rows, ``errors.jsonl`` (all of them, rebuilt at the end of each run), ``stored.json`` (which
shards each database collection already holds) and ``tmp/`` (files being written). A shard's Parquet file
appears atomically, after its errors file, so its presence means the shard is done: a rerun skips it. A DEST
written before this layout (``job.json`` beside the shards) is moved into it by the next run with the same
settings, its shards rewritten to the schema where they differ.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from . import sources

if TYPE_CHECKING:
    from .job import Settings

PARQUET_PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")  # arrow has no float8
SIDECAR = "_zoo"  # the job's own files: a leading "_" is what Parquet dataset readers skip


def shard_path(dest: Path, index: int) -> Path:
    """Where shard ``index``'s Parquet file is written."""
    return dest / f"shard-{index:05d}.parquet"


def sidecar(dest: Path, name: str = "") -> Path:
    """A file of the job's own under ``DEST/_zoo`` (``job.json``, ``errors.jsonl``, ``stored.json``)."""
    return dest / SIDECAR / name if name else dest / SIDECAR


def errors_path(dest: Path, index: int | None = None) -> Path:
    """All the rows that failed (``index`` None), or those of shard ``index``."""
    return sidecar(dest, "errors.jsonl") if index is None else sidecar(dest, "errors") / f"shard-{index:05d}.jsonl"


def shard_schema(spec: Any, settings: Settings) -> Any:
    """The Arrow schema of every shard of a job, from its settings alone (never from the rows that happened to
    succeed): ``id``, ``modality``, then the output's column(s), then ``metadata``.

    ============  ===========================================================================
    output        column(s)
    ============  ===========================================================================
    dense, fde    ``embedding: fixed_size_list<T>[w]``
    multivector   ``embedding: list<fixed_size_list<T>[w]>`` (one vector per token or patch)
    sparse        ``indices: list<int32>``, ``values: list<float32>``
    ============  ===========================================================================

    ``T`` is the precision's type (float32, float16, int8, uint8; binary/ubinary as int8/uint8) and ``w``
    the output width: ``dimensions`` (or the model's width), 1/8 of it for the packed binary precisions, and an
    FDE's own width for ``fde``. The output's column(s) are its kind's (:meth:`zoo.kinds.OutputKind.parquet_fields`)."""
    import pyarrow as pa

    from .. import kinds

    opts = _options(spec, settings)
    handler = kinds.get(opts.output)
    cols = [pa.field("id", pa.string()), pa.field("modality", pa.string())]
    cols += handler.parquet_fields(handler.width(spec, opts), opts.precision)
    cols.append(pa.field("metadata", pa.string()))
    return pa.schema(cols)


def shard_table(rows: list[sources.Row], results: list[Any], schema: Any, kind: str) -> Any:
    """A shard's good rows as an Arrow table of the job's ``schema`` (empty when no row succeeded); ``kind``:
    the output kind, whose handler writes its column(s) (refusing results the schema does not promise: the
    shard fails, never a mixed folder)."""
    import pyarrow as pa

    from .. import kinds

    if not rows:
        return schema.empty_table()
    cols: dict[str, Any] = {"id": pa.array([r.id for r in rows], pa.string()),
                            "modality": pa.array([r.modality for r in rows], pa.string())}
    cols.update(kinds.get(kind).parquet_columns(results, schema))
    cols["metadata"] = pa.array([json.dumps(r.metadata, default=str) for r in rows], pa.string())
    return pa.table(cols, schema=schema)


def atomic_write(path: Path, write: Callable[[Path], None], tmp_dir: Path | None = None) -> None:
    """Write ``path`` through a temporary file (in ``tmp_dir``, default beside it) and one rename."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def _options(spec: Any, settings: Settings) -> Any:
    """The job's validated output controls (``EncodeOptions``), or a clear error for settings the model or
    Parquet cannot take."""
    from ..front import EncodeFront

    front = EncodeFront()  # the same checks as encode(), on the spec alone: bad settings fail before any work
    front.spec = spec
    opts = front.options(output=settings.output, dimensions=settings.dimensions, precision=settings.precision,
                         prompt_name=settings.prompt_name, **settings.controls)
    if settings.precision not in PARQUET_PRECISIONS:
        raise InvalidArgumentError(f"precision {settings.precision!r} cannot be stored in Parquet; use one of "
                                   f"{', '.join(PARQUET_PRECISIONS)}", "precision")
    return opts


def output_kind(spec: Any, settings: Settings) -> str:
    """The kind of output the job stores, or a clear error for settings the model or Parquet cannot take."""
    return _options(spec, settings).output


def _refuse_other_settings(dest: Path, before: dict, key: dict) -> None:
    if before != key:
        changed = sorted(k for k in key if before.get(k) != key[k])
        raise InvalidArgumentError(f"{dest} holds a job with other settings ({', '.join(changed)}); "
                                   "give another --out to start afresh", "out")


def check_dest(dest: Path, settings: Settings, schema: Any) -> None:
    """Make DEST ready for the job: refuse one written with other settings (or holding shards of no job),
    move a DEST of the layout before ``_zoo/`` into it, create the job's folders."""
    dest.mkdir(parents=True, exist_ok=True)
    job, legacy, key = sidecar(dest, "job.json"), dest / "job.json", settings.key()
    if job.exists():
        _refuse_other_settings(dest, json.loads(job.read_text()), key)
    elif legacy.exists():
        _refuse_other_settings(dest, json.loads(legacy.read_text()), key)
        _migrate(dest, schema)
    elif any(dest.glob("shard-*.parquet")):
        raise InvalidArgumentError(f"{dest} holds shard files but no record of the job that wrote them "
                                   f"({SIDECAR}/job.json); give another --out", "out")
    for folder in (errors_path(dest, 0).parent, sidecar(dest, "tmp")):
        folder.mkdir(parents=True, exist_ok=True)
    if not job.exists():
        atomic_write(job, lambda p: p.write_text(json.dumps(key, indent=1)), sidecar(dest, "tmp"))


def _migrate(dest: Path, schema: Any) -> None:
    """Move a DEST written before the ``_zoo/`` layout into it: the errors and ledger files into ``_zoo/``,
    every shard whose schema is not the job's rewritten to it (an all-failed shard used to be written as
    ``list<float>``), and ``job.json`` last, so a move cut short is done again by the next run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = sidecar(dest, "tmp")
    errors_path(dest, 0).parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    for path in dest.glob("shard-*.errors.jsonl"):
        match = re.fullmatch(r"shard-(\d+)\.errors\.jsonl", path.name)
        if match and path.is_file():
            os.replace(path, errors_path(dest, int(match[1])))
    if (dest / "stored.json").is_file():
        os.replace(dest / "stored.json", sidecar(dest, "stored.json"))
    (dest / "errors.jsonl").unlink(missing_ok=True)  # rebuilt from the shards' files at the end of the run
    for path in sorted(dest.glob(".shard-*.tmp")):  # the old layout's half-written files
        path.unlink(missing_ok=True)
    for path in sorted(dest.glob("shard-*.parquet")):
        if pq.read_schema(path).equals(schema, check_metadata=False):
            continue
        table = pq.read_table(path)
        try:
            table = schema.empty_table() if table.num_rows == 0 else table.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidArgumentError(f"{path} does not fit this job's schema ({err}); give another --out",
                                       "out") from None
        atomic_write(path, lambda p, t=table: pq.write_table(t, p), tmp)
    os.replace(dest / "job.json", sidecar(dest, "job.json"))


def store_shards(dest: Path, shards: list[int], kind: str, uri: str, collection: str) -> int:
    """Write finished shards the collection does not hold yet; returns the number of rows written."""
    import pyarrow.parquet as pq

    from .. import kinds
    from ..store import VectorStore

    ledger_path = sidecar(dest, "stored.json")
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    key = f"{uri}#{collection}"
    have = set(ledger.get(key, []))
    store = VectorStore(uri)
    written = 0
    handler = kinds.get(kind)  # its columns read back; the store lays them out (an FDE as one dense vector)
    ensured = False
    try:
        for index in sorted(set(shards) - have):
            t = pq.read_table(shard_path(dest, index)).to_pydict()
            vecs = handler.parquet_rows(t)
            if vecs:
                if not ensured:  # once per run: every shard holds the same kind and width
                    store.ensure(collection, kind, handler.row_width(vecs[0]))
                    ensured = True
                store.upsert(collection, kind, t["id"], vecs, [json.loads(m) for m in t["metadata"]])
            written += len(t["id"])
            have.add(index)
            ledger[key] = sorted(have)
            atomic_write(ledger_path, lambda p: p.write_text(json.dumps(ledger)), sidecar(dest, "tmp"))
    finally:
        store.close()
    return written
