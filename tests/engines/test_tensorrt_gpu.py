"""TensorRT engines on a real GPU: FP16 and INT8 for ResNet-50 and SE-ResNeXt-50, checked against PyTorch.

Marked ``gpu``: skipped (with the reason) where there is no NVIDIA GPU or no
TensorRT. On a GPU machine: ``pip uninstall -y onnxruntime && pip install -e '.[gpu,dev]'``
then ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import pytest

from deploy_res.build import build_engine
from deploy_res.demo import bn_recalibrated_checkpoint
from deploy_res.export import export
from deploy_res.validation import validate

pytestmark = pytest.mark.gpu

INT8_COSINE = 0.99


@pytest.fixture(scope="module")
def calib_folder(tmp_path_factory):
    from deploy_res.data.photos import write_random_crops

    folder = tmp_path_factory.mktemp("calib")
    write_random_crops(folder, 64, seed=0)
    return folder


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    import numpy as np

    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import get_spec

    path = tmp_path_factory.mktemp("eval") / "eval.npy"
    np.save(path, sample_inputs(64, get_spec("resnet50").preprocessing, seed=7))
    return path


@pytest.mark.parametrize("model", ["resnet50", "seresnext50_32x4d"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_engine_matches_pytorch(tmp_path, model, precision, calib_folder, eval_inputs):
    weights = bn_recalibrated_checkpoint(model, tmp_path)
    exported = export(model, tmp_path, weights=weights, optimize=False)
    result = build_engine(exported.onnx_path, tmp_path, backend="tensorrt", precision=precision,
                          calib_data=calib_folder if precision == "int8" else None, calib_samples=64, quiet=True)
    assert result.engine.suffix == ".plan"
    verdict = validate(result.engine, data=str(eval_inputs), samples=64)
    assert verdict["passed"], verdict["failed"]
    if precision == "int8":
        assert verdict["metrics"]["cosine_mean"] >= INT8_COSINE
