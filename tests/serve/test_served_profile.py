"""``deployres profile --server``: a served model under concurrency, measured on the real bundled tritonserver, in the report.

The repository is ``deployres triton --python-backend --ensemble`` of the tiny resnet18 (3x64x64): the classifier
is measured per concurrency level; the preprocessing model and the ensemble (encoded image bytes, dims [-1]) are
listed as not measured, with the reason. The report must pass the schema, the numbers must be sane, and the
server must be gone (its PID's process group empty) afterwards, Ctrl-C included.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deploy_res.cli import cli
from deploy_res.reports.schema import validate

MODEL = "resnet18_fp32_onnxruntime"
LEVELS = (1, 2, 4)


@pytest.fixture(scope="module")
def repository(served_engine, tmp_path_factory):
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'deployres[triton]')")
    from deploy_res.core.errors import DeployResError
    from deploy_res.serve import TritonSettings, triton
    from deploy_res.serve.server import bundled_server

    try:
        bundled_server()
    except DeployResError as exc:
        pytest.skip(f"no bundled tritonserver here: {exc}")
    repo = tmp_path_factory.mktemp("served-profile") / "repo"
    triton([served_engine], repo, TritonSettings(python_backend=True, ensemble=True, max_queue_delay_us=2000))
    return repo


def _server_gone(served: dict) -> None:
    from deploy_res.serve.server import group_members

    server = served["server"]
    assert server["exit_code"] is not None, "the server was not stopped"
    assert group_members(server["pid"]) == [], "processes of the server's group outlived it"


def test_profile_server_reports_each_concurrency_level(repository, served_engine, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["-q", "profile", str(served_engine), "--batches", "1", "--iterations", "3", "--warmup-s", "0",
                                      "--layer-iterations", "0", "--server", str(repository), "--concurrency", ",".join(map(str, LEVELS)),
                                      "--server-duration-s", "1.5", "-o", str(out)])
    if "cannot start" in result.output or "exited with code" in result.output:
        pytest.skip(f"the bundled tritonserver cannot start here: {result.output.strip().splitlines()[-1]}")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "profile.json").read_text())
    assert validate(report) == []
    assert report["status"] == "complete" and report["artifacts"][0]["measured"]  # the engine in-process, beside it served
    served = report["served"]
    assert served["status"] == "complete" and served["error"] is None and served["tool"].startswith("tritonclient")
    assert served["server"]["repository"] == str(repository.absolute()) and served["server"]["version"]
    assert served["settings"]["concurrency"] == list(LEVELS) and served["settings"]["request_batch"] == 1
    _server_gone(served)

    models = {m["name"]: m for m in served["models"]}
    assert set(models) == {MODEL, f"{MODEL}_preprocess", f"{MODEL}_ensemble"}
    for name in (f"{MODEL}_preprocess", f"{MODEL}_ensemble"):
        assert not models[name]["measured"] and "variable dims" in models[name]["error"]
    model = models[MODEL]
    assert model["measured"] and model["backend"] == "python" and model["max_batch_size"] >= 4 and model["max_queue_delay_us"] == 2000
    assert model["engine"]["precision"] == "fp32" and model["engine"]["backend"] == "onnxruntime"
    assert [level["concurrency"] for level in model["levels"]] == list(LEVELS)
    for level in model["levels"]:
        assert level["errors"] == 0 and level["requests"] > 0, level
        assert level["throughput"] > 0 and level["requests_per_s"] == pytest.approx(level["throughput"])
        assert 0 < level["min_ms"] <= level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"] <= level["max_ms"]
        stats = level["server"]
        # Triton's statistics: every request answered was one inference, up to one per client either way (a request
        # still in flight when the level's clock stopped, or answered before the server booked it in its
        # statistics), and the batch sizes add up to them.
        assert abs(stats["inferences"] - level["requests"]) <= level["concurrency"], (stats, level)
        assert sum(b["batch_size"] * b["executions"] for b in stats["batch_sizes"]) == stats["inferences"]
        assert sum(b["executions"] for b in stats["batch_sizes"]) == stats["executions"]
        assert stats["samples_per_execution"] == pytest.approx(stats["inferences"] / stats["executions"])
        assert max(b["batch_size"] for b in stats["batch_sizes"]) <= level["concurrency"]
    top = model["levels"][-1]["server"]
    assert top["samples_per_execution"] > 1, f"4 closed-loop clients were never merged by dynamic batching: {top}"

    markdown = (out / "profile.md").read_text()
    assert "### Served (Triton, under concurrency)" in markdown
    for concurrency in LEVELS:
        assert f"| {MODEL} | {concurrency} |" in markdown
    assert f"`{MODEL}_ensemble`: input IMAGE has variable dims" in markdown
    html = (out / "profile.html").read_text()
    assert "Served under concurrency" in html and "served throughput against concurrency" in html and "served latency against concurrency" in html
    assert "served (Triton, under concurrency)" in result.output and "req/s" in result.output


def test_ctrl_c_stops_the_server_and_keeps_the_levels_measured(repository, tmp_path, monkeypatch):
    import deploy_res.serve.load as load
    from deploy_res.profiling import ProfileSettings, ServedSettings, profile

    real, calls = load.load_test, []

    def interrupted(*args, **kwargs):
        calls.append(kwargs["levels"])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(load, "load_test", interrupted)
    served = ServedSettings(str(repository), models=(MODEL,), concurrency=tuple(LEVELS), duration_s=1.0)
    report = profile([], ProfileSettings(warmup_s=0, served=served), output_dir=tmp_path)
    written = json.loads((tmp_path / "profile.json").read_text())
    assert validate(written) == []
    assert report["status"] == written["status"] == "interrupted" == written["served"]["status"]
    (model,) = written["served"]["models"]
    assert [level["concurrency"] for level in model["levels"]] == [1] and model["measured"]
    _server_gone(written["served"])
    assert "Interrupted" in (tmp_path / "profile.md").read_text()


def test_request_inputs_from_model_metadata():
    from deploy_res.profiling.served import request_inputs

    metadata = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}, {"name": "k", "datatype": "INT64", "shape": ["-1", "2"]}]}
    inputs, reason = request_inputs(metadata, max_batch_size=8, request_batch=2)
    assert reason is None and inputs["input"].shape == (2, 3, 8, 8) and inputs["input"].dtype == np.float32
    assert inputs["k"].shape == (2, 2) and inputs["k"].dtype == np.int64 and not inputs["k"].any()
    again, _ = request_inputs(metadata, max_batch_size=8, request_batch=2)
    np.testing.assert_array_equal(again["input"], inputs["input"])  # seeded: the same request every run
    fixed, _ = request_inputs({"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 4]}]}, max_batch_size=0)
    assert fixed["x"].shape == (1, 4) and fixed["x"].dtype == np.float16
    assert "variable dims" in request_inputs({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, -1]}]}, 8)[1]
    assert "BYTES" in request_inputs({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [-1, 1]}]}, 8)[1]
    assert "max_batch_size 1" in request_inputs(metadata, max_batch_size=1, request_batch=2)[1]


def test_cli_server_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["profile", "--server", str(tmp_path / "no-such-repo"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "neither a model repository folder nor HOST:PORT" in result.output
    result = CliRunner().invoke(cli, ["profile"])
    assert result.exit_code == 2 and "--server" in result.output
    result = CliRunner().invoke(cli, ["profile", "--server", "127.0.0.1:1", "--concurrency", "0,2"])
    assert result.exit_code == 2 and "positive concurrency levels" in result.output


def test_reports_render_a_failed_level_and_a_server_that_could_not_start(tmp_path):
    """No server needed: a level where every request failed, a model not measured, and a served section with only an error."""
    from deploy_res.profiling import build_report
    from deploy_res.reports import rich_served_table, write_reports

    failed = {"concurrency": 2, "requests": 0, "errors": 5, "first_error": "connection refused", "seconds": 1.0, "requests_per_s": 0.0,
              "throughput": 0.0, **{k: None for k in ("iterations", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")},
              "server": {"inferences": 0, "executions": 0, "samples_per_execution": None, "batch_sizes": []}}
    ok = {**failed, "concurrency": 1, "requests": 10, "errors": 0, "first_error": None, "requests_per_s": 10.0, "throughput": 10.0,
          "iterations": 10, "mean_ms": 9.0, "std_ms": 1.0, "min_ms": 8.0, "p50_ms": 9.0, "p90_ms": 10.0, "p95_ms": 10.5, "p99_ms": 11.0,
          "max_ms": 11.0, "server": {"inferences": 10, "executions": 10, "samples_per_execution": 1.0, "batch_sizes": [{"batch_size": 1, "executions": 10}]}}
    served = {"status": "complete", "error": None, "tool": "t", "server": {"repository": "/r", "url": "127.0.0.1:1", "protocol": "http", "version": "2.51.0"},
              "settings": {"concurrency": [1, 2], "seconds_per_level": 1.0, "warmup_s": 0.0, "request_batch": 1},
              "models": [{"name": "m", "measured": True, "error": None, "levels": [ok, failed]},
                         {"name": "m_ensemble", "measured": False, "error": "input IMAGE has variable dims [-1, -1]", "levels": []}]}
    for section in (served, {"status": "complete", "error": "tritonserver exited with code 1 before it was ready", "models": []}):
        report = build_report([], {}, batches=(1,), warmup_s=0, duration_s=1.0, iterations=None, threads=None, torch_modes=(),
                              layer_iterations=0, status="complete")
        report["served"] = section
        assert validate(report) == []
        paths = write_reports(report, tmp_path / str(len(section["models"])))
        markdown, html = paths["markdown"].read_text(), paths["html"].read_text()
        rich_served_table(report)
        if section["error"]:
            assert "Not measured: tritonserver exited" in markdown and "Not measured: tritonserver exited" in html
        else:
            assert "| m | 2 | 0.0 | 0.0 | – | – | – | – | – | 5 |" in markdown and "`m_ensemble`: input IMAGE" in markdown
            assert html.count("<svg") == 2 and "m_ensemble: input IMAGE" in html
