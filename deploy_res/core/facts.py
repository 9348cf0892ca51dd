"""What an artifact file itself says it is, and the check that its manifest says the same.

A manifest's sha256 proves which file it describes, not that what it states about that file is true: an FP32
engine whose manifest is edited to say ``int8`` would be judged by INT8's looser limits. So the facts a file
can tell are read from the file (:func:`read_facts`) and compared with the manifest (:func:`check_facts`)
wherever an artifact is loaded or its precision decides a verdict:

- precision: an ONNX graph with QuantizeLinear/DequantizeLinear (or ONNX Runtime's QLinear*/integer) nodes is
  ``int8``; else FLOAT16 tensors (initializers, graph inputs/outputs, typed values, Casts to FLOAT16) make it
  ``fp16``, BFLOAT16 ones ``bf16``; else ``fp32``. An OpenVINO IR (``.xml``) with FakeQuantize layers or i8/u8
  constants is ``int8``, else a float IR: this repository saves IR uncompressed (f32 weights) and BF16 is
  OpenVINO's runtime precision hint, recorded only in the manifest, so a float IR fits a claim of fp32, bf16
  or fp16 (f16-compressed weights are not INT8) and contradicts only ``int8``;
- inputs and outputs: the manifest's ``input`` (name, rank, every fixed dimension) and ``output`` name are
  the file's; a file with a fixed batch dimension lies inside the manifest's ``batch_range``;
- backend: ``engine.backend`` fits the file's suffix (``.onnx`` ONNX Runtime, ``.xml`` OpenVINO, ``.plan`` /
  ``.engine`` / ``.trt`` TensorRT); the manifest's two precision fields (``settings`` and ``engine``) agree.

A TensorRT plan cannot be read without TensorRT: only its suffix is checked. Facts are read once per file
version (cached on path, size and mtime). Any disagreement is a :class:`FactMismatch`, one line naming both
values and what to do.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from deploy_res.core.errors import DeployResError

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "ConvInteger", "MatMulInteger",
             "DynamicQuantizeLinear")
"""ONNX node types that only an INT8 graph has (Q/DQ, and what ONNX Runtime fuses them into)."""
FLOAT_IR = "float"
"""The precision of an OpenVINO IR without INT8 layers: fp32, bf16 or fp16 as its runtime hint says."""
SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".xml",), "tensorrt": (".plan", ".engine", ".trt")}
"""The file suffixes each backend's engines have."""
REMEDY = {"export": "re-export it with `deployres export`", "optimize": "re-run `deployres optimize` on its export",
          "precision": "rebuild it with `deployres build-engine`", "build-engine": "rebuild it with `deployres build-engine`"}
"""What to do when a stage's manifest does not describe its file (default: the build-engine remedy)."""


class FactMismatch(DeployResError):
    """A manifest states something about its artifact that the artifact itself contradicts."""


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as the file declares it: its name and shape (int, a symbolic name, or None)."""

    name: str
    shape: tuple


@dataclass(frozen=True)
class Facts:
    """What a file says about itself: ``kind`` (``onnx`` or ``openvino``), ``precision`` (see the module
    docstring; :data:`FLOAT_IR` for a float IR), ``evidence`` (why, in words), its ``inputs`` and ``output_names``."""

    kind: str
    precision: str
    evidence: str
    inputs: tuple[Tensor, ...]
    output_names: frozenset[str]


def require_onnx(path: str | os.PathLike) -> None:
    """A one-line error unless ``path`` is a non-empty file that parses as an ONNX model with a graph."""
    _onnx_facts_of(Path(path))


def _onnx_facts_of(path: Path) -> Facts:
    stat = path.stat()
    return _onnx_facts(str(path.absolute()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _onnx_facts(path: str, size: int, mtime_ns: int) -> Facts:
    import onnx
    from onnx import TensorProto

    name = Path(path).name
    if size == 0:
        raise DeployResError(f"{name} is empty (0 bytes): it is not an ONNX model; export it again with `deployres export`")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own types
        from deploy_res.core.onnx_io import first_line

        raise DeployResError(f"{name} is not an ONNX file ({first_line(exc)}); pass an ONNX model or an engine deployres built") from None
    graph = model.graph
    if not model.ir_version or not (graph.node or graph.output):
        raise DeployResError(f"{name} is not an ONNX file (no graph in it); pass an ONNX model or an engine deployres built")
    ops = Counter(node.op_type for node in graph.node)
    initializers = {t.name for t in graph.initializer}
    quant = sorted(((op, ops[op]) for op in QUANT_OPS if ops[op]), key=lambda item: -item[1])

    def typed(code: int) -> int:
        values = [v for v in (*graph.input, *graph.output, *graph.value_info) if v.type.tensor_type.elem_type == code]
        casts = [n for n in graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i == code for a in n.attribute)]
        return sum(t.data_type == code for t in graph.initializer) + len(values) + len(casts)

    if quant:
        precision, evidence = "int8", " and ".join(f"{count} {op} nodes" for op, count in quant[:2])
    elif (fp16 := typed(TensorProto.FLOAT16)):
        precision, evidence = "fp16", f"{fp16} FLOAT16 tensors"
    elif (bf16 := typed(TensorProto.BFLOAT16)):
        precision, evidence = "bf16", f"{bf16} BFLOAT16 tensors"
    else:
        precision, evidence = "fp32", "no Q/DQ nodes and no FLOAT16 tensors"
    inputs = tuple(Tensor(v.name, tuple(_onnx_dim(d) for d in v.type.tensor_type.shape.dim)) for v in graph.input if v.name not in initializers)
    return Facts("onnx", precision, evidence, inputs, frozenset(v.name for v in graph.output))


def _onnx_dim(dim) -> Any:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return dim.dim_param or None


@functools.lru_cache(maxsize=64)
def _ir_facts(path: str, size: int, mtime_ns: int) -> Facts:
    import xml.etree.ElementTree as ET

    name = Path(path).name
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DeployResError(f"{name} is not an OpenVINO IR ({str(exc)[:200]}); rebuild it with `deployres build-engine --backend openvino`") from None
    layers = root.findall("./layers/layer")
    if root.tag != "net" or not layers:
        raise DeployResError(f"{name} is not an OpenVINO IR (no <net> of layers); rebuild it with `deployres build-engine --backend openvino`")
    fake = sum(layer.get("type") == "FakeQuantize" for layer in layers)
    integer = sum(layer.get("type") == "Const" and (layer.find("data") is not None and layer.find("data").get("element_type") in ("i8", "u8"))
                  for layer in layers)
    if fake or integer:
        precision, evidence = "int8", f"{fake} FakeQuantize layers and {integer} i8/u8 constants"
    else:
        precision, evidence = FLOAT_IR, "no FakeQuantize layers and no i8/u8 constants"
    inputs, outputs = [], set()
    for layer in layers:
        for port in layer.iter("port"):
            outputs.update(n.strip() for n in (port.get("names") or "").split(",") if n.strip())
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            shape = tuple(int(d) if d.strip().isdigit() else None for d in (data.get("shape") or "").split(",") if d.strip()) if data is not None else ()
            port = layer.find("./output/port")
            names = [n.strip() for n in ((port.get("names") if port is not None else None) or layer.get("name") or "").split(",")]
            inputs.append(Tensor(names[0], shape))
    return Facts("openvino", precision, evidence, tuple(inputs), frozenset(outputs))


def read_facts(artifact: str | os.PathLike) -> Optional[Facts]:
    """The facts ``artifact`` tells about itself (an ONNX file or an OpenVINO IR), or None for a file this
    machine cannot look into (a TensorRT plan) or that is not there. An empty or unreadable ONNX/IR file is a
    one-line error."""
    path = Path(artifact)
    if not path.is_file():
        return None
    stat = path.stat()
    if path.suffix == ".onnx":
        return _onnx_facts(str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    if path.suffix == ".xml":
        return _ir_facts(str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    return None


def _fits(claimed: str, facts: Facts) -> bool:
    if facts.precision == FLOAT_IR:
        return claimed != "int8"
    return claimed == facts.precision


def _mismatch(manifest: Mapping[str, Any], says: str, name: str, has: str) -> FactMismatch:
    remedy = REMEDY.get(str(manifest.get("stage")), REMEDY["build-engine"])
    return FactMismatch(f"manifest says {says} but {name} has {has}: the manifest does not describe this file; {remedy}")


def check_precision(artifact: str | os.PathLike, claimed: str, manifest: Mapping[str, Any] = {}) -> str:
    """``claimed`` if ``artifact`` can be that precision (see the module docstring), else a :class:`FactMismatch`."""
    facts = read_facts(artifact)
    if facts is not None and not _fits(claimed, facts):
        raise _mismatch(manifest, f"precision {claimed}", Path(artifact).name, f"{facts.evidence} ({'a float IR: fp32, bf16 or fp16' if facts.precision == FLOAT_IR else facts.precision})")
    return claimed


def check_facts(artifact: str | os.PathLike, manifest: Optional[Mapping[str, Any]]) -> Optional[Facts]:
    """Check every fact ``manifest`` states that ``artifact`` itself can tell; return the file's facts (None where
    it cannot tell any). Nothing is checked without a manifest; a disagreement is one line (:class:`FactMismatch`)."""
    path = Path(artifact)
    if not manifest:
        return read_facts(path)
    name = path.name
    engine = manifest.get("engine") or {}
    backend = engine.get("backend") if isinstance(engine, Mapping) else None
    if backend in SUFFIXES and not name.endswith(SUFFIXES[backend]):
        raise _mismatch(manifest, f"backend {backend}", name, f"the suffix {path.suffix or '(none)'}, not {' or '.join(SUFFIXES[backend])}")
    settings = manifest.get("settings") or {}
    claims = {v for v in ((settings.get("precision") if isinstance(settings, Mapping) else None),
                          (engine.get("precision") if isinstance(engine, Mapping) else None)) if v}
    if len(claims) > 1:
        raise FactMismatch(f"manifest of {name} says precision {' and '.join(sorted(claims))} (settings and engine disagree): it was edited; "
                           f"{REMEDY.get(str(manifest.get('stage')), REMEDY['build-engine'])}")
    facts = read_facts(path)
    if facts is None:
        return None
    for claimed in claims:
        check_precision(path, str(claimed), manifest)
    _check_input(manifest, name, facts)
    output = (manifest.get("output") or {}).get("name") if isinstance(manifest.get("output"), Mapping) else None
    if output and facts.output_names and output not in facts.output_names:
        raise _mismatch(manifest, f"output {output!r}", name, f"the outputs {', '.join(sorted(facts.output_names))}")
    return facts


def _check_input(manifest: Mapping[str, Any], name: str, facts: Facts) -> None:
    spec = manifest.get("input")
    if not isinstance(spec, Mapping) or not facts.inputs:
        return
    by_name = {t.name: t for t in facts.inputs}
    if spec.get("name") and spec["name"] not in by_name:
        raise _mismatch(manifest, f"input {spec['name']!r}", name, f"the inputs {', '.join(by_name)}")
    tensor = by_name.get(spec.get("name")) or facts.inputs[0]
    shape = spec.get("shape")
    if isinstance(shape, (list, tuple)) and tensor.shape:
        said = [d if isinstance(d, int) else "?" for d in shape]
        has = [d if isinstance(d, int) else "?" for d in tensor.shape]
        if len(shape) != len(tensor.shape) or any(a != "?" and b != "?" and a != b for a, b in zip(said, has)):
            raise _mismatch(manifest, f"input shape {_shape(said)}", name, f"input {tensor.name!r} of shape {_shape(has)}")
    batch_range = manifest.get("batch_range")
    fixed = tensor.shape[0] if tensor.shape and isinstance(tensor.shape[0], int) else None
    if fixed is not None and isinstance(batch_range, Mapping) and batch_range.get("max"):
        low, high = int(batch_range.get("min") or 1), int(batch_range["max"])
        if not low <= fixed <= high:
            raise _mismatch(manifest, f"batch range {low}..{high}", name, f"a fixed batch of {fixed}")


def _shape(dims: list) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"
