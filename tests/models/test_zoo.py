"""Every registered model: exact parameter count against the reference table, and a small forward."""

from __future__ import annotations

import pytest
import torch

from deploy_res.models import create_model, get_spec, list_models

# Parameter counts of the reference implementations (torchvision / timm) at 1000 classes;
# the plain nets are ResNet-18/34 less their projection shortcuts.
EXPECTED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240,
    "seresnet50": 28_088_024,
    "seresnext50_32x4d": 27_559_896,
    "inception_resnet_v2": 55_843_464,
    "plain18": 11_515_688,
    "plain34": 21_623_848,
}


def test_table_covers_the_whole_zoo():
    assert sorted(list_models()) == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_count(name):
    with torch.device("meta"):  # shapes only: no allocation, no init cost
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_forward_small_input(name):
    size = 299 if get_spec(name).family == "inception_resnet" else 64
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()
