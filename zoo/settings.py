"""Every setting `zoo`, `serving` and `ui` take from the environment, read here and nowhere else.

Each field, the variable it is read from, its default and what it sets:

- `cache_dir` (`ZOO_CACHE_DIR`): `platformdirs.user_cache_dir("zoo")`, which is `$XDG_CACHE_HOME/zoo`, else
  `~/.cache/zoo` on Linux and the platform's cache folder elsewhere. The one root of everything zoo keeps
  between runs (the folders below).
- `data_dir` (`ZOO_DATA_DIR`): None, and the demo's corpus, uploads and indexes live in `demo_dir`,
  `<cache_dir>/demo`.
- `models_dir` (`ZOO_MODELS_DIR`): None. `<models_dir>/<registry name>` is the first place a model's weights
  are looked for (`zoo.weights`).
- `offline` (`HF_HUB_OFFLINE`, `ZOO_OFFLINE`): False. Either variable set to anything but `""`, `0` or `false`:
  weights are never downloaded.
- `api_key` (`ZOO_API_KEY`): None. The bearer key the OpenAI-compatible API asks for (`zoo serve --api-key`).
- `triton_admin_key` (`ZOO_TRITON_ADMIN_KEY`): None, and `zoo serve` makes a new one at each start. The secret
  of tritonserver's admin APIs (`--triton-admin-key`).
- `qdrant_api_key` (`QDRANT_API_KEY`): None. Sent to a Qdrant server (`qdrant+http(s)://` store URIs).
- `ray_address` (`RAY_ADDRESS`): None, and `zoo embed` starts a local one-machine Ray; set, the job joins that
  cluster (Ray reads the variable itself as well).
- `runtime` (`ZOO_RUNTIME`): `auto`. The runtime a model is created on, in-process and served, when no
  `runtime=` / `--runtime` is given (`zoo.runtime.RUNTIMES`; `auto` picks the fastest exact one per device).
- `late_answer` (`ZOO_LATE_ANSWER`): True; `0` or `false` turn it off. A served model sends one answer per
  batch 1 ms after its `execute` returns, so that Triton's batcher hears of the next request
  (`serving.late_send`); off, every answer is returned from `execute`.

Folders under `cache_dir` (properties, so they follow it): `eval` (`eval_cache_dir`, the embeddings `zoo eval`
caches), `logs` (tritonserver's logs), `triton-backends` (the python backend assembled from the nvidia-pytriton
wheel), `onnx` (exported towers), `torchinductor` (torch's compile cache in the served models) and `demo` (the
demo's data, unless `data_dir` is set).

`settings()` is what the code calls; a command line lays its flags over it with `Settings.with_flags` (a flag
given wins over the environment). Importing this module costs nothing beyond the standard library:
`platformdirs` is imported when the settings are first read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

#: the variables :meth:`Settings.from_env` reads; no other module of zoo, serving or ui reads them
ENV_VARS = ("ZOO_CACHE_DIR", "XDG_CACHE_HOME", "ZOO_DATA_DIR", "ZOO_MODELS_DIR", "HF_HUB_OFFLINE", "ZOO_OFFLINE",
            "ZOO_API_KEY", "ZOO_TRITON_ADMIN_KEY", "QDRANT_API_KEY", "RAY_ADDRESS", "ZOO_RUNTIME",
            "ZOO_LATE_ANSWER")
OFF_VALUES = ("", "0", "false")  # what HF_HUB_OFFLINE / ZOO_OFFLINE may hold and still mean "online"
_PATHS = ("cache_dir", "data_dir", "models_dir")  # fields given as str by a flag become Paths


@dataclass(frozen=True)
class Settings:
    """The environment's settings (see the module's table); build with :meth:`from_env` or :func:`settings`."""

    cache_dir: Path
    data_dir: Path | None = None
    models_dir: Path | None = None
    offline: bool = False
    # the secrets stay out of repr(), so printing or logging the settings shows none of them
    api_key: str | None = field(default=None, repr=False)
    triton_admin_key: str | None = field(default=None, repr=False)
    qdrant_api_key: str | None = field(default=None, repr=False)
    ray_address: str | None = None
    runtime: str = "auto"
    late_answer: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment now (``os.environ``), uncached: what :func:`settings` caches."""
        env = os.environ

        def text(name: str) -> str | None:
            return env.get(name) or None  # an empty variable counts as unset, as it always has here

        cache = text("ZOO_CACHE_DIR")
        data, models = text("ZOO_DATA_DIR"), text("ZOO_MODELS_DIR")
        return cls(
            cache_dir=Path(cache) if cache else _platform_cache(),
            data_dir=Path(data) if data else None,
            models_dir=Path(models) if models else None,
            offline=any(env.get(v, "") not in OFF_VALUES for v in ("HF_HUB_OFFLINE", "ZOO_OFFLINE")),
            api_key=text("ZOO_API_KEY"),
            triton_admin_key=text("ZOO_TRITON_ADMIN_KEY"),
            qdrant_api_key=text("QDRANT_API_KEY"),
            ray_address=text("RAY_ADDRESS"),
            runtime=text("ZOO_RUNTIME") or "auto",
            late_answer=env.get("ZOO_LATE_ANSWER", "1").strip().lower() not in ("0", "false"),
        )

    def with_flags(self, **flags: object) -> Settings:
        """These settings with the command line's ``flags`` laid over them: a flag that is None (not given)
        keeps the environment's value; paths given as text become :class:`~pathlib.Path`."""
        known = {f.name for f in fields(self)}
        unknown = set(flags) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        given = {k: (Path(v) if k in _PATHS else v) for k, v in flags.items() if v is not None}
        return replace(self, **given)

    @property
    def eval_cache_dir(self) -> Path:
        """``zoo eval``'s cached embeddings: ``<cache_dir>/eval``."""
        return self.cache_dir / "eval"

    @property
    def logs_dir(self) -> Path:
        """tritonserver's logs: ``<cache_dir>/logs``."""
        return self.cache_dir / "logs"

    @property
    def backends_dir(self) -> Path:
        """The python backend assembled from the nvidia-pytriton wheel: ``<cache_dir>/triton-backends``."""
        return self.cache_dir / "triton-backends"

    @property
    def onnx_dir(self) -> Path:
        """Towers exported to ONNX, one folder per weights and recipe: ``<cache_dir>/onnx``."""
        return self.cache_dir / "onnx"

    @property
    def inductor_dir(self) -> Path:
        """torch's compile cache in the served models: ``<cache_dir>/torchinductor``."""
        return self.cache_dir / "torchinductor"

    @property
    def demo_dir(self) -> Path:
        """The demo's corpus, uploads and indexes: ``data_dir``, else ``<cache_dir>/demo``."""
        return self.data_dir or self.cache_dir / "demo"


def _platform_cache() -> Path:
    import platformdirs  # here, not at the top: `import zoo.settings` stays standard library only

    # appauthor=False: on Windows the folder is ...\zoo\Cache, not ...\zoo\zoo\Cache
    return Path(platformdirs.user_cache_dir("zoo", appauthor=False))


def settings() -> Settings:
    """The current environment's settings.

    The variables are looked up at each call (a few dictionary reads) and the object is built once per
    distinct set of values, so a test's ``monkeypatch.setenv`` is seen without resetting anything;
    :meth:`Settings.from_env` reads afresh, uncached."""
    # HOME too: platformdirs falls back to ~/.cache, which moves with it
    return _cached(tuple(os.environ.get(name) for name in (*ENV_VARS, "HOME")))


@lru_cache(maxsize=16)
def _cached(_values: tuple[str | None, ...]) -> Settings:
    return Settings.from_env()
