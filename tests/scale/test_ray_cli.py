"""`deployres ... --ray` as a user runs it: its own local cluster, stopped after success and after Ctrl-C.

Each test runs deployres in a subprocess with a fresh ``HOME`` (to see that no
token is written to ``~/.ray/auth_token``: deployres' local cluster uses a
token for the run, in the environment) and ``RAY_TMPDIR`` in a fresh folder;
afterwards no process may still carry that ``RAY_TMPDIR`` (every Ray process
the run started inherits it), so nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scale_helpers import photo_folder, tiny_engine

from deploy_res.infer import infer

pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'deployres[ray]'")

DEPLOYRES = [sys.executable, "-m", "deploy_res.cli"]
RUN_LIMIT_S = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("raycli")
    return tiny_engine(root / "model"), photo_folder(root / "photos", 96, size=72), root


@pytest.fixture
def ray_env(tmp_path):
    """Environment for a deployres subprocess: a fresh HOME and RAY_TMPDIR (short: Ray's socket paths have a length limit)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_TMPDIR=str(ray_tmp), PYTHONUNBUFFERED="1")
    yield env
    _wait_until_gone(str(ray_tmp))
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"RAY_TMPDIR={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_until_gone(marker: str, seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_local_cluster_started_and_stopped(setup, ray_env, tmp_path):
    engine, photos, _ = setup
    out = tmp_path / "ray.parquet"
    run = subprocess.run([*DEPLOYRES, "infer", str(engine), "--data", str(photos), "-o", str(out), "--ray", "--ray-cpus", "2"],
                         env=ray_env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Ray: 1 actor(s)" in run.stdout and "wrote" in run.stdout
    local = infer(engine, photos, tmp_path / "local.parquet")
    assert pq.read_table(out).equals(pq.read_table(local["output"]))
    assert not (Path(ray_env["HOME"]) / ".ray" / "auth_token").exists()
    assert _wait_until_gone(ray_env["RAY_TMPDIR"]) == []


def test_ctrl_c_stops_the_cluster_and_leaves_no_parquet(setup, ray_env, tmp_path):
    engine, photos, _ = setup
    out = tmp_path / "out"
    out.mkdir()
    command = [*DEPLOYRES, "validate", str(engine), "--data", str(photos), "--samples", "96", "--batch", "1",
               "--json", str(out / "v.json"), "--ray", "--ray-cpus", "2"]
    infer_command = [*DEPLOYRES, "infer", str(engine), "--data", str(photos), "--batch", "1", "-o", str(out / "p.parquet"), "--ray", "--ray-cpus", "2"]
    for argv in (infer_command, command):
        process = subprocess.Popen(argv, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.monotonic() + RUN_LIMIT_S
        for line in process.stdout:  # the plan is printed when the pipeline starts
            lines.append(line)
            if line.startswith("Ray:") or time.monotonic() > deadline:
                break
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        output = "".join(lines) + rest
        assert process.returncode == 130, output
        assert "interrupted" in output
        assert list(out.iterdir()) == [], output  # no Parquet, no JSON, no temporary file
        assert _wait_until_gone(ray_env["RAY_TMPDIR"]) == [], output


def _end(marker: str) -> None:
    """End the processes this test started: those carrying its own RAY_TMPDIR, by id (SIGTERM, then SIGKILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_with(marker):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if not _wait_until_gone(marker, 10):
            return


def test_joins_an_existing_cluster_and_leaves_it_running(setup, ray_env, tmp_path):
    engine, photos, _ = setup
    env = {**ray_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}  # the cluster's own token, as its users hold it
    port = 20000 + os.getpid() % 20000
    ray_cli = str(Path(sys.executable).with_name("ray"))
    try:
        start = subprocess.run([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard", "false",
                                "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
        assert start.returncode == 0, start.stdout + start.stderr
        out = tmp_path / "p.parquet"
        run = subprocess.run([*DEPLOYRES, "infer", str(engine), "--data", str(photos), "-o", str(out), "--ray-address", f"127.0.0.1:{port}"],
                             env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
        assert run.returncode == 0, run.stdout + run.stderr
        assert pq.read_table(out).equals(pq.read_table(infer(engine, photos, tmp_path / "local.parquet")["output"]))
        assert _processes_with(env["RAY_TMPDIR"]), "deployres must not stop a cluster it only joined"
    finally:
        _end(env["RAY_TMPDIR"])


def test_unreachable_address_fails_at_once(setup, tmp_path):
    from click.testing import CliRunner

    from deploy_res.cli import cli

    engine, photos, _ = setup
    begin = time.monotonic()
    result = CliRunner().invoke(cli, ["infer", str(engine), "--data", str(photos), "-o", str(tmp_path / "p.parquet"), "--ray-address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert time.monotonic() - begin < 30 and not list(tmp_path.iterdir())
