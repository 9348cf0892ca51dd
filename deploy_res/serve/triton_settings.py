"""What ``deployres triton`` is told: :class:`TritonSettings`, checked whole before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deploy_res.core.errors import DeployResError, require_at_least_one


def in_streams(streams: Optional[int]) -> str:
    """`` in N streams`` where an instance has several (OpenVINO), else nothing: how every command and report says it."""
    return f" in {streams} streams" if (streams or 1) > 1 else ""


@dataclass(frozen=True)
class TritonSettings:
    """One model repository; every field has the command line's default.

    names: a model name per engine, in order (default: ``<model>_<precision>_<backend>``).
    latency_budget_ms: queue delay = this budget - the engine's measured latency at the optimal batch
        (default None: no queueing, ``max_queue_delay_microseconds: 0``).
    max_queue_delay_us: ``max_queue_delay_microseconds`` set directly (default None).
    preferred_batch_sizes: ``preferred_batch_size`` (default none; Triton advises against it for most models).
    max_batch_size: ``max_batch_size`` (default None: the top of the manifest's batch range).
    instances: instances per model (default None: 1).
    threads: CPU threads per instance (default None: ``cores`` / instances).
    streams: OpenVINO streams per instance, sharing its threads (default None: one); Python backend only, where
        deployres' runner cuts each batch into that many slices run at once.
    cores: cores of the serving machine (default None: the CPUs this process may use).
    labels: class names, one per line, for ``label_filename`` (default None: the manifest's, if any).
    python_backend: serve every engine through Triton's Python backend with deployres' runner (default False:
        Triton's native onnxruntime, tensorrt and openvino backends).
    ensemble: add a preprocessing model (image bytes in) and an ensemble chaining it to each classifier (default False).
    force: serve engines without a passing validation, recording why (default False: refuse them).
    overwrite: replace a non-empty output folder whole (default False: refuse it).
    check: serve the repository on the bundled tritonserver and compare every model with its engine in-process
        (default False; Python-backend repositories only).
    """

    names: tuple[str, ...] = ()
    latency_budget_ms: Optional[float] = None
    max_queue_delay_us: Optional[int] = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_size: Optional[int] = None
    instances: Optional[int] = None
    threads: Optional[int] = None
    streams: Optional[int] = None
    cores: Optional[int] = None
    labels: Optional[Path] = None
    python_backend: bool = False
    ensemble: bool = False
    force: bool = False
    overwrite: bool = False
    check: bool = False

    def __post_init__(self) -> None:
        if self.check and not self.python_backend:
            raise DeployResError("--check serves the repository on the tritonserver that nvidia-pytriton bundles, which has only "
                                 "the Python backend; add --python-backend (native onnxruntime/tensorrt/openvino models need NVIDIA's container)")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise DeployResError("--latency-budget-ms must be positive")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise DeployResError("--max-queue-delay-us must be 0 or more")
        require_at_least_one(self, "max_batch_size", "instances", "threads", "streams", "cores")
        if self.streams is not None and self.streams > 1 and not self.python_backend:
            raise DeployResError("--streams runs several OpenVINO requests inside one instance of deployres' runner; add --python-backend "
                                 "(Triton's openvino backend takes its NUM_STREAMS from --instances)")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise DeployResError(f"--preferred-batch-size takes positive batch sizes, got {self.preferred_batch_sizes}")
