"""The ``zoo embed`` job: a Ray Data pipeline over the input's shards, each written as one Parquet file.

The dataset holds one row per pending shard; ``map_batches`` hands shards to a pool of actors, each holding
one model (in-process, or a client of a served model with ``backend``), which read their shard, embed it
with ``encode_per_item`` (a bad row becomes an error, never the shard's end) and write it. The driver
follows the shards as they finish, shows progress, and writes finished shards into the vector database when
one is given. Locally this is ``ray.init()``; with ``RAY_ADDRESS`` set the same job runs on that cluster
(whose nodes then need zoo installed and DEST on a filesystem they share).

DEST's layout (one Parquet dataset, the job's own files in ``_zoo/``), the shards' schema and the writing of
finished shards into a vector database are :mod:`zoo.batch.dest`'s.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InvalidArgumentError, ModelUnavailableError, ServerError
from . import sources
from .dest import (
    atomic_write,
    check_dest,
    errors_path,
    output_kind,
    shard_path,
    shard_schema,
    shard_table,
    sidecar,
    store_shards,
)

#: environment that keeps a local Ray on one machine (read by Ray when imported, and by the processes it starts)
ONE_MACHINE_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
STORABLE = ("float32", "float16")  # precisions a vector database takes as they are
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
    # before any file: a shard the schema refuses is not done
    table = shard_table(good, results, schema, output_kind(model.spec, settings))
    atomic_write(errors_path(dest, shard.index), lambda p: p.write_text(
        "".join(json.dumps({"id": e.id, "reason": e.reason, "shard": shard.index}) + "\n" for e in errors)))
    atomic_write(shard_path(dest, shard.index), lambda p: pq.write_table(table, p), sidecar(dest, "tmp"))
    return {"shard": shard.index, "rows": len(good), "errors": len(errors), "seconds": time.perf_counter() - t}


class ShardWorker:
    """A Ray actor holding one model; called with a batch of shards (their JSON), embeds and writes each."""

    def __init__(self, settings: Settings, dest: str, schema: Any, batch_size: int, threads: int | None) -> None:
        from ..backends import open_model

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.settings, self.dest, self.schema, self.batch_size = settings, Path(dest), schema, batch_size
        self.model = open_model(settings.model, settings.backend, settings.url, None, bulk=True, threads=threads)

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


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``HOST:PORT``, ``ray://HOST:PORT``, ``[::1]:PORT``) names this machine's loopback."""
    host = address.split("://", 1)[-1].rsplit("@", 1)[-1]
    if host.startswith("["):  # an IPv6 literal with a port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (or "auto"): where it points is the cluster's business


def load_ray(address: str | None) -> Any:
    """Import Ray set for where the job runs: kept on 127.0.0.1 for a local job or a cluster on loopback, free
    to reach other machines for any other address; refuses a Ray already imported with the other setting.

    Ray reads the setting once, when it is imported: with it off, Ray rewrites 127.0.0.1 (a node's address, or
    the cluster's) into the machine's outward address, so every process it starts listens on every interface
    and a loopback cluster is looked for where it is not (the job then hangs). With it on, this process's own
    Ray worker listens on 127.0.0.1, which the nodes of a cluster on other machines cannot reach."""
    one_machine = address is None or is_loopback(address)
    if one_machine:
        os.environ.update(ONE_MACHINE_RAY)  # before Ray is imported, and for the processes it starts
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return ray  # the caller's own Ray (ray.init() before calling run()): the job runs on it as it is
    kept = not ray_constants.ENABLE_RAY_CLUSTER
    where = "a local Ray" if address is None else f"the Ray cluster at {address}"
    if one_machine and not kept:
        raise InvalidArgumentError(
            f"Ray was imported before zoo could keep it on 127.0.0.1, so {where} would listen on every "
            f"interface (or never be found); set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray",
            "ray_address")
    if not one_machine and kept:
        raise InvalidArgumentError(
            f"this process's Ray is kept on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or a local job "
            f"ran here before), so the nodes of {where} could not reach it; run the job in a new process "
            f"without that variable", "ray_address")
    return ray


def init_ray(ray: Any, address: str | None = None) -> None:
    """Join the Ray cluster at ``address``, else start a fresh local Ray whose every process listens on
    127.0.0.1 only. A local job never joins another Ray: not the one ``/tmp/ray/ray_current_cluster`` names
    (which a bare ``ray.init()`` would), nor one in ``RAY_ADDRESS`` unless the caller passed it in ``address``.
    Import Ray with :func:`load_ray` first."""
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    if address is None:
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)
        return
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as err:
        # e.g. a cluster with token auth and no RAY_AUTH_MODE=token / RAY_AUTH_TOKEN here, or nothing there
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ServerError(f"could not join the Ray cluster at {address}: {first}") from None


def run(settings: Settings, dest: str | Path, *, to: str | None = None, collection: str | None = None,
        actors: int | None = None, batch_size: int = 32, progress: bool = True,
        ray_address: str | None = None) -> Report:
    """Embed ``settings.input`` into Parquet shards under ``dest`` (and the database ``to``) on Ray Data.

    ``actors``: how many model copies work side by side (default: one per two cores locally, one client of a
    served model, which yields to interactive requests: see the comment where it is chosen). Shards already in
    ``dest`` are skipped; rows that fail go to ``dest/_zoo/errors.jsonl`` (:func:`zoo.batch.dest.errors_path`).
    ``dest`` reads as one Parquet dataset (see :mod:`zoo.batch.dest`). ``ray_address`` (else ``RAY_ADDRESS``):
    the Ray cluster to run on; without either, a local Ray on 127.0.0.1 only (:func:`init_ray`)."""
    from ..settings import settings as env_settings  # `settings` is this job's Settings

    address = ray_address or env_settings().ray_address
    ray = load_ray(address)  # before anything else imports Ray: it reads its bind setting once

    from ..registry import get_spec
    from ..store import collection_name

    dest = Path(dest).expanduser()
    if settings.rows_per_shard < 1:
        raise InvalidArgumentError("rows per shard must be a positive integer", "rows_per_shard")
    if settings.backend == "local":
        spec = get_spec(settings.model)
    else:
        from ..backends import open_model

        probe = open_model(settings.model, settings.backend, settings.url, None)
        spec = probe.spec
        probe.close()
    kind = output_kind(spec, settings)
    schema = shard_schema(spec, settings)
    if to and settings.precision not in STORABLE:
        raise InvalidArgumentError(f"a vector database stores {' or '.join(STORABLE)} vectors, not "
                                   f"{settings.precision}", "precision")
    shards = sources.plan(settings.input, settings.rows_per_shard)
    check_dest(dest, settings, schema)
    pending = [s for s in shards if not shard_path(dest, s.index).exists()]
    t = time.perf_counter()
    rows = errors = 0
    busy = 0.0
    failed: list[str] = []
    if pending:
        if not ray.is_initialized():
            init_ray(ray, address)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's INFO lines would drown the bar
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the job's own bar counts rows; Ray's would count blocks
        cpus = int(ray.cluster_resources().get("CPU", 1))
        local = settings.backend == "local"
        # a served model: one client, whose bulk requests go one small one at a time (the backend's bulk mode), so
        # that a server with two instances keeps one free for interactive requests; each more actor is one more
        # bulk request in flight (scripts/bench_priority.py measures what that costs interactive latency)
        n = actors or (max(1, cpus // 2) if local else 1)
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
            lost = [s.index for s in pending if not shard_path(dest, s.index).exists()]
            named = ", ".join(map(str, lost[:10])) + (", …" if len(lost) > 10 else "")
            raise ServerError(f"the embedding job stopped: {own[-1]}; {len(lost)} of {len(pending)} shards were not "
                              f"written (shards {named}); the finished ones are kept in {dest}, and running the "
                              "same command again does the rest") from None
        finally:
            if bar is not None:
                bar.close()
        if failed:  # shards that failed as a whole (a server gone, a disk full): the rest were written
            raise ServerError(f"{len(failed)} of {len(pending)} shards failed ({failed[0]}"
                              f"{'; …' if len(failed) > 1 else ''}); the others are in {dest}, and running "
                              "the same command again retries the failed ones")
    seconds = time.perf_counter() - t
    merged = [errors_path(dest, s.index) for s in shards]
    atomic_write(errors_path(dest), lambda p: p.write_text("".join(f.read_text() for f in merged if f.is_file())),
                  sidecar(dest, "tmp"))
    report = Report(len(shards), len(shards) - len(pending), rows, errors, seconds, busy_seconds=busy)
    if to:
        report.stored = store_shards(dest, [s.index for s in shards], kind, to,
                                      collection or collection_name(spec.name))
    return report
