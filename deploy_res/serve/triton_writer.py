"""Writing a Triton model repository: each model's version folder, ``config.pbtxt`` and lineage record,
the ensemble's preprocessing model, and the rename that puts the whole repository in place."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from deploy_res.core.errors import DeployResError
from deploy_res.core.files import write_json_atomic
from deploy_res.core.manifest import manifest_path
from deploy_res.core.records import file_record, library_versions, sha256_file
from deploy_res.core.manifest import lineage
from deploy_res.serve.pbtxt import Enum, check_schema, parameters, render, string_map
from deploy_res.serve.runtime import SPEC_FILE
from deploy_res.serve.triton_config import LABELS_FILE, _dims, _model_config, _Plan
from deploy_res.serve.triton_engine import Engine

LINEAGE_FILE = "deployres.lineage.json"
VERSION = "1"
PREPROCESS_INPUT = "IMAGE"
"""The ensemble's input: the bytes of one encoded image (JPEG, PNG, ...) per batch row, as UINT8 with dims [-1].

UINT8 rather than BYTES (TYPE_STRING): a UINT8 tensor crosses into the Python backend through
DLPack, which works with the stub nvidia-pytriton bundles under numpy 2 (its numpy bridge does not);
requests whose files differ in length are simply not merged into one batch."""

_PYTHON_BACKEND_MODEL = '''"""Triton Python-backend model written by `deployres triton --python-backend`.

It runs {engine} through deployres' own runner (deploy_res.serve.runtime.{cls});
the Python that Triton's stub runs must have deployres installed.
"""

from deploy_res.serve.runtime import {cls} as TritonPythonModel  # noqa: F401
'''



def _copy_onnx(source: Path, info: dict[str, Any], version_dir: Path) -> str:
    """Copy ``source`` as Triton's ``model.onnx`` (a folder ``model.onnx/`` holding it and its external data)."""
    if not info["external_data"]:
        shutil.copyfile(source, version_dir / "model.onnx")
        return "model.onnx"
    folder = version_dir / "model.onnx"
    folder.mkdir()
    shutil.copyfile(source, folder / "model.onnx")
    for location in info["external_data"]:
        data = source.parent / location
        if not data.is_file():
            raise DeployResError(f"{source.name}'s external data {location} is missing beside it; re-export the model")
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, folder / location)
    return "model.onnx/"


def _weights_file(engine: Engine) -> Optional[Path]:
    """An OpenVINO IR engine's weights (``<name>.bin`` beside ``<name>.xml``), or ``None``."""
    if engine.backend != "openvino" or engine.path.suffix != ".xml":
        return None
    named = engine.manifest.get("engine", {}).get("weights")
    weights = engine.path.with_name(named) if named else engine.path.with_suffix(".bin")
    if not weights.is_file():
        raise DeployResError(f"{engine.path.name}'s weights {weights.name} are missing beside it; rebuild the engine")
    return weights


def _write_openvino_ir(source: Path, version_dir: Path) -> str:
    try:
        import openvino as ov
    except ImportError:
        raise DeployResError("writing an OpenVINO model for Triton needs openvino (pip install openvino) to convert its ONNX to IR") from None
    model = ov.Core().read_model(str(source))
    ov.save_model(model, str(version_dir / "model.xml"), compress_to_fp16=False)
    return "model.xml + model.bin"


def _write_model(plan: _Plan, folder: Path, preferred: Sequence[int], cores: int) -> dict[str, Any]:
    engine = plan.engine
    model_dir = folder / plan.name
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True)
    config = _model_config(plan, preferred)
    served: dict[str, Any]
    if plan.python:
        engine_dir = version_dir / "engine"
        engine_dir.mkdir()
        shutil.copyfile(engine.path, engine_dir / engine.path.name)
        shutil.copyfile(manifest_path(engine.path), engine_dir / manifest_path(engine.path).name)
        weights = _weights_file(engine)
        if weights is not None:  # OpenVINO IR: the .bin beside the .xml
            shutil.copyfile(weights, engine_dir / weights.name)
        spec = {"engine": f"engine/{engine.path.name}", "backend": engine.backend, "precision": engine.precision,
                "inputs": [t.name for t in engine.inputs], "outputs": [t.name for t in engine.outputs]}
        if engine.device == "cpu":
            shutil.copyfile(engine.source, engine_dir / "source.onnx")
            spec["source"] = "engine/source.onnx"
        write_json_atomic(version_dir / SPEC_FILE, spec)
        (version_dir / "model.py").write_text(_PYTHON_BACKEND_MODEL.format(engine=engine.path.name, cls="ClassifierModel"))
        served = {"kind": "python", "file": f"{VERSION}/model.py + {VERSION}/engine/{engine.path.name}",
                  "what": "the engine itself, run by deployres' runner in Triton's Python backend"
                          + ("; its source ONNX rides along for CPUs other than the one it was built on" if engine.device == "cpu" else "")}
    elif engine.backend == "tensorrt":
        shutil.copyfile(engine.path, version_dir / "model.plan")
        served = {"kind": "tensorrt_plan", "file": f"{VERSION}/model.plan", "what": "the TensorRT plan itself"}
    elif engine.backend == "onnxruntime":
        name = _copy_onnx(engine.source, engine.onnx_info, version_dir)
        served = {"kind": "onnxruntime", "file": f"{VERSION}/{name}",
                  "what": "the engine's source ONNX (portable); the engine file is ONNX Runtime's graph optimised for the CPU it was "
                          "built on, and Triton's ONNX Runtime re-applies that optimisation at load for its own CPU"}
    elif _weights_file(engine) is not None:  # the engine is IR (+ a compiled-model cache for its CPU, not shipped)
        shutil.copyfile(engine.path, version_dir / "model.xml")
        shutil.copyfile(_weights_file(engine), version_dir / "model.bin")
        served = {"kind": "openvino", "file": f"{VERSION}/model.xml + model.bin",
                  "what": "the engine's OpenVINO IR (its compiled-model cache belongs to the CPU it was built on and is left out)"}
    else:
        name = _write_openvino_ir(engine.source, version_dir)
        served = {"kind": "openvino", "file": f"{VERSION}/{name}",
                  "what": "OpenVINO IR of the engine's source ONNX (the engine's compiled blob imports only on the CPU and OpenVINO version that wrote it)"}
    text = render(config)
    problem = check_schema(text)
    if problem:  # a bug in this module, not a user error
        raise RuntimeError(f"generated config for {plan.name} does not parse with Triton's schema: {problem}\n{text}")
    (model_dir / "config.pbtxt").write_text(text)
    if plan.labels is not None:
        (model_dir / LABELS_FILE).write_text("\n".join(plan.labels) + "\n")
    served_files = sorted(p for p in version_dir.rglob("*") if p.is_file())
    record = {
        "written_by": "deployres triton",
        "versions": library_versions(),
        "triton_model": plan.name,
        "served": {**served, "files": [{"path": str(p.relative_to(model_dir)), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in served_files]},
        "engine": {**file_record(engine.path), "backend": engine.backend, "device": engine.device, "precision": engine.precision,
                   "manifest": {"path": str(manifest_path(engine.path).absolute()), "sha256": sha256_file(manifest_path(engine.path))},
                   "built_for": {k: v for k, v in engine.manifest.get("engine", {}).items() if k not in ("backend",)},
                   **({"weights": file_record(_weights_file(engine))} if _weights_file(engine) is not None else {})},
        "source": {**file_record(engine.source), "manifest_sha256": sha256_file(manifest_path(engine.source)) if manifest_path(engine.source).is_file() else None,
                   "onnx": engine.onnx_info},
        **lineage(engine.manifest),
        "validation": {**engine.validation, **({"forced": engine.forced} if engine.forced else {})},
        "serving": {"max_batch_size": plan.max_batch_size, "batch_range": plan.batch, "max_queue_delay_microseconds": plan.delay_us,
                    "queue_delay_from": plan.delay_from, "instances": plan.instances, "threads_per_instance": plan.threads,
                    "streams_per_instance": plan.streams or 1 if engine.backend == "openvino" else None,
                    "cores": cores if engine.device == "cpu" else None, "preferred_batch_size": list(preferred) or None},
        "warnings": plan.warnings,
    }
    if engine.backend == "tensorrt":
        built = engine.manifest.get("engine", {})
        record["tensorrt"] = {"version": built.get("tensorrt"), "gpu": built.get("gpu"),
                              "warning": f"a TensorRT plan runs only on the TensorRT version that built it ({built.get('tensorrt')}) and a GPU of the "
                                         f"same compute capability ({built.get('gpu')}): serve it with the Triton release whose TensorRT is "
                                         f"{built.get('tensorrt')}, or rebuild the plan inside that container"}
    write_json_atomic(model_dir / LINEAGE_FILE, record)
    return {"name": plan.name, "backend": config.get("backend") or config.get("platform"), "engine": str(engine.path),
            "max_batch_size": plan.max_batch_size, "max_queue_delay_us": plan.delay_us, "queue_delay_from": plan.delay_from,
            "instances": plan.instances, "threads": plan.threads, "streams": plan.streams, "served": served["file"], "validation": engine.validation.get("status"),
            "warnings": plan.warnings}


def _write_ensemble(plan: _Plan, folder: Path) -> list[dict[str, Any]]:
    """``<name>_preprocess`` (Python backend: image bytes -> input tensor) and ``<name>_ensemble`` chaining it to the classifier."""
    import json

    engine = plan.engine
    pre = engine.manifest.get("preprocessing")
    if not pre:
        raise DeployResError(f"{engine.path.name}'s manifest has no preprocessing (input size, mean, std); --ensemble needs it")
    if plan.max_batch_size <= 0:
        raise DeployResError(f"{engine.path.name} has a fixed batch axis; --ensemble needs a model that batches")
    if len(engine.inputs) != 1:
        raise DeployResError(f"{engine.path.name} has {len(engine.inputs)} inputs; --ensemble feeds one image input")
    tensor = engine.inputs[0]
    image_dims = list(pre["input_size"])
    if _dims(tensor, True) != image_dims:
        raise DeployResError(f"{engine.path.name}'s input {tensor.name} has dims {_dims(tensor, True)}, its preprocessing makes {image_dims}")
    pre_name, ens_name = f"{plan.name}_preprocess", f"{plan.name}_ensemble"
    pre_config = {
        "name": pre_name, "backend": "python", "max_batch_size": plan.max_batch_size,
        "input": [{"name": PREPROCESS_INPUT, "data_type": Enum("TYPE_UINT8"), "dims": [-1]}],
        "output": [{"name": tensor.name, "data_type": Enum(tensor.triton_type), "dims": image_dims}],
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": 1}],
        "parameters": parameters({"preprocessing": json.dumps(pre, separators=(",", ":"))}),
    }
    outputs = []
    for index, out in enumerate(engine.outputs):
        entry = {"name": out.name, "data_type": Enum(out.triton_type), "dims": _dims(out, True)}
        if plan.labels is not None and index == 0:
            entry["label_filename"] = LABELS_FILE
        outputs.append(entry)
    ens_config = {
        "name": ens_name, "platform": "ensemble", "max_batch_size": plan.max_batch_size,
        "input": [{"name": PREPROCESS_INPUT, "data_type": Enum("TYPE_UINT8"), "dims": [-1]}],
        "output": outputs,
        "ensemble_scheduling": {"step": [
            {"model_name": pre_name, "model_version": -1, "input_map": string_map({PREPROCESS_INPUT: PREPROCESS_INPUT}),
             "output_map": string_map({tensor.name: "preprocessed"})},
            {"model_name": plan.name, "model_version": -1, "input_map": string_map({tensor.name: "preprocessed"}),
             "output_map": string_map({out.name: out.name for out in engine.outputs})},
        ]},
    }
    written = []
    for name, config in ((pre_name, pre_config), (ens_name, ens_config)):
        text = render(config)
        problem = check_schema(text)
        if problem:
            raise RuntimeError(f"generated config for {name} does not parse with Triton's schema: {problem}\n{text}")
        (folder / name / VERSION).mkdir(parents=True)
        (folder / name / "config.pbtxt").write_text(text)
        if name == pre_name:
            (folder / name / VERSION / "model.py").write_text(_PYTHON_BACKEND_MODEL.format(engine=f"the preprocessing of {engine.path.name}", cls="PreprocessModel"))
        elif plan.labels is not None:
            (folder / name / LABELS_FILE).write_text("\n".join(plan.labels) + "\n")
        written.append({"name": name, "backend": config.get("backend") or config.get("platform"), "engine": str(engine.path),
                        "max_batch_size": plan.max_batch_size})
    return written

def _commit(staging: Path, output: Path) -> None:
    """Rename the finished repository into place; an existing one is moved aside first and deleted after."""
    old = None
    if output.is_dir():
        if any(output.iterdir()):
            old = output.parent / f".{output.name}.old-{secrets.token_hex(4)}"
            os.rename(output, old)
        else:
            output.rmdir()
    try:
        os.rename(staging, output)
    except BaseException:
        if old is not None:
            os.rename(old, output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
