"""The settings values and option types: what they accept, what they turn it into, what they refuse (in one line)."""

from __future__ import annotations

import json

import click
import pytest

from deploy_res.cli.options import Names, TorchModes
from deploy_res.core.errors import DeployResError
from deploy_res.core.records import sha256_file
from deploy_res.export import ExportSettings
from deploy_res.exporters.torch_export import BatchRange
from deploy_res.pipeline import RunSettings
from deploy_res.profiling import ProfileSettings
from deploy_res.validation.verdict import read_verdict


def test_blank_names_mean_the_default_where_the_option_says_so():
    assert Names(empty=None).convert("", None, None) is None  # --fp16-keep-op-types "": the converter's own list
    assert Names().convert(" a, ,b ", None, None) == ("a", "b")


def test_torch_modes_take_both_spellings():
    assert TorchModes().convert("both", None, None) == ("eager", "compile")
    assert TorchModes().convert("eager,compile", None, None) == ("eager", "compile")
    with pytest.raises(click.BadParameter, match="choose eager, compile"):
        TorchModes().convert("jit", None, None)


def test_settings_normalise_what_python_callers_naturally_pass():
    assert ExportSettings(batch_range=(1, 4, 8)).batch_range == BatchRange(1, 4, 8)
    assert ProfileSettings(torch_modes="eager").torch_modes == ("eager",)
    assert ProfileSettings(batches=(8, 1, 8)).batches == (8, 1)


@pytest.mark.parametrize("changes, message", [
    ({"exporter": "foo"}, "unknown exporter"),
    ({"batches": (0,)}, "batch sizes must be positive"),
    ({"eval_samples": 0}, "--samples must be at least 1"),
    ({"torch_modes": ("jit",)}, "unknown torch mode"),
    ({"precisions": ("int8",)}, "must start with fp32"),
    ({"fallback_layers": 2}, "go with --int8"),
    ({"precisions": ("fp32", "bf16"), "backend": "onnxruntime"}, "--bf16 runs on OpenVINO"),
])
def test_run_settings_check_every_stage_before_any_work(changes, message):
    with pytest.raises(DeployResError, match=message):
        RunSettings(**changes)


def test_a_verdict_counts_only_for_the_bytes_it_names(tmp_path):
    engine = tmp_path / "m.fp32.cpu.ort.onnx"
    engine.write_bytes(b"engine bytes")
    result = tmp_path / "m.fp32.cpu.ort.onnx.validation.json"
    assert read_verdict(engine).status == "missing"
    result.write_text(json.dumps({"passed": False, "failed": ["cosine"]}))  # names no bytes
    assert read_verdict(engine).status == "stale"
    result.write_text(json.dumps({"passed": False, "failed": ["cosine"], "artifact_sha256": sha256_file(engine)}))
    assert read_verdict(engine).status == "failed" and read_verdict(engine).failed == ["cosine"]
    result.write_text(json.dumps({"passed": True, "artifact_sha256": sha256_file(engine)}))
    assert read_verdict(engine).status == "passed"
    engine.write_bytes(b"other bytes")
    assert read_verdict(engine).status == "stale"
    result.write_text("{not json")
    assert read_verdict(engine).status == "unreadable"
