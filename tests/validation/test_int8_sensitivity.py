"""INT8: the sensitivity ranking, the FP32 fallback, and a Q/DQ graph with one wrong scale rejected.

The network's BatchNorm statistics come from real photos but its classifier is
untrained, so its logits are near ties and top-1 agreement says little: these
tests judge on cosine (the agreement check is switched off where noted).
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from deploy_res.build import BuildSettings, build_engine
from deploy_res.cli import cli
from deploy_res.validation import ValidateSettings, validate
from deploy_res.validation.sensitivity import qdq_sources, rank_layers


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    from deploy_res.data.photos import sample_inputs, write_random_crops
    from deploy_res.demo import bn_recalibrated_checkpoint
    from deploy_res.export import ExportSettings, export
    from deploy_res.models import Preprocessing

    folder = tmp_path_factory.mktemp("int8")
    weights = bn_recalibrated_checkpoint("resnet18", folder, samples=32, input_size=(3, 64, 64))
    exported = export("resnet18", folder, ExportSettings(weights=weights, input_size=(3, 64, 64), exporter="torchscript", optimize=False))
    write_random_crops(folder / "calib", 32, seed=0, size=80)
    built = build_engine(exported.onnx_path, folder, BuildSettings(backend="onnxruntime", precision="int8", calib_data=folder / "calib", calib_samples=32), quiet=True)
    held_out = folder / "eval.npy"
    np.save(held_out, sample_inputs(160, Preprocessing.from_dict(exported.manifest["preprocessing"]), seed=7))
    return exported, built, held_out


def test_int8_engine_passes_validation(int8_build):
    _, built, held_out = int8_build
    result = validate(built.engine, ValidateSettings(data=str(held_out), limits={"top1_agreement": None}), output=built.engine.with_suffix(".v.json"))
    assert result["outcome"] == "pass", result["verdict"]
    assert result["precision"] == "int8" and result["metrics"]["cosine_mean"] > 0.98 and result["inputs"]["samples"] == 160


def test_int8_engine_on_a_handful_of_samples_is_inconclusive_not_failed(int8_build):
    """32 samples cannot bound the 5th percentile of the cosine from below: the verdict says so and how many would."""
    _, built, held_out = int8_build
    result = validate(built.engine, ValidateSettings(data=str(held_out), samples=32, limits={"top1_agreement": None}),
                      output=built.engine.with_suffix(".v32.json"))
    assert result["outcome"] == "inconclusive", result["verdict"]
    assert 32 < result["samples_to_decide"] <= 160 and "cosine_p5" in result["undecided"][0]


def test_ranking_covers_every_quantised_conv(int8_build):
    _, built, held_out = int8_build
    qdq_path, float_path = qdq_sources(built.engine)
    assert qdq_path == built.precision_onnx
    ranking = rank_layers(qdq_path, float_path, np.load(held_out)[:8])
    convs = [n for n in onnx.load(str(float_path)).graph.node if n.op_type == "Conv"]
    assert len(ranking) == len(convs) == 20
    losses = [layer["added_error_db"] for layer in ranking]
    assert losses == sorted(losses, reverse=True) and losses[0] > 0
    assert all(np.isfinite(layer["output_sqnr_db"]) for layer in ranking)


def test_per_layer_cli_prints_the_ranking(int8_build):
    _, built, held_out = int8_build
    result = CliRunner().invoke(cli, ["validate", str(built.engine), "--data", str(held_out), "--samples", "80", "--per-layer", "--top", "3",
                                      "--min-top1-agreement", "0"])
    assert result.exit_code == 0, result.output
    assert "INT8 sensitivity: 20 quantised layers" in result.output and "dB lost" in result.output


def test_fallback_leaves_the_worst_layers_in_fp32(int8_build, tmp_path):
    exported, _, _ = int8_build
    built = build_engine(exported.onnx_path, tmp_path, BuildSettings(backend="onnxruntime", precision="int8", calib_data=exported.onnx_path.parent / "calib", calib_samples=32, fallback_layers=3), quiet=True)
    manifest = onnx.load(str(built.precision_onnx))
    from deploy_res.core.manifest import read_manifest

    fallback = read_manifest(built.precision_onnx)["fallback"]
    assert len(fallback["fp32_layers"]) == 3 and fallback["latency_cost"] > 0
    producers = {out: n for n in manifest.graph.node for out in n.output}
    for node in manifest.graph.node:
        if node.name in fallback["fp32_layers"]:
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), node.name
    assert validate(built.engine, ValidateSettings(samples=8), output=tmp_path / "v.json")["metrics"]["cosine_mean"] > 0.95


def test_qdq_scale_off_by_two_is_rejected(int8_build, tmp_path):
    """One activation's DequantizeLinear scale doubled (its Quantize left alone): validation must fail."""
    _, built, held_out = int8_build
    model = onnx.load(str(built.precision_onnx))
    inits = {i.name: i for i in model.graph.initializer}
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == first_conv.input[0])
    scale = numpy_helper.to_array(inits[dq.input[1]]) * np.float32(2.0)
    model.graph.initializer.append(numpy_helper.from_array(scale, dq.input[1] + "_x2"))
    dq.input[1] = dq.input[1] + "_x2"
    broken = tmp_path / "broken.int8.onnxruntime.onnx"
    onnx.save(model, str(broken))
    shutil.copy(str(built.precision_onnx) + ".json", str(broken) + ".json")
    args = ["--data", str(held_out), "--min-top1-agreement", "0"]
    assert CliRunner().invoke(cli, ["validate", str(built.precision_onnx), *args]).exit_code == 0
    result = CliRunner().invoke(cli, ["validate", str(broken), *args])
    assert result.exit_code == 1
    assert "FAILED validation: output 'logits': cosine_mean" in result.output
