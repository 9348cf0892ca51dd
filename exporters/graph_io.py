"""Between ONNX models and onnx-graphsurgeon graphs, for the pass runner: shape inference on a weightless
copy, import with the original's weights (no copy), and export with the original's IR version, opsets
(+ ``com.microsoft`` where used) and metadata."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from deploy_res.core.onnx_io import PROTOBUF_LIMIT, proto_bytes

MS_DOMAIN = "com.microsoft"


def graph_to_model(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as a model with the original's IR version, opsets (+ com.microsoft 1 when used) and metadata."""
    model = gs.export_onnx(graph)
    model.ir_version = original.ir_version
    domains = {opset.domain: opset.version for opset in model.opset_import}
    for opset in original.opset_import:
        domains.setdefault(opset.domain, opset.version)
    if any(node.domain == MS_DOMAIN for node in model.graph.node):
        domains.setdefault(MS_DOMAIN, 1)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in sorted(domains.items()))
    model.producer_name = original.producer_name
    model.producer_version = original.producer_version
    model.doc_string = original.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    return model


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes and types for every tensor where ONNX can infer them (the passes use ranks and shapes).

    Give it a weightless model (:func:`deploy_res.exporters.checks._split_weights`): inference reads only
    the weights' shapes, and serialising the weights would cost more than it.
    """
    if proto_bytes(model) >= PROTOBUF_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        return model


def _import_graph(light: onnx.ModelProto, original: onnx.ModelProto) -> gs.Graph:
    """The graph of a weightless model, its stub initializers pointing at ``original``'s weights again (no copy)."""
    graph = gs.import_onnx(light)
    weights = {tensor.name: tensor for tensor in original.graph.initializer}
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and values.tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.name in weights:
            tensor._values = LazyValues(weights[tensor.name])  # noqa: SLF001 - gs exports LazyValues without a copy
            tensor.data_location = weights[tensor.name].data_location if weights[tensor.name].HasField("data_location") else None
    return graph
