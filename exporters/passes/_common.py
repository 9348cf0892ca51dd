"""What every graph pass shares: its result type and a few graph helpers.

A pass is a function ``pass_(graph: gs.Graph) -> PassResult`` that rewrites an
onnx-graphsurgeon graph in place, skips (with a reason) every case it does
not handle, and ends with ``graph.cleanup().toposort()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

FLOAT_DTYPES = (np.float16, np.float32, np.float64)

LIGHT_BYTES = 1024
"""Constants above this size are left out of the copy that shape inference sees (only their shape matters);
those up to it are compared by value when duplicate nodes are merged."""


@dataclass
class PassResult:
    """How many places a pass changed, what it left alone (one reason a line) and pass-specific details."""

    changed: int = 0
    skipped: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)


def label(node: gs.Node) -> str:
    """A node as the report names it: ``op 'name'`` (the first output's name when the node has none)."""
    name = node.name or (node.outputs[0].name if node.outputs else "?")
    return f"{node.op} '{name}'"


def producer(tensor: gs.Tensor) -> Optional[gs.Node]:
    """The node that computes ``tensor``; None for graph inputs and constants."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def is_standard(node: gs.Node, op: str) -> bool:
    """True when ``node`` is the default-domain (ai.onnx) operator ``op``."""
    return node.op == op and node.domain in (None, "", "ai.onnx")


def float_constant(tensor: Any) -> Optional[np.ndarray]:
    """The values of a constant float tensor (FP16/32/64); None when it is a variable or another type."""
    if not isinstance(tensor, gs.Constant):
        return None
    values = tensor.values
    if not isinstance(values, np.ndarray) or values.dtype.type not in FLOAT_DTYPES:
        return None
    return values


def constant_nbytes(tensor: gs.Constant) -> int:
    """A constant's size in bytes, read without loading its values."""
    values = tensor._values  # noqa: SLF001 - LazyValues know their size without loading
    return int(getattr(values, "nbytes", 0))


def sole_consumer(graph: gs.Graph, tensor: gs.Tensor) -> Optional[gs.Node]:
    """The only node reading ``tensor``, or None when it has several readers or is a graph output."""
    if tensor in graph.outputs or len(tensor.outputs) != 1:
        return None
    return tensor.outputs[0]


def detach(*nodes: gs.Node) -> None:
    """Disconnect nodes from every tensor so ``graph.cleanup()`` drops them."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every node that reads ``old`` read ``new`` instead (graph outputs are not touched)."""
    for consumer in list(old.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[index] = new


class Names:
    """Fresh tensor and node names for one pass, unique in the graph."""

    def __init__(self, graph: gs.Graph) -> None:
        self._taken = set(graph.tensors().keys()) | {node.name for node in graph.nodes if node.name}

    def __call__(self, base: str) -> str:
        name, index = base, 1
        while name in self._taken:
            name, index = f"{base}_{index}", index + 1
        self._taken.add(name)
        return name


def constant(names: Names, base: str, values: np.ndarray) -> gs.Constant:
    """A new constant tensor with a fresh name."""
    return gs.Constant(names(base), np.ascontiguousarray(values))


def rank_of(tensor: gs.Tensor) -> Optional[int]:
    """The rank of a tensor when known (from its shape), else None."""
    shape = tensor.shape
    return None if shape is None else len(shape)


def same_shape(a: gs.Tensor, b: gs.Tensor) -> bool:
    """True when both shapes are known and equal dimension by dimension (symbolic names compared by name)."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(x is not None and x == y for x, y in zip(a.shape, b.shape))


def onnx_type(dtype: Any) -> Optional[int]:
    """A tensor's dtype (NumPy or ONNX) as an ONNX type number; None when unknown."""
    try:
        return dtype if isinstance(dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (TypeError, KeyError, ValueError):
        return None
