"""Where a command's model runs: ``local`` (in this process) or an installed backend (a client of a served
model, e.g. ``triton``), registered under the :data:`zoo.plugins.BACKENDS` entry point.

Shared by the commands that take ``--backend`` (``zoo eval``, ``zoo embed``), so none of them imports
another's command-line module for it.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidArgumentError

LOCAL = "local"


def installed() -> dict[str, Any]:
    """``{name: entry point}`` of the installed backends (``local`` is not one: it needs no plug-in)."""
    from . import plugins

    return plugins.named(plugins.BACKENDS)


def check_backend(backend: str) -> str:
    """``backend`` if it is ``local`` or installed, else an error naming the installed ones."""
    if backend != LOCAL and backend not in installed():
        raise InvalidArgumentError(f"backend {backend!r} is not installed; installed: "
                                   f"{', '.join([LOCAL, *installed()])}", "backend")
    return backend


def open_model(name: str, backend: str, url: str, device: str | None, bulk: bool = False,
               threads: int | None = None) -> Any:
    """An object with zoo's ``encode()`` for ``name``: in-process, or a client of an installed backend.

    ``bulk``: the work is a bulk job (``zoo embed``), which a served model should put after interactive
    requests; the backend is told (``bulk=True``) and decides what that means for its requests (Triton's: low
    priority, retries, small chunks). A backend called without it need not know the argument. ``threads``: the
    cores an in-process model computes on (torch's and ONNX Runtime's threads alike), default every core."""
    if check_backend(backend) == LOCAL:
        from .registry import create

        return create(name, device=device, threads=threads)
    factory = installed()[backend].load()
    return factory(name, url, bulk=True) if bulk else factory(name, url)
