"""What a profile is told: :class:`ProfileSettings` (and :class:`ServedSettings` for a server), checked whole when made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from deploy_res.core.errors import DeployResError

TORCH_MODES = ("eager", "compile")
PROTOCOLS = ("http", "grpc")
DEFAULT_DURATION_S = 5.0


@dataclass(frozen=True)
class ServedSettings:
    """A served section: the models at ``server`` measured under each concurrency level.

    server: a model repository folder (started on the bundled tritonserver on loopback) or ``HOST:PORT`` of a running Triton.
    models: the models to measure (default: every model it serves).
    concurrency: concurrent clients per level (default 1, 2, 4, 8).
    duration_s: timed seconds per level (default 5).
    protocol: the client protocol, ``http`` (default) or ``grpc``.
    """

    server: str
    models: tuple[str, ...] = ()
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    duration_s: float = DEFAULT_DURATION_S
    protocol: str = "http"

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise DeployResError(f"concurrency levels must be positive integers, got {self.concurrency}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise DeployResError(f"--server-duration-s must be a positive number of seconds, got {self.duration_s}")
        if self.protocol not in PROTOCOLS:
            raise DeployResError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")


@dataclass(frozen=True)
class ProfileSettings:
    """One profile; every field has the command line's default.

    batches: batch sizes measured (default 1 and 8; repeats dropped).
    warmup_s: untimed warm-up per batch size (default 1 s).
    duration_s: timed seconds per batch size, all artifacts together (default None: 5 s, or ``iterations``).
    iterations: timed rounds per batch size instead of a duration (default None).
    threads: intra-op threads of ONNX Runtime and torch (default None: the runtime's).
    torch_modes: the PyTorch original named in the first artifact's manifest, ``eager`` and/or ``compile``
        (default none).
    layer_iterations: profiled runs per batch size for the per-layer breakdown (default 10; 0 skips it).
    backend: run plain ONNX artifacts on ``onnxruntime`` or ``openvino`` (default None: ONNX Runtime;
        engines run on their own).
    served: also measure served models (default None).
    any_batch: run engines at batch sizes outside the range their manifest records (default False: such a batch is
        skipped for that engine, with the reason; :mod:`deploy_res.core.guards`).
    """

    batches: tuple[int, ...] = (1, 8)
    warmup_s: float = 1.0
    duration_s: Optional[float] = None
    iterations: Optional[int] = None
    threads: Optional[int] = None
    torch_modes: tuple[str, ...] = ()
    layer_iterations: int = 10
    backend: Optional[str] = None
    served: Optional[ServedSettings] = None
    any_batch: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.torch_modes, str):  # "eager", not ("eager",)
            object.__setattr__(self, "torch_modes", (self.torch_modes,))
        batches = tuple(dict.fromkeys(int(b) for b in self.batches))
        if not batches or min(batches) < 1:
            raise DeployResError(f"batch sizes must be positive integers, got {self.batches}")
        object.__setattr__(self, "batches", batches)
        if self.duration_s is not None and self.iterations is not None:
            raise DeployResError("give --duration-s or --iterations, not both")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise DeployResError(f"--duration-s must be a positive number of seconds, got {self.duration_s}")
        if self.iterations is not None and self.iterations < 1:
            raise DeployResError("iterations must be at least 1")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise DeployResError(f"--warmup-s must be 0 or more seconds, got {self.warmup_s}")
        if self.layer_iterations < 0:
            raise DeployResError(f"--layer-iterations must be 0 or more, got {self.layer_iterations}")
        unknown = [m for m in self.torch_modes if m not in TORCH_MODES]
        if unknown:
            raise DeployResError(f"unknown torch mode {unknown[0]!r}; choose from {', '.join(TORCH_MODES)}")

    @property
    def timed_s(self) -> float:
        """Timed seconds per batch size: ``duration_s``, else 5."""
        return self.duration_s if self.duration_s is not None else DEFAULT_DURATION_S
