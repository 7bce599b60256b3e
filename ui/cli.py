"""``zoo demo``, and ``zoo serve --ui``: the demo plugs into both through entry points (``zoo.commands``,
``zoo.serve_addons``), so neither `zoo` nor `serving` imports this package."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from zoo.defaults import DEFAULT_MODELS
from zoo.settings import Settings, settings


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with the demo's flags laid over them (a flag given wins): ``--data-dir``
    over ``$ZOO_DATA_DIR`` (else ``<zoo cache>/demo``), ``zoo demo``'s ``--triton-admin-key`` over
    ``$ZOO_TRITON_ADMIN_KEY``."""
    return settings().with_flags(data_dir=args.data_dir, triton_admin_key=getattr(args, "triton_admin_key", None))


def build(backend_kind: str, url: str, data_dir: Path, approximate: bool = False, device: str | None = None,
          corpus_dirs: list[str] | None = None, index: str | None = None,
          admin_headers: dict[str, str] | None = None, reranker: str | None = None):
    """Backend, corpus (built offline on first start, plus the operator's ``corpus_dirs``) and pre-built
    indexes of the default models; ``index``: a vector database URI (:mod:`zoo.store`) for the dense
    vectors instead of FAISS; ``reranker``: the model that reranks the documents it reads when the page asks
    (:mod:`ui.rerank`; checked here, so a name the backend does not know stops the start with the reason).
    No corpus item stops it: one a model fails on is quarantined (listed, not indexed), and a model that
    cannot be indexed now is indexed at its first search."""
    from .backend import LocalBackend, TritonBackend
    from .default_corpus import build_default
    from .uploads import UPLOAD_MAX_AGE_S, clean_uploads

    data_dir = Path(data_dir).resolve()
    uploads = data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)  # uploads land here, the other folder Gradio may serve
    stale = clean_uploads(uploads, UPLOAD_MAX_AGE_S)  # what an earlier run left (a crash, a kill)
    if stale:
        print(f"removed {stale} stale upload file(s)", flush=True)
    from .app import Searcher
    from .rerank import Rerankers

    backend = TritonBackend(url, admin_headers) if backend_kind == "triton" else LocalBackend(device)
    Rerankers(backend, reranker).check()  # before the corpus is built: a wrong name fails fast
    print(f"corpus: {data_dir / 'corpus'}", flush=True)
    corpus = build_default(data_dir / "corpus")
    for folder in corpus_dirs or []:  # the operator's choice on the command line; page users can only upload
        added, errors = corpus.add_folder(Path(folder))
        print(f"imported {len(added)} file(s) from {folder}" + "".join(f"\n  rejected {e}" for e in errors),
              flush=True)
    store = None
    if index:
        from zoo.store import VectorStore

        store = VectorStore(index)
        print(f"dense vectors in {index}", flush=True)
    searcher = Searcher(backend, corpus, data_dir / "index" / (f"{backend_kind}-store" if index else backend_kind),
                        approximate, store, reranker)
    if reranker:
        print(f"reranker: {reranker}", flush=True)
    available = set(backend.models())
    from tqdm.auto import tqdm

    for model in dict.fromkeys(DEFAULT_MODELS.values()):
        if model in available:
            try:
                with tqdm(total=100, desc=f"indexing for {model}", unit="%") as bar:
                    searcher.index(model, lambda frac, _msg: bar.update(round(100 * frac) - bar.n))
            except Exception as err:  # the page still starts; the search that needs this index says why
                print(f"indexing for {model} failed ({type(err).__name__}: {err}); it is tried again at its "
                      "first search", flush=True)
    if corpus.quarantined:
        print(f"{len(corpus.quarantined)} corpus item(s) quarantined (listed in {corpus.manifest}, not indexed)",
              flush=True)
    return searcher, uploads


def launch(searcher, uploads: Path, host: str, port: int, block: bool = True):
    """Start the Gradio server; only the corpus and upload folders are served."""
    from .app import build_app
    from .corpus import MAX_UPLOAD_BYTES

    demo = build_app(searcher, uploads=uploads)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, allowed_paths=[str(searcher.corpus.root), str(uploads)],
                max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=True, show_error=True, quiet=True)
    print(f"demo: http://{host}:{port}", flush=True)
    if block:
        demo.block_thread()  # until Ctrl-C / SIGTERM
    return demo


class ServeDemo:
    """The ``zoo serve`` add-on: ``--ui`` starts the demo on the Triton backend of the served models."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """``--ui`` and the demo's options (``--ui-host``, ``--ui-port``, ``--data-dir``, ``--corpus``)."""
        parser.add_argument("--ui", action="store_true", help="also start the Gradio demo on the served models")
        add_ui_arguments(parser, "--ui-host", "--ui-port")

    @staticmethod
    def check(args: argparse.Namespace) -> None:
        """With ``--ui``: the demo's extra is installed and its port is free."""
        if args.ui:
            _check(args, "zoo serve --ui", args.ui_host, args.ui_port, "--ui-port")

    @staticmethod
    def start(args: argparse.Namespace, server) -> Any:
        """The running demo (its ``close()`` stops it), or None without ``--ui``."""
        if not args.ui:
            return None
        searcher, uploads = build("triton", server.grpc_url, _settings(args).demo_dir, corpus_dirs=args.corpus,
                                  admin_headers=server.admin_headers)
        return launch(searcher, uploads, args.ui_host, args.ui_port, block=False)


def _check(args: argparse.Namespace, what: str, host: str, port: int, flag: str) -> None:
    """The demo can run: its extras are installed (and the vector database's, with ``--index``), its port free."""
    from zoo.extras import require

    require("ui", what)
    if getattr(args, "index", None):
        require("scale", f"{what} --index")
    from serving.server import ensure_port_free

    ensure_port_free(host, port, "the demo", flag)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.backend == "triton":
        from zoo.extras import require

        require("serve", "zoo demo --backend triton")
    _check(args, "zoo demo", args.host, args.port, "--port")
    cfg = _settings(args)
    admin = None
    if cfg.triton_admin_key:
        from serving.server import ADMIN_HEADER, GRPC_ADMIN_PREFIX

        admin = {GRPC_ADMIN_PREFIX + ADMIN_HEADER: cfg.triton_admin_key}
    searcher, uploads = build(args.backend, args.url, cfg.demo_dir, args.approximate, args.device,
                              args.corpus, args.index, admin, args.reranker)
    launch(searcher, uploads, args.host, args.port, block=True)
    return 0


def add_ui_arguments(p: argparse.ArgumentParser, host_flag: str = "--host", port_flag: str = "--port") -> None:
    """Options the demo needs, shared by ``zoo demo`` and ``zoo serve --ui``."""
    p.add_argument(host_flag, default="127.0.0.1", help="address the web page binds to")
    p.add_argument(port_flag, type=int, default=7860)
    p.add_argument("--data-dir", help="corpus, uploads and indexes live here (default: $ZOO_DATA_DIR, else "
                   "<zoo cache>/demo)")
    p.add_argument("--corpus", action="append", metavar="DIR",
                   help="also import this server folder's images, audio and .txt files (repeatable)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the zoo CLI."""
    p = sub.add_parser("demo", help="Gradio cross-modal retrieval demo")
    p.add_argument("--backend", choices=["triton", "local"], default="triton")
    p.add_argument("--url", default="127.0.0.1:8001", help="tritonserver gRPC address (triton backend)")
    p.add_argument("--approximate", action="store_true", help="HNSW index instead of exact search")
    p.add_argument("--index", metavar="URI", help="keep the dense vectors in this vector database instead of "
                   "FAISS: qdrant:PATH (embedded), qdrant+http://HOST:PORT (a server)")
    p.add_argument("--device", help="local backend: torch device")
    p.add_argument("--reranker", metavar="MODEL",
                   help="the model the page's 'rerank the top N' toggle uses where it reads the documents: a "
                   "cross-encoder (text), or any model that embeds the query's and the documents' modalities "
                   "(default: for text, the listwise reranker of the search's text model); on the triton "
                   "backend a served model")
    p.add_argument("--triton-admin-key", metavar="KEY",  # unset: the environment's, through _settings
                   help="the served tritonserver's admin secret, which listing its models needs (default: "
                   "$ZOO_TRITON_ADMIN_KEY; `zoo serve --ui` passes its own)")
    add_ui_arguments(p)
    p.set_defaults(run=_cmd_demo)
