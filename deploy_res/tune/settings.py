"""What ``deployres tune`` is told: :class:`TuneSettings`, checked whole before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deploy_res.core.errors import DeployResError

OBJECTIVES = ("throughput", "latency", "cost")


@dataclass(frozen=True)
class TuneSettings:
    """One search; every field has the command line's default.

    data: labelled image folder or ``.npz`` (with ``labels``) the accuracy budget is judged on (required).
    calib_data: INT8 calibration images/arrays (default None: ``data``); calib_samples: how many (default 128).
    fallback_layers: an INT8 engine that does not PASS is tried once more with this many of its most sensitive layers
        kept in float (default 4; 0: never).
    samples: validation samples per engine (default None: all of ``data``).
    max_top1_drop: the accuracy budget in top-1 points, judged on its interval (default None: each precision's
        default limits, :mod:`deploy_res.validation.thresholds`).
    p99_ms: the served p99 latency budget at ``concurrency`` clients, judged on the p99's order-statistic interval
        (default None: no latency budget). concurrency: closed-loop clients (default 8).
    min_throughput: served images/s at least (default None).
    objective: ``throughput`` (default: most images/s), ``latency`` (lowest p99) or ``cost`` (fewest cores, then
        throughput).
    precisions, backends: the engine axes (default: fp32, int8 and bf16 where the CPU has it; every CPU backend here).
    cores: cores the serving configurations may use (default: the CPUs this process may use).
    seconds: served seconds per measured point (default 3); the finalists are measured again, alternating.
    max_point_seconds: a point whose p99 budget is INCONCLUSIVE (an interval straddling it, or too few requests to
        bound a p99: 368 at 95 %) is served again for the requests its interval's width says would decide it, up to
        this many seconds in all (default 60); one that would need longer is left INCONCLUSIVE at once.
    budget_minutes: stop searching after this long and answer with the best so far (default None: no cap).
    triton: also write the chosen configuration as a Triton repository there and check it served (default None).
    """

    data: Optional[Path] = None
    calib_data: Optional[Path] = None
    calib_samples: int = 128
    fallback_layers: int = 4
    samples: Optional[int] = None
    max_top1_drop: Optional[float] = None
    p99_ms: Optional[float] = None
    concurrency: int = 8
    min_throughput: Optional[float] = None
    objective: str = "throughput"
    precisions: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    cores: Optional[int] = None
    seconds: float = 3.0
    max_point_seconds: float = 60.0
    budget_minutes: Optional[float] = None
    triton: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.data is None:
            raise DeployResError("tune judges accuracy on real data: pass --data DIR|NPZ (a labelled folder, or .npz with 'labels')")
        if self.objective not in OBJECTIVES:
            raise DeployResError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        for name in ("calib_samples", "concurrency", "cores", "samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DeployResError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("p99_ms", "min_throughput", "budget_minutes", "seconds", "max_point_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DeployResError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.fallback_layers < 0:
            raise DeployResError(f"--fallback-layers must be 0 or more, got {self.fallback_layers}")
        if self.max_top1_drop is not None and self.max_top1_drop < 0:
            raise DeployResError(f"--max-top1-drop must be 0 or more points, got {self.max_top1_drop}")
        unknown = [p for p in self.precisions if p not in ("fp32", "fp16", "bf16", "int8")]
        if unknown:
            raise DeployResError(f"unknown precision {unknown[0]!r}; choose from fp32, fp16, bf16, int8")
