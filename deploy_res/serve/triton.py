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

Rooms: :mod:`.triton_engine` reads an engine, :mod:`.triton_config` decides
each model's settings and config, :mod:`.triton_writer` writes the models and
their lineage, :mod:`.triton_check` serves the result and compares (``check``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from deploy_res.core.errors import DeployResError
from deploy_res.core.names import served_name
from deploy_res.serve.triton_check import check_repository
from deploy_res.serve.triton_config import _batching, _labels, _Plan, _queue_delay, _threads
from deploy_res.serve.triton_engine import read_engine
from deploy_res.serve.triton_settings import TritonSettings
from deploy_res.serve.triton_writer import _commit, _write_ensemble, _write_model

@dataclass
class TritonRepository:
    """What :func:`triton` wrote: the repository and one summary per model."""

    repository: Path
    models: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)



def _check_replaceable(output: Path) -> None:
    """A one-line error unless ``output`` is a model repository (every visible entry a model folder with a
    ``config.pbtxt``): ``--overwrite`` replaces repositories, never a folder of someone's other files."""
    for entry in sorted(output.iterdir()):
        if not entry.name.startswith(".") and not (entry / "config.pbtxt").is_file():
            raise DeployResError(f"--overwrite replaces a model repository, but {output} holds {entry.name}, which is not a model folder "
                                 f"with a config.pbtxt; choose an empty or new -o/--output")


def triton(engines: Sequence[str | Path], output_dir: str | Path, settings: TritonSettings = TritonSettings()) -> TritonRepository:
    """Write a Triton model repository at ``output_dir`` serving ``engines`` as ``settings`` say (see the module docstring).

    Defaults (:class:`~deploy_res.serve.triton_settings.TritonSettings`): model names
    ``<model>_<precision>_<backend>``; no latency budget (``max_queue_delay_microseconds: 0``);
    ``max_batch_size`` from the batch range; one instance; threads = cores / instances; native Triton
    backends; no ensemble; engines without a passing validation refused; an existing non-empty
    ``output_dir`` refused (``overwrite`` replaces one that is a model repository, never another folder). ``check`` (Python-backend repositories only) then serves the repository on the
    bundled ``tritonserver`` and compares each model's output with its engine run in-process
    (:func:`check_repository`).
    """
    names, ensemble = settings.names, settings.ensemble
    if not engines:
        raise DeployResError("give at least one engine")
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise DeployResError(f"output path {output} exists and is not a folder; choose another -o/--output")
    if output.is_dir() and any(output.iterdir()):
        if not settings.overwrite:
            raise DeployResError(f"{output} exists and is not empty; pass --overwrite to replace it (the whole repository is replaced at once)")
        _check_replaceable(output)
    if names and len(names) != len(engines):
        raise DeployResError(f"{len(names)} --name for {len(engines)} engines; give one name per engine, in order")
    cores = settings.cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))

    plans: list[_Plan] = []
    for index, path in enumerate(engines):
        engine = read_engine(path, force=settings.force)
        python = settings.python_backend or engine.backend not in ("onnxruntime", "tensorrt", "openvino")
        name = names[index] if names else served_name(engine.path, engine.backend, engine.precision)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise DeployResError(f"model name {name!r} has characters Triton's repository does not take; use letters, digits, _ . -")
        top, batch = _batching(engine, settings.max_batch_size)
        count, per = _threads(engine, settings.instances, settings.threads, cores, settings.streams)
        delay, how = _queue_delay(engine, batch, settings.latency_budget_ms, settings.max_queue_delay_us, per) if top > 0 else (0, "no batching")
        streams = settings.streams if engine.backend == "openvino" else None
        plan = _Plan(engine, name, python, top, batch, count, per, streams, delay, how,
                     _labels(Path(settings.labels) if settings.labels else None, engine))
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
            result.models.append(_write_model(plan, staging, settings.preferred_batch_sizes, cores))
            if ensemble:
                result.models += _write_ensemble(plan, staging)
        _commit(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for plan in plans:
        result.notes += [f"{plan.name}: {w}" for w in plan.warnings]
    if settings.check:
        result.checks = check_repository(output, [(plan.name, plan.engine, plan.max_batch_size) for plan in plans])
    return result
