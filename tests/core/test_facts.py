"""The facts a file tells about itself (deploy_res.core.facts) against what its manifest claims (#21 item 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy_res.core.errors import DeployResError
from deploy_res.core.facts import FLOAT_IR, FactMismatch, check_facts, read_facts, require_onnx
from deploy_res.core.manifest import Manifest, precision_of


def _save(path, nodes, initializers=(), elem=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", elem, ["batch", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", elem, ["batch", 3, 4, 4])], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def fp32_onnx(path):
    return _save(path, [helper.make_node("Relu", ["input"], ["logits"])])


def qdq_onnx(path):
    scale, zero = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")
    return _save(path, [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])],
                 [scale, zero])


def fp16_onnx(path):
    return _save(path, [helper.make_node("Relu", ["input"], ["logits"])], elem=TensorProto.FLOAT16)


IR = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="input" type="Parameter" version="opset1"><data shape="?,3,4,4" element_type="f32" />
<output><port id="0" precision="FP32" names="input"><dim>-1</dim><dim>3</dim><dim>4</dim><dim>4</dim></port></output></layer>
{extra}
<layer id="9" name="logits" type="ReLU" version="opset1"><output><port id="1" precision="FP32" names="logits" /></output></layer>
</layers></net>"""
FQ = '<layer id="1" name="w" type="Const" version="opset1"><data element_type="i8" shape="3" offset="0" size="3" /></layer>' \
     '<layer id="2" name="fq" type="FakeQuantize" version="opset1"><data levels="256" /></layer>'
COMPRESSED = '<layer id="1" name="w" type="Const" version="opset1"><data element_type="f16" shape="3" offset="0" size="6" /></layer>'


def manifest(precision=None, backend=None, shape=("batch", 3, 4, 4), name="input", output="logits", stage="build-engine"):
    body = {"stage": stage, "input": {"name": name, "shape": list(shape), "dtype": "float32"}, "output": {"name": output}}
    if precision:
        body["settings"] = {"precision": precision}
    if backend:
        body["engine"] = {"backend": backend}
    return Manifest(body)


@pytest.mark.parametrize("make, precision", [(fp32_onnx, "fp32"), (qdq_onnx, "int8"), (fp16_onnx, "fp16")])
def test_onnx_precision_is_read_from_the_graph(tmp_path, make, precision):
    path = make(tmp_path / "m.onnx")
    assert read_facts(path).precision == precision
    assert precision_of(path, Manifest()) == precision  # no claim: the file decides
    assert check_facts(path, manifest(precision, "onnxruntime")).precision == precision


@pytest.mark.parametrize("make, claim, fragment", [
    (fp32_onnx, "int8", "manifest says precision int8 but m.onnx has no Q/DQ nodes and no FLOAT16 tensors (fp32)"),
    (qdq_onnx, "fp32", "manifest says precision fp32 but m.onnx has 1 QuantizeLinear nodes and 1 DequantizeLinear nodes (int8)"),
    (fp16_onnx, "fp32", "FLOAT16 tensors (fp16)"),
    (fp32_onnx, "fp16", "(fp32)"),
])
def test_a_precision_the_file_contradicts_is_one_line(tmp_path, make, claim, fragment):
    path = make(tmp_path / "m.onnx")
    with pytest.raises(FactMismatch, match="the manifest does not describe this file; rebuild it with") as raised:
        precision_of(path, manifest(claim))
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("edit, fragment", [
    ({"shape": ("batch", 3, 8, 8)}, "manifest says input shape (?, 3, 8, 8) but m.onnx has input 'input' of shape (?, 3, 4, 4)"),
    ({"shape": ("batch", 3, 4)}, "input shape (?, 3, 4)"),
    ({"name": "images"}, "manifest says input 'images' but m.onnx has the inputs input"),
    ({"output": "probs"}, "manifest says output 'probs' but m.onnx has the outputs logits"),
    ({"backend": "openvino"}, "manifest says backend openvino but m.onnx has the suffix .onnx, not .xml"),
])
def test_io_and_backend_the_file_contradicts(tmp_path, edit, fragment):
    path = fp32_onnx(tmp_path / "m.onnx")
    with pytest.raises(FactMismatch) as raised:
        check_facts(path, manifest("fp32", **edit))
    assert fragment in str(raised.value)


def test_settings_and_engine_precision_must_agree(tmp_path):
    path = fp32_onnx(tmp_path / "m.onnx")
    claims = Manifest({"stage": "build-engine", "settings": {"precision": "fp32"}, "engine": {"backend": "onnxruntime", "precision": "int8"}})
    with pytest.raises(FactMismatch, match="settings and engine disagree"):
        check_facts(path, claims)


@pytest.mark.parametrize("extra, precision", [("", FLOAT_IR), (COMPRESSED, FLOAT_IR), (FQ, "int8")])
def test_openvino_ir(tmp_path, extra, precision):
    path = tmp_path / "m.ov.xml"
    path.write_text(IR.format(extra=extra))
    facts = read_facts(path)
    assert facts.precision == precision and facts.inputs[0].name == "input" and facts.inputs[0].shape == (None, 3, 4, 4)
    if precision == FLOAT_IR:  # fp32 IR (saved uncompressed here) or f16-compressed weights: a float engine, bf16 a runtime hint
        for claim in ("fp32", "bf16"):
            check_facts(path, manifest(claim, "openvino"))
        with pytest.raises(FactMismatch, match=r"precision int8 but m.ov.xml has no FakeQuantize layers .* \(a float IR"):
            check_facts(path, manifest("int8", "openvino"))
    else:
        check_facts(path, manifest("int8", "openvino"))
        with pytest.raises(FactMismatch, match=r"precision bf16 but m.ov.xml has 1 FakeQuantize layers and 1 i8/u8 constants \(int8\)"):
            check_facts(path, manifest("bf16", "openvino"))


@pytest.mark.parametrize("content, fragment", [(b"", r"m.onnx is empty \(0 bytes\)"), (b"not onnx at all \xff\x00", "m.onnx is not an ONNX file")])
def test_empty_or_not_onnx(tmp_path, content, fragment):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(DeployResError, match=fragment):
        require_onnx(path)


def test_facts_are_read_again_when_the_file_changes(tmp_path):
    path = fp32_onnx(tmp_path / "m.onnx")
    assert read_facts(path).precision == "fp32"
    qdq_onnx(path)
    assert read_facts(path).precision == "int8"
