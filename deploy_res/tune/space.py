"""The search space of ``deployres tune``: engine candidates and serving configurations, as plain data.

An engine candidate is a (precision, backend) pair the CPU here can run. A serving configuration is how Triton
serves one engine: ``instances`` x ``threads`` (never more than the cores), ``max_batch`` (1: no dynamic batching),
``queue_delay_us`` (how long the dynamic batcher waits to fill a batch) and, for OpenVINO engines, ``streams`` per
instance sharing its threads (``NUM_STREAMS``: the runner cuts each batch into that many slices run at once; never
more streams than threads, and streams only where batches form). :func:`coarse` is the first round's few corners of that space; :func:`neighbours` the
next round's steps around a good point (the hill-climb). ``streams=True`` opens the streams axis (OpenVINO only).
``gpu=True`` is a TensorRT engine's space: its instances share one GPU, not the cores (up to :data:`GPU_INSTANCES`,
one thread each: the host threads only feed the GPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

BATCHES = (1, 4, 8, 16)
DELAYS_US = (0, 500, 2000, 8000)
GPU_INSTANCES = 4
"""Most instances of a GPU engine tried on its GPU (each its own execution context and CUDA stream)."""


@dataclass(frozen=True, order=True)
class Serving:
    """How one engine is served: ``instances`` x ``threads`` cores, dynamic batching up to ``max_batch``, ``streams``
    per instance (default 1; OpenVINO's, sharing the instance's threads)."""

    instances: int
    threads: int
    max_batch: int
    queue_delay_us: int
    streams: int = 1

    @property
    def cores(self) -> int:
        return self.instances * self.threads

    @property
    def key(self) -> str:
        return f"i{self.instances}_t{self.threads}_b{self.max_batch}_d{self.queue_delay_us}" + (f"_s{self.streams}" if self.streams > 1 else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "cores": self.cores}


def engine_candidates(precisions: Sequence[str], backends: Sequence[str], has_bf16: bool, has_openvino: bool,
                      has_tensorrt: bool = False) -> list[tuple[str, str]]:
    """(precision, backend) pairs to build: ONNX Runtime and OpenVINO for FP32 and INT8, OpenVINO for BF16 (only on a
    CPU with native BF16), ONNX Runtime for FP16 (only when asked for: CPUs emulate it), and with ``has_tensorrt``
    (default False: a GPU and TensorRT here) TensorRT for FP32, FP16 and INT8; ``precisions`` / ``backends`` (empty:
    all) narrow them."""
    pairs = [("fp32", "onnxruntime"), ("fp32", "openvino"), ("int8", "onnxruntime"), ("int8", "openvino"), ("bf16", "openvino"),
             ("fp16", "onnxruntime"), ("fp32", "tensorrt"), ("fp16", "tensorrt"), ("int8", "tensorrt")]
    chosen = []
    for precision, backend in pairs:
        if backend == "tensorrt" and not has_tensorrt:
            continue
        if precision == "fp16" and backend != "tensorrt" and "fp16" not in precisions:
            continue  # FP16 runs emulated on CPUs: only when asked for
        if (precisions and precision not in precisions) or (backends and backend not in backends):
            continue
        if backend == "openvino" and not has_openvino or precision == "bf16" and not has_bf16:
            continue
        chosen.append((precision, backend))
    return chosen


def _fits(serving: Serving, cores: int, top_batch: int, gpu: bool = False) -> bool:
    if gpu and (serving.threads != 1 or serving.streams != 1):
        return False
    return (1 <= serving.cores <= (GPU_INSTANCES if gpu else cores) and 1 <= serving.max_batch <= top_batch and (serving.max_batch > 1 or serving.queue_delay_us == 0)
            and 1 <= serving.streams <= serving.threads and (serving.streams == 1 or serving.max_batch > 1))


def coarse(cores: int, top_batch: int, streams: bool = False, gpu: bool = False) -> list[Serving]:
    """The first round: one instance on every core, unbatched and batched; one instance per core, batched; with
    ``streams`` (default False) also one instance with a stream per core, batched (OpenVINO's throughput mode). On a
    ``gpu`` (default False): one instance unbatched and batched, two instances batched."""
    batch = min(8, top_batch)
    if gpu:
        points = [Serving(1, 1, 1, 0), Serving(1, 1, batch, 0), Serving(2, 1, batch, 0)]
    else:
        points = [Serving(1, cores, 1, 0), Serving(1, cores, batch, 0), Serving(cores, 1, batch, 0)]
    if streams and not gpu:
        points.append(Serving(1, cores, batch, 0, streams=cores))
    return sorted({p for p in points if _fits(p, cores, top_batch, gpu)})


def neighbours(point: Serving, cores: int, top_batch: int, streams: bool = False, gpu: bool = False) -> list[Serving]:
    """One step along each serving axis from ``point``: queue delay, max batch, instances (threads re-split, streams
    kept within them; on a ``gpu``, default False, one thread each) and, with ``streams`` (default False), streams
    per instance."""
    out: set[Serving] = set()
    delays, batches = list(DELAYS_US), [b for b in BATCHES if b <= top_batch] or [1]
    if point.max_batch > 1:
        at = delays.index(point.queue_delay_us) if point.queue_delay_us in delays else 0
        for step in (-1, 1):
            if 0 <= at + step < len(delays):
                out.add(dataclasses.replace(point, queue_delay_us=delays[at + step]))
    at = batches.index(point.max_batch) if point.max_batch in batches else 0
    for step in (-1, 1):
        if 0 <= at + step < len(batches):
            size = batches[at + step]
            out.add(dataclasses.replace(point, max_batch=size, queue_delay_us=point.queue_delay_us if size > 1 else 0))
    for instances in (point.instances - 1, point.instances + 1):
        if instances >= 1:
            threads = 1 if gpu else max(1, cores // instances)
            out.add(dataclasses.replace(point, instances=instances, threads=threads, streams=min(point.streams, threads)))
    if streams:
        out.update(dataclasses.replace(point, streams=count) for count in (point.streams - 1, point.streams + 1) if count >= 1)
    return sorted(p for p in out if _fits(p, cores, top_batch, gpu) and p != point)


def exhaustive(cores: int, top_batch: int, streams: bool = False, gpu: bool = False) -> list[Serving]:
    """Every configuration of the space (the benchmark's sweep): instances x threads within the cores (on a ``gpu``,
    default False: up to :data:`GPU_INSTANCES` instances of one thread), every batch and queue delay, and with
    ``streams`` (default False) every count of streams up to the threads."""
    pairs = [(i, 1) for i in range(1, GPU_INSTANCES + 1)] if gpu else [(i, t) for i in range(1, cores + 1) for t in range(1, cores // i + 1)]
    points = {Serving(i, t, b, d if b > 1 else 0, s) for i, t in pairs for b in BATCHES if b <= top_batch for d in DELAYS_US
              for s in (range(1, t + 1) if streams else (1,))}
    return sorted(p for p in points if _fits(p, cores, top_batch, gpu))


def unseen(points: Iterable[Serving], seen: Optional[set]) -> list[Serving]:
    return [p for p in points if not seen or p.key not in seen]
