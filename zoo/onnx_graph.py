"""Rewrites of an exported ONNX graph that compute the same rows with less work.

torch's exporter writes scaled-dot-product attention with a guard after each softmax,
``Where(IsNaN(p), 0, p)``: a query row whose keys are all masked has a softmax of NaN, and the guard makes it
zeros. Over ``[batch, heads, length, length]`` the two extra passes cost ONNX Runtime as much as a tenth of
MiniLM's time at batch 32 (more once the products are int8). In an encoder whose mask only hides padding
keys, no row of a text with a token is ever all masked, so the guard never fires and dropping it changes no
value. Where a row can be all masked (left padding under a causal mask), the NaN spreads and the export
check against torch fails; :func:`zoo.runtime._make` then exports again with the guards kept.
"""

from __future__ import annotations

from pathlib import Path


def drop_softmax_nan_guards(path: Path) -> int:
    """Remove every ``Where(IsNaN(s), c, s)`` that follows a ``Softmax`` ``s`` from the graph at ``path`` (in
    place); returns how many were removed."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()  # by identity: node names may be empty
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3 or node.output[0] in outputs:
            continue
        test, soft = producer.get(node.input[0]), producer.get(node.input[2])
        if (test is not None and test.op_type == "IsNaN" and test.input[0] == node.input[2]
                and soft is not None and soft.op_type == "Softmax"):
            dropped.add(id(node))
            renamed[node.output[0]] = node.input[2]
    if not dropped:
        return 0
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = renamed.get(name, name)
    used = {name for node in kept for name in node.input}
    # an IsNaN read by nothing else goes with its guard
    kept = [node for node in kept if not (node.op_type == "IsNaN" and node.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(path))
    return len(dropped)
