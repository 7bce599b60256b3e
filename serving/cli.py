"""``zoo export`` and ``zoo serve``: sub-commands the zoo CLI picks up through the ``zoo.commands`` entry point.

``zoo serve`` is extended the same way: an object registered under the ``zoo.serve_addons`` entry point
(:data:`SERVE_ADDONS`) adds its own flags and is started once the server is ready (the demo's ``--ui`` is
one), so serving never names the packages built on it.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from zoo.errors import ServerError, ZooError
from zoo.runtime import RUNTIMES
from zoo.settings import Settings, settings

from .openai_limits import MAX_CONCURRENT_REQUESTS, MAX_QUEUED_REQUESTS, QUEUE_WAIT_S  # light: stdlib only

SERVE_ADDONS = "zoo.serve_addons"


class ServeAddon(Protocol):
    """Something ``zoo serve`` starts beside tritonserver (registered under :data:`SERVE_ADDONS`)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the add-on's flags to ``zoo serve``."""

    def check(self, args: argparse.Namespace) -> None:
        """Before anything starts: raise a `zoo` error when ``args`` ask for the add-on and it cannot run (its
        extra is missing, its port is taken)."""

    def start(self, args: argparse.Namespace, server: Any) -> Any:
        """Start on the ready ``server`` (a :class:`serving.server.TritonServer`) when ``args`` ask for it;
        returns something with ``close()``, or None when not asked."""


def _queue_args(args: argparse.Namespace) -> list[str]:
    """The queue flags as given (the k8s init container's export repeats them)."""
    return [f"--{flag}={value}" for flag, value in (("max-queue-size", args.max_queue_size),
                                                     ("queue-timeout-ms", args.queue_timeout_ms)) if value is not None]


def _add_queue_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-queue-size", type=int, metavar="N",
                   help="requests each model's Triton queue holds at normal priority before refusing more "
                   "(default: twice its max_batch_size; the low-priority queue is 4 times deeper)")
    p.add_argument("--queue-timeout-ms", type=int, metavar="MS",
                   help="how long a request may wait in a model's Triton queue before it is refused (default "
                   "10000; 4 times longer at low priority)")


def _installed_defaults() -> list[str]:
    """The default models whose weights this installation has: one that ships in a package of an extra not
    installed is left out, with a line saying which extra brings it."""
    import zoo
    from zoo.defaults import default_model_names
    from zoo.weights import missing_extra

    names = []
    for name in default_model_names():
        extra = missing_extra(zoo.get_spec(name))
        if extra:
            _say(f"leaving out the default model {name}: it needs the {extra!r} extra "
                 f"(pip install 'embedding-zoo[{extra}]')")
        else:
            names.append(name)
    return names


def _cmd_export(args: argparse.Namespace) -> int:
    from zoo.extras import require

    require("serve", "zoo export")

    from .export import export

    names = args.names or _installed_defaults()
    if args.k8s:  # checked before the export, so a bad flag costs nothing
        from .k8s import K8sOptions, write_manifests

        opts = K8sOptions(names=list(names), image=args.k8s_image, replicas=args.k8s_replicas,
                          max_replicas=args.k8s_max_replicas, namespace=args.k8s_namespace,
                          repository=args.k8s_repository, gpu=args.instance_kind == "gpu",
                          export_args=[f"--instances={args.instances}", f"--instance-kind={args.instance_kind}",
                                       f"--runtime={args.runtime}", *_queue_args(args)])
        files = write_manifests(opts, Path(args.k8s))
    for folder in export(names, Path(args.out), instances=args.instances, kind=args.instance_kind,
                         runtime=args.runtime, max_queue_size=args.max_queue_size,
                         queue_timeout_ms=args.queue_timeout_ms):
        print(f"wrote {folder}")
    if args.k8s:
        print("wrote " + ", ".join(str(f) for f in files) + " (docs/DEPLOY.md walks through them)")
    return 0


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so every state (loading, serving, indexing) unwinds at once."""


def _on_sigterm(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise _Terminated


def _say(message: str) -> None:
    print(message, flush=True)


def _check_ports(args: argparse.Namespace) -> None:
    """Every port `zoo serve` will listen on is free, else one line naming the port and its flag."""
    from .server import ensure_port_free

    wanted = [(args.triton_host, args.grpc_port, "tritonserver gRPC", "--grpc-port"),
              (args.triton_host, args.http_port, "tritonserver HTTP", "--http-port"),
              (args.triton_host, args.metrics_port, "tritonserver metrics", "--metrics-port"),
              (args.host, args.openai_port, "the OpenAI-compatible API", "--openai-port")]
    if args.supervise:
        wanted.append((args.triton_host, args.health_port, "zoo's health endpoint", "--health-port"))
    for host, port, what, flag in wanted:
        ensure_port_free(host, port, what, flag)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with ``zoo serve``'s flags laid over them (a flag given wins)."""
    return settings().with_flags(api_key=args.api_key, triton_admin_key=args.triton_admin_key)


def _check_exposure(args: argparse.Namespace, cfg: Settings) -> None:
    """A door reachable from other machines must ask for a key."""
    if args.openai_port and not _is_loopback(args.host) and not cfg.api_key:
        raise ServerError(f"refusing to serve the OpenAI-compatible API on {args.host} without an API key: set "
                          "--api-key or ZOO_API_KEY (or keep --host on 127.0.0.1)")


def _check_queue(args: argparse.Namespace) -> None:
    """The queue flags shape an export: with ``--repository`` its configs already say, so they are refused."""
    if args.repository and _queue_args(args):
        raise ServerError("--max-queue-size and --queue-timeout-ms apply when zoo serve exports the models; "
                          "with --repository, set them at `zoo export` (the repository's config.pbtxt holds them)")


def _check_door(args: argparse.Namespace) -> None:
    """The door's admission and tracing flags make sense, and tracing's extra is installed: one line otherwise."""
    if not args.openai_port:
        return
    for flag, value in (("--max-concurrent-requests", args.max_concurrent_requests),
                        ("--max-queued-requests", args.max_queued_requests), ("--max-queue-ms", args.max_queue_ms)):
        if value < 0:
            raise ServerError(f"{flag} must be 0 or more, got {value:g}")
    if args.max_concurrent_requests < 1:  # 0 would admit nothing: every request would wait, then get 429
        raise ServerError(f"--max-concurrent-requests must be 1 or more, got {args.max_concurrent_requests}")
    if args.otlp_endpoint:
        from zoo.extras import require

        require("trace", "zoo serve --otlp-endpoint")
        if not args.otlp_endpoint.startswith(("http://", "https://")):
            raise ServerError(f"--otlp-endpoint must be an OTLP/HTTP traces URL such as "
                              f"http://127.0.0.1:4318/v1/traces, got {args.otlp_endpoint!r}")


def _check_aliases(args: argparse.Namespace, served: list[str]) -> dict[str, str]:
    """``--alias NAME=MODEL`` as ``{NAME: MODEL}``: each MODEL served (``served``: the Triton names), no NAME a
    served model's own, and ``--tei-model`` served; one line otherwise."""
    from .openai_catalog import parse_aliases

    try:
        aliases = parse_aliases(args.alias)
    except ZooError as err:
        raise ServerError(str(err)) from None
    for name, model in aliases.items():
        if _served_name(model) not in served:
            raise ServerError(f"--alias {name}={model}: {model} is not served here (served: {', '.join(served)})")
        if _served_name(name) in served:
            raise ServerError(f"--alias {name}={model}: {name} is a served model's own name")
    if args.tei_model and _served_name(aliases.get(args.tei_model, args.tei_model)) not in served:
        raise ServerError(f"--tei-model {args.tei_model} is not served here (served: {', '.join(served)})")
    return aliases


def _served_name(model: str) -> str:
    """The Triton name ``model`` is served under ('' for a name that cannot be one)."""
    from .client import triton_name

    try:
        return triton_name(model)
    except ZooError:
        return ""


def _cmd_serve(args: argparse.Namespace) -> int:
    from zoo.extras import require

    require("serve", "zoo serve")
    from .export import export
    from .health import HealthServer
    from .processes import set_child_subreaper
    from .server import Ports, TritonServer, new_log_path
    from .supervisor import Supervisor

    cfg = _settings(args)
    _check_exposure(args, cfg)
    _check_ports(args)  # before anything starts: a taken port is one line, and nothing is left running
    _check_door(args)
    _check_queue(args)
    for addon in args.addons:
        addon.check(args)
    if args.repository:
        repo = Path(args.repository)
    else:  # a throw-away export, removed when the server stops
        repo = Path(tempfile.mkdtemp(prefix="zoo-repository-"))
        atexit.register(shutil.rmtree, repo, True)
        export(args.names or _installed_defaults(), repo, instances=args.instances, kind=args.instance_kind,
               runtime=args.runtime, max_queue_size=args.max_queue_size, queue_timeout_ms=args.queue_timeout_ms)
    served = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    aliases = _check_aliases(args, served) if args.openai_port else {}
    set_child_subreaper()  # stubs orphaned by a killed tritonserver are reaped here, not left as zombies
    server = TritonServer(repo, host=args.triton_host, ports=Ports(args.grpc_port, args.http_port,
                          args.metrics_port), log_path=Path(args.log) if args.log else new_log_path(),
                          otlp_endpoint=args.otlp_endpoint or None)  # Triton's spans continue the door's
    if cfg.triton_admin_key:
        server.admin_key = cfg.triton_admin_key
    signal.signal(signal.SIGTERM, _on_sigterm)
    supervisor = health = door = None
    addons: list[Any] = []
    _say(f"starting tritonserver on {repo} (log: {server.log_path})")
    try:
        server.start(timeout=args.timeout)
        _say(f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}")
        for model in served:
            _say(f"  model {model}")
        if args.supervise:
            supervisor = Supervisor(server, hang_timeout=args.hang_timeout, max_execution=args.max_execution,
                                    on_event=lambda msg: _say(f"supervisor: {msg}")).start()
            if args.health_port:
                health = HealthServer(supervisor, args.triton_host, args.health_port).start()
                _say(f"health: {health.url}")
        if args.openai_port:
            from .health import health_report
            from .openai_server import OpenAIServer

            door = OpenAIServer(
                server.grpc_url, args.host, args.openai_port, api_key=cfg.api_key or None,
                max_body_bytes=int(args.max_body_mb * (1 << 20)), cors_origins=args.cors_origin,
                health=(lambda: health_report(supervisor)) if supervisor is not None else None,
                admin_headers=server.admin_headers, max_concurrent=args.max_concurrent_requests,
                max_queued=args.max_queued_requests, queue_wait=args.max_queue_ms / 1000,
                otlp_endpoint=args.otlp_endpoint, aliases=aliases, tei_model=args.tei_model,
            ).start()
            _say(f"OpenAI-compatible API: {door.url}  (POST /v1/embeddings, GET /v1/models"
                 f"{', bearer key required' if cfg.api_key else ''}; GET /metrics"
                 f"{'; spans to ' + args.otlp_endpoint if args.otlp_endpoint else ''})")
        for addon in args.addons:
            started = addon.start(args, server)
            if started is not None:
                addons.append(started)
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _say("shutting down")
        for part in (*reversed(addons), door, health, supervisor):
            if part is not None:
                part.close()
        server.stop()


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``serve`` on the zoo CLI."""
    p = sub.add_parser("export", help="write a Triton model repository for registry models or folders")
    p.add_argument("names", nargs="*", help="registry names or model folders (default: the default models)")
    p.add_argument("--out", required=True, help="model repository folder to write")
    p.add_argument("--instances", type=int, default=1, help="instance_group count per model")
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="what the models run on, for those whose family offers it (the others run on torch); auto "
                   "(the default) leaves it to each instance: $ZOO_RUNTIME where set, else the fastest exact "
                   "runtime on its device")
    _add_queue_flags(p)
    p.add_argument("--k8s", metavar="DIR", help="also write Kubernetes manifests for replicas serving it here")
    p.add_argument("--k8s-image", default="embedding-zoo:latest", help="container image with zoo installed")
    p.add_argument("--k8s-replicas", type=int, default=2, help="replicas (the autoscaler's minimum)")
    p.add_argument("--k8s-max-replicas", type=int, default=8, help="the autoscaler's maximum")
    p.add_argument("--k8s-namespace", default="default")
    p.add_argument("--k8s-repository", default="init", metavar="init|pvc:CLAIM",
                   help="how pods get the repository: an init container exporting it, or a volume claim")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("serve", help="serve models with tritonserver (gRPC + HTTP + metrics)")
    p.add_argument("names", nargs="*", help="models to export and serve (default: the default models)")
    p.add_argument("--repository", help="serve this existing model repository instead of exporting")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the OpenAI-compatible API binds to; any other than loopback needs --api-key")
    p.add_argument("--triton-host", default="127.0.0.1",
                   help="address tritonserver (gRPC, HTTP, metrics) and zoo's /health bind to; its admin APIs "
                   "need the admin key whatever the address")
    p.add_argument("--triton-admin-key", metavar="KEY",  # unset: the environment's, through _settings
                   help="the secret of tritonserver's admin APIs (model load/unload, config, statistics, shared "
                   "memory, trace, logging), sent as the `zoo-admin-key` header (default: $ZOO_TRITON_ADMIN_KEY, "
                   "else a new random one at each start)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="what the models run on, for those whose family offers it (the others run on torch); auto "
                   "(the default) leaves it to each instance: $ZOO_RUNTIME where set, else the fastest exact "
                   "runtime on its device")
    _add_queue_flags(p)
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for READY")
    p.add_argument("--log", help="write the server log here")
    p.add_argument("--no-supervise", dest="supervise", action="store_false",
                   help="do not watch the models (by default a model whose stub dies or hangs is reloaded)")
    p.add_argument("--hang-timeout", type=float, default=60.0,
                   help="seconds a model with work pending may go without finishing anything while its stubs "
                   "compute nothing, before it is restarted (0: never)")
    p.add_argument("--max-execution", type=float, default=None,
                   help="seconds a model may compute without finishing anything before it counts as a runaway "
                   "and is restarted (default: 10 x --hang-timeout)")
    p.add_argument("--health-port", type=int, default=8003,
                   help="port of zoo's own GET /health (ready only when every model is); 0 disables")
    p.add_argument("--openai-port", type=int, default=8080,
                   help="port of the OpenAI-compatible API (POST /v1/embeddings, GET /v1/models); 0 disables")
    p.add_argument("--api-key",  # unset: the environment's, through _settings
                   help="require `Authorization: Bearer KEY` on the OpenAI-compatible API (default: $ZOO_API_KEY)")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="largest request body the OpenAI-compatible API reads, in MiB (413 beyond)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let browsers on ORIGIN call the OpenAI-compatible API (repeatable; default: none)")
    p.add_argument("--max-concurrent-requests", type=int, default=MAX_CONCURRENT_REQUESTS, metavar="N",
                   help="requests the OpenAI-compatible API works on at once; more wait for a turn")
    p.add_argument("--max-queued-requests", type=int, default=MAX_QUEUED_REQUESTS, metavar="N",
                   help="requests that may wait for a turn; beyond that 429 with Retry-After at once")
    p.add_argument("--max-queue-ms", type=float, default=QUEUE_WAIT_S * 1000, metavar="MS",
                   help="milliseconds a request may wait for a turn before 429 with Retry-After")
    p.add_argument("--alias", action="append", default=[], metavar="NAME=MODEL",
                   help="another name the OpenAI-compatible API serves MODEL under, for clients that accept only "
                   "names they know (e.g. text-embedding-3-small=sentence-transformers/all-MiniLM-L6-v2; repeatable)")
    p.add_argument("--tei-model", metavar="MODEL",
                   help="the model TEI's routes (/embed, /rerank, /info, ...) serve, whose requests name none "
                   "(default: per route, the first served model that answers it)")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="send an OpenTelemetry span per request of the OpenAI-compatible API to this OTLP/HTTP "
                   "traces URL (e.g. http://127.0.0.1:4318/v1/traces; needs the 'trace' extra)")
    from zoo import plugins

    addons = plugins.load(SERVE_ADDONS)  # loaded once: their flags now, their start once the server is up
    for addon in addons:
        addon.add_arguments(p)
    p.set_defaults(run=_cmd_serve, addons=addons)
