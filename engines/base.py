"""The one interface every engine backend implements.

A backend *builds* an engine from an ONNX file (precision already lives in
that ONNX: FP16 types or Q/DQ nodes) into an artifact on disk with a manifest,
and *loads* an artifact into a :class:`Runner` with ``run(feeds) -> outputs``
and its I/O metadata. Validation and profiling use only this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

import numpy as np

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


class Runner(Protocol):
    """A loaded engine."""

    backend: str
    device: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feeds`` maps input names to arrays; returns outputs by name."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


class Backend(Protocol):
    name: str

    def available(self) -> Optional[str]:
        """``None`` if this backend can build and run here, else the one-line reason it cannot."""
        ...

    def build(self, onnx_path: Path, engine_path: Path, settings: Mapping[str, Any]) -> BuildResult:
        ...

    def load(self, engine_path: Path) -> Runner:
        ...
