"""INT8 sensitivity: which quantised layers add the most error.

The Q/DQ graph and the FP32 graph it was made from run side by side (ONNX
Runtime, CPU, no graph optimisation, so Q/DQ is computed exactly as written)
on the same inputs. For every quantised Conv/Gemm the signal-to-quantisation-
noise ratio (SQNR, dB) of its float input and of its output is measured against
the FP32 graph's tensors of the same name; the dB the layer loses (input SQNR
minus output SQNR) is the error it adds. Layers are ranked by that loss.
Where the Q/DQ graph quantises a tensor, its dequantised value is the one
compared (ONNX Runtime's emitter folds a Conv's Relu into the uint8 range, so
only the dequantised tensor means what the FP32 tensor of that name means).

Statistics are accumulated batch by batch (signal and noise power per
tensor), so no activation is kept in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx

from deploy_res.core.records import verify_record
from deploy_res.core.manifest import Manifest, read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import cpu_session

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
INPUT_SQNR_CAP_DB = 100.0
"""SQNR given to an input the Q/DQ graph does not perturb (the graph input itself)."""


def qdq_sources(artifact: str | Path) -> tuple[Path, Path]:
    """(Q/DQ ONNX, FP32 ONNX it was made from), following the manifests from an engine or a Q/DQ ONNX."""
    path = Path(artifact)
    manifest = read_manifest(path) or Manifest()
    engine_parent = manifest.parent if manifest.stage == "build-engine" else None
    if engine_parent:
        path = Path(engine_parent["path"])
        manifest = read_manifest(path) or Manifest() if path.is_file() else Manifest()
    float_record = manifest.parent
    float_path = Path(float_record["path"]) if float_record else Path("")
    if manifest.precision != "int8" or not path.is_file() or not float_path.is_file():
        raise DeployResError(f"{Path(artifact).name} does not lead back to a Q/DQ ONNX and its FP32 graph through its manifests; --per-layer needs an INT8 artifact built by deployres")
    remedy = "rebuild it with `deployres build-engine --int8`"
    if engine_parent:
        verify_record(path, engine_parent, "engine source", remedy)
    verify_record(float_path, float_record, "FP32 graph", remedy)
    return path, float_path


def _dequantized_source(graph: onnx.GraphProto, tensor: str) -> str:
    """The float tensor a Q -> DQ pair stands for, or ``tensor`` itself."""
    producers = {out: node for node in graph.node for out in node.output}
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return tensor
    q = producers.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else tensor


def _effective(graph: onnx.GraphProto, tensor: str) -> str:
    """The tensor's dequantised copy (``tensor -> Q -> DQ``) where there is one, else ``tensor``."""
    for q in graph.node:
        if q.op_type == "QuantizeLinear" and q.input and q.input[0] == tensor:
            for dq in graph.node:
                if dq.op_type == "DequantizeLinear" and dq.input and dq.input[0] == q.output[0]:
                    return dq.output[0]
    return tensor


def quantised_layers(qdq: onnx.ModelProto, float_names: set[str]) -> list[dict[str, str]]:
    """Weighted nodes whose data input is quantised, with the float tensor names of their input and output."""
    layers = []
    for node in qdq.graph.node:
        if node.op_type not in WEIGHTED_OPS or not node.input:
            continue
        source = _dequantized_source(qdq.graph, node.input[0])
        if source == node.input[0]:
            continue  # input not quantised: the layer runs in float
        if source not in float_names and source not in {i.name for i in qdq.graph.input}:
            continue
        if node.output[0] not in float_names:
            continue
        layers.append({"name": node.name or node.output[0], "op_type": node.op_type, "input": source, "output": node.output[0],
                       "qdq_input": _effective(qdq.graph, source), "qdq_output": _effective(qdq.graph, node.output[0])})
    return layers


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy.SerializeToString()


def rank_layers(qdq_path: str | Path, float_path: str | Path, inputs: np.ndarray, batch: int = 8, top: Optional[int] = None) -> list[dict[str, Any]]:
    """Quantised layers ranked by the SQNR (dB) they lose, worst first; see the module docstring."""
    qdq = onnx.load(str(qdq_path))
    float_model = onnx.load(str(float_path))
    float_names = {o for n in float_model.graph.node for o in n.output} | {i.name for i in float_model.graph.input}
    layers = quantised_layers(qdq, float_names)
    if not layers:
        raise DeployResError(f"{Path(qdq_path).name} has no quantised Conv/Gemm whose tensors match {Path(float_path).name}")
    graph_inputs = {i.name for i in qdq.graph.input}
    pairs = sorted({(layer[f"qdq_{side}"], layer[side]) for layer in layers for side in ("input", "output")})
    sessions = (cpu_session(_with_outputs(qdq, [q for q, _ in pairs if q not in graph_inputs])),
                cpu_session(_with_outputs(float_model, [f for _, f in pairs if f not in graph_inputs])))
    input_name = sessions[1].get_inputs()[0].name
    signal = dict.fromkeys(pairs, 0.0)
    noise = dict.fromkeys(pairs, 0.0)
    for start in range(0, len(inputs), batch):
        feed = {input_name: inputs[start:start + batch].astype(np.float32)}
        outs = [dict(zip([o.name for o in s.get_outputs()], s.run(None, feed))) for s in sessions]
        outs = [{**feed, **o} for o in outs]
        for pair in pairs:
            q, f = outs[0][pair[0]].astype(np.float64), outs[1][pair[1]].astype(np.float64)
            signal[pair] += float(np.sum(f * f))
            noise[pair] += float(np.sum((q - f) ** 2))

    def sqnr(pair: tuple[str, str]) -> float:
        if noise[pair] == 0.0:
            return INPUT_SQNR_CAP_DB
        return min(INPUT_SQNR_CAP_DB, 10.0 * math.log10(max(signal[pair], 1e-30) / noise[pair]))

    ranked = []
    for layer in layers:
        sqnr_in, sqnr_out = sqnr((layer["qdq_input"], layer["input"])), sqnr((layer["qdq_output"], layer["output"]))
        ranked.append({**layer, "input_sqnr_db": round(sqnr_in, 3), "output_sqnr_db": round(sqnr_out, 3), "added_error_db": round(sqnr_in - sqnr_out, 3)})
    ranked.sort(key=lambda r: r["added_error_db"], reverse=True)
    return ranked[:top] if top else ranked
