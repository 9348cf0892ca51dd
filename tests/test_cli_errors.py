"""Every error is one line (issue 9, section 5): ``error: <one line>`` on stderr, the right exit code,
no traceback, no click usage block; arguments are checked before work starts; Ctrl-C is exit 130
with one line, even inside an import.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from deploy_res.cli import cli

SUPPORT = str(Path(__file__).parent / "support")


@pytest.fixture
def run(monkeypatch):
    monkeypatch.syspath_prepend(SUPPORT)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result, code: int = 2) -> str:
    """The single stderr line of a failed command (asserting there is exactly one, and the exit code)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Usage:" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The tiny residual net exported (with its manifest) once for this module."""
    from deploy_res.export import ExportSettings, export

    sys.path.insert(0, SUPPORT)
    folder = tmp_path_factory.mktemp("tiny")
    return export("tiny_nets:tiny_resnet", folder, ExportSettings(input_size=(3, 16, 16), exporter="torchscript", optimize=False)).onnx_path


# ------------------------------------------------------------------------------- click usage errors


@pytest.mark.parametrize("args, fragment", [
    (["export", "resnet18", "--input-size", "3,x,1"], "'--input-size': '3,x,1' is not 3 integers"),
    (["export", "resnet18", "--input-size", "3,64"], "must be 3 positive integers"),
    (["export", "resnet18", "--batch-range", "0"], "'--batch-range'"),
    (["export", "resnet18", "--bogus"], "No such option"),
    (["exprot", "resnet18"], "No such command 'exprot'"),
    (["export"], "Missing argument 'MODEL'"),
    (["validate", "missing.onnx", "--samples", "0"], "'--samples'"),
])
def test_usage_errors_are_one_line(run, args, fragment):
    assert fragment in one_error_line(run(*args))


def test_output_folder_naming_a_file(run, tmp_path):
    (tmp_path / "afile").write_text("")
    assert "is a file" in one_error_line(run("export", "resnet18", "-o", tmp_path / "afile"))


def test_optimize_output_is_a_folder(run, tiny_onnx, tmp_path):
    assert "is a directory" in one_error_line(run("optimize", tiny_onnx, "-o", tmp_path))


def test_validate_json_is_a_folder(run, tiny_onnx, tmp_path):
    assert "is a directory" in one_error_line(run("validate", tiny_onnx, "--json", tmp_path))


# ----------------------------------------------------------------------- writing where one cannot


def _refuse_writes_in(monkeypatch, folder: Path, code: int = errno.EACCES):
    """Make creating a file in ``folder`` fail as a read-only folder does (root ignores chmod)."""
    import tempfile

    def refusing(real):
        def make(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(code, os.strerror(code), str(dir))
            return real(*args, dir=dir, **kwargs)
        return make

    monkeypatch.setattr(tempfile, "mkstemp", refusing(tempfile.mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refusing(tempfile.mkdtemp))


def test_optimize_into_a_read_only_folder(run, tiny_onnx, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _refuse_writes_in(monkeypatch, locked)
    line = one_error_line(run("optimize", tiny_onnx, "-o", locked / "x.onnx"))
    assert "cannot write" in line and "Permission denied" in line
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_optimize_into_a_chmod_read_only_folder(run, tiny_onnx, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert "Permission denied" in one_error_line(run("optimize", tiny_onnx, "-o", locked / "x.onnx"))
    finally:
        locked.chmod(0o755)


def test_validate_json_into_a_read_only_folder(run, tiny_onnx, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _refuse_writes_in(monkeypatch, locked)
    line = one_error_line(run("validate", tiny_onnx, "--samples", "2", "--json", locked / "v.json"))
    assert "cannot write" in line and "v.json" in line


def test_calibration_cache_path_is_a_folder(run, tiny_onnx, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    (out / "tiny_resnet.calib-percentile.json").mkdir(parents=True)
    line = one_error_line(run("build-engine", tiny_onnx, "-o", out, "--int8", "--calib-data", calib, "--calib-samples", "8",
                              "--backend", "onnxruntime"))
    assert "tiny_resnet.calib-percentile.json" in line and "folder" in line


def test_an_unexpected_os_error_is_one_line(run, monkeypatch):
    import deploy_res.models

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where")

    monkeypatch.setattr(deploy_res.models, "list_models", refuse)
    assert one_error_line(run("models")) == "error: Permission denied: /some/where"


# --------------------------------------------------------------------------------- bad files and data


@pytest.mark.parametrize("command", ["validate", "build-engine"])
def test_a_file_that_is_not_onnx(run, tmp_path, command):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x12")
    line = one_error_line(run(command, bad))
    assert "model.onnx" in line and "ONNX" in line


def test_export_input_size_too_large_is_refused_up_front(run, tmp_path):
    line = one_error_line(run("export", "resnet18", "--input-size", "3,100000,100000", "-o", tmp_path / "out"))
    assert "too large" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_calibration_arrays_with_inf_or_nan(run, tiny_onnx, tmp_path, bad):
    arrays = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    arrays[5, 1, 2, 3] = bad
    np.save(tmp_path / "calib.npy", arrays)
    line = one_error_line(run("build-engine", tiny_onnx, "-o", tmp_path / "out", "--int8", "--calib-data", tmp_path / "calib.npy",
                              "--calib-samples", "8", "--backend", "onnxruntime"))
    assert "NaN or Inf" in line and "sample 5" in line


# ----------------------------------------------------------------------- arguments checked up front


def test_int8_without_calib_data_fails_before_the_graph_passes(run, tiny_onnx, tmp_path):
    line = one_error_line(run("build-engine", tiny_onnx, "-o", tmp_path / "out", "--int8", "--backend", "onnxruntime"))
    assert "--calib-data" in line
    assert not list((tmp_path / "out").glob("*.onnx")) if (tmp_path / "out").exists() else True


def test_run_with_an_empty_calibration_folder_fails_before_exporting(run, tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_error_line(run("run", "tiny_nets:tiny_resnet", "--input-size", "3,16,16", "--int8", "--calib-data", tmp_path / "empty",
                              "-o", tmp_path / "out", "--exporter", "torchscript"))
    assert "empty" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.onnx"))


@pytest.mark.parametrize("args, fragment", [
    (["export", "resnet18", "--std", "0,0,0"], "std must be positive"),
    (["export", "resnet18", "--mean", "nan,0,0"], "finite"),
    (["export", "resnet18", "--batch-range", "1,8,100000"], "at most 4096"),
    (["run", "resnet18", "--fallback-layers", "2"], "go with --int8"),
    (["run", "resnet18", "--bf16", "--backend", "onnxruntime"], "--bf16 runs on OpenVINO"),
    (["build-engine", "missing.onnx", "--fp16", "--int8"], "choose one of --bf16, --fp16, --int8"),
    (["build-engine", "missing.onnx", "--fallback-layers", "2"], "go with --int8"),
    (["build-engine", "missing.onnx", "--overflow-fix", "first_layer"], "for INT8 engines on the CPU"),
    (["profile", __file__, "--duration-s", "1", "--iterations", "2"], "not both"),
])
def test_values_that_can_only_be_mistakes(run, tmp_path, args, fragment):
    assert fragment in one_error_line(run(*args, "-o", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [("--max-rel-error", "nan"), ("--max-rel-error", "-1"), ("--min-cosine", "nan"),
                                           ("--min-top1-agreement", "2"), ("--max-top1-drop", "inf")])
def test_validation_limits_that_can_only_be_mistakes(run, tiny_onnx, option, value):
    assert option in one_error_line(run("validate", tiny_onnx, option, value))


def test_unknown_fp16_keep_op_type(run, tiny_onnx, tmp_path):
    line = one_error_line(run("build-engine", tiny_onnx, "-o", tmp_path / "out", "--fp16", "--fp16-keep-op-types", "GlobalAvgPool",
                              "--backend", "onnxruntime"))
    assert "'GlobalAvgPool' is not an ONNX op type" in line and "GlobalAveragePool" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.onnx"))


# ------------------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_is_exit_130_and_one_line(run, tiny_onnx, monkeypatch):
    import deploy_res.optimize

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy_res.optimize, "optimize_file", interrupted)
    result = run("optimize", tiny_onnx)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == ["interrupted; nothing half-written was left behind"]


def test_ctrl_c_inside_an_import_is_exit_130(run, tiny_onnx, monkeypatch):
    """Ctrl-C while ``import onnxruntime`` initialises surfaces as ImportError chained from KeyboardInterrupt."""
    import deploy_res.optimize

    def interrupted_import(*_args, **_kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")

    monkeypatch.setattr(deploy_res.optimize, "optimize_file", interrupted_import)
    result = run("optimize", tiny_onnx)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == ["interrupted; nothing half-written was left behind"]


def test_a_real_import_error_keeps_its_traceback(run, tiny_onnx, monkeypatch):
    """Only an interrupt is turned into the interrupt line: a broken install is a bug to see."""
    import deploy_res.optimize

    def broken(*_args, **_kwargs):
        raise ImportError("libsomething.so: cannot open shared object file")

    monkeypatch.setattr(deploy_res.optimize, "optimize_file", broken)
    with pytest.raises(ImportError):
        run("optimize", tiny_onnx)


# ------------------------------------------------------------- library log lines (a real process)


def _deployres(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SUPPORT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "deploy_res.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_dynamo_failure_is_one_line_with_its_cause(tmp_path):
    """torch writes warnings and graph dumps to stderr (file descriptor 2) while torch.export fails; none of it
    reaches the user, and the line names the cause, not torch.onnx's generic "Failed to export ... Next steps:"."""
    result = _deployres("export", "tiny_nets:data_dependent", "--input-size", "3,16,16", "--no-optimize", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: dynamo export failed: ") and "data-dependent" in lines[0] and "try --exporter torchscript" in lines[0]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_library_warnings_and_log_lines_stay_off_stderr(run, tiny_onnx, monkeypatch):
    """A library's UserWarning or logging.warning before the failure does not print ahead of deployres' line."""
    import logging
    import warnings

    import deploy_res.optimize
    from deploy_res.core.errors import DeployResError

    def chatty(*_args, **_kwargs):
        warnings.warn("some library's advice", UserWarning)
        logging.getLogger("onnxruntime.quantization").warning("Please consider to run pre-processing before quantization")
        raise DeployResError("the one line")

    monkeypatch.setattr(deploy_res.optimize, "optimize_file", chatty)
    assert one_error_line(run("optimize", tiny_onnx)) == "error: the one line"


def test_ctrl_c_mid_commit_through_the_cli(run, tiny_onnx, tmp_path):
    """Ctrl-C just after the new ONNX is renamed into place: exit 130, one line, and the old pair is back."""
    import json

    from deploy_res.core.files import write_hook
    from deploy_res.core.records import sha256_file

    out = tmp_path / "tiny.opt.onnx"
    assert run("optimize", tiny_onnx, "-o", out, "--batch", "2").exit_code == 0
    old = sha256_file(out)

    def hook(step, target):
        if step == "artifact-placed":
            raise KeyboardInterrupt

    with write_hook(hook):
        result = run("optimize", tiny_onnx, "-o", out, "--batch", "3")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == ["interrupted; nothing half-written was left behind"]
    assert sha256_file(out) == old == json.loads((tmp_path / "tiny.opt.onnx.json").read_text())["artifact"]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.opt.onnx", "tiny.opt.onnx.json"]


def test_run_input_size_too_large_is_refused_up_front(run, tmp_path):
    line = one_error_line(run("run", "resnet18", "--input-size", "3,100000,100000", "-o", tmp_path / "out"))
    assert "too large" in line and not (tmp_path / "out").exists()
