"""Verdicts on a really trained network, through ``deployres validate``: statistics, not extremes, decide.

The digits-trained ResNet is exported through ``package.module:factory`` with its checkpoint, so validate
rebuilds the PyTorch original from the manifest. ``large.npz`` holds 3600 labelled held-out samples (the 450
held-out digits, 8 shifted and noised copies each; :func:`trained_nets.shifted_digits`). Each test below fails on
the old method (limits on the worst sample and on a point estimate): the worst cosine over 3600 samples (0.976
here) falls with N, and 20 samples judged one image as 5 points.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from cli_helpers import run_cli
from precision_helpers import damage
from trained_nets import shifted_digits

EXIT = {"pass": 0, "fail": 1, "inconclusive": 3}


@pytest.fixture(scope="module")
def engines(digits_model, digits_folder):
    """``{precision: engine}`` built by the CLI; ``large.npz`` and ``large_unlabelled.npz`` beside them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(digits_folder))
        yield _build(digits_model, digits_folder)


def _build(digits_model, digits_folder):
    x, y = shifted_digits(digits_model.test_x, digits_model.test_y, copies=8, seed=1)
    np.savez(digits_folder / "large.npz", inputs=x, labels=y)
    np.savez(digits_folder / "large_unlabelled.npz", inputs=x)
    out = digits_folder / "out"
    result = run_cli("export", "digits_net:digits_resnet", "--weights", digits_model.weights_path, "--input-size", "3,24,24",
                     "--exporter", "torchscript", "--no-optimize", "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    built = {}
    for flag in ("", "--fp16", "--int8"):
        args = ["build-engine", out / "digits_resnet.onnx", "--backend", "onnxruntime", "-o", out]
        if flag:
            args.append(flag)
        if flag == "--int8":
            args += ["--calib-data", digits_folder / "calib.npz", "--calib-samples", "256"]
        made = run_cli(*args, catch_exceptions=False)
        assert made.exit_code == 0, made.output
        built[flag.strip("-") or "fp32"] = re.findall(r"wrote (\S+\.ort\.onnx)", made.output)[-1]
    return built


def _validate(monkeypatch, digits_folder, artifact, data, *args):
    monkeypatch.syspath_prepend(str(digits_folder))
    result = run_cli("validate", artifact, "--data", digits_folder / data, *args, catch_exceptions=False)
    outcome = json.loads(open(f"{artifact}.validation.json").read()) if "--json" not in args else None
    return result, outcome


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_precision_passes_on_a_large_labelled_set(engines, digits_model, digits_folder, monkeypatch, precision):
    result, verdict = _validate(monkeypatch, digits_folder, engines[precision], "large.npz")
    assert result.exit_code == 0, result.output
    assert verdict["outcome"] == "pass" and verdict["evidence"] == "labelled" and verdict["inputs"]["samples"] == 3600
    line = next(l for l in result.output.splitlines() if l.startswith("top-1 accuracy:"))
    reference = float(re.findall(r"([-\d.]+)%", line)[0])
    assert reference > 80  # a real trained network on the harder shifted copies
    if precision != "fp32":
        drop = next(c for c in verdict["checks"] if c["name"] == "top1_drop_points")
        low, high = drop["interval"]
        assert low <= drop["value"] <= high <= drop["limit"] and drop["confidence"] == 0.95
        assert {c["name"] for c in verdict["checks"]} == {"finite", "top1_drop_points", "top5_drop_points"}  # labels decide


def test_int8_passes_without_labels_although_its_worst_sample_falls(engines, digits_folder, monkeypatch, tmp_path):
    result, verdict = _validate(monkeypatch, digits_folder, engines["int8"], "large_unlabelled.npz")
    assert result.exit_code == 0, result.output
    assert verdict["outcome"] == "pass" and verdict["evidence"] == "unlabelled"
    names = {c["name"] for c in verdict["checks"]}
    assert names == {"finite", "top1_agreement", "cosine_mean", "cosine_p5"}
    worst = verdict["worst_samples"]
    assert worst[0]["cosine"] == verdict["metrics"]["cosine_min"] < verdict["metrics"]["cosine_p5"]
    few, _ = _validate(monkeypatch, digits_folder, engines["int8"], "large_unlabelled.npz", "--samples", "256", "--json", tmp_path / "256.json")
    on_256 = json.loads((tmp_path / "256.json").read_text())["metrics"]
    assert verdict["metrics"]["cosine_min"] < on_256["cosine_min"]  # the worst sample falls as samples are added ...
    assert abs(verdict["metrics"]["cosine_p5"] - on_256["cosine_p5"]) < 0.01  # ... the 5th percentile does not
    assert worst[0]["sample"].startswith("large_unlabelled.npz[") and "lowest cosines (evidence, not a limit)" in result.output


def test_a_handful_of_labelled_samples_is_inconclusive_not_failed(engines, digits_folder, monkeypatch):
    result, verdict = _validate(monkeypatch, digits_folder, engines["int8"], "large.npz", "--samples", "20")
    assert result.exit_code == EXIT["inconclusive"], result.output
    assert verdict["outcome"] == "inconclusive" and not verdict["passed"]
    assert 20 < verdict["samples_to_decide"] < 3600
    assert "INCONCLUSIVE" in result.output and f"about {verdict['samples_to_decide']:,} samples" in result.output


def test_a_damaged_int8_engine_fails_with_and_without_labels(engines, digits_model, digits_folder, monkeypatch, tmp_path):
    """The last convolution's weight scales tripled: a true top-1 drop of several points, on every CPU (doubled, the
    unlabelled agreement sat at the 0.9 limit where VNNI is absent and the first layer is 7-bit)."""
    from deploy_res.validation.sensitivity import qdq_sources

    qdq_path, _ = qdq_sources(engines["int8"])
    broken = tmp_path / "damaged.int8.onnx"
    onnx.save(damage(onnx.load(str(qdq_path)), 3.0), str(broken))
    reference = ["--reference", "digits_net:digits_resnet", "--reference-weights", digits_model.weights_path]
    for data in ("large.npz", "large_unlabelled.npz"):
        result, verdict = _validate(monkeypatch, digits_folder, broken, data, *reference)
        assert result.exit_code == EXIT["fail"], result.output
        assert verdict["outcome"] == "fail" and verdict["precision"] == "int8"
    labelled, _ = _validate(monkeypatch, digits_folder, broken, "large.npz", *reference)
    assert "top1_drop_points" in labelled.output.split("FAILED validation:")[1]
