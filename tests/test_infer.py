"""deployres infer in one process: predictions equal to the engine run directly, sources, bad files, refusal, atomicity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from scale_helpers import photo_folder, tiny_engine

from deploy_res.core.records import file_record
from deploy_res.core.errors import DeployResError
from deploy_res.data.inputs import load_inputs
from deploy_res.engines import load_engine
from deploy_res.infer import InferSettings, infer, top_k
from deploy_res.models import Preprocessing
from deploy_res.core.manifest import read_manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    engine = tiny_engine(root / "model")
    labelled = photo_folder(root / "labelled", 21, classes=3)
    return engine, labelled, root


def test_top_k_order_and_scores():
    logits = np.array([[0.0, 2.0, 1.0, 2.0]], dtype=np.float32)
    indices, scores = top_k(logits, 3)
    assert indices.tolist() == [[1, 3, 2]]  # ties: lower index first
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(scores[0], expected[[1, 3, 2]], rtol=1e-6)


def test_predictions_equal_the_engine_run_directly(setup, tmp_path):
    engine, labelled, _ = setup
    out = tmp_path / "pred.parquet"
    summary = infer(engine, labelled, out, InferSettings(top_k=3, batch=4))
    assert summary["images"] == 21 and summary["skipped"] == []
    table = pq.read_table(out).to_pylist()

    pre = Preprocessing.from_dict(read_manifest(engine)["preprocessing"])
    samples = load_inputs(labelled, pre, labelled=True)  # the loaders' order: round-robin over the classes
    runner = load_engine(engine)
    name = runner.inputs[0].name
    logits = np.concatenate([runner.run({name: samples.arrays[i:i + 4]})[runner.outputs[0].name] for i in range(0, len(samples), 4)])
    indices, scores = top_k(logits, 3)
    assert [row["path"] for row in table] == samples.names
    assert [row["label"] for row in table] == samples.labels.tolist()
    assert [row["label_name"] for row in table] == [samples.class_names[i] for i in samples.labels]
    assert [row["top_k_indices"] for row in table] == indices.tolist()
    np.testing.assert_array_equal(np.array([row["top_k_scores"] for row in table], dtype=np.float32), scores)
    manifest = json.loads((tmp_path / "pred.parquet.json").read_text())
    assert manifest["stage"] == "infer" and manifest["inputs"]["engine"]["sha256"] == file_record(engine)["sha256"]
    assert manifest["images"] == 21 and manifest["class_names"] == ["class_0", "class_1", "class_2"]


def test_glob_and_parquet_list_sources(setup, tmp_path):
    engine, labelled, _ = setup
    by_folder = pq.read_table(infer(engine, labelled / "class_1", tmp_path / "a.parquet")["output"])
    by_glob = pq.read_table(infer(engine, f"{labelled}/class_1/*.jpg", tmp_path / "b.parquet")["output"])
    assert by_glob.column("top_k_indices").equals(by_folder.column("top_k_indices"))
    assert by_glob.column("path").to_pylist() == by_folder.column("path").to_pylist()
    listing = tmp_path / "list.parquet"
    files = sorted((labelled / "class_1").iterdir())
    pq.write_table(pa.table({"path": [str(f) for f in files], "label": [7] * len(files)}), listing)
    by_list = pq.read_table(infer(engine, listing, tmp_path / "c.parquet")["output"])
    assert by_list.column("top_k_scores").equals(by_folder.column("top_k_scores"))
    assert set(by_list.column("label").to_pylist()) == {7}


def test_bad_file_named_and_skipped_only_when_asked(setup, tmp_path):
    engine, labelled, _ = setup
    data = tmp_path / "data"
    shutil.copytree(labelled / "class_0", data)
    (data / "broken.jpg").write_bytes(b"not an image")
    result = run_cli("infer", engine, "--data", data, "-o", tmp_path / "p.parquet")
    assert result.exit_code == 2 and "broken.jpg" in result.output and "--skip-bad-files" in result.output
    assert not list(tmp_path.glob("p.parquet*")) and not list(tmp_path.glob(".p.parquet*"))
    result = run_cli("infer", engine, "--data", data, "-o", tmp_path / "p.parquet", "--skip-bad-files")
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 7
    assert json.loads((tmp_path / "p.parquet.json").read_text())["skipped"] == ["broken.jpg"]


def test_engine_that_failed_validation_is_refused_unless_forced(setup, tmp_path):
    engine, labelled, _ = setup
    copy = tmp_path / engine.name
    shutil.copy(engine, copy)
    shutil.copy(str(engine) + ".json", str(copy) + ".json")
    verdict = {"artifact_sha256": file_record(copy)["sha256"], "passed": False, "failed": ["output 'logits': cosine_min 0.5 < 0.99"]}
    (tmp_path / f"{copy.name}.validation.json").write_text(json.dumps(verdict))
    result = run_cli("infer", copy, "--data", labelled / "class_2", "-o", tmp_path / "p.parquet")
    assert result.exit_code == 2 and "FAILED validation" in result.output and "--force" in result.output
    assert not (tmp_path / "p.parquet").exists()
    result = run_cli("infer", copy, "--data", labelled / "class_2", "-o", tmp_path / "p.parquet", "--force")
    assert result.exit_code == 0, result.output
    # A verdict about other bytes does not count.
    (tmp_path / f"{copy.name}.validation.json").write_text(json.dumps({**verdict, "artifact_sha256": "0" * 64}))
    assert infer(copy, labelled / "class_2", tmp_path / "q.parquet")["validation"] is None


def test_interrupt_leaves_no_partial_file(setup, tmp_path):
    engine, labelled, _ = setup
    out = tmp_path / "p.parquet"

    def stop(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        infer(engine, labelled, out, InferSettings(batch=2), progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_user_errors_are_one_line(setup, tmp_path):
    engine, labelled, _ = setup
    with pytest.raises(DeployResError, match="must end in .parquet"):
        infer(engine, labelled, tmp_path / "p.csv")
    with pytest.raises(DeployResError, match="no files match"):
        infer(engine, f"{tmp_path}/nothing/*.jpg", tmp_path / "p.parquet")
    with pytest.raises(DeployResError, match="'path' column"):
        pq.write_table(pa.table({"file": ["a.jpg"]}), tmp_path / "l.parquet")
        infer(engine, tmp_path / "l.parquet", tmp_path / "p.parquet")
