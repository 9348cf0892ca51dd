"""The rule ``--backend auto`` times candidates by (:func:`deploy_res.build.auto.gate`): only those of the best
validation verdict present, so a PASSING one is never beaten by a faster INCONCLUSIVE one. The builds and verdicts themselves are exercised in test_auto_gate.py."""

from __future__ import annotations

import pytest

from deploy_res.build.auto import gate


def _judged(**outcomes):
    return {name: {"outcome": outcome, "verdict": f"{outcome.upper()} on 128 unlabelled samples"} for name, outcome in outcomes.items()}


@pytest.mark.parametrize("outcomes, removed", [
    ({"onnxruntime": "pass", "openvino": "pass"}, []),
    ({"onnxruntime": "pass", "openvino": "fail"}, ["openvino"]),
    ({"onnxruntime": "pass", "openvino": "inconclusive"}, ["openvino"]),
    ({"onnxruntime": "inconclusive", "openvino": "inconclusive"}, []),
    ({"onnxruntime": "inconclusive", "openvino": "fail"}, ["openvino"]),
    ({"onnxruntime": "fail", "openvino": "fail"}, []),
])
def test_only_the_best_verdicts_are_timed(outcomes, removed):
    assert gate(_judged(**outcomes), "int8")[0] == removed


def test_every_verdict_and_every_removal_is_said():
    removed, notes = gate(_judged(onnxruntime="pass", openvino="inconclusive"), "int8")
    assert notes[:2] == ["auto: onnxruntime PASS on 128 unlabelled samples", "auto: openvino INCONCLUSIVE on 128 unlabelled samples"]
    assert "auto: openvino removed: its verdict is INCONCLUSIVE and onnxruntime passes the int8 limits, so it is not timed" in notes
    _, notes = gate(_judged(onnxruntime="inconclusive", openvino="inconclusive"), "int8")
    assert any("no candidate passes the int8 limits" in n and "--calib-samples" in n for n in notes)
    _, notes = gate(_judged(onnxruntime="fail", openvino="fail"), "bf16")
    assert notes[-1] == "auto: every candidate fails the bf16 limits; the faster is kept (try --fallback-layers)"


def test_nothing_judged_removes_nothing():
    assert gate({}, "fp32") == ([], [])
