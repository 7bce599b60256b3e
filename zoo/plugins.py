"""Extension points: outer packages plug into `zoo` through entry points, so `zoo` never names them.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."zoo.commands"]
    mypkg = "mypkg.cli:add_commands"      # called with the ``zoo`` CLI's sub-parsers

and `zoo` finds it once installed. :data:`COMMANDS` is the group the ``zoo`` command line reads; other
packages define their own groups the same way (``serving`` reads ``zoo.serve_addons``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

FAMILIES = "zoo.families"  # family key -> a zoo.base.Embedder subclass (zoo's own families included)
COMMANDS = "zoo.commands"  # callables (sub-parsers action) -> None that add sub-commands to `zoo`
BACKENDS = "zoo.backends"  # name -> callable (model name, url) -> an object with zoo's encode() and spec


def load(group: str) -> list[Any]:
    """The objects every installed distribution registers under ``group``, in name order."""
    return [ep.load() for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)]


def named(group: str) -> dict[str, Any]:
    """``{name: entry point}`` of ``group``; ``.load()`` only the one needed, so the others cost no import."""
    return {ep.name: ep for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)}
