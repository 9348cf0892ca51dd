"""profile() on a real ONNX Runtime artifact: schema, not-measured artifacts, Ctrl-C, the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

import deploy_res.profiling as profiling
import deploy_res.profiling.run as profiling_run
from deploy_res.profiling import ProfileSettings
from deploy_res.cli import cli
from deploy_res.reports.schema import SCHEMA, validate

FAST = ProfileSettings(batches=(1, 2), warmup_s=0, iterations=3, layer_iterations=2)


@pytest.fixture(scope="module")
def artifacts(export_cache, tmp_path_factory):
    """A resnet18 ONNX at 64x64 (TorchScript exporter) and a TensorRT plan that cannot load here."""
    result = export_cache("resnet18", exporter="torchscript")
    folder = tmp_path_factory.mktemp("profile")
    onnx = folder / "resnet18.onnx"
    shutil.copyfile(result.onnx_path, onnx)
    shutil.copyfile(str(result.onnx_path) + ".json", str(onnx) + ".json")
    plan = folder / "resnet18.int8.plan"
    plan.write_bytes(b"not an engine")
    return onnx, plan


def test_profile_measures_reports_and_keeps_the_unloadable(artifacts, tmp_path):
    onnx, plan = artifacts
    validation = [{"artifact": str(onnx), "precision": "fp32", "metrics": {"top1_agreement": 0.995}}, {"no": "artifact"}]
    report = profiling.profile([onnx, plan], replace(FAST, torch_modes=("eager",)), validation_results=validation, output_dir=tmp_path)
    assert validate(report) == []
    written = json.loads((tmp_path / "profile.json").read_text())
    assert validate(written) == [] and written["status"] == "complete"
    ort, trt, eager = written["artifacts"]
    assert ort["measured"] and [b["batch"] for b in ort["batches"]] == [1, 2]
    assert all(b["iterations"] == 3 and b["speedup_p50"] == pytest.approx(1.0) for b in ort["batches"])
    assert ort["flops_per_sample"] == pytest.approx(2 * 148_000_000, rel=0.05)  # resnet18 at 64x64: 1.82 GMAC * (64/224)^2
    assert ort["validation"]["top1_agreement"] == 0.995
    assert ort["layers"]["batches"][0]["by_stage"][0]["stage"] in {"stem", "stage1", "stage2", "stage3", "stage4", "head"}
    assert {s["stage"] for s in ort["layers"]["batches"][-1]["by_stage"]} >= {"stem", "stage1", "stage4", "head"}
    assert ort["memory"]["load_peak_rss_mb"] > 0
    assert not trt["measured"] and "TensorRT" in trt["error"] and trt["backend"] == "tensorrt"
    assert eager["kind"] == "torch" and eager["measured"] and eager["batches"][0]["speedup_p50"] > 0
    assert written["environment"]["cpu"]["logical_cores"] >= 1
    markdown = (tmp_path / "profile.md").read_text()
    assert "| resnet18.onnx | fp32 | onnxruntime | 1 |" in markdown and "resnet18.int8.plan`: TensorRT cannot run here" in markdown
    assert (tmp_path / "profile.html").read_text().count("<svg") >= 5


def test_ctrl_c_still_writes_what_was_measured(artifacts, tmp_path, monkeypatch):
    onnx, _ = artifacts
    real = profiling_run.interleaved

    def interrupted(entries, batches, **kwargs):
        real(entries, batches[:1], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(profiling_run, "interleaved", interrupted)
    report = profiling.profile([onnx], FAST, output_dir=tmp_path)
    written = json.loads((tmp_path / "profile.json").read_text())
    assert report["status"] == written["status"] == "interrupted"
    assert [b["batch"] for b in written["artifacts"][0]["batches"]] == [1]
    assert validate(written) == []
    assert "Interrupted" in (tmp_path / "profile.md").read_text()


def test_cli_prints_one_table_and_writes_the_reports(artifacts, tmp_path):
    onnx, plan = artifacts
    validation = tmp_path / "validation.json"
    validation.write_text(json.dumps({"results": [{"artifact": onnx.name, "precision": "fp32", "metrics": {"top1_agreement": 1.0}}]}))
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["-q", "profile", str(onnx), str(plan), "--batches", "1,2", "--iterations", "2", "--warmup-s", "0",
                                      "--layer-iterations", "1", "--validation", str(validation), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "speedup" in result.output and "not measured" in result.output and "resnet18.int8.plan" in result.output
    assert {p.name for p in out.iterdir()} >= {"profile.json", "profile.md", "profile.html"}
    assert json.loads((out / "profile.json").read_text())["artifacts"][0]["validation"]["top1_agreement"] == 1.0


def test_cli_rejects_duration_with_iterations_and_bad_batches(artifacts):
    onnx, _ = artifacts
    result = CliRunner().invoke(cli, ["profile", str(onnx), "--duration-s", "1", "--iterations", "2"])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(cli, ["profile", str(onnx), "--batches", "0,8"])
    assert result.exit_code == 2 and "positive batch sizes" in result.output


def test_schema_document_names_every_top_level_field():
    from deploy_res.reports import schema

    for key in SCHEMA["required"]:
        assert f"``{key}" in schema.__doc__, key
