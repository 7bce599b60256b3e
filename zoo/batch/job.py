"""The ``zoo embed`` job: a Ray Data pipeline over the input's shards, each written as one Parquet file.

The dataset holds one row per pending shard; ``map_batches`` hands shards to a pool of actors, each holding
one model (in-process, or a client of a served model with ``backend``), which read their shard, embed it
with ``encode_per_item`` (a bad row becomes an error, never the shard's end) and write it. The driver
follows the shards as they finish, shows progress, and writes finished shards into the vector database when
one is given. Locally this is ``ray.init()``; with ``RAY_ADDRESS`` set the same job runs on that cluster
(whose nodes then need zoo installed and DEST on a filesystem they share).

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
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InvalidArgumentError, ModelUnavailableError, ServerError
from . import sources

#: environment that keeps a local Ray on one machine (read by Ray when imported, and by the processes it starts)
ONE_MACHINE_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
STORABLE = ("float32", "float16")  # precisions a vector database takes as they are
PARQUET_PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")  # arrow has no float8
# decoded images and audio are held until embedded, so they go this many batches at a time; texts go a whole
# shard at once, which lets the model sort all of them by length (less padding)
FLUSH_BATCHES = 8


@dataclass
class Settings:
    """What decides a job's output; a DEST written with other settings is not resumed."""

    model: str
    input: str
    rows_per_shard: int = 1000
    output: str | None = None
    dimensions: int | None = None
    precision: str = "float32"
    prompt_name: str | None = None
    backend: str = "local"  # "local", or an installed zoo.backends name (e.g. "triton")
    url: str = ""
    controls: dict = field(default_factory=dict)  # encode()'s other controls: normalize, max_vectors, top_k

    def key(self) -> dict:
        """The settings that change the stored rows (the URL of a served copy of the model does not)."""
        return {"model": self.model, "input": str(Path(self.input).expanduser().resolve()),
                "rows_per_shard": self.rows_per_shard, "output": self.output, "dimensions": self.dimensions,
                "precision": self.precision, "prompt_name": self.prompt_name, "controls": self.controls}


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


def shard_schema(spec: Any, settings: Settings):
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
    FDE's own width for ``fde``."""
    import pyarrow as pa

    from .. import fde
    from .. import postprocess as pp

    opts = _options(spec, settings)
    cols = [pa.field("id", pa.string()), pa.field("modality", pa.string())]
    if opts.output == "sparse":
        cols += [pa.field("indices", pa.list_(pa.int32())), pa.field("values", pa.list_(pa.float32()))]
    else:
        value = pa.from_numpy_dtype(pp.PRECISIONS[opts.precision])
        full = fde.FDEConfig().width if opts.output == "fde" else (opts.dimensions or spec.dim)
        vector = pa.list_(value, pp.output_width(full, opts.precision))
        cols.append(pa.field("embedding", pa.list_(vector) if opts.output == "multivector" else vector))
    cols.append(pa.field("metadata", pa.string()))
    return pa.schema(cols)


def _table(rows: list[sources.Row], results: list[Any], schema):
    """A shard's good rows as an Arrow table of the job's ``schema`` (empty when no row succeeded)."""
    import pyarrow as pa

    if not rows:
        return schema.empty_table()
    cols: dict[str, Any] = {"id": pa.array([r.id for r in rows], pa.string()),
                            "modality": pa.array([r.modality for r in rows], pa.string())}
    if "indices" in schema.names:
        cols["indices"] = pa.array([x.indices.astype(np.int32) for x in results], schema.field("indices").type)
        cols["values"] = pa.array([x.data.astype(np.float32) for x in results], schema.field("values").type)
    else:
        kind = schema.field("embedding").type
        vector = kind.value_type if pa.types.is_list(kind) else kind
        width, dtype = vector.list_size, vector.value_type.to_pandas_dtype()
        bad = [x.shape for x in results if x.shape[-1] != width or x.dtype != dtype]
        if bad:  # the model gave other vectors than its settings promise: the shard fails, never a mixed folder
            raise ValueError(f"the model returned vectors of shape {bad[0]} and type {results[0].dtype}; "
                             f"the job's schema wants {width} × {vector.value_type}")
        flat = np.concatenate([x.reshape(-1, width) for x in results])
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), vector.value_type), width)
        if pa.types.is_list(kind):  # multivector: one list of vectors per row
            offsets = np.concatenate([[0], np.cumsum([len(x) for x in results])]).astype(np.int32)
            vectors = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), vectors, type=kind)
        cols["embedding"] = vectors
    cols["metadata"] = pa.array([json.dumps(r.metadata, default=str) for r in rows], pa.string())
    return pa.table(cols, schema=schema)


def _atomic_write(path: Path, write: Callable[[Path], None], tmp_dir: Path | None = None) -> None:
    """Write ``path`` through a temporary file (in ``tmp_dir``, default beside it) and one rename."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def embed_shard(model: Any, shard: sources.Shard, dest: Path, settings: Settings, schema: Any,
                batch_size: int) -> dict:
    """Read, embed and write one shard; returns ``{"shard", "rows", "errors", "seconds"}``."""
    import pyarrow.parquet as pq

    t = time.perf_counter()
    done: list[tuple[int, sources.Row, Any]] = []  # (position in the shard, row, result): written in input order
    errors: list[sources.RowError] = []
    pending: dict[str, list[tuple[int, sources.Row]]] = {}
    accepted = {m.value for m in model.spec.modalities}

    def embed(batch: list[tuple[int, sources.Row]], modality: str) -> list[Any]:
        try:
            return model.encode_per_item([r.item for _, r in batch], modality, batch_size=batch_size,
                                         output=settings.output, dimensions=settings.dimensions,
                                         precision=settings.precision, prompt_name=settings.prompt_name,
                                         **settings.controls)
        except (ServerError, ModelUnavailableError):
            raise  # the server, not a row: the job stops, finished shards stay and a rerun resumes
        except Exception as err:  # noqa: BLE001 - a row the model chokes on must not end the job
            if len(batch) == 1:
                return [InputError(0, f"embedding failed: {type(err).__name__}: {err}")]
            return [res for one in batch for res in embed([one], modality)]  # find the row(s) at fault

    def flush(modality: str) -> None:
        batch = pending.pop(modality, [])
        if not batch:
            return
        for (position, row), res in zip(batch, embed(batch, modality)):
            if isinstance(res, InputError):
                errors.append(sources.RowError(row.id, res.reason))
            else:
                done.append((position, row, res))

    for position, row in enumerate(sources.rows(shard)):
        if isinstance(row, sources.RowError):
            errors.append(row)
        elif row.modality not in accepted:
            errors.append(sources.RowError(row.id, f"model {model.spec.name!r} does not embed {row.modality}; "
                                                   f"it embeds {', '.join(sorted(accepted))}"))
        else:
            pending.setdefault(row.modality, []).append((position, row))
            if row.modality != "text" and len(pending[row.modality]) >= batch_size * FLUSH_BATCHES:
                flush(row.modality)
    for modality in list(pending):
        flush(modality)
    done.sort(key=lambda d: d[0])
    good, results = [d[1] for d in done], [d[2] for d in done]
    table = _table(good, results, schema)  # before any file: a shard the schema refuses is not done
    _atomic_write(errors_path(dest, shard.index), lambda p: p.write_text(
        "".join(json.dumps({"id": e.id, "reason": e.reason, "shard": shard.index}) + "\n" for e in errors)))
    _atomic_write(shard_path(dest, shard.index), lambda p: pq.write_table(table, p), sidecar(dest, "tmp"))
    return {"shard": shard.index, "rows": len(good), "errors": len(errors), "seconds": time.perf_counter() - t}


class ShardWorker:
    """A Ray actor holding one model; called with a batch of shards (their JSON), embeds and writes each."""

    def __init__(self, settings: Settings, dest: str, schema: Any, batch_size: int, threads: int | None) -> None:
        from ..evaluation.cli import open_model

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.settings, self.dest, self.schema, self.batch_size = settings, Path(dest), schema, batch_size
        self.model = open_model(settings.model, settings.backend, settings.url, None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = []
        for text in batch["shard"]:
            shard = sources.Shard.from_json(text)
            t = time.perf_counter()
            try:
                done.append(embed_shard(self.model, shard, self.dest, self.settings, self.schema, self.batch_size)
                            | {"failed": ""})
            except Exception as err:  # noqa: BLE001 - reported by the driver; the other shards go on
                done.append({"shard": shard.index, "rows": 0, "errors": 0, "seconds": time.perf_counter() - t,
                             "failed": f"{type(err).__name__}: {err}".splitlines()[0]})
        return {k: np.array([d[k] for d in done]) for k in ("shard", "rows", "errors", "seconds", "failed")}


def _options(spec: Any, settings: Settings) -> Any:
    """The job's validated output controls (``EncodeOptions``), or a clear error for settings the model or
    Parquet cannot take."""
    from ..base import EncodeFront

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


def _check_dest(dest: Path, settings: Settings, schema: Any) -> None:
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
        _atomic_write(job, lambda p: p.write_text(json.dumps(key, indent=1)), sidecar(dest, "tmp"))


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
        _atomic_write(path, lambda p, t=table: pq.write_table(t, p), tmp)
    os.replace(dest / "job.json", sidecar(dest, "job.json"))


def _store_shards(dest: Path, shards: list[int], kind: str, uri: str, collection: str) -> int:
    """Write finished shards the collection does not hold yet; returns the number of rows written."""
    import pyarrow.parquet as pq

    from ..store import VectorStore

    ledger_path = sidecar(dest, "stored.json")
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    key = f"{uri}#{collection}"
    have = set(ledger.get(key, []))
    store = VectorStore(uri)
    written = 0
    stored_kind = "dense" if kind == "fde" else kind  # an FDE is searched as one dense vector
    ensured = False
    try:
        for index in sorted(set(shards) - have):
            t = pq.read_table(shard_path(dest, index)).to_pydict()
            if kind == "sparse":
                vecs = list(zip(t["indices"], t["values"]))
            else:
                vecs = [np.asarray(v, dtype=np.float32) for v in t["embedding"]]
            if vecs:
                if not ensured:  # once per run: every shard holds the same kind and width
                    store.ensure(collection, stored_kind, 0 if kind == "sparse" else vecs[0].shape[-1])
                    ensured = True
                store.upsert(collection, stored_kind, t["id"], vecs, [json.loads(m) for m in t["metadata"]])
            written += len(t["id"])
            have.add(index)
            ledger[key] = sorted(have)
            _atomic_write(ledger_path, lambda p: p.write_text(json.dumps(ledger)), sidecar(dest, "tmp"))
    finally:
        store.close()
    return written


@dataclass
class Report:
    """What one run did."""

    shards: int
    skipped: int
    rows: int
    errors: int
    seconds: float
    stored: int = 0
    busy_seconds: float = 0.0  # the actors' time inside shards (reading, embedding, writing), summed

    @property
    def rows_per_s(self) -> float:
        """Rows embedded per second by this run (shards it skipped not counted)."""
        return self.rows / self.seconds if self.seconds else 0.0


def init_ray(ray: Any) -> None:
    """Join the cluster named by ``RAY_ADDRESS``, else start a fresh local Ray whose every process listens on
    127.0.0.1 only (by default Ray binds every interface, and joins whatever cluster /tmp/ray names)."""
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**options)
    else:
        # Ray resolves a node address of 127.0.0.1 to the machine's outward one unless it is told that this is
        # a one-machine Ray; its processes read that from the environment (see ONE_MACHINE_RAY)
        os.environ.update(ONE_MACHINE_RAY)
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)


def run(settings: Settings, dest: str | Path, *, to: str | None = None, collection: str | None = None,
        actors: int | None = None, batch_size: int = 32, progress: bool = True) -> Report:
    """Embed ``settings.input`` into Parquet shards under ``dest`` (and the database ``to``) on Ray Data.

    ``actors``: how many model copies work side by side (default: one per two cores locally, four clients
    of a served model). Shards already in ``dest`` are skipped; rows that fail go to ``dest/_zoo/errors.jsonl``
    (:func:`errors_path`). ``dest`` reads as one Parquet dataset (see the module's notes)."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.update(ONE_MACHINE_RAY)  # before Ray is imported: it reads this once (see init_ray)
    import ray

    from ..registry import get_spec
    from ..store import collection_name

    dest = Path(dest).expanduser()
    if settings.rows_per_shard < 1:
        raise InvalidArgumentError("rows per shard must be a positive integer", "rows_per_shard")
    if settings.backend == "local":
        spec = get_spec(settings.model)
    else:
        from ..evaluation.cli import open_model

        probe = open_model(settings.model, settings.backend, settings.url, None)
        spec = probe.spec
        probe.close()
    kind = output_kind(spec, settings)
    schema = shard_schema(spec, settings)
    if to and settings.precision not in STORABLE:
        raise InvalidArgumentError(f"a vector database stores {' or '.join(STORABLE)} vectors, not "
                                   f"{settings.precision}", "precision")
    shards = sources.plan(settings.input, settings.rows_per_shard)
    _check_dest(dest, settings, schema)
    pending = [s for s in shards if not shard_path(dest, s.index).exists()]
    t = time.perf_counter()
    rows = errors = 0
    busy = 0.0
    failed: list[str] = []
    if pending:
        if not ray.is_initialized():
            init_ray(ray)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's INFO lines would drown the bar
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the job's own bar counts rows; Ray's would count blocks
        cpus = int(ray.cluster_resources().get("CPU", 1))
        local = settings.backend == "local"
        n = actors or (max(1, cpus // 2) if local else 4)
        threads = max(1, cpus // n) if local else None
        ds = ray.data.from_items([{"shard": s.to_json()} for s in pending], override_num_blocks=len(pending))
        done = ds.map_batches(ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n),
                              num_cpus=threads or 0.25,
                              fn_constructor_kwargs={"settings": settings, "dest": str(dest), "schema": schema,
                                                     "batch_size": batch_size, "threads": threads})
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), unit="shard", desc=f"embed {len(shards)} shards", dynamic_ncols=True)
        try:
            for row in done.iter_rows():
                rows += int(row["rows"])
                errors += int(row["errors"])
                busy += float(row["seconds"])
                if row["failed"]:
                    failed.append(f"shard {row['shard']}: {row['failed']}")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(rows=rows, errors=errors, rows_per_s=f"{rows / (time.perf_counter() - t):.0f}")
        except ray.exceptions.RayError as err:  # an actor could not start (its model, its server): say why
            # Ray's text holds the actor's traceback: its last "SomeError: message" line says what went wrong
            lines = [ln.strip() for ln in str(err).splitlines() if re.match(r"\s*[\w.]+(Error|Exception): ", ln)]
            own = [ln for ln in lines if not ln.startswith("ray.")] or lines or [type(err).__name__]
            raise ServerError(f"the embedding job stopped: {own[-1]}; finished shards are kept in {dest}, and "
                              "running the same command again resumes") from None
        finally:
            if bar is not None:
                bar.close()
        if failed:  # shards that failed as a whole (a server gone, a disk full): the rest were written
            raise ServerError(f"{len(failed)} of {len(pending)} shards failed ({failed[0]}"
                              f"{'; …' if len(failed) > 1 else ''}); the others are in {dest}, and running "
                              "the same command again retries the failed ones")
    seconds = time.perf_counter() - t
    merged = [errors_path(dest, s.index) for s in shards]
    _atomic_write(errors_path(dest), lambda p: p.write_text("".join(f.read_text() for f in merged if f.is_file())),
                  sidecar(dest, "tmp"))
    report = Report(len(shards), len(shards) - len(pending), rows, errors, seconds, busy_seconds=busy)
    if to:
        report.stored = _store_shards(dest, [s.index for s in shards], kind, to,
                                      collection or collection_name(spec.name))
    return report
