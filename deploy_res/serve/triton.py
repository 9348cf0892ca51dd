"""``deployres triton``: a Triton Inference Server model repository from validated engines.

One model per engine, each ``REPO/<name>/`` holding ``config.pbtxt``, the
version folder ``1/`` and ``deployres.lineage.json``:

=================  =================================  =====================================================
engine             Triton model                       file in ``1/``
=================  =================================  =====================================================
ONNX Runtime       ``backend: "onnxruntime"``         ``model.onnx``: the engine's *source* ONNX (below);
                                                      a folder ``model.onnx/`` when it has external data
TensorRT plan      ``platform: "tensorrt_plan"``      ``model.plan``: the engine itself
OpenVINO           ``backend: "openvino"``            ``model.xml`` + ``model.bin``: the engine's IR
                                                      (IR of its source ONNX for a compiled-blob engine)
any, with          ``backend: "python"``              ``model.py`` (deployres' runner, see
``python_backend``                                    :mod:`deploy_res.serve.runtime`) + ``engine/``
=================  =================================  =====================================================

Why an ONNX Runtime model ships the source ONNX and not the engine file: an
ONNX Runtime engine is the graph ORT optimised at ``ORT_ENABLE_ALL`` *for
this CPU* (``com.microsoft.nchwc`` ops blocked for its vector width, see
:mod:`deploy_res.engines.onnxruntime.backend`). Triton runs its own ONNX
Runtime build, often on another CPU, and applies the same optimisation level
by default at load, so the portable file the engine was built from, checked
against the sha256 in the engine's manifest, is what it should be given. The
same holds for OpenVINO's compiled model: an OpenVINO engine is IR plus a
compiled-model cache for its CPU; Triton's ``openvino`` backend gets the IR.

Every config follows from the manifests and the ONNX graph:

* ``max_batch_size`` = the top of the manifest's batch range (the plan's own
  profile for TensorRT); ``dims`` without the batch axis, ``data_type`` from
  the graph. A graph whose batch axis is fixed is served with
  ``max_batch_size: 0`` and full dims. A plan whose profile starts above 1 is
  refused: Triton sends any batch from 1 to ``max_batch_size``.
* ``dynamic_batching`` with ``max_queue_delay_microseconds`` = the latency
  budget minus the engine's measured latency at the optimal batch (measured
  here, in-process, for CPU engines; half the budget for plans, which cannot
  run here), 0 without a budget. No ``preferred_batch_size`` unless asked:
  Triton's docs advise against it for most models.
* ``instance_group``: KIND_GPU for TensorRT (and ONNX Runtime CUDA engines),
  else KIND_CPU with ``instances`` x ``threads`` <= ``cores`` (default: one
  instance using every core of this machine; ``cores`` names the serving
  machine's when it differs). ONNX Runtime gets ``intra_op_thread_count`` =
  threads and ``inter_op_thread_count`` = 1, OpenVINO ``INFERENCE_NUM_THREADS``
  and ``NUM_STREAMS``: never more threads than cores.
* ``model_warmup`` at the optimal batch; ``label_filename`` with ``labels``.

An engine without a passing validation result for its current bytes
(``<engine>.validation.json``, written by ``deployres validate``) is refused
unless ``force``. The repository is written into a temporary folder beside
the destination and renamed into place: the whole repository or nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from deploy_res.core.files import file_record, library_versions, manifest_path, sha256_file, write_json_atomic
from deploy_res.core.manifest import lineage, read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import SERVE_CHECK_RTOL, seeded_array
from deploy_res.serve.pbtxt import Enum, check_schema, parameters, render, string_map
from deploy_res.serve.runtime import SPEC_FILE

LINEAGE_FILE = "deployres.lineage.json"
LABELS_FILE = "labels.txt"
VERSION = "1"
PREPROCESS_INPUT = "IMAGE"
"""The ensemble's input: the bytes of one encoded image (JPEG, PNG, ...) per batch row, as UINT8 with dims [-1].

UINT8 rather than BYTES (TYPE_STRING): a UINT8 tensor crosses into the Python backend through
DLPack, which works with the stub nvidia-pytriton bundles under numpy 2 (its numpy bridge does not);
requests whose files differ in length are simply not merged into one batch."""

# ONNX TensorProto element types -> Triton data types (model_config.proto DataType).
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                13: "TYPE_UINT64", 16: "TYPE_BF16"}
_GPU_BACKENDS = ("tensorrt",)
_PYTHON_BACKEND_MODEL = '''"""Triton Python-backend model written by `deployres triton --python-backend`.

It runs {engine} through deployres' own runner (deploy_res.serve.runtime.{cls});
the Python that Triton's stub runs must have deployres installed.
"""

from deploy_res.serve.runtime import {cls} as TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as Triton sees it: name, ONNX element type, shape (``None`` = dynamic)."""

    name: str
    elem_type: int
    shape: tuple

    @property
    def triton_type(self) -> str:
        try:
            return TRITON_TYPES[self.elem_type]
        except KeyError:
            raise DeployResError(f"tensor {self.name!r} has ONNX element type {self.elem_type}, which Triton has no type for") from None


@dataclass
class Engine:
    """An engine, read and checked: its manifest, source ONNX, graph I/O and validation verdict."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    backend: str
    device: str
    precision: str
    source: Path
    inputs: list[Tensor]
    outputs: list[Tensor]
    onnx_info: dict[str, Any]
    validation: dict[str, Any]
    forced: Optional[str] = None


@dataclass
class TritonRepository:
    """What :func:`triton` wrote: the repository and one summary per model."""

    repository: Path
    models: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- reading engines


def _graph_io(onnx_path: Path) -> tuple[list[Tensor], list[Tensor], dict[str, Any]]:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise DeployResError(f"{onnx_path} is not a readable ONNX file ({str(exc).splitlines()[0][:200]})") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}

    def tensors(values) -> list[Tensor]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            kind = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
            out.append(Tensor(value.name, kind.elem_type, shape))
        return out

    external = sorted({entry.value for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
                       for entry in init.external_data if entry.key == "location"})
    info = {"ir_version": model.ir_version, "opsets": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
            "external_data": external}
    return tensors(graph.input), tensors(graph.output), info


def _validation(engine: Path, sha256: str, force: bool) -> tuple[dict[str, Any], Optional[str]]:
    """The validation verdict for ``engine``'s current bytes; refusing (one line) unless ``force``."""
    import json

    path = engine.with_name(engine.name + ".validation.json")
    if not path.is_file():
        problem = f"{engine.name} has no validation result ({path.name}); run `deployres validate {engine}` first, or pass --force to serve it unvalidated"
        if not force:
            raise DeployResError(problem)
        return {"status": "missing", "path": str(path)}, problem
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeployResError(f"validation result {path} is unreadable ({exc}); re-run `deployres validate {engine}`") from None
    verdict = {"status": "passed" if result.get("passed") else "failed", "path": str(path), "sha256": sha256_file(path),
               "passed": bool(result.get("passed")), "failed": result.get("failed", []), "precision": result.get("precision"),
               "reference": result.get("reference"), "inputs": result.get("inputs"),
               "metrics": {k: v for k, v in (result.get("metrics") or {}).items() if k in ("max_rel_error", "cosine_mean", "cosine_min", "top1_agreement", "top1_drop_points")}}
    problem = None
    if result.get("artifact_sha256") and result["artifact_sha256"] != sha256:
        verdict["status"] = "stale"
        problem = f"{path.name} validated other bytes than {engine.name} holds now; re-run `deployres validate {engine}`, or pass --force"
    elif not result.get("passed"):
        reasons = "; ".join(result.get("failed", [])) or "see " + str(path)
        problem = f"{engine.name} FAILED validation ({reasons}); refusing to serve it (pass --force to serve it anyway)"
    if problem and not force:
        raise DeployResError(problem)
    return verdict, problem


def read_engine(path: str | Path, force: bool = False) -> Engine:
    """Read and check one engine for serving; every problem a user can cause is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"engine {path} not found" + ("; it is a folder" if path.is_dir() else ""))
    manifest = read_manifest(path)
    if manifest is None:
        raise DeployResError(f"{path.name} has no manifest ({manifest_path(path).name}); deployres triton serves engines written by `deployres build-engine`")
    if manifest.get("stage") != "build-engine" or not manifest.get("engine", {}).get("backend"):
        raise DeployResError(f"{path.name} is a{'n' if str(manifest.get('stage', '?'))[0] in 'aeiou' else ''} {manifest.get('stage', 'unknown')} artifact, "
                             f"not an engine; build one with `deployres build-engine {path}`")
    sha256 = sha256_file(path)
    recorded = manifest.get("artifact", {}).get("sha256")
    if recorded and recorded != sha256:
        raise DeployResError(f"{path.name} changed since its manifest was written (sha256 differs); rebuild it with `deployres build-engine`")
    engine = manifest["engine"]
    source = Path(manifest.get("source", {}).get("path", ""))
    if not source.is_file():
        raise DeployResError(f"the source ONNX {source} that {path.name} was built from is gone; the repository needs its graph "
                             "(names, dims, types); rebuild the engine")
    if manifest["source"].get("sha256") and sha256_file(source) != manifest["source"]["sha256"]:
        raise DeployResError(f"{source.name} changed after {path.name} was built from it; rebuild the engine")
    inputs, outputs, info = _graph_io(source)
    if not inputs or not outputs:
        raise DeployResError(f"{source.name} has no graph inputs or outputs")
    validation, problem = _validation(path, sha256, force)
    precision = manifest.get("settings", {}).get("precision") or engine.get("precision") or "fp32"
    return Engine(path, sha256, manifest, engine["backend"], engine.get("device", "cuda" if engine["backend"] in _GPU_BACKENDS else "cpu"),
                  precision, source, inputs, outputs, info, validation, problem)


# --------------------------------------------------------------------------- config pieces


def _batching(engine: Engine, max_batch_size: Optional[int]) -> tuple[int, dict[str, int]]:
    """``(max_batch_size, batch range)`` Triton can express for ``engine``; one-line error otherwise."""
    manifest = engine.manifest
    batch = dict((manifest.get("engine", {}).get("batch_range") if engine.backend == "tensorrt" else None)
                 or manifest.get("batch_range") or {})
    firsts = [t.shape[0] if t.shape else None for t in (*engine.inputs, *engine.outputs)]
    fixed = sorted({d for d in firsts if isinstance(d, int)})
    if any(not t.shape for t in engine.inputs):
        fixed = fixed or [0]
    if fixed:  # a static batch axis: no batching dimension for Triton
        top = batch.get("max")
        if top and fixed != [top] and top > 1:
            raise DeployResError(f"{engine.path.name}: the graph's batch axis is fixed at {fixed[0]} but the batch range goes to {top}; "
                                 "Triton would send batches the graph rejects (\"expected the shape of dimension 0 to be between 1 and 1\"): "
                                 "re-export with a dynamic batch axis (deployres export does)")
        if max_batch_size:
            raise DeployResError(f"{engine.path.name} has a fixed batch axis ({fixed[0]}); it cannot be served with --max-batch-size {max_batch_size}")
        return 0, batch
    if not batch:
        if not max_batch_size:
            raise DeployResError(f"{engine.path.name}'s manifest has no batch range; pass --max-batch-size")
        batch = {"min": 1, "opt": max_batch_size, "max": max_batch_size}
    low, opt, top = int(batch.get("min", 1)), int(batch.get("opt", batch.get("max", 1))), int(batch.get("max", 1))
    if not 1 <= low <= opt <= top:
        raise DeployResError(f"{engine.path.name}: batch range min {low}, opt {opt}, max {top} is not 1 <= min <= opt <= max")
    if engine.backend == "tensorrt" and low > 1:
        raise DeployResError(f"{engine.path.name} was built for batches {low}..{top}, but Triton sends any batch from 1 to max_batch_size; "
                             "rebuild the plan with a batch range starting at 1 (deployres export --batch 1,OPT,MAX)")
    chosen = max_batch_size or top
    if engine.backend == "tensorrt" and chosen > top:
        raise DeployResError(f"--max-batch-size {chosen} is above the plan's profile maximum {top}; rebuild the plan or lower it")
    return chosen, {"min": low, "opt": min(opt, chosen), "max": chosen}


def _dims(tensor: Tensor, batched: bool) -> list[int]:
    shape = tensor.shape[1:] if batched else tensor.shape
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def _threads(engine: Engine, instances: Optional[int], threads: Optional[int], cores: int) -> tuple[int, Optional[int]]:
    if engine.device != "cpu":
        return instances or 1, None
    count = instances or 1
    if count > cores:
        raise DeployResError(f"{count} CPU instances on {cores} cores oversubscribe them; use --instances <= {cores} (or --cores for a larger serving machine)")
    per = threads or max(1, cores // count)
    if count * per > cores:
        raise DeployResError(f"{count} instances x {per} threads = {count * per} threads on {cores} cores oversubscribe them; "
                             f"lower --instances or --threads (or give the serving machine's --cores)")
    return count, per


def measure_latency_ms(engine: Engine, batch: int, threads: Optional[int], runs: int = 5) -> Optional[float]:
    """Median latency (ms) of ``engine`` at ``batch`` here, in-process; ``None`` when it cannot run here."""
    from deploy_res.engines import get_backend, load_engine

    try:
        if get_backend(engine.backend).available() is not None:
            return None
    except DeployResError:
        return None
    try:
        runner = load_engine(engine.path, **({"threads": threads} if threads else {}))
    except DeployResError:
        return None
    with runner:
        feeds = {}
        for info, tensor in zip(runner.inputs, engine.inputs):
            shape = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape[1:]]
            feeds[info.name] = np.zeros(shape, dtype=np.dtype(info.dtype))
        runner.run(feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.run(feeds)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


def _queue_delay(engine: Engine, batch: dict[str, int], budget_ms: Optional[float], delay_us: Optional[int],
                 threads: Optional[int]) -> tuple[int, str]:
    """``(max_queue_delay_microseconds, how it was chosen)``."""
    if delay_us is not None:
        return int(delay_us), "given (--max-queue-delay-us)"
    if not budget_ms:
        return 0, "no latency budget: requests wait only while an instance is busy"
    opt = batch.get("opt", 1)
    measured = measure_latency_ms(engine, opt, threads)
    if measured is None:
        return int(budget_ms * 500), f"half the {budget_ms:g} ms budget ({engine.backend} cannot run here to measure its latency)"
    delay = max(0, int((budget_ms - measured) * 1000))
    how = f"{budget_ms:g} ms budget - {measured:.2f} ms measured here at batch {opt}"
    if delay == 0:
        how += " (over budget: no queueing)"
    return delay, how


def _warmup(engine: Engine, batch: int) -> list[dict[str, Any]]:
    inputs = []
    for tensor in engine.inputs:
        dims = _dims(tensor, batch > 0)
        if any(d < 0 for d in dims):
            return []  # warm-up needs concrete shapes
        inputs.append({"key": tensor.name, "value": {"data_type": Enum(tensor.triton_type), "dims": dims, "zero_data": True}})
    return [{"name": f"batch_{max(batch, 1)}", "batch_size": max(batch, 1), "inputs": inputs}]


def _labels(path: Optional[Path], engine: Engine) -> Optional[list[str]]:
    if path is None:
        return None
    labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    classes = engine.outputs[0].shape[-1] if engine.outputs[0].shape else None
    if isinstance(classes, int) and classes > 0 and len(labels) != classes:
        raise DeployResError(f"{Path(path).name} has {len(labels)} labels; {engine.path.name}'s output {engine.outputs[0].name!r} has {classes} classes")
    return labels


def default_name(engine_path: Path, backend: str, precision: str) -> str:
    """``resnet18.fp32.cpu.ort.onnx`` (onnxruntime, fp32) -> ``resnet18_fp32_onnxruntime``."""
    stem = engine_path.name
    for suffix in (".ort.onnx", ".plan", ".ov.xml", ".onnx", ".xml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"(\.(cpu|cuda|ov|opt|onnxruntime|tensorrt|openvino|portable|fp32|fp16|bf16|int8))+$", "", stem) or engine_path.stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{stem}_{precision}_{backend}")


# --------------------------------------------------------------------------- writing one model


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


def _io_config(engine: Engine, batched: bool, labels: Optional[list[str]]) -> tuple[list, list]:
    inputs = [{"name": t.name, "data_type": Enum(t.triton_type), "dims": _dims(t, batched)} for t in engine.inputs]
    outputs = []
    for index, t in enumerate(engine.outputs):
        entry = {"name": t.name, "data_type": Enum(t.triton_type), "dims": _dims(t, batched)}
        if labels is not None and index == 0:
            entry["label_filename"] = LABELS_FILE
        outputs.append(entry)
    return inputs, outputs


@dataclass
class _Plan:
    """The settings of one model, decided before anything is written."""

    engine: Engine
    name: str
    python: bool
    max_batch_size: int
    batch: dict[str, int]
    instances: int
    threads: Optional[int]
    delay_us: int
    delay_from: str
    labels: Optional[list[str]]
    warnings: list[str] = field(default_factory=list)


def _model_config(plan: _Plan, preferred: Sequence[int]) -> dict[str, Any]:
    engine = plan.engine
    inputs, outputs = _io_config(engine, plan.max_batch_size > 0, plan.labels)
    config: dict[str, Any] = {"name": plan.name}
    params: dict[str, Any] = {}
    kind = Enum("KIND_GPU" if engine.device != "cpu" else "KIND_CPU")
    if plan.python:
        config["backend"] = "python"
        if plan.threads:
            params["threads"] = plan.threads
    elif engine.backend == "tensorrt":
        config["platform"] = "tensorrt_plan"
    elif engine.backend == "onnxruntime":
        config["backend"] = "onnxruntime"
        if plan.threads:
            params.update({"intra_op_thread_count": plan.threads, "inter_op_thread_count": 1})
    elif engine.backend == "openvino":
        config["backend"] = "openvino"
        params.update({"INFERENCE_NUM_THREADS": plan.instances * (plan.threads or 1), "NUM_STREAMS": plan.instances})
        if engine.precision == "bf16":
            params["HINT_BF16"] = "YES"
    else:
        raise DeployResError(f"{engine.path.name}: no Triton backend for {engine.backend} engines; use --python-backend")
    config["max_batch_size"] = plan.max_batch_size
    config["input"] = inputs
    config["output"] = outputs
    if plan.max_batch_size > 0:
        dynamic: dict[str, Any] = {}
        if preferred:
            dynamic["preferred_batch_size"] = [b for b in preferred if b <= plan.max_batch_size]
        dynamic["max_queue_delay_microseconds"] = plan.delay_us
        config["dynamic_batching"] = dynamic
    config["instance_group"] = [{"kind": kind, "count": plan.instances}]
    if params:
        config["parameters"] = parameters(params)
    warm = _warmup(engine, plan.batch.get("opt", 1) if plan.max_batch_size > 0 else 0)
    if warm:
        config["model_warmup"] = warm
    return config


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
            "instances": plan.instances, "threads": plan.threads, "served": served["file"], "validation": engine.validation.get("status"),
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


# --------------------------------------------------------------------------- the API


def triton(
    engines: Sequence[str | Path],
    output_dir: str | Path,
    names: Sequence[str] = (),
    latency_budget_ms: Optional[float] = None,
    max_queue_delay_us: Optional[int] = None,
    preferred_batch_sizes: Sequence[int] = (),
    max_batch_size: Optional[int] = None,
    instances: Optional[int] = None,
    threads: Optional[int] = None,
    cores: Optional[int] = None,
    labels: Optional[str | Path] = None,
    python_backend: bool = False,
    ensemble: bool = False,
    force: bool = False,
    overwrite: bool = False,
    check: bool = False,
) -> TritonRepository:
    """Write a Triton model repository at ``output_dir`` serving ``engines`` (see the module docstring).

    Defaults: model names ``<model>_<precision>_<backend>``; no latency budget
    (``max_queue_delay_microseconds: 0``); ``max_batch_size`` from the batch
    range; one instance; threads = ``cores`` / instances; ``cores`` = the CPUs
    this process may use; native Triton backends (``python_backend`` serves
    every engine through deployres' runner instead); no ensemble; engines
    without a passing validation refused (``force`` serves them, recording
    why); an existing non-empty ``output_dir`` refused (``overwrite``
    replaces it whole). ``check`` (Python-backend repositories only) then
    serves the repository on the bundled ``tritonserver`` and compares each
    model's output with its engine run in-process (:func:`check_repository`).
    """
    if not engines:
        raise DeployResError("give at least one engine")
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise DeployResError(f"output path {output} exists and is not a folder; choose another -o/--output")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise DeployResError(f"{output} exists and is not empty; pass --overwrite to replace it (the whole repository is replaced at once)")
    if names and len(names) != len(engines):
        raise DeployResError(f"{len(names)} --name for {len(engines)} engines; give one name per engine, in order")
    if check and not python_backend:
        raise DeployResError("--check serves the repository on the tritonserver that nvidia-pytriton bundles, which has only "
                             "the Python backend; add --python-backend (native onnxruntime/tensorrt/openvino models need NVIDIA's container)")
    if latency_budget_ms is not None and latency_budget_ms <= 0:
        raise DeployResError("--latency-budget-ms must be positive")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    plans: list[_Plan] = []
    for index, path in enumerate(engines):
        engine = read_engine(path, force=force)
        python = python_backend or engine.backend not in ("onnxruntime", "tensorrt", "openvino")
        name = names[index] if names else default_name(engine.path, engine.backend, engine.precision)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise DeployResError(f"model name {name!r} has characters Triton's repository does not take; use letters, digits, _ . -")
        top, batch = _batching(engine, max_batch_size)
        count, per = _threads(engine, instances, threads, cores)
        delay, how = _queue_delay(engine, batch, latency_budget_ms, max_queue_delay_us, per) if top > 0 else (0, "no batching")
        plan = _Plan(engine, name, python, top, batch, count, per, delay, how, _labels(Path(labels) if labels else None, engine))
        if engine.forced:
            plan.warnings.append(f"served with --force: {engine.forced}")
        if engine.backend == "openvino" and not python and engine.precision == "fp32":
            from deploy_res.engines import missing_bf16_isa

            if missing_bf16_isa(engine.manifest.get("engine", {}).get("cpu") or None) is None:
                plan.warnings.append("Triton's openvino backend cannot force FP32 (its HINT_BF16 takes only YES): on this CPU, which has BF16, "
                                     "OpenVINO runs it in BF16 unlike the validated engine; serve it with --python-backend to keep FP32")
        if engine.backend == "tensorrt":
            plan.warnings.append(f"the plan needs TensorRT {engine.manifest.get('engine', {}).get('tensorrt')} in Triton and a "
                                 f"{engine.manifest.get('engine', {}).get('gpu')}-class GPU (same compute capability)")
        plans.append(plan)
    all_names = [p.name for p in plans] + ([f"{p.name}_{s}" for p in plans for s in ("preprocess", "ensemble")] if ensemble else [])
    duplicates = sorted({n for n in all_names if all_names.count(n) > 1})
    if duplicates:
        raise DeployResError(f"two models would be named {duplicates[0]!r}; give each engine its own --name")

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.tmp-{secrets.token_hex(4)}"
    staging.mkdir()
    result = TritonRepository(output)
    try:
        for plan in plans:
            result.models.append(_write_model(plan, staging, preferred_batch_sizes, cores))
            if ensemble:
                result.models += _write_ensemble(plan, staging)
        _commit(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for plan in plans:
        result.notes += [f"{plan.name}: {w}" for w in plan.warnings]
    if check:
        result.checks = check_repository(output, [(plan.name, plan.engine, plan.max_batch_size) for plan in plans])
    return result


CHECK_MAX_REL_ERROR = SERVE_CHECK_RTOL
"""``--check``: the largest max |served - in-process| / max |in-process| accepted (same engine, same
runtime; only thread-count-dependent summation order may differ)."""


def check_repository(repository: Path, models: Sequence[tuple[str, Engine, int]], ready_timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Serve ``repository`` on the bundled ``tritonserver`` (loopback, stopped by PID when done) and send
    each classifier model seeded inputs over HTTP; compare with its engine run in-process.

    Returns one record per model (``max_rel_error``, ``passed``); raises :class:`ValidationFailed`
    when a served output differs by more than :data:`CHECK_MAX_REL_ERROR`.
    """
    from deploy_res.core.errors import ValidationFailed
    from deploy_res.engines import load_engine
    from deploy_res.serve.server import start_server
    from deploy_res.validation.metrics import compare

    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype
    except ImportError:
        raise DeployResError("--check needs tritonclient (pip install 'deployres[triton]')") from None
    checks = []
    with start_server(repository, ready_timeout_s=ready_timeout_s) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            for name, engine, max_batch_size in models:
                with load_engine(engine.path) as runner:
                    batch = min(2, max_batch_size) if max_batch_size > 0 else None
                    rng = np.random.default_rng(0)
                    feeds, requests = {}, []
                    for info, tensor in zip(runner.inputs, engine.inputs):
                        shape = ([batch] if batch else []) + [d if isinstance(d, int) and d > 0 else 1 for d in (tensor.shape[1:] if batch else tensor.shape)]
                        feeds[info.name] = seeded_array(shape, np.dtype(info.dtype), rng)
                        request = httpclient.InferInput(info.name, list(shape), np_to_triton_dtype(feeds[info.name].dtype))
                        request.set_data_from_numpy(feeds[info.name])
                        requests.append(request)
                    expected = runner.run(feeds)
                reply = client.infer(name, requests)
                worst = max(compare(np.asarray(expected[out.name], np.float32), np.asarray(reply.as_numpy(out.name), np.float32))["max_rel_error"]
                            for out in engine.outputs)
                checks.append({"model": name, "url": server.http_url, "inputs": {k: list(v.shape) for k, v in feeds.items()},
                               "max_rel_error": float(worst), "passed": bool(worst <= CHECK_MAX_REL_ERROR)})
        finally:
            client.close()
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise ValidationFailed(f"{repository} was written, but served {failed[0]['model']} differs from its engine in-process "
                               f"(max rel error {failed[0]['max_rel_error']:.3g} > {CHECK_MAX_REL_ERROR:g})")
    return checks


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
