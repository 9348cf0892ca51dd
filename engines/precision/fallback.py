"""INT8 fallback: leave the most sensitive layers unquantised until the agreement target is met.

The layers are ranked by :func:`deploy_res.validation.sensitivity.rank_layers`
(the SQNR each loses). :func:`dequantize_layers` takes a layer out of INT8 by
giving it back its FP32 inputs and weights from the graph the Q/DQ ONNX was
made from (node names match); the Q/DQ nodes nothing reads any more are
dropped. :func:`fallback_search` adds layers worst-first until the top-1
agreement with the FP32 graph reaches the target, and measures what that
costs in latency. The target is judged as ``validate`` judges a limit: by the Wilson interval of the agreement
on the samples (:mod:`deploy_res.core.intervals`). The search adds layers while the whole interval lies below
the target (the data say the target is missed), and stops at the first count whose interval reaches it:
``reached`` when the interval lies wholly at or above the target, ``inconclusive`` when it straddles it (more
calibration samples would decide).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from deploy_res.core.errors import DeployResError
from deploy_res.core.intervals import outcome, proportion_interval
from deploy_res.core.timing import interleave
from deploy_res.core.numerics import cpu_session

ENGINE_LEVEL = "ORT_ENABLE_ALL"
"""Agreement and latency are measured as the engine will run: ONNX Runtime fully optimised (integer kernels)."""
MAX_FALLBACK_SHARE = 0.5
"""Never leave more than half of the quantised layers in FP32: past that INT8 has lost its point."""


def dequantize_layers(qdq: onnx.ModelProto, float_model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` where the nodes ``names`` read their FP32 inputs and weights again."""
    wanted = set(names)
    float_nodes = {node.name: node for node in float_model.graph.node if node.name in wanted}
    missing = wanted - set(float_nodes)
    if missing:
        raise DeployResError(f"layers {sorted(missing)[:3]} are not in the FP32 graph; rebuild the INT8 ONNX from it")
    float_inits = {init.name: init for init in float_model.graph.initializer}
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    present = {init.name for init in model.graph.initializer}
    produced = {out: node for node in model.graph.node for out in node.output}
    float_producers = {out: node for node in float_model.graph.node for out in node.output}
    added_relus: dict[str, str] = {}
    for node in list(model.graph.node):
        if node.name not in wanted:
            continue
        inputs = []
        for name in float_nodes[node.name].input:
            float_op = float_producers[name].op_type if name in float_producers else None
            qdq_op = produced[name].op_type if name in produced else None
            if float_op == "Relu" and qdq_op not in (None, "Relu"):
                # ORT's quantizer folds a Conv's Relu into the uint8 range of its output: put the Relu back.
                if name not in added_relus:
                    added_relus[name] = f"{name}_relu_fp32"
                    model.graph.node.append(onnx.helper.make_node("Relu", [name], [added_relus[name]], name=f"{name}_Relu_fp32"))
                name = added_relus[name]
            elif name in float_inits:
                # ORT's quantizer names a DequantizeLinear output after the weight it replaces: keep the FP32 copy apart.
                fp32_name = f"{name}_fp32" if name in produced else name
                if fp32_name not in present:
                    init = onnx.TensorProto()
                    init.CopyFrom(float_inits[name])
                    init.name = fp32_name
                    model.graph.initializer.append(init)
                    present.add(fp32_name)
                name = fp32_name
            inputs.append(name)
        del node.input[:]
        node.input.extend(inputs)
    graph = gs.import_onnx(model)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = qdq.ir_version
    del out.opset_import[:]
    out.opset_import.extend(qdq.opset_import)
    return out


def _logits(session, inputs: np.ndarray, batch: int = 8) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + batch]})[0] for i in range(0, len(inputs), batch)])


def _agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(reference.argmax(axis=1) == logits.argmax(axis=1)))


def _step(layers: int, agreement: float, samples: int, target: Optional[float]) -> dict[str, Any]:
    """One point of the search: the agreement, its 95 % Wilson interval and, with a target, the outcome against it."""
    interval = proportion_interval(agreement * samples, samples)
    return {"fp32_layers": layers, "agreement": agreement, "interval": list(interval),
            **({"outcome": outcome(interval, target, upper_bound=False)} if target is not None else {})}


def _latencies_ms(sessions: Sequence[Any], sample: np.ndarray, runs: int) -> list[float]:
    """Median latency of each session, timed interleaved in settled blocks (:func:`deploy_res.core.timing.interleave`)."""
    calls = {}
    for i, session in enumerate(sessions):
        feeds = {session.get_inputs()[0].name: sample}
        calls[str(i)] = lambda s=session, f=feeds: s.run(None, f)
    times = interleave(calls, iterations=runs)
    return [float(np.median(times[str(i)])) for i in range(len(sessions))]


@dataclass
class FallbackResult:
    """What the search chose and what it reached."""

    model: onnx.ModelProto
    layers: list[str]
    agreement_before: float
    agreement_after: float
    target: Optional[float]
    steps: list[dict[str, Any]] = field(default_factory=list)
    latency_ms_int8: float = 0.0
    latency_ms_fallback: float = 0.0
    reached: bool = True
    outcome: Optional[str] = None  # against the target: pass, fail or inconclusive (None without a target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_agreement": self.target, "reached": self.reached, "outcome": self.outcome, "fp32_layers": self.layers,
            "agreement_all_int8": self.agreement_before, "agreement": self.agreement_after, "steps": self.steps,
            "latency_ms_batch1": {"all_int8": round(self.latency_ms_int8, 3), "with_fallback": round(self.latency_ms_fallback, 3)},
            "latency_cost": round(self.latency_ms_fallback / self.latency_ms_int8, 3) if self.latency_ms_int8 else None,
            "measured_on": "the calibration samples, against the FP32 graph, ONNX Runtime CPU",
        }


def fallback_search(qdq: onnx.ModelProto, float_model: onnx.ModelProto, ranking: Sequence[dict[str, Any]], inputs: np.ndarray,
                    target_agreement: Optional[float] = None, fallback_layers: Optional[int] = None,
                    latency_runs: int = 10) -> FallbackResult:
    """Leave the worst layers of ``ranking`` in FP32: exactly ``fallback_layers`` of them, or as few as the data do not
    show to miss ``target_agreement`` (top-1 agreement with the FP32 graph on ``inputs``, judged by its interval; see
    the module docstring), at most half of them."""
    if (target_agreement is None) == (fallback_layers is None):
        raise DeployResError("give either a target agreement or a number of fallback layers")
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    reference = _logits(cpu_session(float_model, ENGINE_LEVEL), inputs)
    int8_session = cpu_session(qdq, ENGINE_LEVEL)
    before = _agreement(reference, _logits(int8_session, inputs))
    names = [layer["name"] for layer in ranking]
    limit = max(1, int(len(names) * MAX_FALLBACK_SHARE))
    chosen: list[str] = []
    n = len(inputs)
    model, agreement, steps = qdq, before, [_step(0, before, n, target_agreement)]
    if fallback_layers is not None:
        chosen = names[: min(fallback_layers, len(names))]
        model = dequantize_layers(qdq, float_model, chosen) if chosen else qdq
        agreement = _agreement(reference, _logits(cpu_session(model, ENGINE_LEVEL), inputs))
        steps.append(_step(len(chosen), agreement, n, None))
    else:
        count = 0
        while steps[-1]["outcome"] == "fail" and count < limit:
            count = min(limit, max(count + 1, count * 2))  # 1, 2, 4, 8 ... layers: few session builds
            chosen = names[:count]
            model = dequantize_layers(qdq, float_model, chosen)
            agreement = _agreement(reference, _logits(cpu_session(model, ENGINE_LEVEL), inputs))
            steps.append(_step(count, agreement, n, target_agreement))
    sample = inputs[:1]
    if chosen:
        latency_int8, latency_fallback = _latencies_ms([int8_session, cpu_session(model, ENGINE_LEVEL)], sample, latency_runs)
    else:
        latency_int8 = latency_fallback = _latencies_ms([int8_session], sample, latency_runs)[0]
    judged = steps[-1].get("outcome")
    reached = target_agreement is None or judged == "pass"
    return FallbackResult(model, chosen, before, agreement, target_agreement, steps, latency_int8, latency_fallback, reached, judged)
