"""``deployres tune`` through the real bundled tritonserver on the digits ResNet trained here: every point served as
its own Python-backend model (loaded, measured, unloaded), the damaged INT8 engine rescued by its fallback layers,
memory measured per point, and ``--triton REPO`` written with the chosen configuration and checked served."""

from __future__ import annotations

import json

import onnx
import pytest

from cli_helpers import run_cli

pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")


def test_tune_served_by_tritonserver_writes_and_checks_the_chosen_repository(on_path, tmp_path, monkeypatch):
    from precision_helpers import damage

    from deploy_res.engines.onnxruntime.backend import OnnxRuntimeBackend
    from deploy_res.serve.server import bundled_server

    try:
        bundled_server()
    except Exception as exc:  # noqa: BLE001 - no bundled server on this platform
        pytest.skip(f"the bundled tritonserver is not available: {exc}")
    build = OnnxRuntimeBackend.build

    def damaged_build(self, onnx_path, engine_path, settings):  # plain INT8 damaged; the fallback build keeps it in float
        if ".int8." in str(onnx_path) and "fallback" not in str(engine_path):
            broken = tmp_path / "damaged.int8.onnx"
            onnx.save(damage(onnx.load(str(onnx_path)), 4.0), str(broken))
            onnx_path = broken
        return build(self, onnx_path, engine_path, settings)

    monkeypatch.setattr(OnnxRuntimeBackend, "build", damaged_build)
    out, repo = tmp_path / "out", tmp_path / "repo"
    result = run_cli("tune", *on_path.model_args(), "--precision", "fp32,int8", "--backend", "onnxruntime", "--cores", "2", "--seconds", "0.6",
                     "--harness", "triton", "--p99-ms", "500", "--triton", repo, "-o", out, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "tune.json").read_text())
    assert report["harness"] == "triton" and "tritonserver" in report["tool"]
    engines = {e["name"]: e for e in report["engines"]}
    assert engines["int8-onnxruntime"]["outcome"] == "fail"
    assert engines["int8-fallback4-onnxruntime"]["fallback_layers"] == 4 and engines["int8-fallback4-onnxruntime"]["outcome"] == "pass"
    timed = {p["engine"] for p in report["points"]}
    assert "int8-onnxruntime" not in timed and {"fp32-onnxruntime", "int8-fallback4-onnxruntime"} <= timed
    assert all(p["memory_mib"] and p["memory_mib"] > 50 for p in report["points"])  # tritonserver + a stub: tens of MiB at least
    chosen = report["chosen"]
    assert chosen["judgement"]["meets"] and chosen["p99_interval_ms"][1] <= 500
    served = report["triton"]
    assert served["checks"] and all(check["passed"] for check in served["checks"])
    config = (repo / served["models"][0] / "config.pbtxt").read_text()
    assert f"max_batch_size: {chosen['serving']['max_batch']}" in config and f"count: {chosen['serving']['instances']}" in config
    assert not (out / "serve").exists()  # the search's scratch repository is gone with its server
