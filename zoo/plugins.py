"""Extension points: outer packages plug into `zoo` through entry points, so `zoo` never names them.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."zoo.commands"]
    mypkg = "mypkg.cli:add_commands"      # called with the ``zoo`` CLI's sub-parsers

and `zoo` finds it once installed. :data:`COMMANDS` is the group the ``zoo`` command line reads; other
packages define their own groups the same way (``serving`` reads ``zoo.serve_addons``).
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any

FAMILIES = "zoo.families"  # family key -> a zoo.base.Embedder subclass (zoo's own families included)
COMMANDS = "zoo.commands"  # callables (sub-parsers action) -> None that add sub-commands to `zoo`
BACKENDS = "zoo.backends"  # name -> callable (model name, url) -> an object with zoo's encode() and spec


def load(group: str) -> list[Any]:
    """The objects every installed distribution registers under ``group``, in name order."""
    return [ep.load() for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)]


def named(group: str) -> dict[str, Any]:
    """``{name: entry point}`` of ``group``; ``.load()`` only the one needed, so the others cost no import. Two
    installed distributions giving one name different objects is warned about (the one listed last wins)."""
    out: dict[str, Any] = {}
    for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
        if ep.name in out and out[ep.name].value != ep.value:
            warnings.warn(f"two installed packages define {ep.name!r} in {group!r}: {out[ep.name].value} and "
                          f"{ep.value}; the second is used", RuntimeWarning, stacklevel=2)
        out[ep.name] = ep
    return out
