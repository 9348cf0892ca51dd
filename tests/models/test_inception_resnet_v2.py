"""Inception-ResNet-v2: timm-compatible structure, exact size, 299x299 forward, scaled residuals in ONNX."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from deploy_res.models import create_model, get_spec
from deploy_res.models.inception_resnet_v2 import Block8, Block17, Block35, InceptionResnetV2

TIMM_PARAMS = 55_843_464
# timm's inception_resnet_v2 state dict (num_batches_tracked included); see scripts/check_reference_compat.py.
TIMM_STATE_DICT_KEYS = 1306


@pytest.fixture(scope="module")
def meta_model() -> InceptionResnetV2:
    with torch.device("meta"):
        return create_model("inception_resnet_v2")


@pytest.fixture(scope="module")
def forward_once() -> dict[str, torch.Size]:
    """One real 1x3x299x299 forward (the costly part), shared by the tests that need it."""
    torch.manual_seed(0)
    model = create_model("inception_resnet_v2").eval()
    shapes: dict[str, torch.Size] = {}
    hook = model.conv2d_7b.register_forward_hook(lambda m, i, o: shapes.__setitem__("features", o.shape))
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 299, 299))
    hook.remove()
    return {"out": out, **shapes}


def test_parameter_count_matches_timm(meta_model):
    assert sum(p.numel() for p in meta_model.parameters()) == TIMM_PARAMS


def test_state_dict_keys_and_shapes_follow_timm_names(meta_model):
    sd = meta_model.state_dict()
    assert len(sd) == TIMM_STATE_DICT_KEYS
    expected = {
        "conv2d_1a.conv.weight": (32, 3, 3, 3),
        "conv2d_1a.bn.running_var": (32,),
        "conv2d_4a.conv.weight": (192, 80, 3, 3),
        "mixed_5b.branch3.1.conv.weight": (64, 192, 1, 1),
        "repeat.9.branch2.2.conv.weight": (64, 48, 3, 3),
        "repeat.0.conv2d.bias": (320,),
        "mixed_6a.branch1.2.conv.weight": (384, 256, 3, 3),
        "repeat_1.19.branch1.1.conv.weight": (160, 128, 1, 7),
        "repeat_1.19.branch1.2.conv.weight": (192, 160, 7, 1),
        "mixed_7a.branch2.2.bn.weight": (320,),
        "repeat_2.8.conv2d.weight": (2080, 448, 1, 1),
        "block8.branch1.2.conv.weight": (256, 224, 3, 1),
        "conv2d_7b.conv.weight": (1536, 2080, 1, 1),
        "classif.weight": (1000, 1536),
        "classif.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "repeat.10.conv2d.weight" not in sd and "repeat_2.9.conv2d.weight" not in sd
    assert not any(k.startswith(("global_pool", "fc.")) for k in sd)


def test_blocks_scales_and_final_block_without_relu(meta_model):
    assert [b.scale for b in meta_model.repeat] == [0.17] * 10
    assert [b.scale for b in meta_model.repeat_1] == [0.10] * 20
    assert [b.scale for b in meta_model.repeat_2] == [0.20] * 9
    assert all(isinstance(b, Block35) for b in meta_model.repeat)
    assert all(isinstance(b, Block17) for b in meta_model.repeat_1)
    assert isinstance(meta_model.block8, Block8)
    assert meta_model.block8.scale == 1.0 and meta_model.block8.relu is None
    assert all(b.relu is not None for b in meta_model.repeat_2)


def test_batchnorm_eps_is_tf_slim(meta_model):
    bns = [m for m in meta_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 200 and all(bn.eps == 1e-3 for bn in bns)


def test_num_classes_and_in_chans():
    with torch.device("meta"):
        model = create_model("inception_resnet_v2", num_classes=10, in_chans=1)
    assert tuple(model.classif.weight.shape) == (10, 1536)
    assert tuple(model.conv2d_1a.conv.weight.shape) == (32, 1, 3, 3)


def test_registry_preprocessing_is_timms_default_cfg():
    spec = get_spec("inception_resnet_v2")
    assert spec.family == "inception_resnet" and spec.reference == "timm"
    pre = spec.preprocessing
    assert pre.input_size == (3, 299, 299)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert pre.crop_pct == 0.8975 and pre.interpolation == "bicubic"
    assert pre.resize_size == 333


def test_forward_299(forward_once):
    out = forward_once["out"]
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()
    assert forward_once["features"] == (1, 1536, 8, 8)


def test_scaled_residual_is_mul_by_constant_then_add_in_onnx():
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    block = Block35(scale=0.17).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, torch.randn(1, 320, 5, 5), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    graph = onnx.load_from_string(buf.getvalue()).graph
    producers = {out: node for node in graph.node for out in node.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})

    (add,) = [n for n in graph.node if n.op_type == "Add"]
    assert "x" in add.input
    (mul_out,) = [i for i in add.input if i != "x"]
    mul = producers[mul_out]
    assert mul.op_type == "Mul"
    scale = [consts[i] for i in mul.input if i in consts]
    assert len(scale) == 1 and scale[0].size == 1 and abs(float(scale[0]) - 0.17) < 1e-7
    branch = [i for i in mul.input if i not in consts]
    assert producers[branch[0]].op_type == "Conv"
