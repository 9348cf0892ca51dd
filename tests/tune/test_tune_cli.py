"""``deployres tune`` end to end on the digits ResNet trained here (24x24, labelled held-out digits), measured by the
in-process harness (fast; the tritonserver path is tests/tune/test_tune_served.py): accuracy first, a chosen point
that meets the budget on its interval, the chosen engine's manifest, resume, and the refusals."""

from __future__ import annotations

import json
import re

import pytest

from cli_helpers import one_error_line, run_cli

FAST = ("--precision", "fp32,int8", "--backend", "onnxruntime", "--cores", "2", "--seconds", "0.5", "--harness", "in-process")


def _report(out):
    return json.loads((out / "tune.json").read_text())


def test_tune_chooses_a_point_meeting_the_budget_and_resumes(on_path, tmp_path):
    out = tmp_path / "out"
    result = run_cli("tune", *on_path.model_args(), *FAST, "--p99-ms", "200", "--max-top1-drop", "3", "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = _report(out)
    assert report["status"] == "chosen" and report["harness"] == "in-process"
    assert {e["name"]: e["outcome"] for e in report["engines"]} == {"fp32-onnxruntime": "pass", "int8-onnxruntime": "pass"}
    for engine in report["engines"]:
        assert engine["samples"] == 450 and engine["evidence"] == "labelled"
    chosen = report["chosen"]
    low, high = chosen["p99_interval_ms"]
    assert high is not None and high <= 200 and chosen["judgement"]["meets"] and chosen["runs"] == 2  # a finalist, measured twice
    assert chosen["serving"]["cores"] <= 2 and chosen["throughput"] > 0
    assert max(p["throughput"] for p in report["points"] if p["judgement"]["meets"] and p["runs"] == 2) == chosen["throughput"]
    assert report["runner_up"] is not None and report["margin"]["throughput_ratio"] >= 1.0
    state = json.loads((out / "tune.state.json").read_text())
    # each point measured once, each finalist once more (a point served longer for its p99 also has 2 runs, counted once)
    assert len(report["points"]) >= 6 and report["measured_this_run"] == len(report["points"]) + len(state["finals"])
    # the chosen engine's manifest records why it won
    manifest = json.loads((out / "engines" / (chosen["engine_path"].rsplit("/", 1)[1] + ".json")).read_text())
    tune = manifest["tune"]
    assert tune["budgets"]["p99_ms"] == 200 and tune["serving"] == chosen["serving"] and tune["runner_up"]["engine"] == report["runner_up"]["engine"]
    assert tune["measured"]["p99_ms"] == chosen["p99_ms"] and manifest["artifact"]["sha256"]
    assert "<svg" in (out / "tune.html").read_text() and "| engine |" in (out / "tune.md").read_text()
    assert state["measured"] == report["measured_this_run"]

    again = run_cli("tune", *on_path.model_args(), *FAST, "--p99-ms", "200", "--max-top1-drop", "3", "-o", out, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    resumed = _report(out)
    assert resumed["resumed"] and resumed["measured_this_run"] == 0 and "building" not in again.output and "exporting" not in again.output
    assert resumed["chosen"]["key"] == chosen["key"] and resumed["chosen"]["engine"] == chosen["engine"]

    # other budgets: the search starts over, but the engines are reused (same input, settings and bytes)
    third = run_cli("tune", *on_path.model_args(), *FAST[:-6], "--cores", "1", "--seconds", "0.3", "--harness", "in-process",
                    "--p99-ms", "500", "-o", out, catch_exceptions=False)
    assert third.exit_code == 0, third.output
    fresh = _report(out)
    assert not fresh["resumed"] and fresh["measured_this_run"] > 0 and all(e["reused"] for e in fresh["engines"])
    assert all(p["serving"]["cores"] == 1 for p in fresh["points"])


def test_a_failing_engine_is_listed_and_never_timed_and_an_impossible_budget_exits_1(on_path, tmp_path, monkeypatch):
    import onnx
    from precision_helpers import damage

    from deploy_res.engines.onnxruntime.backend import OnnxRuntimeBackend

    build = OnnxRuntimeBackend.build

    def damaged_build(self, onnx_path, engine_path, settings):
        if ".int8." not in str(onnx_path):
            return build(self, onnx_path, engine_path, settings)
        broken = tmp_path / "damaged.int8.onnx"
        onnx.save(damage(onnx.load(str(onnx_path)), 4.0), str(broken))
        return build(self, broken, engine_path, settings)

    monkeypatch.setattr(OnnxRuntimeBackend, "build", damaged_build)
    out = tmp_path / "out"
    result = run_cli("tune", *on_path.model_args(), "--precision", "fp32,int8", "--backend", "onnxruntime", "--cores", "1", "--seconds", "0.3",
                     "--harness", "in-process", "--p99-ms", "0.001", "-o", out)
    line = one_error_line(result, exit_code=1)
    assert "no serving point meets the budgets; the closest, fp32-onnxruntime" in line and "0.001 ms budget" in line
    report = _report(out)
    engines = {e["name"]: e for e in report["engines"]}
    assert engines["int8-onnxruntime"]["outcome"] == "fail" and "FAIL" in engines["int8-onnxruntime"]["verdict"]
    assert {p["engine"] for p in report["points"]} == {"fp32-onnxruntime"}  # the failing engine was never timed
    assert report["chosen"] is None and report["status"] == "no point meets the budgets"
    assert "FAIL" in (out / "tune.md").read_text()


@pytest.mark.parametrize("args, words", [
    (("--precision", "fp17"), "unknown precision 'fp17'"),
    (("--backend", "tflite"), "'tflite' is not one of onnxruntime, openvino, tensorrt"),
    (("--objective", "speed"), "'speed' is not one of"),
    (("--concurrency", "0"), "0"),
])
def test_bad_input_is_one_line_and_writes_nothing(on_path, tmp_path, args, words):
    out = tmp_path / "out"
    line = one_error_line(run_cli("tune", *on_path.model_args(), *args, "-o", out))
    assert words in line
    assert not out.exists()


def test_missing_onnx_and_a_model_that_does_not_load_write_nothing(on_path, tmp_path):
    out = tmp_path / "out"
    assert "not found" in one_error_line(run_cli("tune", tmp_path / "nope.onnx", "--data", on_path.heldout, "-o", out))
    assert "no_such_module" in one_error_line(run_cli("tune", "no_such_module:f", "--data", on_path.heldout, "--precision", "fp32", "-o", out))
    assert not out.exists()


def test_a_point_too_brief_to_judge_its_p99_is_served_longer(on_path, tmp_path):
    """0.05 s at 8 clients gives too few requests to bound a p99 at 95 % (368 needed): each point is served again
    until its budget is decided, within --max-point-seconds, unless it is already out of the race."""
    out = tmp_path / "out"
    result = run_cli("tune", *on_path.model_args(), "--precision", "fp32", "--backend", "onnxruntime", "--cores", "1", "--seconds", "0.05",
                     "--max-point-seconds", "5", "--harness", "in-process", "--p99-ms", "500", "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = _report(out)
    assert "s more: its p99 budget is undecided" in result.output
    decided = [p for p in report["points"] if p["requests"] >= 368]
    assert decided and all(p["p99_interval_ms"][1] is not None and p["judgement"]["meets"] for p in decided)
    # a point left undecided was screened out: its short run was over 10 % behind the point leading when it was
    # measured (the leader then; finalists' pooled runs may move the leader's figure later)
    screened = {m["key"]: (float(m["value"]), float(m["leader"])) for m in re.finditer(
        r"fp32-onnxruntime: (?P<key>\S+) not served longer: (?P<value>[\d.]+) is over 10% behind the best point meeting the budgets \((?P<leader>[\d.]+)\)",
        result.output)}
    for point in report["points"]:
        if point not in decided:
            value, leader = screened[point["key"]]
            assert abs(value - point["throughput_runs"][0]) <= 0.05 and value < 0.9 * leader and not point["judgement"]["meets"]  # its first run
