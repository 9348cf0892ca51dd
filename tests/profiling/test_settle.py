"""An engine's figure must not depend on what was timed before it (real ONNX Runtime sessions, real threads).

ONNX Runtime's pool threads spin for some milliseconds after each run; timed
right after another session, an engine shares the cores with them and reads
~40 % slow on a 2-core machine. The profiler's settled blocks must make the
engine timed after another equal, within noise, to the same engine timed alone.
"""

from __future__ import annotations

import os
import statistics

import numpy as np
from onnx import helper

from graph_builders import init, model, value

from deploy_res.core.numerics import cpu_session
from deploy_res.profiling.measure import Entry, interleaved
from deploy_res.engines.base import TensorInfo

THREADS = min(2, os.cpu_count() or 1)


def _conv_stack(channels: int = 64, size: int = 40, depth: int = 4, seed: int = 0):
    """A few 3x3 convolutions: milliseconds per run on two threads, nothing to cache between runs."""
    rng = np.random.default_rng(seed)
    nodes, inits, name = [], [], "input"
    for i in range(depth):
        inits += [init(f"w{i}", (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)),
                  init(f"b{i}", np.zeros(channels, np.float32))]
        nodes += [helper.make_node("Conv", [name, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        name = f"r{i}"
    nodes.append(helper.make_node("Identity", [name], ["output"]))
    return model(nodes, [value("input", ["batch", channels, size, size])], [value("output", ["batch", channels, size, size])], inits)


class SessionRunner:
    """An ONNX Runtime session with its default thread spinning, behind the runner interface."""

    def __init__(self, proto) -> None:
        self.session = cpu_session(proto, "ORT_ENABLE_ALL", threads=THREADS)
        self.inputs = [TensorInfo("input", ("batch", 64, 40, 40), "float32")]

    def run(self, feeds):
        return self.session.run(None, dict(feeds))


def _median_ms(runners: list, iterations: int = 30) -> float:
    """Median of the last runner's samples, timed interleaved with the ones before it at batch 4."""
    feeds = {"input": np.random.default_rng(1).standard_normal((4, 64, 40, 40)).astype(np.float32)}
    entries = [Entry(label=str(i), kind="artifact", runner=r, feeds={4: feeds}) for i, r in enumerate(runners)]
    interleaved(entries, batches=(4,), warmup_s=1.0, iterations=iterations)
    return statistics.median(entries[-1].samples[4])


def test_an_engine_timed_after_another_equals_the_same_engine_timed_alone():
    """Without the settle pause the engine timed after another reads ~1.4-2x slow here (FACTS.md); with it, ~1.0x.

    Measured in A-B-B-A order (alone, after, after, alone) so that drift and a machine waking from idle hit
    both figures alike, three times, judged on the median: one noisy pair on a shared 2-vCPU machine read
    1.51x beside 1.14x in CI, while the fault this guards against reads slow in every pair.
    """
    first, second = SessionRunner(_conv_stack(seed=0)), SessionRunner(_conv_stack(seed=1))
    ratios = []
    for _ in range(3):
        alone = _median_ms([second])
        after = _median_ms([first, second]) + _median_ms([first, second])
        alone += _median_ms([second])
        ratios.append(after / alone)
    ratio = statistics.median(ratios)
    assert 0.8 < ratio < 1.25, f"timed after another session the engine reads {ratio:.2f}x its time alone ({ratios})"
