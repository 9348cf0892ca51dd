"""One set of calibrated ranges, two Q/DQ emitters.

:func:`emit_qdq` writes QuantizeLinear/DequantizeLinear into a float ONNX
from :class:`~deploy_res.engines.precision.calibration_cache.Ranges`:

``tensorrt`` (built here with onnx-graphsurgeon, so placement is exactly
TensorRT's explicit-quantization guide):

* symmetric int8 everywhere (zero point 0, int8 range +-127);
* weights of every Conv/Gemm: int8 initializers + DequantizeLinear,
  per-channel on the output-channel axis (Conv: axis 0; Gemm: axis 0 when
  ``transB=1``, axis 1 when ``transB=0``), scale = max|w| / 127 per channel;
* activations per-tensor, scale = max(|low|, |high|) / 127, as a Q->DQ pair
  on every Conv/Gemm data input **and on the skip input of every residual
  Add**, so TensorRT fuses Conv+Add(+ReLU) in INT8 (NVIDIA/TensorRT#1992);
* nothing else: no Q/DQ on weighted-op outputs (except where such an
  output *is* a residual skip, e.g. the downsample projection), pools,
  Concat, SE gates or the classifier output. A quantised tensor feeds its
  DQ only to the consumers that need it; other consumers keep the float.

``onnxruntime`` (x86 CPU): ONNX Runtime's ``quantize_static`` in QDQ format
fed our ranges through its calibration cache: uint8 activations (asymmetric),
int8 per-channel weights (U8S8, ORT's advice for x86; FACTS.md: 3.5x FP32 on
this CPU, all 53 ResNet-50 convs fused to QLinearConv), the rest of ORT's
defaults. Symmetric int8 activations run at 0.9x FP32 on ORT CPU, which is
why the two emitters differ. ``overflow_fix="first_layer"`` re-quantises the
weights of the first weighted layers (those fed by the graph input) at 7 bits
(+-64, bias re-scaled to match): x86 CPUs without VNNI multiply u8 x s8 with
VPMADDUBSW, whose 16-bit pair sums saturate where both activations are large,
as in the image-fed first layer (OpenVINO's "saturation issue", NNCF's
``overflow_fix``, ORT's ``reduce_range``; measured in the README, "INT8 on a CPU without VNNI").

Residual Adds and their skip inputs come from the one finder the graph
passes also use (:mod:`deploy_res.core.residual`): the skip is the input
fewer compute nodes away from the graph inputs (the block input, or the
downsample projection, or the un-scaled ``x`` of Inception-ResNet's
``x + scale * branch``).

The check that a graph obeys TensorRT's placement rules is
:func:`deploy_res.engines.precision.qdq_check.check_tensorrt_qdq_placement`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.core.errors import DeployResError
from deploy_res.core.onnx_io import load_onnx
from deploy_res.core.residual import residual_adds
from deploy_res.engines.precision.calibration_cache import Ranges

LAYOUTS = ("tensorrt", "onnxruntime")
"""The Q/DQ layouts: where Q/DQ pairs sit and how they are typed, per the runtime that reads them."""
WEIGHTED_OPS = ("Conv", "Gemm")
INT8_MAX = 127
OVERFLOW_FIXES = ("none", "first_layer")
"""What :func:`emit_qdq` does against u8 x s8 saturation on CPUs without VNNI: nothing, or 7-bit first-layer weights."""
SEVEN_BIT_MAX = 64
"""ONNX Runtime's reduced int8 weight range (``reduce_range``: [-64, 64])."""


def emit_qdq(model: onnx.ModelProto | str | os.PathLike, ranges: Ranges, layout: str = "onnxruntime",
             overflow_fix: str = "none") -> onnx.ModelProto:
    """A Q/DQ copy of the float ``model`` in ``layout`` (``tensorrt`` or ``onnxruntime``, the default).

    ``ranges`` must come from calibrating this very model (tensor names are
    matched); tensors it lacks are an error naming them. ``overflow_fix``
    (``onnxruntime`` layout only; default ``none``): ``first_layer`` keeps the
    first layers' weights at 7 bits, for CPUs without VNNI (module docstring).
    """
    if layout not in LAYOUTS:
        raise DeployResError(f"unknown Q/DQ layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if overflow_fix not in OVERFLOW_FIXES or (overflow_fix != "none" and layout != "onnxruntime"):
        raise DeployResError(f"overflow fix {overflow_fix!r} is not one of {', '.join(OVERFLOW_FIXES)} for the {layout} layout")
    proto = load_onnx(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise DeployResError(f"per-channel Q/DQ needs ONNX opset 13 or newer, the model has {opset}; re-export with opset_version >= 13")
    if layout == "tensorrt":
        return emit_tensorrt_qdq(proto, ranges)
    emitted = emit_onnxruntime_qdq(proto, ranges)
    return seven_bit_weights(emitted, proto) if overflow_fix == "first_layer" else emitted


def overflow_fix_for(isa: Iterable[str]) -> str:
    """The :data:`OVERFLOW_FIXES` entry for an x86 CPU with these ISA flags (``cpu_fingerprint()["isa"]``):
    ``first_layer`` where u8 x s8 products go through 16-bit sums (AVX2 or AVX-512 without VNNI or AMX), else ``none``."""
    flags = set(isa)
    x86 = bool(flags & {"sse4_2", "avx", "avx2", "avx512f"})
    return "first_layer" if x86 and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "none"


def seven_bit_weights(qdq: onnx.ModelProto, float_model: onnx.ModelProto, layers: str = "first") -> onnx.ModelProto:
    """``qdq`` (ONNX Runtime's layout, emitted from ``float_model``) with Conv/Gemm weights re-quantised per channel at
    7 bits (scale = max|w| / 64) and their int32 bias re-scaled to the new input x weight scale; in place, returned.
    ``layers``: ``first`` (default) those fed by a graph input (the ``first_layer`` overflow fix), ``all`` every one
    (ORT's ``reduce_range``; ``benchmarks/probe_saturation.py`` compares the two)."""
    if layers not in ("first", "all"):
        raise DeployResError(f"layers must be 'first' or 'all', not {layers!r}")
    from onnx import numpy_helper

    inputs = {i.name for i in float_model.graph.input}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    chosen = {n.name: n for n in float_model.graph.node if n.op_type in WEIGHTED_OPS and (layers == "all" or n.input[0] in inputs)}
    inits = {i.name: i for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}

    def dequantizer(tensor: str):
        node = producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits else None

    def put(name: str, array: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    for node in qdq.graph.node:
        original = chosen.get(node.name)
        weight_dq = dequantizer(node.input[1]) if original is not None else None
        if weight_dq is None or original.input[1] not in float_inits:
            continue
        weight = numpy_helper.to_array(float_inits[original.input[1]])
        q, scale = _quantize_weight(weight, next((a.i for a in weight_dq.attribute if a.name == "axis"), 1), SEVEN_BIT_MAX)
        put(weight_dq.input[0], q)
        put(weight_dq.input[1], scale.reshape(numpy_helper.to_array(inits[weight_dq.input[1]]).shape))
        bias_dq = dequantizer(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        data_dq = producer.get(node.input[0])
        if bias_dq is not None and data_dq is not None and data_dq.op_type == "DequantizeLinear" and data_dq.input[1] in inits:
            bias = numpy_helper.to_array(inits[bias_dq.input[0]]).astype(np.float64) * numpy_helper.to_array(inits[bias_dq.input[1]])
            bias_scale = (float(numpy_helper.to_array(inits[data_dq.input[1]])) * scale).astype(np.float32)
            put(bias_dq.input[0], np.rint(bias / bias_scale).astype(np.int32))
            put(bias_dq.input[1], bias_scale)
    return qdq


# --------------------------------------------------------------------------- graph helpers


def _is_computed(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable)


def residual_skips(graph: gs.Graph) -> dict[str, int]:
    """``{add node name: index of its skip input}`` for every residual Add (:func:`deploy_res.core.residual.residual_adds`)."""
    by_name = {node.name: node for node in graph.nodes}
    return {add["name"]: [t.name for t in by_name[add["name"]].inputs].index(add["skip_input"]) for add in residual_adds(graph)}


def _ensure_names(graph: gs.Graph) -> None:
    seen = set()
    for index, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.op}_{index}"
        seen.add(node.name)


def _weight_axis(node: gs.Node) -> int:
    if node.op == "Conv":
        return 0
    return 0 if int(node.attrs.get("transB", 0)) else 1


# --------------------------------------------------------------------------- TensorRT emitter


def _scale_for(amax: float) -> np.float32:
    return np.float32(amax / INT8_MAX) if amax > 0 else np.float32(1.0)


def _quantize_weight(weight: np.ndarray, axis: int, limit: int = INT8_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 on ``axis``: scale = max|w| / ``limit`` (default 127; 64 for 7 bits), values in +-limit."""
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / limit, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scale.reshape(shape)), -limit, limit).astype(np.int8)
    return q, scale


def emit_tensorrt_qdq(model: onnx.ModelProto, ranges: Ranges) -> onnx.ModelProto:
    """TensorRT's explicit-quantization layout (module docstring); returns a new ModelProto."""
    graph = gs.import_onnx(model)
    graph.toposort()
    _ensure_names(graph)
    # Which consumers of which activation need a Q/DQ'd input: {tensor name: [(node, input index)]}.
    wanted: dict[str, list[tuple[gs.Node, int]]] = defaultdict(list)
    for node in graph.nodes:
        if node.op in WEIGHTED_OPS and node.inputs and _is_computed(node.inputs[0]):
            wanted[node.inputs[0].name].append((node, 0))
            if node.op == "Gemm" and len(node.inputs) > 1 and _is_computed(node.inputs[1]):
                wanted[node.inputs[1].name].append((node, 1))
    by_name = {n.name: n for n in graph.nodes}
    for add_name, index in residual_skips(graph).items():
        node = by_name[add_name]
        wanted[node.inputs[index].name].append((node, index))
    missing = [name for name in wanted if name not in ranges]
    if missing:
        raise DeployResError(f"the calibration ranges lack {len(missing)} tensors this model quantises (e.g. {missing[0]!r}); calibrate this very model")

    tensors = graph.tensors()
    for name, uses in wanted.items():
        source = tensors[name]
        scale = gs.Constant(f"{name}_scale", np.array(_scale_for(ranges.amax(name)), dtype=np.float32))
        zero = gs.Constant(f"{name}_zero_point", np.array(0, dtype=np.int8))
        quantized = gs.Variable(f"{name}_quantized", dtype=np.int8, shape=source.shape)
        dequantized = gs.Variable(f"{name}_dequantized", dtype=np.float32, shape=source.shape)
        graph.nodes.append(gs.Node("QuantizeLinear", f"{name}_QuantizeLinear", inputs=[source, scale, zero], outputs=[quantized]))
        graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", inputs=[quantized, scale, zero], outputs=[dequantized]))
        for node, index in uses:
            node.inputs[index] = dequantized

    done: dict[str, gs.Variable] = {}
    for node in list(graph.nodes):
        if node.op not in WEIGHTED_OPS or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        weight = node.inputs[1]
        axis = _weight_axis(node)
        key = f"{weight.name}@{axis}"
        if key not in done:
            q, scale = _quantize_weight(np.asarray(weight.values), axis)
            int8_weight = gs.Constant(f"{weight.name}_quantized", q)
            scale_c = gs.Constant(f"{weight.name}_scale", scale)
            zero_c = gs.Constant(f"{weight.name}_zero_point", np.zeros(scale.shape, dtype=np.int8))
            out = gs.Variable(f"{weight.name}_dequantized", dtype=np.float32, shape=list(q.shape))
            graph.nodes.append(gs.Node("DequantizeLinear", f"{weight.name}_DequantizeLinear", attrs={"axis": axis}, inputs=[int8_weight, scale_c, zero_c], outputs=[out]))
            done[key] = out
        node.inputs[1] = done[key]

    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = model.ir_version
    return result


# --------------------------------------------------------------------------- ONNX Runtime emitter


class _QuietPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def emit_onnxruntime_qdq(model: onnx.ModelProto, ranges: Ranges) -> onnx.ModelProto:
    """ORT ``quantize_static`` QDQ, QUInt8 activations, QInt8 per-channel weights, from ``ranges``.

    The ranges reach ``quantize_static`` through its calibration cache
    (``calibration_cache_path``, ORT >= 1.32); on older releases through a
    stand-in calibrator that returns them, so no calibration runs twice.
    """
    import importlib
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function of that name

    graph_tensors = {name for node in model.graph.node for name in (*node.input, *node.output)} | {i.name for i in model.graph.input}
    if not graph_tensors & set(ranges.tensors):
        raise DeployResError("the calibration ranges name none of this model's tensors; calibrate this very model")
    model = _inline_constant_identities(model)
    tensors_data = ranges.to_ort_tensors_data()
    settings = dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    hint = _QuietPreprocessHint()
    with tempfile.TemporaryDirectory(prefix="deployres-qdq-") as tmp:
        output = Path(tmp) / "model.qdq.onnx"
        logging.getLogger().addFilter(hint)
        try:
            if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
                from onnxruntime.quantization.calibrate import save_tensors_data

                cache = Path(tmp) / "ranges.json"
                save_tensors_data(tensors_data, cache)
                quantize_static(model, str(output), calibration_data_reader=None, calibration_cache_path=str(cache), **settings)
            else:
                with _ranges_as_calibrator(quantize, tensors_data):
                    quantize_static(model, str(output), calibration_data_reader=_NoData(), **settings)
        finally:
            logging.getLogger().removeFilter(hint)
        return onnx.load(str(output))


def _inline_constant_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without ``Identity(initializer)`` nodes: each output becomes an initializer of its own.

    The TorchScript exporter de-duplicates equal constants behind Identity nodes
    (e.g. the all-zero biases of untrained folded BatchNorms); ORT's quantizer
    only quantises biases that are initializers, and would leave those Convs
    with a float bias.
    """
    inits = {init.name: init for init in model.graph.initializer}
    identities = [n for n in model.graph.node if n.op_type == "Identity" and n.input and n.input[0] in inits]
    graph_outputs = {o.name for o in model.graph.output}
    identities = [n for n in identities if n.output[0] not in graph_outputs]
    if not identities:
        return model
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    drop = {n.output[0] for n in identities}
    kept = [n for n in copy.graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in drop)]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    for node in identities:
        init = onnx.TensorProto.FromString(inits[node.input[0]].SerializeToString())
        init.name = node.output[0]
        copy.graph.initializer.append(init)
    return copy


class _NoData:
    def get_next(self):
        return None


@contextlib.contextmanager
def _ranges_as_calibrator(quantize_module, tensors_data):
    """Make ``quantize_static`` (ORT < 1.32) take ``tensors_data`` instead of calibrating."""

    class _Given:
        def collect_data(self, reader):
            return None

        def compute_data(self):
            return tensors_data

    original = quantize_module.create_calibrator
    quantize_module.create_calibrator = lambda *args, **kwargs: _Given()
    try:
        yield
    finally:
        quantize_module.create_calibrator = original
