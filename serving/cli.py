"""``zoo export`` and ``zoo serve``: sub-commands the zoo CLI picks up when serving is installed."""

from __future__ import annotations

import argparse
import atexit
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path


def _cmd_export(args: argparse.Namespace) -> int:
    from zoo.defaults import default_model_names

    from .export import export

    for folder in export(args.names or default_model_names(), Path(args.out), instances=args.instances,
                         kind=args.instance_kind):
        print(f"wrote {folder}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from zoo.defaults import default_model_names

    from .export import export
    from .server import Ports, TritonServer

    if args.repository:
        repo = Path(args.repository)
    else:  # a throw-away export, removed when the server stops
        repo = Path(tempfile.mkdtemp(prefix="zoo-repository-"))
        atexit.register(shutil.rmtree, repo, True)
        export(args.names or default_model_names(), repo, instances=args.instances, kind=args.instance_kind)
    server = TritonServer(repo, host=args.host, ports=Ports(args.grpc_port, args.http_port, args.metrics_port),
                          log_path=Path(args.log) if args.log else None)
    stop = threading.Event()
    # SIGTERM ends the server as Ctrl-C does, so no stub process outlives `zoo serve`
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"starting tritonserver on {repo} (log: {server.log_path or 'a temporary file'})", flush=True)
    with server.start(timeout=args.timeout):
        print(f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}",
              flush=True)
        for model in sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
            print(f"  model {model}", flush=True)
        ui = None
        if args.ui:
            from ui.cli import launch_with_server

            ui = launch_with_server(server, args)
        try:
            while not stop.is_set():
                if server.process.poll() is not None:
                    print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                    return 1
                stop.wait(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            print("shutting down", flush=True)
            if ui is not None:
                ui.close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``serve`` on the zoo CLI."""
    p = sub.add_parser("export", help="write a Triton model repository for registry models or folders")
    p.add_argument("names", nargs="*", help="registry names or model folders (default: the default models)")
    p.add_argument("--out", required=True, help="model repository folder to write")
    p.add_argument("--instances", type=int, default=1, help="instance_group count per model")
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("serve", help="serve models with tritonserver (gRPC + HTTP + metrics)")
    p.add_argument("names", nargs="*", help="models to export and serve (default: the default models)")
    p.add_argument("--repository", help="serve this existing model repository instead of exporting")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for READY")
    p.add_argument("--log", help="write the server log here")
    p.add_argument("--ui", action="store_true", help="also start the Gradio demo on the served models")
    try:
        from ui.cli import add_ui_arguments

        add_ui_arguments(p, "--ui-host", "--ui-port")
    except ImportError:  # serving without the ui package
        pass
    p.set_defaults(run=_cmd_serve)
