"""Range and memory guards: a batch is checked against the engine's batch range and the memory this machine has
before anything is allocated for it, so no typed number can make a command allocate more memory than there is.

:func:`check_batch` is the one check every stage uses (profile, validate, infer, calibration, the served load
generator, Ray actors). The bytes a batch needs are estimated from the graph (:func:`footprint`): its inputs and
outputs, plus the activations alive at once when the graph runs in order (a liveness walk over the shapes ONNX's
shape inference gives for one sample), plus the weights once. The memory available is the cgroup's limit less its
usage where one is set, else the kernel's ``MemAvailable``, whichever is smaller.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.errors import DeployResError

GIB = 1024 ** 3


@dataclass(frozen=True)
class Footprint:
    """Bytes one sample needs (``inputs``, ``outputs``, ``activations``: the peak alive at once) and ``fixed`` bytes
    (weights) whatever the batch; ``source`` says what the estimate was read from."""

    inputs: int
    outputs: int = 0
    activations: int = 0
    fixed: int = 0
    source: str = "inputs only"

    @property
    def per_sample(self) -> int:
        """Inputs and outputs, plus twice the activations' liveness peak (the kernels' workspaces: im2col, packing)."""
        return self.inputs + self.outputs + 2 * self.activations

    def bytes_for(self, batch: int, copies: int = 1) -> int:
        """Bytes ``batch`` samples need, with ``copies`` batches held at once (default 1)."""
        return self.fixed + batch * copies * self.per_sample


def _read_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_available() -> tuple[int, str]:
    """``(bytes, where from)``: the smaller of ``MemAvailable`` and the cgroup's limit less its usage (v2, then v1)."""
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            figures.append((max(0, limit - usage), "cgroup limit less usage"))
            break
    if not figures:  # no /proc (not Linux): the guard cannot know, so it does not refuse
        return 1 << 62, "unknown"
    return min(figures)


def _dims_bytes(dims: Any, dtype: Any) -> int:
    """Bytes of one sample of a tensor: every fixed axis but the first (the batch); a dynamic non-batch axis counts 1."""
    size = 1
    for dim in list(dims)[1:]:
        size *= int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else 1
    try:
        return size * np.dtype(dtype).itemsize
    except TypeError:
        return size * 4


def _onnx_of(artifact: Path, manifest: Optional[Mapping[str, Any]]) -> Optional[Path]:
    """The ONNX graph the estimate reads: the artifact's own source graph (standard operators) when it still exists,
    else the artifact when it is ONNX."""
    source = Path(((manifest or {}).get("source") or {}).get("path") or "")
    if source.suffix == ".onnx" and source.is_file():
        return source
    return artifact if artifact.suffix == ".onnx" and artifact.is_file() else None


@functools.lru_cache(maxsize=32)
def _graph_footprint(path: str, size: int, mtime_ns: int) -> Footprint:
    import onnx
    from onnx import helper

    model = onnx.load(path, load_external_data=False)
    weights = sum(len(t.raw_data) or 4 * max(len(t.float_data), 1) for t in model.graph.initializer)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read keeps the inputs-and-outputs estimate
        pass
    graph = model.graph
    initializers = {t.name for t in graph.initializer}

    def sample_bytes(value) -> Optional[int]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        except Exception:  # noqa: BLE001
            dtype = np.float32
        return _dims_bytes([None] + dims[1:] if dims else [None], dtype) if dims else np.dtype(dtype).itemsize

    sizes = {v.name: b for v in list(graph.value_info) + list(graph.input) + list(graph.output) if (b := sample_bytes(v)) is not None}
    inputs = sum(sizes.get(v.name, 0) for v in graph.input if v.name not in initializers)
    outputs = sum(sizes.get(v.name, 0) for v in graph.output)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    alive, live, peak = {}, 0, 0
    for node in graph.node:  # ONNX nodes are in topological order: a tensor lives from its node to its last reader
        for name in node.output:
            alive[name] = sizes.get(name, 0)
            live += alive[name]
        peak = max(peak, live)
        for name in node.input:
            if name in alive:
                consumers[name] -= 1
                if consumers[name] <= 0:
                    live -= alive.pop(name)
    return Footprint(inputs=inputs, outputs=outputs, activations=peak, fixed=weights, source=f"the graph of {Path(path).name}")


def footprint(artifact: str | os.PathLike, manifest: Optional[Mapping[str, Any]] = None) -> Footprint:
    """What one sample of ``artifact`` needs (see :class:`Footprint`): from its ONNX graph when one can be read, else
    its inputs from the manifest only (a TensorRT plan without its source)."""
    artifact = Path(artifact)
    graph = _onnx_of(artifact, manifest)
    if graph is not None:
        stat = graph.stat()
        try:
            return _graph_footprint(str(graph), stat.st_size, stat.st_mtime_ns)
        except Exception:  # noqa: BLE001 - an unreadable graph is reported by the stage that loads it
            pass
    spec = (manifest or {}).get("input") or {}
    return Footprint(inputs=_dims_bytes(spec.get("shape") or [], spec.get("dtype") or "float32"))


def _range_of(manifest: Optional[Mapping[str, Any]]) -> Optional[tuple[int, int]]:
    batch_range = (manifest or {}).get("batch_range") or {}
    if not batch_range.get("max"):
        return None
    return int(batch_range.get("min") or 1), int(batch_range["max"])


def outside_range(batch: int, manifest: Optional[Mapping[str, Any]], any_batch: bool = False, what: str = "batch") -> Optional[str]:
    """``None`` if ``batch`` may run on the artifact ``manifest`` describes, else why not (one line, with the fix)."""
    bounds = _range_of(manifest)
    if bounds is None or bounds[0] <= batch <= bounds[1]:
        return None
    backend = ((manifest or {}).get("engine") or {}).get("backend")
    text = f"{what} {batch} is outside the batch range {bounds[0]}..{bounds[1]} this artifact was exported for"
    if backend == "tensorrt":
        return f"{text}; a TensorRT plan runs only inside its range: re-export with --batch-range MIN,OPT,MAX"
    if any_batch:
        return None
    return f"{text}; pass --any-batch to run it anyway, or re-export with --batch-range MIN,OPT,MAX"


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB" if value >= GIB / 10 else f"{value / 1024 ** 2:.0f} MiB"


def check_memory(batch: int, need: Footprint, what: str = "batch", copies: int = 1) -> None:
    """A one-line error when ``batch`` samples (``copies`` batches at once) need more bytes than this machine has."""
    available, where = memory_available()
    wanted = need.bytes_for(batch, copies)
    if wanted <= available:
        return
    fits = max(0, (available - need.fixed) // max(1, need.per_sample * copies))
    advice = f"use {what} {fits} or less" if fits else "free memory first"
    raise DeployResError(f"{what} {batch} needs about {_gib(wanted)} (inputs, outputs and activations estimated from {need.source}) "
                         f"but this machine has {_gib(available)} available ({where}); {advice}")


def actor_memory(artifact: str | os.PathLike, manifest: Optional[Mapping[str, Any]], batch: int, copies: int = 1) -> int:
    """Bytes one worker (a Ray actor) needs to hold ``artifact`` and run ``copies`` batches of ``batch`` at once (default 1)."""
    return footprint(artifact, manifest).bytes_for(batch, copies)


def check_pool(workers: int, each: int, available: int, where: str) -> None:
    """A one-line error when ``workers`` workers (Ray actors) of ``each`` bytes need more than ``available`` bytes
    (``where``: what that figure is); 0 for ``each`` or ``available`` means not known, and nothing is checked."""
    if not each or not available or workers * each <= available:
        return
    fits = available // each
    advice = f"use --actors {fits} or fewer, or a smaller --batch" if fits else "use a smaller --batch or a cluster with more memory"
    raise DeployResError(f"{workers} Ray actor(s) need about {_gib(each)} each (engine and batches, estimated from the graph) "
                         f"but {where} has {_gib(available)}; {advice}")


def check_batch(artifact: str | os.PathLike, manifest: Optional[Mapping[str, Any]], batch: int, what: str = "--batch",
                any_batch: bool = False, copies: int = 1) -> None:
    """The guard every stage runs before allocating ``batch`` samples for ``artifact``: inside its recorded batch
    range (unless ``any_batch`` where the backend allows it) and within the memory available; else one line."""
    reason = outside_range(batch, manifest, any_batch, what)
    if reason:
        raise DeployResError(reason)
    check_memory(batch, footprint(artifact, manifest), what, copies)
