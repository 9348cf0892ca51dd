"""A Triton model's settings and ``config.pbtxt`` content, decided from an engine before anything is written.

Batching (``max_batch_size``, dims), instances and threads, the queue delay
(measured latency against a budget), warm-up, labels, the default model name,
and the config dict that :mod:`deploy_res.serve.pbtxt` renders.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.serve.pbtxt import Enum, parameters
from deploy_res.serve.triton_engine import Engine, Tensor

LABELS_FILE = "labels.txt"


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


def _threads(engine: Engine, instances: Optional[int], threads: Optional[int], cores: int, streams: Optional[int] = None
             ) -> tuple[int, Optional[int]]:
    """``(instances, threads per instance)`` within ``cores``; ``streams`` (OpenVINO only) must not outnumber the threads."""
    if streams is not None and streams > 1 and engine.backend != "openvino":
        raise DeployResError(f"--streams is OpenVINO's (NUM_STREAMS); {engine.path.name} is a {engine.backend} engine: leave --streams out")
    if engine.device != "cpu":
        return instances or 1, None
    count = instances or 1
    if count > cores:
        raise DeployResError(f"{count} CPU instances on {cores} cores oversubscribe them; use --instances <= {cores} (or --cores for a larger serving machine)")
    per = threads or max(1, cores // count)
    if count * per > cores:
        raise DeployResError(f"{count} instances x {per} threads = {count * per} threads on {cores} cores oversubscribe them; "
                             f"lower --instances or --threads (or give the serving machine's --cores)")
    if streams is not None and streams > per:
        raise DeployResError(f"{streams} streams share an instance's {per} threads: each stream needs a thread; lower --streams or raise --threads")
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
    """The class names for ``label_filename``: ``path``'s (a names file or a labelled folder), else the names the
    engine's manifest records (``export --labels``), else None; a count other than the output's classes is one line."""
    from deploy_res.data.class_names import check_class_count, class_names_of, read_class_names

    labels = read_class_names(path) if path is not None else class_names_of(engine.manifest)
    if labels is None:
        return None
    classes = engine.outputs[0].shape[-1] if engine.outputs[0].shape else None
    check_class_count(labels, classes, f"--labels {Path(path).name}" if path is not None else "the manifest's class names",
                      f"{engine.path.name}'s output {engine.outputs[0].name!r}")
    return labels


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
    streams: Optional[int]
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
        if plan.streams and plan.streams > 1:
            params["streams"] = plan.streams
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
