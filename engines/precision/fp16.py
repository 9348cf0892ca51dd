"""FP16-typed ONNX: what a strongly typed TensorRT build (or ORT) runs in half precision.

:func:`convert_fp16` uses ONNX Runtime's own converter
(``onnxruntime.transformers.float16.convert_float_to_float16``, shipped in the
``onnxruntime`` wheel, so no extra dependency): initializers and tensors
become float16, Cast nodes are inserted at the borders of whatever stays
float32. Defaults:

* graph inputs and outputs stay float32 (``keep_io_types=True``), so callers
  feed and read float32 as before; pass False for a pure FP16 interface or a
  list of names to keep only those;
* op types in :data:`DEFAULT_KEEP_OP_TYPES` stay float32 (plus ORT's own
  block list of ML/NMS-style ops); ``keep_nodes`` keeps named nodes too.

Measured with ``benchmarks/fp16_keep_ops.py`` (random weights, BatchNorm
re-estimated on scikit-image crops, 32 other crops, ORT 1.32 CPU, logits vs
the FP32 ONNX), max |diff| / mean cosine / top-1 agreement:

================== ========================== ==========================
kept in FP32       seresnet50 (224)           inception_resnet_v2 (299)
================== ========================== ==========================
nothing            0.00980 / 0.999996 / 0.969 0.00348 / 0.999998 / 1.000
pools (GAP+Mean)   0.01012 / 0.999996 / 0.969 0.00346 / 0.999998 / 1.000
SE sigmoid         0.00980 / 0.999996 / 0.969 0.00348 / 0.999998 / 1.000
pools + sigmoid    0.01012 / 0.999996 / 0.969 0.00346 / 0.999998 / 1.000
================== ========================== ==========================

Keeping them in FP32 changes nothing measurable (differences of 3e-4 in
max |diff|, either way), so nothing is kept by default: every extra FP32
island costs two Casts and splits TensorRT's FP16 fusions. Caveat: ORT's CPU
provider computes ops that lack an FP16 kernel in FP32 between FP16 tensors,
so this measures FP16 storage, not FP16 accumulation inside a pool; with
7x7/8x8 pools that accumulation error is of the same order as the storage
rounding. Keep them with ``keep_op_types`` if a GPU validation says
otherwise.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import onnx

from deploy_res.core.errors import DeployResError
from deploy_res.core.onnx_io import load_onnx

# Nothing by measurement (module docstring): GlobalAveragePool/ReduceMean and the SE Sigmoid
# in FP32 moved neither the cosine (0.999996 / 0.999998) nor top-1 agreement on seresnet50
# and inception_resnet_v2.
DEFAULT_KEEP_OP_TYPES: tuple[str, ...] = ()


def convert_fp16(
    model: onnx.ModelProto | str | os.PathLike,
    keep_op_types: Iterable[str] | None = None,
    keep_nodes: Iterable[str] = (),
    keep_io_types: bool | Sequence[str] = True,
) -> onnx.ModelProto:
    """An FP16-typed copy of ``model`` (see the module docstring for the defaults).

    ``keep_op_types`` (default :data:`DEFAULT_KEEP_OP_TYPES`) and
    ``keep_nodes`` (node names, default none) stay float32.
    ``keep_io_types`` (default True) keeps float32 graph inputs/outputs; a
    list keeps only the named ones.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    proto = onnx.ModelProto()
    proto.CopyFrom(load_onnx(model))  # the converter edits in place
    keep_op_types = DEFAULT_KEEP_OP_TYPES if keep_op_types is None else tuple(keep_op_types)
    keep_nodes = list(keep_nodes)
    names = {node.name for node in proto.graph.node}
    unknown = [name for name in keep_nodes if name not in names]
    if unknown:
        raise DeployResError(f"no node named {unknown[0]!r} in the model; pass node names as they appear in the ONNX graph")
    converted = convert_float_to_float16(
        proto,
        keep_io_types=list(keep_io_types) if isinstance(keep_io_types, (list, tuple)) else bool(keep_io_types),
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_op_types)),
        node_block_list=keep_nodes,
    )
    _toposort(converted.graph)  # the converter appends its Casts at the end; TensorRT's parser wants order
    return converted


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:  # a cycle or a dangling input: keep the rest as it was rather than loop forever
            ordered += pending
            break
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)
