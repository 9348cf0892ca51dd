"""Helpers for tests/precision: plain ONNX export, ORT runs and cosines (the trained networks: :mod:`trained_nets`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXPORT_KW = dict(dynamo=False, input_names=["input"], output_names=["logits"], opset_version=17,
                 dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def export_onnx(module, example, path: Path) -> Path:
    """Plain FP32 ONNX from the TorchScript exporter (BatchNorm folded), dynamic batch, opset 17."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is the TorchScript exporter, on purpose
        torch.onnx.export(module.eval(), example, str(path), **EXPORT_KW)
    return path


def run_onnx(model, inputs: np.ndarray, batch: int = 64, exact: bool = False) -> np.ndarray:
    """Outputs of ``model`` (path or ModelProto) on ORT's CPU provider, 2 threads, in batches. ``exact``: no graph
    optimisation, so Q/DQ nodes run as the float ops they define (no integer kernels, no saturation)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the cosine between rows of ``a`` and ``b``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def damage(qdq, factor: float, which: int = -1):
    """A copy of ``qdq`` whose ``which``-th convolution weight DequantizeLinear (default: the last) has its scales
    multiplied by ``factor``: an INT8 engine with one wrong scale, as a broken calibration or emitter would make it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    inits = {init.name: init for init in model.graph.initializer}
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 4]
    scale = inits[weight_dqs[which].input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    return model
