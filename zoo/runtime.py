"""Runtimes a model's towers run on: torch, torch in half precision, or ONNX Runtime sessions exported from the
same torch modules, in float32 or with int8 weights; ``auto`` (the default) picks among them per device.

A family that offers the other runtimes lists its towers (:class:`Tower`: a torch module from named
tensors to ``[B, D]`` rows, and the batches to check it on). ``create(name, runtime=...)`` then swaps each
tower for the chosen runtime. The ONNX files are exported once per weights and kept under ``<cache>/onnx``
(:attr:`zoo.settings.Settings.onnx_dir`: ``$ZOO_CACHE_DIR``, else the platform's cache folder), never in the
weights' folder. The export leaves out the NaN guard the exporter writes after each attention's softmax, which
never fires under the masks transformers builds (:mod:`zoo.onnx_graph`). Each export is checked against torch
on the tower's check batches before it is used (a NaN row fails every bar):

- ``onnx``: every row's cosine to torch's ≥ :data:`FP32_MIN_COS`;
- ``onnx-int8``: dynamic int8 weights (per output channel), activations smoothed into the weights first
  (:mod:`zoo.int8`), with every row's cosine ≥ :data:`INT8_MIN_COS` and the top-10 neighbours of each row
  among the check rows the same as torch's for ≥ :data:`INT8_MIN_OVERLAP` of them on average.

The cache key holds the CPU's vector instruction sets besides the weights and the library versions: how int8
products are computed, and so what passes the check, depends on them (VNNI or not).

What was measured is written beside the files as ``check.json`` and is :attr:`OrtTower.check`.

``auto`` (:data:`DEFAULT_RUNTIME`; :func:`auto_runtime`) is the fastest exact runtime a family offers on the
device, as ``scripts.bench`` and ``scripts.bench_scaling`` measure it:

- on the CPU, ``onnx`` (float32, checked as above), about 1.2-1.8x padded torch on short texts; a batch longer
  than :data:`AUTO_ONNX_MAX_LENGTH` tokens runs on torch, because the exported graph computes attention unfused
  and past that length is no faster than torch while its memory grows with the square of the length
  (docs/SCALING.md); torch can compute a BERT text tower padding-free (:mod:`zoo.packed`, opt-in), which from 8
  texts a batch measured 1.4-2.3x ONNX in-process, but it is not used by default yet (a served stub that ran
  it grew its memory under overload, ``docs/benchmarks.md``);
- on CUDA, ``torch-fp16`` when each tower's float16 rows keep every cosine to float32's
  ≥ :data:`FP16_MIN_COS` on the check batches, else ``torch``;
- ``torch`` for families without towers, and wherever the chosen runtime cannot be made (an export the exporter
  refuses, a check that fails): a warning says why, and the model runs as it would on ``torch``.

The model's :attr:`RuntimeTowers.runtime` is then what runs (``onnx``, say), never ``auto``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, ZooError, choices
from .settings import settings

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "torch-fp16", "onnx", "onnx-int8")
DEFAULT_RUNTIME = "auto"
#: the runtimes a family's towers may offer (``auto`` is offered by every family: it resolves to one of these)
TOWER_RUNTIMES = RUNTIMES[1:]
#: under ``auto`` on the CPU, a batch padded past this many tokens runs on torch (see the module's text)
AUTO_ONNX_MAX_LENGTH = 128
#: under ``auto``, a tower with more parameter bytes than this stays on torch (one ONNX file holds 2 GiB at most)
AUTO_ONNX_MAX_BYTES = 1 << 30
FP32_MIN_COS = 0.9999
FP16_MIN_COS = 0.999
INT8_MIN_COS = 0.99
INT8_MIN_OVERLAP = 0.95
TOP_K = 10
#: bump when the export recipe changes, so cached files made by an older one are not reused
EXPORT_VERSION = 3
OPSET = 18


class RuntimeCheckError(ZooError, RuntimeError):
    """An exported tower does not give what torch gives closely enough to be used."""


def check_runtime(runtime: Any) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`, else an error naming the choices."""
    if runtime not in RUNTIMES:
        raise InvalidArgumentError(f"unknown runtime {runtime!r}; choose one of {choices(RUNTIMES)}", "runtime")
    return runtime


def check_offered(runtime: Any, runtimes: tuple[str, ...], spec: Any) -> str:
    """``runtime`` if it is known and one of ``runtimes`` (what ``spec``'s family offers) or ``auto``, else an
    error."""
    if check_runtime(runtime) not in (*runtimes, "auto"):
        raise InvalidArgumentError(f"model {spec.name!r} ({spec.family} family) runs on {choices(runtimes)}, "
                                   f"not {runtime!r}", "runtime")
    return runtime


@dataclass
class Tower:
    """One torch module a family runs: ``module(**inputs)`` gives ``[B, D]`` float rows.

    ``batches()`` gives the check batches (dicts of tensors named as the module's keyword arguments; the
    first is also the export example), ``sequence`` the inputs whose axis 1 varies with the batch's length,
    ``tag`` whatever besides the weights changes the graph (pooling, say)."""

    name: str
    module: Any
    batches: Callable[[], list[dict[str, Any]]]
    sequence: tuple[str, ...] = ()
    tag: str = ""


@dataclass
class OrtTower:
    """An ONNX Runtime session standing in for a tower: called like the module, with a dict of tensors."""

    path: Path
    device: str
    threads: int | None = None
    check: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or 0  # 0: ORT's default, every core
        options.inter_op_num_threads = 1
        # no spinning after a run: its threads would hold the cores that torch (a LengthSplit's other half) and,
        # served, Triton's own threads need next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(self.device.partition(":")[2] or 0)
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
            else:
                log.warning("onnxruntime has no CUDA provider here (the [gpu] extra, requirements-gpu.lock, has it); "
                            "%s runs on the CPU",
                            self.path.name)
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        # on the CUDA provider, batches stay on the GPU (zoo.iobinding); on the CPU, numpy views are free already
        self.bound = self.session.get_providers()[0] == "CUDAExecutionProvider"

    def __call__(self, inputs: Mapping[str, Any]) -> Any:
        import torch

        if self.bound:
            from .iobinding import run_bound

            return run_bound(self.session, inputs, self.input_names, self.device)
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0]).to(self.device)


class HalfTower:
    """A tower run in float16 (``torch-fp16``): its module halved, float inputs cast on the way in."""

    def __init__(self, module: Any) -> None:
        self.module = module.half()

    def __call__(self, inputs: Mapping[str, Any]) -> Any:
        import torch

        cast = {k: v.half() if torch.is_floating_point(v) else v for k, v in inputs.items()}
        return self.module(**cast).float()


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp",
             "i8mm")


def cpu_isa() -> str:
    """The vector instruction sets of this CPU that ONNX Runtime's kernels choose between ("" where unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.machine()
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.partition(":")[2].split())
            break
    return ",".join(f for f in ISA_FLAGS if f in flags)


def _key(tower: Tower, weights: str) -> str:
    import onnxruntime
    import torch

    parts = [weights, tower.name, tower.tag, str(EXPORT_VERSION), torch.__version__, onnxruntime.__version__,
             cpu_isa()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _rows(x: Any) -> np.ndarray:
    rows = np.asarray(x.detach().float().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def agreement(reference: np.ndarray, other: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """How closely ``other`` rows follow ``reference`` rows: each row's cosine (least and mean), and the
    mean share of each row's top-``k`` neighbours among all rows (itself excluded) that both agree on."""
    ref, got = _rows(reference), _rows(other)
    cos = (ref * got).sum(1)
    k = min(k, len(ref) - 1)
    overlap = 1.0
    if k > 0:
        def tops(rows: np.ndarray) -> np.ndarray:
            sim = rows @ rows.T
            np.fill_diagonal(sim, -np.inf)
            return np.argsort(-sim, axis=1, kind="stable")[:, :k]

        a, b = tops(ref), tops(got)
        overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))
    return {"min_cos": float(cos.min()), "mean_cos": float(cos.mean()), "top10_overlap": overlap}


def _private(dest: Path) -> Path:
    """A name beside ``dest`` that only this process writes (model instances may export side by side; each
    file appears whole under its real name by one rename)."""
    return dest.with_name(f"{dest.name}.{os.getpid()}.tmp")


def _write_json(dest: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``dest``, which appears whole (see :func:`_private`)."""
    tmp = _private(dest)
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, dest)


def _folder(tower: Tower, weights: str) -> Path:
    """The cache folder of ``tower``'s ONNX files for these weights on this CPU."""
    return settings().onnx_dir / _key(tower, weights)


def _export(tower: Tower, example: dict[str, Any], dest: Path, guards: bool = False) -> int:
    """Export ``tower`` to ``dest``; without ``guards``, its softmax NaN guards dropped (:mod:`zoo.onnx_graph`).
    Returns how many were dropped."""
    import torch

    from .onnx_graph import drop_softmax_nan_guards

    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    shapes = {name: ({0: batch, 1: length} if name in tower.sequence else {0: batch}) for name in example}
    tmp = _private(dest)
    tower.module.eval()  # a wrapper built in a family's __init__ starts in training mode; the export traces the mode
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(tower.module, (), kwargs=example, input_names=list(example),
                                    output_names=["rows"], dynamic_shapes=shapes, opset_version=OPSET,
                                    dynamo=True, external_data=False, verbose=False)
        program.save(str(tmp))
    dropped = 0 if guards else drop_softmax_nan_guards(tmp)
    os.replace(tmp, dest)
    return dropped


def _run(session: OrtTower, batches: list[dict[str, Any]]) -> np.ndarray:
    return np.concatenate([session(b).float().cpu().numpy() for b in batches])


def _make(tower: Tower, folder: Path, runtime: str, device: str) -> dict[str, Any]:
    """Export (and for int8 quantize) ``tower`` into ``folder``, check it, and return what was measured."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    batches = tower.batches()
    with torch.inference_mode():
        reference = np.concatenate([tower.module(**b).float().cpu().numpy() for b in batches])
    fp32 = folder / "fp32.onnx"
    dropped = _export(tower, batches[0], fp32) if not fp32.is_file() else 0
    check = {"tower": tower.name, "rows": len(reference)}
    check["onnx"] = agreement(reference, _run(OrtTower(fp32, device), batches))
    if dropped and not check["onnx"]["min_cos"] >= FP32_MIN_COS:
        log.info("the %s tower needs its softmax NaN guards (a row is all masked): exported again", tower.name)
        _export(tower, batches[0], fp32, guards=True)
        check["onnx"] = agreement(reference, _run(OrtTower(fp32, device), batches))
    if not check["onnx"]["min_cos"] >= FP32_MIN_COS:  # NaN rows fail too
        fp32.unlink()
        raise RuntimeCheckError(f"the ONNX export of the {tower.name} tower differs from torch (least cosine "
                                f"{check['onnx']['min_cos']:.6f} < {FP32_MIN_COS}); use runtime='torch'")
    if runtime == "onnx-int8":
        from .int8 import make_int8

        check["onnx-int8"] = make_int8(fp32, folder / "int8.onnx", tower.name, batches, reference, device)
    return check


def accelerate(tower: Tower, weights: str, runtime: str, device: str, threads: int | None = None) -> Callable:
    """What runs ``tower`` on a runtime other than torch: the module halved (torch-fp16), or a checked ONNX
    Runtime session made on first use and kept in the cache folder for these weights (onnx, onnx-int8)."""
    if runtime == "torch-fp16":
        return HalfTower(tower.module)
    folder = _folder(tower, weights)
    record = folder / "check.json"
    check = json.loads(record.read_text()) if record.is_file() else {}
    name = "int8.onnx" if runtime == "onnx-int8" else "fp32.onnx"
    if runtime not in check or not (folder / name).is_file():
        check = check | _make(tower, folder, runtime, device)
        _write_json(record, check)
    return OrtTower(folder / name, device, threads, check={"runtime": runtime} | check[runtime])


def auto_runtime(runtimes: tuple[str, ...], device: str) -> str:
    """What ``auto`` picks among ``runtimes`` (a family's) on ``device``, before anything is made or checked:
    ``onnx`` on the CPU, ``torch-fp16`` on CUDA, where offered; else ``torch`` (other devices included: ONNX
    Runtime would compute on the CPU there)."""
    device = str(device)
    choice = "torch-fp16" if device.startswith("cuda") else "onnx" if device.startswith("cpu") else "torch"
    return choice if choice in runtimes else "torch"


class LengthSplit:
    """``auto``'s ONNX tower: a batch up to ``max_length`` tokens runs on the ONNX session, a longer one on the
    torch module (see the module's text)."""

    def __init__(self, fast: OrtTower, module: Any, sequence: tuple[str, ...], max_length: int) -> None:
        self.fast, self.module, self.sequence, self.max_length = fast, module, sequence, max_length
        self.check = fast.check

    def __call__(self, inputs: Mapping[str, Any]) -> Any:
        if any(inputs[name].shape[1] > self.max_length for name in self.sequence if name in inputs):
            return self.module(**inputs)
        return self.fast(inputs)


def _halved(towers: list[Tower]) -> dict[str, Callable]:
    """``torch-fp16`` for ``towers`` when every check row's float16 cosine to float32 is ≥ :data:`FP16_MIN_COS`,
    else :class:`RuntimeCheckError` naming the tower that fell short, with every module as it was: halving
    cannot be undone by casting back (float32 → float16 → float32 is not the weights any more), so the float32
    weights wait in host memory until the check has passed."""
    import torch

    saved = {t.name: {k: v.detach().to("cpu", copy=True) for k, v in t.module.state_dict().items()} for t in towers}
    with torch.inference_mode():
        reference = {t.name: np.concatenate([t.module(**b).float().cpu().numpy() for b in t.batches()])
                     for t in towers}
    fast = {t.name: HalfTower(t.module) for t in towers}
    try:
        for t in towers:
            with torch.inference_mode():
                rows = np.concatenate([fast[t.name](b).cpu().numpy() for b in t.batches()])
            got = agreement(reference[t.name], rows)["min_cos"]
            if not got >= FP16_MIN_COS:  # NaN rows (a float16 overflow) fail too
                raise RuntimeCheckError(f"the {t.name} tower in float16 differs from float32 (least cosine "
                                        f"{got:.5f} < {FP16_MIN_COS})")
    except BaseException:
        for t in towers:
            t.module.float()
            t.module.load_state_dict(saved[t.name])
        raise
    return fast


def _tower_bytes(tower: Tower) -> int:
    return sum(p.numel() * p.element_size() for p in tower.module.parameters())


def _auto(towers: list[Tower], weights: str, runtimes: tuple[str, ...], device: str,
          threads: int | None) -> tuple[str, dict[str, Callable]]:
    """``auto``'s runtime for these towers and what stands in for each (see the module's text). An ONNX graph
    that could not be made is remembered in the cache (``refused.json`` beside where it would be), so later
    loads go straight to torch instead of tracing again."""
    choice = auto_runtime(runtimes, device)
    if choice == "torch" or not towers:
        return "torch", {}
    if choice == "onnx":
        too_big = [t.name for t in towers if _tower_bytes(t) > AUTO_ONNX_MAX_BYTES]
        if too_big:  # one protobuf file holds at most 2 GiB, and tracing a model that size takes minutes
            log.info("runtime auto: the %s tower is over %d MiB; running on torch", too_big[0],
                     AUTO_ONNX_MAX_BYTES >> 20)
            return "torch", {}
        for t in towers:
            refused = _folder(t, weights) / "refused.json"
            if refused.is_file():
                log.info("runtime auto: onnx was refused here before (%s); running on torch",
                         json.loads(refused.read_text()).get("reason", ""))
                return "torch", {}
    fast: dict[str, Callable] = {}
    tower = towers[0]
    try:
        if choice == "torch-fp16":
            return choice, _halved(towers)
        for tower in towers:
            session = accelerate(tower, weights, choice, device, threads)
            fast[tower.name] = (LengthSplit(session, tower.module, tower.sequence, AUTO_ONNX_MAX_LENGTH)
                                if tower.sequence else session)
        return choice, fast
    except Exception as err:  # noqa: BLE001 — any failure to make the faster runtime leaves the exact one in use
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        log.warning("runtime auto: %s did not pass here (%s); running on torch", choice, reason)
        if choice == "onnx":
            with contextlib.suppress(OSError):
                folder = _folder(tower, weights)
                folder.mkdir(parents=True, exist_ok=True)
                _write_json(folder / "refused.json", {"reason": reason})
        return "torch", {}


class RuntimeTowers:
    """What lets a model's towers run on another runtime (a base of :class:`zoo.base.Embedder`): families with
    towers list the runtimes they take and return their towers from :meth:`_towers`."""

    spec: Any
    device: str
    weights_fingerprint: str
    #: the runtimes this family's towers can run on (see :mod:`zoo.runtime`); families with towers widen it
    runtimes: tuple[str, ...] = ("torch",)
    runtime: str = "torch"  # the runtime in use (set by :meth:`use_runtime`; ``auto`` resolves to one)

    def _towers(self) -> list[Tower]:
        """The towers another runtime can stand in for (families that list more than torch in ``runtimes``)."""
        return []

    def use_runtime(self, runtime: str, threads: int | None = None) -> None:
        """Run this model's towers on ``runtime`` (see :mod:`zoo.runtime`; ``threads``: ONNX Runtime's
        intra-op threads, default every core). ONNX files are exported and checked on first use; ``auto`` picks
        the runtime (:func:`auto_runtime`) and falls back to torch, with a warning, where it cannot be made."""
        if check_offered(runtime, self.runtimes, self.spec) in (self.runtime, self.__dict__.get("_asked")):
            return
        if self.runtime == "torch-fp16":  # the modules were halved in place: no way back from here
            raise InvalidArgumentError(f"model {self.spec.name!r} already runs on {self.runtime!r}; create it again "
                                       f"with runtime={runtime!r}", "runtime")
        self._fast, self.runtime = {}, "torch"  # the ONNX sessions stood beside the untouched torch modules
        self._asked = runtime
        if runtime == "torch":
            return
        if runtime == "auto":
            self.runtime, self._fast = _auto(self._towers(), self.weights_fingerprint, self.runtimes, self.device,
                                             threads)
            return
        self._fast = {t.name: accelerate(t, self.weights_fingerprint, runtime, self.device, threads)
                      for t in self._towers()}
        self.runtime = runtime

    def run_tower(self, name: str, module: Any, inputs: Any) -> Any:
        """``module(**inputs)``, or what stands in for the tower ``name`` on the runtime in use."""
        fast = self.__dict__.get("_fast", {}).get(name)
        return module(**inputs) if fast is None else fast(inputs)
