"""An artifact and its manifest are one unit: an interrupt or an error at any write step leaves
the old pair, the new pair, or neither, never a mix (issue 9, section 3).

Each test first records every write step a stage takes (the ``write_hook`` seam), then re-runs
the stage once per step with KeyboardInterrupt (or a disk error) raised at exactly that step, and
checks the folder: every artifact beside a manifest that describes it (sha256), the same pairs as
before the run unless the commit had finished, and no temporary file left behind.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploy_res.core.artifact import write_artifact
from deploy_res.core.files import write_hook
from deploy_res.core.manifest import manifest_path
from deploy_res.core.records import sha256_file
from deploy_res.core.errors import DeployResError


class Injected(Exception):
    """Stands for any error a write step can meet."""


def _pairs(folder: Path, skip: str = "\0") -> dict[str, str | None]:
    """{artifact name: its sha256} for every artifact; asserts each has a manifest that describes it and no strays.
    Files whose name holds ``skip`` (single self-contained files such as the calibration cache) count by content."""
    names = sorted(p.name for p in folder.iterdir())
    hidden = [n for n in names if n.startswith(".")]
    assert not hidden, f"temporary files left behind: {hidden}"
    state: dict[str, str | None] = {}
    for name in names:
        if skip in name:
            state[name] = sha256_file(folder / name)
            continue
        if name.endswith(".data"):  # a companion (ONNX external data): part of its artifact's unit
            assert (folder / name[: -len(".data")]).is_file(), f"{name} without its artifact"
            state[name] = sha256_file(folder / name)
            continue
        if name.endswith(".json"):
            assert (folder / name[: -len(".json")]).is_file(), f"manifest {name} without its artifact"
            continue
        path = folder / name
        manifest = manifest_path(path)
        assert manifest.is_file(), f"artifact {name} without its manifest"
        record = json.loads(manifest.read_text())["artifact"]
        assert record["sha256"] == sha256_file(path), f"{manifest.name} describes another file than {name}"
        assert Path(record["path"]).name == name
        state[name] = record["sha256"]
    return state


def _record_steps(run) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    with write_hook(lambda step, target: steps.append((step, Path(target).name))):
        run()
    return steps


def _interrupt_at_every_step(folder: Path, run, errors=(KeyboardInterrupt,), pairs=_pairs) -> list[tuple[str, str]]:
    """Run ``run`` once per recorded step with each error raised there; check old pairs / new pairs after each."""
    run()  # an old pair in place (the previous run's)
    steps = _record_steps(run)
    assert any(step == "committed" for step, _ in steps), steps
    for error in errors:
        for index, (step, name) in enumerate(steps):
            before = pairs(folder)
            calls = iter(range(len(steps) + 100))

            def hook(step_now, target, index=index):
                if next(calls) == index:
                    raise error()

            with write_hook(hook), pytest.raises((error, DeployResError)):
                run()
            after = pairs(folder)
            # A stage may write several pairs in turn: those committed up to this step are new, the others old.
            committed = {n for s, n in steps[: index + 1] if s in ("committed", "placed")}
            for artifact in set(before) | set(after):
                if artifact in committed or artifact.removesuffix(".data") in committed:
                    assert artifact in after, f"{error.__name__} at step {index}: {artifact} was committed, then lost"
                else:
                    assert after.get(artifact) == before.get(artifact), \
                        f"{error.__name__} at step {index} ({step} of {name}) changed {artifact}"
    return steps


def _bump(values: list[int]) -> bytes:
    values[0] += 1
    return f"content {values[0]}".encode() * values[0]


def test_write_artifact_unit(tmp_path):
    """The commit itself, step by step, with and without an old pair, for an interrupt and an error."""
    counter = [0]
    target = tmp_path / "model.bin"

    def run():
        with write_artifact(target) as pending:
            pending.path.write_bytes(_bump(counter))
            pending.set_manifest("test", {"run": counter[0]})

    steps = _interrupt_at_every_step(tmp_path, run, errors=(KeyboardInterrupt, Injected))
    assert [s for s, _ in steps] == ["temp-created", "artifact-written", "manifest-written", "old-manifest-moved",
                                     "old-artifact-moved", "artifact-placed", "manifest-placed", "committed"]
    manifest = json.loads(manifest_path(target).read_text())
    assert manifest["artifact"]["path"] == str(target.absolute()) and manifest["run"] == counter[0]


def test_companion_files_are_part_of_the_unit(tmp_path):
    """External data beside the artifact moves with it; an old one goes when the new artifact has none."""
    counter = [0]
    target = tmp_path / "model.onnx"

    def run(data: bool = True):
        with write_artifact(target) as pending:
            pending.path.write_bytes(_bump(counter))
            if data:
                pending.path.with_name(target.name + ".data").write_bytes(b"weights %d" % counter[0])
            pending.set_manifest("test", {})

    steps = _interrupt_at_every_step(tmp_path, run, errors=(KeyboardInterrupt, Injected))
    assert {"companion-placed", "old-companion-moved"} <= {s for s, _ in steps}
    run(data=False)
    assert not (tmp_path / "model.onnx.data").exists()
    _pairs(tmp_path)


def test_optimize_with_external_data_interrupted_at_every_step(tmp_path, monkeypatch):
    """Past the 2 GB limit (lowered here) the weights go to ``<name>.data``: written and placed with the ONNX."""
    from deploy_res.core import onnx_io
    from deploy_res.exporters import pass_runner as runner
    from deploy_res.optimize import optimize_file

    monkeypatch.setattr(runner, "PROTOBUF_LIMIT", 10_000)
    monkeypatch.setattr(onnx_io, "PROTOBUF_LIMIT", 10_000)
    source = tmp_path / "src" / "big.onnx"
    source.parent.mkdir()
    onnx.save(_tiny_graph(), str(source))
    out = tmp_path / "out"
    out.mkdir()
    seeds = iter(range(1000))

    def run():
        from graph_builders import conv_bn

        onnx.save(conv_bn(channels=32, eps=1e-5 + next(seeds) * 1e-3), str(source))  # new weights each run
        optimize_file(source, out / "big.opt.onnx")

    steps = _interrupt_at_every_step(out, run)
    assert ("companion-placed", "big.opt.onnx") in steps, steps
    assert (out / "big.opt.onnx.data").stat().st_size > 5_000
    onnx.checker.check_model(str(out / "big.opt.onnx"))


def test_first_write_interrupted_leaves_neither(tmp_path):
    target = tmp_path / "model.bin"

    def run():
        with write_artifact(target) as pending:
            pending.path.write_bytes(b"new")
            pending.set_manifest("test", {})

    steps = _record_steps(run)
    for index in range(len(steps) - 1):  # every step before the commit finished
        for child in tmp_path.iterdir():
            child.unlink()
        calls = iter(range(100))

        def hook(_step, _target, index=index):
            if next(calls) == index:
                raise KeyboardInterrupt

        with write_hook(hook), pytest.raises(KeyboardInterrupt):
            run()
        assert _pairs(tmp_path) == {}, steps[index]


def test_stage_error_keeps_old_pair(tmp_path):
    """A stage that fails after writing its temporary file (a failed check) leaves the old pair untouched."""
    target = tmp_path / "model.bin"
    with write_artifact(target) as pending:
        pending.path.write_bytes(b"old")
        pending.set_manifest("test", {})
    before = _pairs(tmp_path)
    with pytest.raises(ValueError), write_artifact(target) as pending:
        pending.path.write_bytes(b"new")
        raise ValueError("parity failed")
    assert _pairs(tmp_path) == before and target.read_bytes() == b"old"


def test_artifact_without_manifest_removes_the_old_manifest(tmp_path):
    """``manifest=False`` (a bare optimised file): an old manifest never stays beside the new file."""
    target = tmp_path / "model.onnx"
    with write_artifact(target) as pending:
        pending.path.write_bytes(b"old")
        pending.set_manifest("test", {})
    with write_artifact(target, manifest=False) as pending:
        pending.path.write_bytes(b"new")
    assert target.read_bytes() == b"new" and not manifest_path(target).exists()


def test_full_disk_is_one_line(tmp_path):
    target = tmp_path / "model.bin"
    with pytest.raises(DeployResError, match=r"cannot write .*model.bin: No space left on device"):
        with write_artifact(target) as pending:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "model.bin").mkdir()
    with pytest.raises(DeployResError, match="it is a folder"):
        with write_artifact(tmp_path / "model.bin"):
            pass


# ------------------------------------------------------------------------------------- stages


def _tiny_graph() -> onnx.ModelProto:
    from graph_builders import conv_bn

    return conv_bn(channels=4)


def _new_graph_saver(source: Path):
    """A function that saves a different tiny graph at ``source`` on each call (its weight shifted by the
    call's index), so every pair a build from it writes is new."""
    offsets = iter(range(1000))

    def save() -> None:
        graph = _tiny_graph()
        weight = graph.graph.initializer[0]
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) + next(offsets), weight.name))
        onnx.save(graph, str(source))

    return save


def test_optimize_interrupted_at_every_step(tmp_path):
    from deploy_res.optimize import OptimizeSettings, optimize_file

    source = tmp_path / "src" / "tiny.onnx"
    source.parent.mkdir()
    onnx.save(_tiny_graph(), str(source))
    out = tmp_path / "out"
    out.mkdir()
    seeds = iter(range(1000))
    # A new seed each run makes a different check report, so the old and new manifests differ.
    _interrupt_at_every_step(out, lambda: optimize_file(source, out / "tiny.opt.onnx", OptimizeSettings(seed=next(seeds))))
    assert json.loads((out / "tiny.opt.onnx.json").read_text())["stage"] == "optimize"


def test_export_interrupted_at_every_step(tmp_path):
    from deploy_res.export import ExportSettings, export

    sizes = iter([(3, 8, 8), (3, 12, 12)] * 100)  # alternate: old and new pairs differ
    steps = _interrupt_at_every_step(tmp_path, lambda: export("tiny_nets:tiny_resnet", tmp_path, ExportSettings(input_size=next(sizes), exporter="torchscript", optimize=False)))
    assert ("committed", "tiny_resnet.onnx") in steps


def test_build_engine_interrupted_at_every_step(tmp_path):
    """FP32 ONNX Runtime engine: the graph passes' pair and the engine's pair."""
    from deploy_res.build import BuildSettings, build_engine

    source = tmp_path / "src" / "tiny.onnx"
    source.parent.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    save_new_graph = _new_graph_saver(source)

    def run():
        save_new_graph()
        build_engine(source, out, BuildSettings(backend="onnxruntime"))

    steps = _interrupt_at_every_step(out, run)
    names = {name for step, name in steps if step == "committed"}
    assert names == {"tiny.opt.onnx", "tiny.fp32.cpu.ort.onnx"}, names


def test_ctrl_c_is_held_during_the_commit(tmp_path):
    """A real SIGINT arriving mid-commit is delivered after it: the new pair is complete, then KeyboardInterrupt."""
    import os
    import signal

    target = tmp_path / "model.bin"

    def hook(step, _target):
        if step == "artifact-placed":
            os.kill(os.getpid(), signal.SIGINT)

    with write_hook(hook), pytest.raises(KeyboardInterrupt):
        with write_artifact(target) as pending:
            pending.path.write_bytes(b"new")
            pending.set_manifest("test", {})
    assert _pairs(tmp_path) == {"model.bin": sha256_file(target)}


def test_int8_build_interrupted_at_every_step(tmp_path):
    """INT8: graph passes, the calibration cache (one self-checking file: old or new, never torn), the Q/DQ
    ONNX and the engine, each pair old or new whatever step Ctrl-C hits."""
    from deploy_res.build import BuildSettings, build_engine

    source = tmp_path / "src" / "tiny.onnx"
    source.parent.mkdir()
    calib = tmp_path / "src" / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 4, 6, 6)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    save_new_graph = _new_graph_saver(source)

    def run():
        save_new_graph()
        build_engine(source, out, BuildSettings(backend="onnxruntime", precision="int8", calib_data=calib, calib_samples=8))

    def caches():
        return {p.name: p.read_bytes() for p in out.glob("*.calib-*.json")}

    steps = _interrupt_at_every_step(out, run, pairs=lambda folder: _pairs(folder, skip=".calib-"))
    names = {name for step, name in steps if step in ("committed", "placed")}
    assert {"tiny.portable.opt.onnx", "tiny.int8.onnxruntime.onnx", "tiny.int8.cpu.ort.onnx"} <= names, names
    assert any(".calib-" in name for name in names), names
    for text in caches().values():
        json.loads(text)  # whole JSON, whatever step was interrupted


def test_remove_artifact_is_whole_or_nothing(tmp_path):
    from deploy_res.core.artifact import remove_artifact

    target = tmp_path / "engine.xml"

    def make():
        with write_artifact(target) as pending:
            pending.path.write_bytes(b"<xml/>")
            pending.path.with_suffix(".bin").write_bytes(b"weights")
            pending.set_manifest("test", {})

    make()
    steps = _record_steps(lambda: remove_artifact(target, ("engine.bin",)))
    assert [s for s, _ in steps] == ["removed"] * 3 and list(tmp_path.iterdir()) == []
    for index in range(len(steps)):
        make()
        calls = iter(range(100))

        def hook(_step, _target, index=index):
            if next(calls) == index:
                raise Injected()

        with write_hook(hook), pytest.raises(Injected):
            remove_artifact(target, ("engine.bin",))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.bin", "engine.xml", "engine.xml.json"]
    remove_artifact(target, ("engine.bin",))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    """SIGKILL leaves no Python to clean up: the next write of the same artifact removes its staging folder and
    backups once they are old enough not to belong to a live writer."""
    import os
    import time

    target = tmp_path / "model.onnx"
    stale = [tmp_path / ".model.onnx.k1ll3d.tmp", tmp_path / ".model.onnx.json.abcd1234.old", tmp_path / ".model.onnx.abcd1234.old"]
    stale[0].mkdir()
    (stale[0] / "model.onnx").write_bytes(b"half")
    for path in stale[1:]:
        path.write_bytes(b"old")
    fresh = tmp_path / ".model.onnx.l1v3.tmp"
    fresh.mkdir()
    old = time.time() - 2 * 3600
    for path in stale:
        os.utime(path, (old, old))
    with write_artifact(target) as pending:
        pending.path.write_bytes(b"new")
        pending.set_manifest("test", {})
    assert not any(path.exists() for path in stale)
    assert fresh.exists()  # too recent: perhaps another process writing right now
