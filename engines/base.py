"""The one interface every engine backend implements.

A backend *builds* an engine from an ONNX file (precision already lives in
that ONNX: FP16 types or Q/DQ nodes) into an artifact on disk with a manifest,
and *loads* an artifact into a :class:`Runner` with ``run(feeds) -> outputs``
and its I/O metadata. Everything above ``engines/`` (validation, profiling,
inference, serving, the build stage) reaches a backend only through
``deploy_res.engines``' functions (``load_engine``, ``get_backend``,
``backend_of``, ...) and this interface:

    with load_engine(path) as runner:
        outputs = runner.run({runner.inputs[0].name: batch})

Every runner has ``backend``, ``device``, ``inputs``, ``outputs``, ``notes``
and ``load_seconds`` and closes on leaving the ``with`` block, also on an
error (:class:`RunnerBase` gives the context manager and the defaults).
What only some backends can do is a typed capability, checked with
``isinstance``, never reached by ``getattr``:

* :class:`TraceProfiler` -- ONNX Runtime loaded with ``profile_prefix``:
  ``end_profiling()`` -> the JSON trace of every run;
* :class:`LayerCounters` -- OpenVINO loaded with ``perf_count=True``:
  ``profiling_info()`` -> per-layer times of the last run;
* :class:`LayerProfilerHost` -- TensorRT: ``set_profiler(profiler)`` attaches an
  ``IProfiler`` to the execution context (``None`` detaches it).

``Backend.load(engine_path, **options)`` has that one signature in every
backend; each backend's ``OPTIONS`` names the options it takes (its ``load``
docstring says what they mean) and an option it does not take is a one-line
error. ``threads`` and ``device`` are accepted by all three (TensorRT runs on
the GPU and ignores ``threads``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from deploy_res.core.errors import DeployResError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (``None`` or a name for dynamic axes) and numpy dtype."""

    name: str
    shape: tuple
    dtype: str


@dataclass
class BuildResult:
    """What a backend's build wrote."""

    engine_path: Path
    manifest: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Runner(Protocol):
    """A loaded engine; a context manager that closes it on exit (also when the block raises)."""

    backend: str
    device: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    notes: list[str]
    """What the load had to say (engine built for another CPU: re-optimised, CUDA provider fell back, ...)."""
    load_seconds: float
    """Seconds the load took (deserialising, compiling, opening the session)."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feeds`` maps input names to arrays; returns outputs by name."""
        ...

    def close(self) -> None:
        """Release the engine's resources (idempotent)."""
        ...

    def __enter__(self) -> "Runner":
        ...

    def __exit__(self, *exc_info: Any) -> None:
        ...


class RunnerBase:
    """What every runner shares: the context manager and the attributes' defaults.

    Subclasses set ``backend``, ``device``, ``inputs`` and ``outputs`` and
    implement ``run`` and ``close``; ``notes`` and ``load_seconds`` default to
    none and 0.0 unless the load sets them.
    """

    backend: str = ""
    device: str = "cpu"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    notes: list[str]
    load_seconds: float = 0.0

    def __init__(self, notes: Optional[list[str]] = None, load_seconds: float = 0.0) -> None:
        self.notes = list(notes or [])
        self.load_seconds = float(load_seconds)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@runtime_checkable
class TraceProfiler(Protocol):
    """ONNX Runtime loaded with ``profile_prefix=...``: its profiler records every run in a JSON trace."""

    def end_profiling(self) -> Optional[str]:
        """Stop the profiler; the trace file, or ``None`` when profiling was off."""
        ...


@runtime_checkable
class LayerCounters(Protocol):
    """OpenVINO loaded with ``perf_count=True``: per-layer performance counters."""

    def profiling_info(self) -> list[tuple[str, str, float]]:
        """``(layer name, exec type, ms)`` of the last run."""
        ...


@runtime_checkable
class LayerProfilerHost(Protocol):
    """TensorRT: an ``IProfiler`` attached to the execution context is told every layer's time."""

    def set_profiler(self, profiler: Any) -> None:
        """Attach ``profiler`` to the runs that follow; ``None`` detaches it."""
        ...


def check_options(backend: str, options: Mapping[str, Any], accepted: Collection[str]) -> None:
    """A one-line error naming a load option ``backend`` does not take (the options it takes are ``accepted``)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DeployResError(f"the {backend} backend takes no load option {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")


class Backend(Protocol):
    name: str
    OPTIONS: frozenset[str]
    """The options ``load`` takes."""

    def available(self) -> Optional[str]:
        """``None`` if this backend can build and run here, else the one-line reason it cannot."""
        ...

    def build(self, onnx_path: Path, engine_path: Path, settings: Mapping[str, Any]) -> BuildResult:
        ...

    def load(self, engine_path: Path, **options: Any) -> Runner:
        """Load ``engine_path`` (an engine this backend built, or a plain ONNX where the backend reads one).

        ``options`` are the backend's ``OPTIONS`` (see its ``load``); another is a one-line error.
        """
        ...
