"""The one residual-Add finder: which Adds are skip connections, and which input is the skip.

Used by the graph passes (the TensorRT target lists every residual Add) and
by the INT8 stage (the TensorRT Q/DQ layout quantises each skip input, and
its placement check verifies that), so both always agree.

A *residual Add* is an Add of two computed (non-constant) tensors that are not
known to broadcast, of rank 3 or more (feature maps, not a 2-D head). Its
*skip* input is the one fewer compute nodes away from the graph inputs (the
block input, the downsample projection, or the un-scaled ``x`` of
Inception-ResNet's ``x + scale * branch``); QuantizeLinear/DequantizeLinear
count as no node, so the answer is the same before and after Q/DQ insertion.
"""

from __future__ import annotations

from typing import Any, Iterable

import onnx_graphsurgeon as gs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def compute_depths(graph: gs.Graph, transparent: Iterable[str] = QDQ_OPS) -> dict[str, int]:
    """Longest path (in compute nodes) from a graph input to each tensor; ``transparent`` ops add nothing.

    The graph must be topologically sorted.
    """
    transparent = set(transparent)
    depth: dict[str, int] = {t.name: 0 for t in graph.inputs}
    for node in graph.nodes:
        base = max((depth.get(t.name, 0) for t in node.inputs if isinstance(t, gs.Variable)), default=0)
        for out in node.outputs:
            depth[out.name] = base + (0 if node.op in transparent else 1)
    return depth


def is_residual_add(node: gs.Node) -> bool:
    """A standard-domain Add of two computed tensors, not known to broadcast, of rank >= 3 (or unknown)."""
    if node.op != "Add" or (node.domain or "") not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    a, b = node.inputs
    if not (isinstance(a, gs.Variable) and isinstance(b, gs.Variable)):
        return False
    if a.shape is not None and b.shape is not None:
        if len(a.shape) != len(b.shape) or any(x != y for x, y in zip(a.shape, b.shape) if isinstance(x, int) and isinstance(y, int)):
            return False
    rank = len(a.shape) if a.shape is not None else len(b.shape) if b.shape is not None else None
    return rank is None or rank >= 3


def _producer(tensor: gs.Tensor):
    return tensor.inputs[0] if tensor.inputs else None


def residual_adds(graph: gs.Graph) -> list[dict[str, Any]]:
    """Every residual Add: ``{"name", "output", "skip_input", "conv_input", "conv", "branch_input", "relu"}``.

    ``skip_input`` is the shallower input (see
    the module docstring), ``branch_input`` the other one. ``conv_input`` is the
    non-skip input that a Conv produces directly for this Add alone (the one
    TensorRT fuses Conv+Add+ReLU into), else None. ``relu`` names the Relu that
    reads the Add alone, if any. The graph must be topologically sorted.
    """
    depth = compute_depths(graph)
    found = []
    for add in graph.nodes:
        if not is_residual_add(add):
            continue
        a, b = add.inputs
        skip_index = 0 if depth.get(a.name, 0) < depth.get(b.name, 0) else 1
        skip, branch = add.inputs[skip_index], add.inputs[1 - skip_index]
        conv = _producer(branch)
        direct = conv is not None and conv.op == "Conv" and len(branch.outputs) == 1 and branch not in graph.outputs
        out = add.outputs[0]
        consumer = out.outputs[0] if len(out.outputs) == 1 and out not in graph.outputs else None
        found.append({
            "name": add.name,
            "output": out.name,
            "skip_input": skip.name,
            "conv_input": branch.name if direct else None,
            "conv": conv.name if direct else None,
            "branch_input": branch.name,
            "relu": consumer.name if consumer is not None and consumer.op == "Relu" else None,
        })
    return found
