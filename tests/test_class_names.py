"""Issue 20 item 5: class names from ``--labels`` (a names file or a labelled folder), recorded once at export and
carried down the lineage: ``infer`` writes them beside indices, ``validate`` and the report name the classes,
``triton`` writes ``label_filename`` without being asked again; a count that does not match the head is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import one_error_line, run_cli
from deploy_res.data.class_names import read_class_names
from deploy_res.validation.metrics import MetricState

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SMALL = ("--input-size", "3,64,64", "--exporter", "torchscript", "--no-optimize", "--num-classes", "10")


@pytest.fixture(scope="module")
def named_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("named")
    labels = folder / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n\n")
    out = folder / "out"
    result = run_cli("export", "resnet18", "--labels", labels, "-o", out, *SMALL, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "resnet18.onnx"


def test_export_records_the_names_and_engines_inherit_them(named_export, tmp_path):
    manifest = json.loads(named_export.with_name(named_export.name + ".json").read_text())
    assert manifest["model"]["class_names"] == NAMES
    result = run_cli("build-engine", named_export, "--backend", "onnxruntime", "-o", tmp_path, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (engine_manifest,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.cpu.ort.onnx.json")]
    assert engine_manifest["model"]["class_names"] == NAMES


def test_infer_writes_names_beside_indices(named_export, tmp_path):
    import pyarrow.parquet as pq

    photos = tmp_path / "photos"
    assert run_cli("sample-photos", photos, "--count", "3").exit_code == 0
    output = tmp_path / "pred.parquet"
    result = run_cli("infer", named_export, "--data", photos, "-o", output, "--top-k", "3", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pq.read_table(output).to_pylist()
    assert len(table) == 3
    for row in table:
        assert row["top_k_names"] == [NAMES[i] for i in row["top_k_indices"]]


def test_validate_names_the_worst_classes(named_export, tmp_path):
    result = run_cli("validate", named_export, "--samples", "16", "--json", tmp_path / "v.json", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "v.json").read_text())
    assert record["class_names"] == NAMES
    assert record["worst_classes"] and all(row["name"] == NAMES[row["class"]] for row in record["worst_classes"])
    assert sum(1 for row in record["worst_classes"]) <= 5
    assert all(w["reference_name"] == NAMES[w["reference_class"]] for w in record["worst_samples"])


def test_triton_writes_label_filename_from_the_manifest(named_export, tmp_path):
    engine_dir = tmp_path / "engine"
    assert run_cli("build-engine", named_export, "--backend", "onnxruntime", "-o", engine_dir).exit_code == 0
    (engine,) = engine_dir.glob("*.cpu.ort.onnx")
    assert run_cli("validate", engine, "--samples", "8").exit_code == 0
    repo = tmp_path / "repo"
    result = run_cli("triton", engine, "-o", repo, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (labels,) = repo.glob("*/labels.txt")
    assert labels.read_text().splitlines() == NAMES
    assert 'label_filename: "labels.txt"' in (labels.parent / "config.pbtxt").read_text()


def test_a_labelled_folder_gives_the_names(tmp_path):
    for name in ("tabby", "beagle", "apple"):
        (tmp_path / "data" / name).mkdir(parents=True)
    assert read_class_names(tmp_path / "data") == ["apple", "beagle", "tabby"]


@pytest.mark.parametrize("content, message", [
    ("a\nb\nc\n", "error: --labels labels.txt has 3 class names; resnet18 outputs 10 classes: give one name per output"),
    ("", "error: --labels labels.txt holds no class names; write one name per line"),
    ("a\nb\na\n", "error: --labels labels.txt names 'a' more than once; every class needs its own name"),
])
def test_bad_names_are_one_line_and_nothing_is_written(tmp_path, content, message):
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    out = tmp_path / "out"
    assert one_error_line(run_cli("export", "resnet18", "--labels", labels, "-o", out, *SMALL)) == message
    assert not out.exists()
    assert one_error_line(run_cli("run", "resnet18", "--labels", labels, "-o", out, "--num-classes", "10", "--input-size", "3,64,64")) == message


def test_per_class_agreement_merges_exactly():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 4))
    artifact = reference + rng.normal(scale=0.8, size=reference.shape)
    whole = MetricState.of(reference, artifact)
    parts = MetricState.merged([MetricState.of(reference[i:i + 7], artifact[i:i + 7]) for i in range(0, 40, 7)])
    assert whole.worst_classes() == parts.worst_classes()
    agree = reference.argmax(1) == artifact.argmax(1)
    for row in whole.worst_classes():
        members = reference.argmax(1) == row["class"]
        assert row["samples"] == members.sum() and row["agreement"] == pytest.approx(agree[members].mean())
    assert [r["agreement"] for r in whole.worst_classes()] == sorted(r["agreement"] for r in whole.worst_classes())
