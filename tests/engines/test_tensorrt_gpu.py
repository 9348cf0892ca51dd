"""TensorRT engines on a real GPU: FP16 and INT8 for ResNet-50 and SE-ResNeXt-50, checked against PyTorch.

Marked ``gpu``: skipped (with the reason) where there is no NVIDIA GPU or no
TensorRT. On a GPU machine: ``pip uninstall -y onnxruntime && pip install -e '.[gpu,dev]'``
then ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import pytest

from deploy_res.build import BuildSettings, build_engine
from deploy_res.demo import bn_recalibrated_checkpoint
from deploy_res.export import ExportSettings, export
from deploy_res.validation import ValidateSettings, validate

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
    exported = export(model, tmp_path, ExportSettings(weights=weights, optimize=False))
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="tensorrt", precision=precision, calib_data=calib_folder if precision == "int8" else None, calib_samples=64), quiet=True)
    assert result.engine.suffix == ".plan"
    verdict = validate(result.engine, ValidateSettings(data=str(eval_inputs), samples=64))
    assert verdict["passed"], verdict["failed"]
    if precision == "int8":
        assert verdict["metrics"]["cosine_mean"] >= INT8_COSINE


def test_tensorrt_runner_keeps_its_buffers_across_runs(tmp_path):
    """Buffers are allocated once at load for the profile's largest batch; runs of any batch reuse them."""
    import numpy as np

    from deploy_res.core.errors import DeployResError
    from deploy_res.engines import load_engine
    from deploy_res.exporters.torch_export import BatchRange

    exported = export("resnet18", tmp_path, ExportSettings(input_size=(3, 64, 64), batch_range=BatchRange(1, 4, 8), exporter="torchscript", optimize=False))
    result = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="tensorrt", precision="fp32"), quiet=True)
    x = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    with load_engine(result.engine) as runner:
        assert runner.max_shapes["input"] == (8, 3, 64, 64)
        pointers = {name: buffer.data_ptr() for name, buffer in runner.buffers.items()}
        full = runner.run({"input": x})["logits"]
        one = runner.run({"input": x[:1]})["logits"]
        again = runner.run({"input": x[:4]})["logits"]
        assert {name: buffer.data_ptr() for name, buffer in runner.buffers.items()} == pointers
        assert full.shape == (8, 1000) and one.shape == (1, 1000) and again.shape == (4, 1000)
        np.testing.assert_allclose(one, full[:1], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(again, full[:4], rtol=1e-3, atol=1e-3)
        with pytest.raises(DeployResError, match="takes at most"):
            runner.run({"input": np.zeros((9, 3, 64, 64), np.float32)})
    assert runner.context is None and runner.buffers == {}
