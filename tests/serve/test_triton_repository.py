"""``deployres triton`` without a server: every config.pbtxt parsed with Triton's own schema and checked
against the ONNX graph; lineage; refusals (one line each); atomic writes."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from deploy_res.cli import cli
from deploy_res.core.records import sha256_file
from deploy_res.core.manifest import write_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.serve import TritonSettings, triton
from deploy_res.serve.triton_engine import TRITON_TYPES
from deploy_res.serve.triton_writer import LINEAGE_FILE

from serve_helpers import copy_engine

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (pip install 'deployres[triton]')")
from google.protobuf import text_format  # noqa: E402


def parse_config(model_dir: Path):
    """config.pbtxt through Triton's own schema (misspelt fields and bad enums raise)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def check_against_graph(config, onnx_path: Path, batched: bool = True) -> None:
    """Names, data types and dims (without the batch axis when batching) as in the ONNX graph."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    for declared, values in ((config.input, [v for v in graph.input if v.name not in initializers]), (config.output, list(graph.output))):
        assert [t.name for t in declared] == [v.name for v in values]
        for tensor, value in zip(declared, values):
            kind = value.type.tensor_type
            assert model_config_pb2.DataType.Name(tensor.data_type) == TRITON_TYPES[kind.elem_type]
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            assert list(tensor.dims) == (dims[1:] if batched else dims)
            if batched:
                assert not kind.shape.dim[0].HasField("dim_value"), "batching needs a dynamic batch axis in the graph"


def manifest_of(path: Path) -> dict:
    return json.loads(Path(str(path) + ".json").read_text())


def test_onnxruntime_repository_matches_graph_and_manifest(served_engine, tmp_path):
    repo = tmp_path / "repo"
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(1000)))
    result = triton([served_engine], repo, TritonSettings(latency_budget_ms=10_000, labels=labels, cores=4, instances=2))
    manifest = manifest_of(served_engine)
    (model,) = result.models
    model_dir = repo / model["name"]
    config = parse_config(model_dir)
    source = Path(manifest["source"]["path"])
    check_against_graph(config, source)
    assert config.backend == "onnxruntime" and config.name == model["name"] == "resnet18_fp32_onnxruntime"
    assert config.max_batch_size == manifest["batch_range"]["max"]
    # The served file is the portable source ONNX the engine was built from, not the CPU-specific engine.
    assert sha256_file(model_dir / "1" / "model.onnx") == manifest["source"]["sha256"]
    # Queue delay = budget - measured latency at the optimal batch; no preferred_batch_size unless asked.
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds < 10_000_000
    assert list(config.dynamic_batching.preferred_batch_size) == []
    (group,) = config.instance_group
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU" and group.count == 2
    threads = int(config.parameters["intra_op_thread_count"].string_value)
    assert group.count * threads <= 4 and config.parameters["inter_op_thread_count"].string_value == "1"
    (warmup,) = config.model_warmup
    assert warmup.batch_size == manifest["batch_range"]["opt"] and list(warmup.inputs) == [config.input[0].name]
    assert config.output[0].label_filename == "labels.txt" and (model_dir / "labels.txt").read_text().count("\n") == 1000
    lineage = json.loads((model_dir / LINEAGE_FILE).read_text())
    assert lineage["engine"]["sha256"] == sha256_file(served_engine) == manifest["artifact"]["sha256"]
    assert lineage["engine"]["manifest"]["sha256"] == sha256_file(Path(str(served_engine) + ".json"))
    assert lineage["validation"]["passed"] is True and lineage["validation"]["status"] == "passed"
    assert lineage["model"]["source"] == "resnet18" and lineage["batch_range"] == manifest["batch_range"]
    assert "budget" in lineage["serving"]["queue_delay_from"]
    assert not list(tmp_path.glob(".repo.*")), "no staging folder left behind"


def test_python_backend_and_ensemble_configs(served_engine, tmp_path):
    repo = tmp_path / "repo"
    result = triton([served_engine], repo, TritonSettings(python_backend=True, ensemble=True, max_queue_delay_us=1234, preferred_batch_sizes=(4, 8)))
    names = [m["name"] for m in result.models]
    assert names == ["resnet18_fp32_onnxruntime", "resnet18_fp32_onnxruntime_preprocess", "resnet18_fp32_onnxruntime_ensemble"]
    source = Path(manifest_of(served_engine)["source"]["path"])
    classifier = parse_config(repo / names[0])
    check_against_graph(classifier, source)
    assert classifier.backend == "python" and classifier.dynamic_batching.max_queue_delay_microseconds == 1234
    assert list(classifier.dynamic_batching.preferred_batch_size) == [4, 8]
    assert "ClassifierModel as TritonPythonModel" in (repo / names[0] / "1" / "model.py").read_text()
    shipped = repo / names[0] / "1" / "engine"
    assert sha256_file(shipped / served_engine.name) == sha256_file(served_engine)
    assert (shipped / "source.onnx").is_file() and (shipped / (served_engine.name + ".json")).is_file()
    pre = parse_config(repo / names[1])
    assert pre.backend == "python" and pre.output[0].name == classifier.input[0].name
    assert list(pre.output[0].dims) == list(classifier.input[0].dims)
    assert json.loads(pre.parameters["preprocessing"].string_value)["input_size"] == [3, 64, 64]
    ensemble = parse_config(repo / names[2])
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == classifier.max_batch_size
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == names[:2][::-1]
    assert dict(steps[0].output_map) == {classifier.input[0].name: "preprocessed"} == dict(steps[1].input_map)
    assert dict(steps[1].output_map) == {o.name: o.name for o in classifier.output}


def _fake_engine(served_engine: Path, folder: Path, backend: str, suffix: str, engine_fields: dict, batch_range: dict | None = None) -> Path:
    """An engine of another backend for config tests: the bytes are a stand-in; manifest and validation are real in form."""
    manifest = manifest_of(served_engine)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"resnet18.fp32{suffix}"
    shutil.copyfile(served_engine, path)
    body = {key: manifest[key] for key in ("model", "input", "output", "batch_range", "preprocessing", "source")}
    if batch_range:
        body["batch_range"] = batch_range
    body["engine"] = {"backend": backend, **engine_fields}
    body["settings"] = {"precision": "fp32", "backend": backend}
    write_manifest(path, "build-engine", body)
    validation = json.loads(Path(str(served_engine) + ".validation.json").read_text())
    validation.update(artifact=str(path), artifact_sha256=sha256_file(path), backend=backend)
    Path(str(path) + ".validation.json").write_text(json.dumps(validation))
    return path


def test_external_data_served_in_the_folder_form(served_engine, tmp_path):
    """A source ONNX with external data becomes ``1/model.onnx/`` holding the graph and its data files, loadable as is."""
    import numpy as np
    import onnxruntime as ort

    manifest = manifest_of(served_engine)
    source = tmp_path / "src" / "resnet18.opt.onnx"
    source.parent.mkdir()
    onnx.save_model(onnx.load(manifest["source"]["path"]), str(source), save_as_external_data=True, location="resnet18.opt.onnx.data")
    engine = copy_engine(served_engine, tmp_path / "engine")
    manifest = manifest_of(engine)
    manifest["source"] = {"path": str(source), "sha256": sha256_file(source), "bytes": source.stat().st_size}
    Path(str(engine) + ".json").write_text(json.dumps(manifest))
    result = triton([engine], tmp_path / "repo")
    folder = tmp_path / "repo" / result.models[0]["name"] / "1" / "model.onnx"
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["model.onnx", "resnet18.opt.onnx.data"]
    check_against_graph(parse_config(folder.parent.parent), source)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    served = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    original = ort.InferenceSession(manifest_of(served_engine)["source"]["path"], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(served, original)


def test_tensorrt_plan_repository(served_engine, tmp_path):
    plan = _fake_engine(served_engine, tmp_path / "plan", "tensorrt", ".plan",
                        {"device": "cuda", "tensorrt": "10.13.0.35", "gpu": "NVIDIA H100 80GB HBM3", "batch_range": {"min": 1, "opt": 8, "max": 16}})
    result = triton([plan], tmp_path / "repo", TritonSettings(latency_budget_ms=4))
    (model,) = result.models
    model_dir = tmp_path / "repo" / model["name"]
    config = parse_config(model_dir)
    check_against_graph(config, Path(manifest_of(served_engine)["source"]["path"]))
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16  # the plan's own profile, not the export's 32
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert not config.parameters, "no CPU thread parameters for a GPU plan"
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000  # half the budget: a plan cannot run here
    assert sha256_file(model_dir / "1" / "model.plan") == sha256_file(plan)
    lineage = json.loads((model_dir / LINEAGE_FILE).read_text())
    assert lineage["tensorrt"]["version"] == "10.13.0.35" and "H100" in lineage["tensorrt"]["gpu"]
    assert "TensorRT version" in lineage["tensorrt"]["warning"]
    assert any("TensorRT 10.13.0.35" in note for note in result.notes)


def test_openvino_repository(served_openvino_engine, tmp_path):
    engine = served_openvino_engine
    result = triton([engine], tmp_path / "repo", TritonSettings(cores=2))
    (model,) = result.models
    assert model["name"] == "resnet18_fp32_openvino"
    model_dir = tmp_path / "repo" / model["name"]
    config = parse_config(model_dir)
    check_against_graph(config, Path(manifest_of(engine)["source"]["path"]))
    assert config.backend == "openvino" and config.max_batch_size == manifest_of(engine)["batch_range"]["max"]
    # The engine's own IR is served (its compiled-model cache belongs to this CPU and stays out).
    assert sha256_file(model_dir / "1" / "model.xml") == sha256_file(engine)
    assert sha256_file(model_dir / "1" / "model.bin") == sha256_file(engine.with_suffix(".bin"))
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.bin", "model.xml"]
    assert config.parameters["INFERENCE_NUM_THREADS"].string_value == "2" and config.parameters["NUM_STREAMS"].string_value == "1"
    assert "HINT_BF16" not in config.parameters
    lineage = json.loads((model_dir / LINEAGE_FILE).read_text())
    assert lineage["engine"]["weights"]["sha256"] == sha256_file(engine.with_suffix(".bin"))
    from deploy_res.engines.openvino.backend import missing_bf16_isa

    if missing_bf16_isa() is None:  # this CPU has BF16: Triton's openvino backend cannot keep FP32 here
        assert any("HINT_BF16" in note for note in result.notes)


def test_openvino_python_backend_ships_ir_weights(served_openvino_engine, tmp_path):
    engine = served_openvino_engine
    triton([engine], tmp_path / "repo", TritonSettings(python_backend=True))
    shipped = tmp_path / "repo" / "resnet18_fp32_openvino" / "1" / "engine"
    assert sorted(p.name for p in shipped.iterdir()) == sorted([engine.name, engine.name + ".json", engine.with_suffix(".bin").name, "source.onnx"])


def test_openvino_streams_reach_the_runner_inside_the_python_backend(served_openvino_engine, served_engine, tmp_path):
    """``--streams`` is a parameter of the Python-backend model; its loader hands it to OpenVINO (NUM_STREAMS, one
    request per stream); the native openvino backend and other engines refuse it in one line."""
    import numpy as np

    from deploy_res.engines import load_engine
    from deploy_res.serve.runtime import load_served_engine, run_batched

    result = triton([served_openvino_engine], tmp_path / "repo", TritonSettings(python_backend=True, instances=1, threads=2, streams=2, cores=2))
    (model,) = result.models
    model_dir = tmp_path / "repo" / model["name"]
    config = parse_config(model_dir)
    assert config.parameters["threads"].string_value == "2" and config.parameters["streams"].string_value == "2"
    assert model["streams"] == 2 and json.loads((model_dir / LINEAGE_FILE).read_text())["serving"]["streams_per_instance"] == 2
    runner, _ = load_served_engine(model_dir / "1", threads=2, streams=2)
    assert len(runner.requests) == 2 and runner.compiled.get_property("NUM_STREAMS") == 2
    x = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    merged = np.concatenate([part["logits"] for part in run_batched(runner, [{"input": x[:2]}, {"input": x[2:]}])])
    np.testing.assert_allclose(merged, load_engine(served_openvino_engine).run({"input": x})["logits"], rtol=1e-3, atol=1e-3)
    cli_runner = CliRunner()
    for args, message in (([str(served_openvino_engine), "--streams", "2"], "add --python-backend"),
                          ([str(served_engine), "--streams", "2", "--python-backend"], "OpenVINO's (NUM_STREAMS)"),
                          ([str(served_openvino_engine), "--streams", "4", "--threads", "2", "--cores", "2", "--python-backend"], "each stream needs a thread")):
        out = tmp_path / f"refused{len(message)}"
        answer = cli_runner.invoke(cli, ["triton", *args, "-o", str(out)])
        assert answer.exit_code == 2 and message in answer.output and answer.output.count("\n") == 1, answer.output
        assert not out.exists()


def test_failed_validation_refused_unless_forced(served_engine, tmp_path):
    failed = copy_engine(served_engine, tmp_path / "failed", {"passed": False, "failed": ["output 'logits': cosine_min 0.5 < 0.999"]})
    with pytest.raises(DeployResError, match="FAILED validation .*cosine_min.*--force"):
        triton([failed], tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    result = triton([failed], tmp_path / "repo", TritonSettings(force=True))
    lineage = json.loads((tmp_path / "repo" / result.models[0]["name"] / LINEAGE_FILE).read_text())
    assert lineage["validation"]["status"] == "failed" and "FAILED" in lineage["validation"]["forced"]
    assert any("--force" in w for w in lineage["warnings"])


def test_stale_and_missing_validation_refused(served_engine, tmp_path):
    stale = copy_engine(served_engine, tmp_path / "stale", {"artifact_sha256": "0" * 64})
    with pytest.raises(DeployResError, match="validated other bytes"):
        triton([stale], tmp_path / "repo")
    Path(str(stale) + ".validation.json").unlink()
    with pytest.raises(DeployResError, match="no validation result.*deployres validate"):
        triton([stale], tmp_path / "repo")


def test_batch_range_triton_cannot_express(served_engine, tmp_path):
    plan = _fake_engine(served_engine, tmp_path / "plan", "tensorrt", ".plan",
                        {"device": "cuda", "tensorrt": "10.13", "gpu": "x", "batch_range": {"min": 4, "opt": 8, "max": 16}})
    with pytest.raises(DeployResError, match="batches 4..16.*from 1 to max_batch_size"):
        triton([plan], tmp_path / "repo")


def test_fixed_batch_graph_is_served_without_batching(tmp_path):
    """A graph whose batch axis is fixed: max_batch_size 0 and full dims; with a batch range above it, refused."""
    from deploy_res.serve.triton_config import _batching, _dims
    from deploy_res.serve.triton_engine import Engine, Tensor

    engine = Engine(tmp_path / "m.onnx", "", {"batch_range": {"min": 1, "opt": 1, "max": 1}}, "onnxruntime", "cpu", "fp32", tmp_path,
                    [Tensor("x", 1, (1, 3, 8, 8))], [Tensor("y", 1, (1, 10))], {}, {})
    assert _batching(engine, None)[0] == 0 and _dims(engine.inputs[0], False) == [1, 3, 8, 8]
    engine.manifest["batch_range"]["max"] = 8
    with pytest.raises(DeployResError, match="fixed at 1 but the batch range goes to 8"):
        _batching(engine, None)


def test_cli_one_line_errors(served_engine, tmp_path):
    runner = CliRunner()
    no_manifest = tmp_path / "bare.ort.onnx"
    no_manifest.write_bytes(served_engine.read_bytes())
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ([str(no_manifest), "-o", str(tmp_path / "r1")], "has no manifest"),
        ([str(served_engine), "-o", str(a_file)], "is not a folder"),
        ([str(tmp_path / "missing.plan"), "-o", str(tmp_path / "r2")], "not found"),
        ([str(served_engine), "-o", str(tmp_path / "r3"), "--instances", "64", "--cores", "8"], "oversubscribe"),
        ([str(served_engine), "-o", str(tmp_path / "r4"), "--instances", "2", "--threads", "3", "--cores", "4"], "oversubscribe"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["triton", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.count("\n") == 1, result.output


def test_cli_writes_and_overwrites_atomically(served_engine, tmp_path):
    runner = CliRunner()
    repo = tmp_path / "repo"
    first = runner.invoke(cli, ["triton", str(served_engine), "-o", str(repo), "--name", "first"])
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output and (repo / "first" / "config.pbtxt").is_file()
    again = runner.invoke(cli, ["triton", str(served_engine), "-o", str(repo), "--name", "second"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    replaced = runner.invoke(cli, ["triton", str(served_engine), "-o", str(repo), "--name", "second", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in repo.iterdir()) == ["second"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_interrupted_write_leaves_nothing(served_engine, tmp_path, monkeypatch):
    """An error half-way (here: in the second model) leaves neither a repository nor a staging folder."""
    module = importlib.import_module("deploy_res.serve.triton")  # the package exports the function under the same name

    calls = []
    original = module._write_model

    def failing(plan, folder, preferred, cores):
        calls.append(plan.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(plan, folder, preferred, cores)

    monkeypatch.setattr(module, "_write_model", failing)
    with pytest.raises(KeyboardInterrupt):
        triton([served_engine, served_engine], tmp_path / "repo", TritonSettings(names=("a", "b")))
    assert list(tmp_path.iterdir()) == []


def test_python_backend_model_on_another_cpu_uses_the_bundled_source(served_engine, tmp_path):
    """The Python-backend model's loader (run inside Triton's stub) on a CPU the engine was not built for, its original
    source gone: it loads the source ONNX shipped in the repository and computes the same outputs."""
    import numpy as np

    from deploy_res.engines import load_engine
    from deploy_res.serve.runtime import load_served_engine, run_batched

    triton([served_engine], tmp_path / "repo", TritonSettings(python_backend=True))
    version_dir = tmp_path / "repo" / "resnet18_fp32_onnxruntime" / "1"
    shipped_manifest = version_dir / "engine" / (served_engine.name + ".json")
    manifest = json.loads(shipped_manifest.read_text())
    manifest["engine"]["cpu"] = {**manifest["engine"]["cpu"], "model": "Some Other CPU", "isa": ["avx2"]}
    manifest["source"]["path"] = str(tmp_path / "gone.onnx")
    shipped_manifest.write_text(json.dumps(manifest))
    runner, notes = load_served_engine(version_dir, threads=1)
    assert any("bundled source source.onnx" in note for note in notes), notes
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    expected = load_engine(served_engine).run({"input": x})["logits"]
    split = run_batched(runner, [{"input": x[:1]}, {"input": x[1:]}])  # two requests merged into one batch, then split back
    assert [part["logits"].shape[0] for part in split] == [1, 2]
    np.testing.assert_allclose(np.concatenate([part["logits"] for part in split]), expected, rtol=0, atol=1e-4)
