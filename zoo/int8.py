"""How a tower's int8 ONNX graph is made from its float32 export (the ``onnx-int8`` runtime of
:mod:`zoo.runtime`).

Dynamic int8 quantizes each activation with one scale for the whole tensor, so a few input channels with
large values (the outliers transformer activations are known for) leave the rest with a handful of levels.
Before quantizing, the activations are smoothed as SmoothQuant does (Xiao et al., 2023): each weighted matrix
product ``X @ W`` becomes ``(X / s) @ (s * W)`` with one scale per input channel,
``s = max|X|^alpha / max|W|^(1 - alpha)`` (``max|X|`` read on the tower's check batches, ``max|W|`` over the
product's row). The float graph computes the same thing; the int8 one moves the outliers into the weights,
which are quantized per output channel. Products sharing an input share one scale and one ``Mul``.

Every weighted product is then made int8 (embedding tables stay float32: int8 buys them nothing). Where that
misses the bar on the check rows, products are ranked by how far quantizing each alone moves the rows (in one
session where each product's int8 rounding is switched on by an input of its own, which gives the rows ONNX
Runtime's quantizer makes), and the most sensitive go back to float32, a twelfth at a time, until it holds.

The bar the graph is built to (:data:`BUILD_MIN_COS`, :data:`BUILD_MIN_OVERLAP`) is tighter than the one it is
published under (:data:`zoo.runtime.INT8_MIN_COS`, :data:`~zoo.runtime.INT8_MIN_OVERLAP`): the check has 256
rows, and a row's top-10 among more rows moves more easily. MiniLM with every product int8 reaches 0.996 /
0.957 on the check rows but 0.992 / 0.938 on 1,000 short sentences; with its three most sensitive products
(the feed-forward outputs after GELU, which smoothing cannot flatten) in float32, 0.999 / 0.971 and 0.998 / 0.957.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import TOP_K, OrtTower, RuntimeCheckError, _private, _run, agreement

log = logging.getLogger(__name__)

BUILD_MIN_COS = 0.998
BUILD_MIN_OVERLAP = 0.97
SMOOTH_ALPHA = 0.8  # how much of each activation channel's range moves into the weights (0: none, 1: all)
KEEP_STEPS = 12  # the most sensitive products go back to float32 in about this many steps
QUANTIZED_OPS = ["MatMul", "Gemm"]


def weighted_products(path: Path) -> list[str]:
    """Names of the matrix products with constant weights (what dynamic quantization makes int8)."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OPS and n.input[1] in weights]


def _input_ranges(path: Path, names: list[str], batches: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each named tensor's largest magnitude per channel (last axis) over ``batches``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.load(str(path))
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    ranges: dict[str, np.ndarray] = {}
    for batch in batches:
        for name, x in zip(names, session.run(names, {f: batch[f].detach().cpu().numpy() for f in feeds})):
            top = np.abs(x).reshape(-1, x.shape[-1]).max(0)
            ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges


def smooth(src: Path, dest: Path, batches: list[dict[str, Any]], alpha: float = SMOOTH_ALPHA) -> int:
    """Write ``src`` with its MatMul activations smoothed into their constant weights (see the module's
    docstring) to ``dest``; return how many activations were smoothed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    products = [n for n in graph.node
                if n.op_type == "MatMul" and n.input[1] in weights and len(weights[n.input[1]].dims) == 2]
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    products = [n for n in products if uses[n.input[1]] == 1]  # a weight used twice cannot take two scalings
    inputs = sorted({n.input[0] for n in products})
    ranges = _input_ranges(src, inputs, batches)
    for name in inputs:
        users = [n for n in products if n.input[0] == name]
        mats = {n.input[1]: numpy_helper.to_array(weights[n.input[1]]) for n in users}
        w_range = np.max([np.abs(w).max(1) for w in mats.values()], axis=0)
        scale = np.maximum(ranges[name], 1e-5) ** alpha / np.maximum(w_range, 1e-5) ** (1 - alpha)
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)  # a dead channel must not blow its weights up
        for w_name, w in mats.items():
            weights[w_name].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(w.dtype), w_name))
        inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{name}/smooth/inverse")
        graph.initializer.append(inverse)
        first = min(i for i, n in enumerate(graph.node) if n in users)
        for n in users:
            n.input[0] = f"{name}/smooth"
        graph.node.insert(first, onnx.helper.make_node("Mul", [name, inverse.name], [f"{name}/smooth"],
                                                       name=f"{name}/smooth/mul"))
    tmp = _private(dest)
    onnx.save(model, str(tmp))
    os.replace(tmp, dest)
    return len(inputs)


def quantize(src: Path, dest: Path, keep: list[str], only: list[str] | None = None) -> None:
    """Dynamic int8 of ``src``'s weighted products (``only`` those, if given) but ``keep``, to ``dest``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _private(dest)
    logging.disable(logging.WARNING)  # the quantizer logs advice on the root logger at every call
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                         nodes_to_quantize=only or weighted_products(src), op_types_to_quantize=QUANTIZED_OPS)
    finally:
        logging.disable(logging.NOTSET)
    os.replace(tmp, dest)


def _fake_int8(w: np.ndarray, node: Any) -> np.ndarray:
    """``w`` rounded as dynamic quantization stores it: int8, symmetric, one scale per output channel."""
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    axis = -1 if node.op_type == "Gemm" and trans_b else -2  # the axis each output channel's scale spans
    scale = np.abs(w).max(axis=axis, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)


def _probe_graph(src: Path, products: list[str], dest: Path) -> list[str]:
    """Write ``src`` to ``dest`` with each named product able to run as int8 or not, by a boolean input of its
    own; return those inputs' names. A switched-on product sees its activation through the same
    DynamicQuantizeLinear dynamic quantization puts before it, and its weight rounded as
    :func:`quantize` stores it (:func:`_fake_int8`)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    switches, nodes = [], []
    for node in graph.node:
        if node.name in products:
            switch = f"zoo/int8_probe/{len(switches)}"
            switches.append(switch)
            graph.input.append(helper.make_tensor_value_info(switch, onnx.TensorProto.BOOL, []))
            x, w = node.input[0], node.input[1]
            rounded = numpy_helper.from_array(_fake_int8(numpy_helper.to_array(weights[w]), node), f"{switch}/w8")
            graph.initializer.append(rounded)
            nodes += [helper.make_node("DynamicQuantizeLinear", [x], [f"{switch}/q", f"{switch}/s", f"{switch}/z"]),
                      helper.make_node("DequantizeLinear", [f"{switch}/q", f"{switch}/s", f"{switch}/z"],
                                       [f"{switch}/x8"]),
                      helper.make_node("Where", [switch, f"{switch}/x8", x], [f"{switch}/x"]),
                      helper.make_node("Where", [switch, rounded.name, w], [f"{switch}/w"])]
            node.input[0], node.input[1] = f"{switch}/x", f"{switch}/w"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    # two copies of every weight can pass protobuf's 2 GiB: the tensors go beside the graph
    onnx.save(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
              location=dest.name + ".data", size_threshold=1024)
    return switches


def _by_sensitivity(src: Path, products: list[str], batches: list[dict[str, Any]], reference: np.ndarray,
                    scratch: Path) -> list[str]:
    """``products`` ordered by how far making each one alone int8 moves the rows (mean cosine), most first.

    One session holds every product with a switch of its own (:func:`_probe_graph`), so the ranking costs one
    run of ``batches`` per product, not one quantization of the whole graph per product."""
    import onnxruntime as ort

    try:
        switches = _probe_graph(src, products, scratch)
        session = ort.InferenceSession(str(scratch), providers=["CPUExecutionProvider"])
        feeds = [i.name for i in session.get_inputs() if i.name not in switches]
        inputs = [{f: b[f].detach().cpu().numpy() for f in feeds} for b in batches]
        off = {s: np.array(False) for s in switches}
        loss = {}
        for name, switch in zip(products, switches):
            rows = np.concatenate([session.run(None, {**x, **off, switch: np.array(True)})[0] for x in inputs])
            loss[name] = 1.0 - agreement(reference, rows.astype(np.float32))["mean_cos"]
    finally:
        scratch.unlink(missing_ok=True)
        scratch.with_name(scratch.name + ".data").unlink(missing_ok=True)
    return sorted(products, key=lambda n: -loss[n])


def passes(measured: dict[str, float]) -> bool:
    """Whether rows measured against torch's on the check rows meet the bar int8 graphs are built to."""
    return measured["min_cos"] >= BUILD_MIN_COS and measured["top10_overlap"] >= BUILD_MIN_OVERLAP


def make_int8(fp32: Path, dest: Path, name: str, batches: list[dict[str, Any]], reference: np.ndarray,
              device: str) -> dict[str, Any]:
    """Make ``dest``, the int8 graph of the checked float32 export ``fp32`` of the tower ``name``, and return
    what was measured against torch's ``reference`` rows on ``batches`` (an error if nothing meets the bar)."""
    smoothed = _private(dest.with_name("smoothed.onnx"))
    try:
        smoothed_inputs = smooth(fp32, smoothed, batches)
        products = weighted_products(smoothed)
        candidates: list[str] | None = None  # ranked only when quantizing everything misses the bar
        n_kept = 0
        while True:
            keep = (candidates or [])[:n_kept]
            quantize(smoothed, dest, keep)
            measured = agreement(reference, _run(OrtTower(dest, device), batches))
            log.info("%s int8 with %d matrix products kept in float32: %s", name, n_kept, measured)
            if passes(measured):
                return measured | {"float32_kept": len(keep), "int8": len(products) - len(keep),
                                   "smoothed_inputs": smoothed_inputs, "smooth_alpha": SMOOTH_ALPHA}
            if n_kept >= len(products):
                break
            if candidates is None:
                # ranked on the shortest quarter of the check batches (cheap), judged on all of them
                start = len(batches) - max(1, len(batches) // 4)
                rows = sum(len(next(iter(b.values()))) for b in batches[:start])
                candidates = _by_sensitivity(smoothed, products, batches[start:], reference[rows:],
                                             _private(dest.with_name("scratch.onnx")))
            n_kept = min(len(products), n_kept + max(1, len(products) // KEEP_STEPS))
    finally:
        smoothed.unlink(missing_ok=True)
    dest.unlink(missing_ok=True)
    raise RuntimeCheckError(f"no int8 weights for the {name} tower reach least cosine {BUILD_MIN_COS} "
                            f"and top-{TOP_K} overlap {BUILD_MIN_OVERLAP}; use runtime='onnx'")
