"""Validation and inference sharded over Ray Data: equal, number for number, to one process.

One local Ray cluster (2 CPUs) serves the whole module and is shut down at
the end. Authentication, set deliberately before Ray is imported: token mode
with a random token in ``RAY_AUTH_TOKEN`` for this module only, so nothing is
written to ``~/.ray/auth_token``. ``faulthandler`` ends the test process if
the module takes longer than ``TIME_LIMIT_S`` (a hung pipeline fails instead
of stalling CI). The tests that start their own cluster run deployres in a
subprocess with ``RAY_TMPDIR`` in a fresh folder and check afterwards that no
process still uses it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import secrets
import sys

import pyarrow.parquet as pq
import pytest
from scale_helpers import photo_folder, tiny_engine

from deploy_res.core.errors import DeployResError
from deploy_res.infer import InferSettings, infer
from deploy_res.scale.options import RayOptions
from deploy_res.scale.ray_data import plan_actors
from deploy_res.validation import ValidateSettings, validate

pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'deployres[ray]'")

TIME_LIMIT_S = 900
IMAGES = 240


@pytest.fixture(scope="module")
def cluster():
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    import ray
    from deploy_res.scale.ray_data import ray_session

    faulthandler.dump_traceback_later(TIME_LIMIT_S, exit=True)
    try:
        with ray_session(num_cpus=2) as session:  # the same start-up deployres does, kept open for the module
            assert ray.is_initialized()
            yield session
    finally:
        faulthandler.cancel_dump_traceback_later()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    engine = tiny_engine(root / "model")
    data = photo_folder(root / "photos", IMAGES, classes=4, size=72)
    return engine, data, root


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "execution", "result_path")}


def test_plan_never_takes_every_cpu():
    assert plan_actors({"CPU": 2}).actors == 1 and plan_actors({"CPU": 2}).num_cpus == 1.0
    two = plan_actors({"CPU": 2}, actors=2)
    assert two.actors == 2 and two.actors * two.num_cpus <= 1.0 and two.decode_cpus == 1.0
    big = plan_actors({"CPU": 64})
    assert big.actors == 48 and big.decode_cpus == 1.0
    gpu = plan_actors({"CPU": 16, "GPU": 4})
    assert (gpu.actors, gpu.num_gpus, gpu.num_cpus) == (4, 1, 1.0)
    with pytest.raises(DeployResError, match="one engine per GPU"):
        plan_actors({"CPU": 16, "GPU": 2}, actors=3)


def test_sharded_validation_equals_single_process(setup, cluster, tmp_path):
    engine, data, _ = setup
    single = validate(engine, ValidateSettings(data=str(data), samples=IMAGES, batch=8), output=tmp_path / "single.json")
    sharded = validate(engine, ValidateSettings(data=str(data), samples=IMAGES, batch=8, ray=RayOptions()), output=tmp_path / "ray.json")
    assert sharded["execution"]["mode"] == "ray" and sharded["inputs"]["samples"] == IMAGES
    assert sharded["accuracy"] is not None  # labelled folder: the accuracy block merges too
    assert _numbers(sharded) == _numbers(single)
    on_disk = [_numbers(json.loads((tmp_path / name).read_text())) for name in ("single.json", "ray.json")]
    assert on_disk[0] == on_disk[1]


def test_sharded_validation_two_actors_does_not_hang(setup, cluster, tmp_path):
    engine, data, _ = setup
    single = validate(engine, ValidateSettings(data=str(data), samples=64, batch=8), output=tmp_path / "single.json")
    two = validate(engine, ValidateSettings(data=str(data), samples=64, batch=8, ray=RayOptions(actors=2)), output=tmp_path / "ray.json")
    assert two["execution"]["actors"] == 2
    assert _numbers(two) == _numbers(single)


def test_sharded_infer_equals_in_process(setup, cluster, tmp_path):
    engine, data, _ = setup
    local = infer(engine, data, tmp_path / "local.parquet", InferSettings(batch=8))
    sharded = infer(engine, data, tmp_path / "ray.parquet", InferSettings(batch=8, ray=RayOptions()))
    assert sharded["execution"]["mode"] == "ray" and sharded["images"] == local["images"] == IMAGES
    assert pq.read_table(tmp_path / "ray.parquet").equals(pq.read_table(tmp_path / "local.parquet"))


def test_corrupt_image_named_or_skipped_on_ray(setup, cluster, tmp_path):
    engine, data, _ = setup
    folder = tmp_path / "few"
    folder.mkdir()
    for path in sorted((data / "class_0").iterdir())[:10]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "crop_00003x.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(DeployResError, match="crop_00003x.jpg"):
        infer(engine, folder, tmp_path / "p.parquet", InferSettings(ray=RayOptions()))
    assert not list(tmp_path.glob("*p.parquet*"))
    result = infer(engine, folder, tmp_path / "p.parquet", InferSettings(ray=RayOptions(), skip_bad_files=True))
    assert result["skipped"] == ["crop_00003x.jpg"] and result["images"] == 10
    local = infer(engine, folder, tmp_path / "q.parquet", InferSettings(skip_bad_files=True))
    assert pq.read_table(tmp_path / "p.parquet").equals(pq.read_table(local["output"]))


def test_without_ray_the_flag_says_how_to_install(monkeypatch, setup, tmp_path):
    from click.testing import CliRunner

    from deploy_res.cli import cli

    engine, data, _ = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = CliRunner().invoke(cli, ["infer", str(engine), "--data", str(data / "class_0"), "-o", str(tmp_path / "p.parquet"), "--ray"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --ray needs Ray Data: pip install 'deployres[ray]' (or pip install 'ray[data]' pyarrow)"
    assert not list(tmp_path.iterdir())
