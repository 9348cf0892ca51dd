"""The measurement loop's order: A, B, C, A, B, C, ... (fake runners record calls; real ORT runs elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from deploy_res.core.errors import DeployResError
from deploy_res.profiling.measure import Entry, interleaved, make_feeds
from deploy_res.engines.base import TensorInfo


class FakeRunner:
    """Records every run() in a shared log; optionally fails on its n-th call."""

    def __init__(self, name: str, log: list, fail_on: int | None = None) -> None:
        self.name, self.log, self.fail_on, self.calls = name, log, fail_on, 0
        self.inputs = [TensorInfo("input", ("batch", 3, 4, 4), "float32")]

    def run(self, feeds):
        self.calls += 1
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise RuntimeError("device lost")
        self.log.append((self.name, feeds["input"].shape[0]))
        return {}


def _entries(log, names="ABC", **fail):
    entries = []
    for name in names:
        runner = FakeRunner(name, log, fail.get(name))
        entries.append(Entry(label=name, kind="artifact", runner=runner, feeds={b: make_feeds(runner, b) for b in (1, 8)}))
    return entries


def test_round_robin_order_per_batch_size():
    log: list = []
    entries = _entries(log)
    interleaved(entries, batches=(1, 8), warmup_s=0, iterations=3, settle_s=0, block_s=0)
    assert log == [(n, 1) for _ in range(3) for n in "ABC"] + [(n, 8) for _ in range(3) for n in "ABC"]
    assert all(len(e.samples[b]) == 3 for e in entries for b in (1, 8))


def test_a_failing_runner_is_reported_and_the_others_go_on():
    log: list = []
    entries = _entries(log, B=2)
    interleaved(entries, batches=(1, 8), warmup_s=0, iterations=3, settle_s=0, block_s=0)
    assert [n for n, b in log if b == 1] == ["A", "B", "C", "A", "C", "A", "C"]
    assert entries[1].error.startswith("failed at batch 1: RuntimeError: device lost")
    assert len(entries[1].samples[1]) == 1 and 8 not in entries[1].samples
    assert len(entries[0].samples[8]) == 3


def test_duration_mode_with_a_fake_clock_keeps_the_minimum_and_warms_up_untimed():
    now = [0.0]

    def clock():
        now[0] += 0.1
        return now[0]

    log: list = []
    entries = _entries(log, "AB")
    interleaved(entries, batches=(1,), warmup_s=1.0, duration_s=0.5, settle_s=0, block_s=0, clock=clock)
    timed = len(entries[0].samples[1])
    assert timed >= 5  # MIN_ITERATIONS even though 0.5 s passed sooner
    assert len(log) > 2 * timed  # warm-up rounds ran but were not timed
    assert [n for n, _ in log] == ["A", "B"] * (len(log) // 2)


def test_entries_without_a_runner_or_a_batch_are_skipped():
    log: list = []
    entries = _entries(log, "AB")
    entries[0].runner, entries[0].error = None, "cannot load"
    del entries[1].feeds[8]
    interleaved(entries, batches=(1, 8), warmup_s=0, iterations=2, settle_s=0, block_s=0)
    assert log == [("B", 1), ("B", 1)]


def test_feeds_fill_the_batch_axis():
    runner = FakeRunner("A", [])
    feeds = make_feeds(runner, 8)
    assert feeds["input"].shape == (8, 3, 4, 4) and feeds["input"].dtype == np.float32
    runner.inputs = [TensorInfo("input", ("batch", "channels", 4, 4), "float32")]
    with pytest.raises(DeployResError, match="dynamic axis 1"):
        make_feeds(runner, 1)


def test_blocks_time_each_entry_back_to_back_after_a_settle_pause():
    """A settle pause before each block; within a block the same runner back to back; exact iteration counts."""
    now, log, pauses = [0.0], [], []

    def clock():
        return now[0]

    class Timed(FakeRunner):
        def __init__(self, name, cost):
            super().__init__(name, log)
            self.cost = cost

        def run(self, feeds):
            now[0] += self.cost
            return super().run(feeds)

    def sleep(seconds):
        pauses.append((seconds, len(log)))
        now[0] += seconds

    fast, slow = Timed("A", 0.01), Timed("B", 0.3)
    entries = [Entry(label=r.name, kind="artifact", runner=r, feeds={1: make_feeds(r, 1)}) for r in (fast, slow)]
    interleaved(entries, batches=(1,), warmup_s=0, iterations=4, settle_s=0.05, block_s=0.1, clock=clock, sleep=sleep)
    assert len(entries[0].samples[1]) == 4 and len(entries[1].samples[1]) == 4  # exactly, though A finishes first
    assert [n for n, _ in log] == ["A"] * 4 + ["B"] * 4  # A's block ran out of iterations, B's blocks hold one run each
    assert all(seconds == 0.05 for seconds, _ in pauses) and [at for _, at in pauses] == [0, 4, 5, 6, 7]
