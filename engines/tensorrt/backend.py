"""TensorRT engines: a strongly typed build of an ONNX whose precision is already in it.

TensorRT 11 has no FP16/INT8 builder flags and no calibrators: an FP16 engine
comes from an FP16-typed ONNX and an INT8 engine from a Q/DQ ONNX
(``engines/precision``). The build follows NVIDIA's
``samples/python/introductory_parser_samples/onnx_resnet50.py``:
``Builder`` -> ``create_network(flags)`` -> ``OnnxParser.parse`` ->
``config.set_memory_pool_limit(WORKSPACE, ...)`` -> ``build_serialized_network``,
plus an optimisation profile for the dynamic batch axis, a timing cache reused
across builds and the builder optimisation level. Network flags are written
as ``1 << int(flag)``: STRONGLY_TYPED is required on 10.x for this behaviour
and is the only mode on 11.x.

The runner, like Polygraphy's ``TrtRunner``, allocates its device buffers once
at load (torch CUDA tensors sized for the largest shape of the optimisation
profile) and binds them to the execution context with ``set_tensor_address``;
each ``run`` sets the input shapes, copies the inputs into the front of those
buffers, calls ``execute_async_v3`` on torch's current stream and copies out
the front of each output buffer (:func:`used_view`).

``tensorrt`` is imported only when a build or load is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.files import write_bytes_atomic
from deploy_res.core.records import file_record
from deploy_res.core.errors import DeployResError
from deploy_res.engines.base import BuildResult, RunnerBase, TensorInfo, check_options

DEFAULT_WORKSPACE_BYTES = 1 << 30
"""Workspace memory-pool limit: 1 GiB, as in NVIDIA's sample."""
DEFAULT_OPTIMIZATION_LEVEL = 3
"""TensorRT's own default (0-5)."""
INSTEAD = "use --backend onnxruntime, or --onnx-only to write the ONNX a TensorRT build would consume and build it on a GPU machine"


def _missing() -> Optional[str]:
    """Why TensorRT cannot run here, or ``None``."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt-cu12, from NVIDIA's package index)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to this process (torch.cuda.is_available() is False)"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is missing"
    try:
        importlib.import_module("tensorrt")
    except Exception as exc:  # the bindings fail to import when libnvinfer is missing
        return f"TensorRT fails to import ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _trt():
    reason = _missing()
    if reason:
        raise DeployResError(f"TensorRT backend unavailable: {reason}; {INSTEAD}")
    return importlib.import_module("tensorrt")


def _major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def network_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED on 10.x (always on, and deprecated, in 11.x)."""
    if _major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


class TensorRTBackend:
    """Builds serialized plans and loads them into :class:`TensorRTRunner`."""

    name = "tensorrt"
    OPTIONS = frozenset({"device", "threads"})

    def available(self) -> Optional[str]:
        return _missing()

    def build(self, onnx_path: Path, engine_path: Path, settings: Mapping[str, Any]) -> BuildResult:
        """Settings: ``batch_range`` {min, opt, max} (default 1/8/32), ``workspace_bytes`` (1 GiB),
        ``optimization_level`` (3), ``timing_cache`` (a path; created if absent, updated after the build)."""
        trt = _trt()
        start = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        with open(onnx_path, "rb") as model:
            if not parser.parse(model.read(), str(onnx_path)):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise DeployResError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors[:400]}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.get("workspace_bytes", DEFAULT_WORKSPACE_BYTES)))
        config.builder_optimization_level = int(settings.get("optimization_level", DEFAULT_OPTIMIZATION_LEVEL))
        cache_path = Path(settings["timing_cache"]) if settings.get("timing_cache") else None
        cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
        timing_cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(timing_cache, False)

        batch = dict(settings.get("batch_range") or {"min": 1, "opt": 8, "max": 32})
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            rest = tuple(tensor.shape)[1:]
            if any(d < 0 for d in rest):
                raise DeployResError(f"input {tensor.name} has dynamic non-batch axes {tuple(tensor.shape)}; export with a fixed --input-size")
            profile.set_shape(tensor.name, (batch["min"], *rest), (batch["opt"], *rest), (batch["max"], *rest))
        config.add_optimization_profile(profile)

        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise DeployResError(f"TensorRT failed to build {Path(onnx_path).name}; run with TensorRT's verbose log (trtexec --onnx=... --verbose) to see why")
        write_bytes_atomic(engine_path, bytes(blob))
        if cache_path:
            write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
        manifest = {
            "engine": {"backend": self.name, "device": "cuda", "tensorrt": trt.__version__, "strongly_typed": True,
                       "batch_range": batch, "workspace_bytes": int(settings.get("workspace_bytes", DEFAULT_WORKSPACE_BYTES)),
                       "optimization_level": config.builder_optimization_level, "timing_cache": str(cache_path) if cache_path else None,
                       "gpu": _gpu_name()},
            "source": file_record(onnx_path),
        }
        return BuildResult(Path(engine_path), manifest, time.perf_counter() - start)

    def load(self, engine_path: Path, **options: Any) -> TensorRTRunner:
        """Deserialize the plan and allocate its buffers.

        Options: ``device`` ("cuda", the only one), ``threads`` (accepted for
        symmetry with the CPU backends; TensorRT runs on the GPU and ignores it).
        """
        check_options(self.name, options, self.OPTIONS)
        if options.get("device") not in (None, "cuda"):
            raise DeployResError(f"a TensorRT engine runs on the GPU (device cuda), not {options['device']}; {INSTEAD}")
        trt = _trt()
        start = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise DeployResError(f"TensorRT cannot deserialize {Path(engine_path).name} (built with another TensorRT version or GPU?); rebuild it here")
        runner = TensorRTRunner(trt, engine)
        runner.load_seconds = time.perf_counter() - start
        return runner


def _gpu_name() -> Optional[str]:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def check_within(name: str, shape: tuple, max_shape: tuple) -> None:
    """A one-line error when ``shape`` (a run's input) is not within ``max_shape`` (the buffer's, the profile's largest)."""
    if len(shape) != len(max_shape) or any(d > m for d, m in zip(shape, max_shape)):
        raise DeployResError(f"input {name} has shape {tuple(shape)}; this engine takes at most {tuple(max_shape)} "
                             "(its optimisation profile's largest): rebuild with a larger --batch MIN,OPT,MAX or split the batch")


def used_view(buffer, shape: tuple):
    """The front of a contiguous ``buffer`` viewed as ``shape``: where TensorRT reads or writes a run of that shape."""
    count = 1
    for d in shape:
        count *= int(d)
    return buffer.reshape(-1)[:count].view(tuple(int(d) for d in shape))


class TensorRTRunner(RunnerBase):
    """Runs a deserialized engine on ``execute_async_v3`` with torch CUDA buffers allocated once, at load.

    Each input's buffer holds the optimisation profile's largest shape
    (profile 0; a static input its own shape); each output's the shape
    TensorRT infers from those. A :class:`~deploy_res.engines.base.LayerProfilerHost`.
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, trt, engine) -> None:
        import torch

        super().__init__()
        self._torch = torch
        self.engine = engine
        self.context = engine.create_execution_context()
        self.inputs, self.outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            info = TensorInfo(name, tuple(engine.get_tensor_shape(name)), np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(info)
        self.max_shapes: dict[str, tuple] = {}
        for info in self.inputs:
            shape = tuple(info.shape)
            if any(d < 0 for d in shape):
                shape = tuple(engine.get_tensor_profile_shape(info.name, 0)[2])  # (min, opt, max)
            self.max_shapes[info.name] = shape
            self.context.set_input_shape(info.name, shape)
        for info in self.outputs:
            self.max_shapes[info.name] = tuple(self.context.get_tensor_shape(info.name))
        self.buffers = {info.name: torch.empty(self.max_shapes[info.name], dtype=getattr(torch, info.dtype), device="cuda")
                        for info in (*self.inputs, *self.outputs)}
        for name, buffer in self.buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        for info in self.inputs:
            array = np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
            check_within(info.name, array.shape, self.max_shapes[info.name])
            self.context.set_input_shape(info.name, tuple(array.shape))
            used_view(self.buffers[info.name], array.shape).copy_(torch.from_numpy(array))
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DeployResError("TensorRT execution failed (execute_async_v3 returned False)")
        stream.synchronize()
        return {info.name: used_view(self.buffers[info.name], tuple(self.context.get_tensor_shape(info.name))).cpu().numpy()
                for info in self.outputs}

    def set_profiler(self, profiler: Any) -> None:
        """Attach a TensorRT ``IProfiler`` to the execution context (``None`` detaches it)."""
        self.context.profiler = profiler

    def close(self) -> None:
        self.buffers = {}
        self.context = None
        self.engine = None
