"""Per-layer time from the backend's own profiler, grouped by op type and by network stage.

ONNX Runtime: the profiling JSON (Chrome trace format) holds one ``Node``
event per kernel run, named ``<node name>_kernel_time`` with ``dur`` in
microseconds and ``args.op_name``; each ``model_run`` ``Session`` event spans
one ``run()``. Events are assigned to runs by timestamp, so one profiled
session can serve several batch sizes.

Stages (``stem``, ``stage1`` .. ``stage4``, ``head``, ``other``) come from the
PyTorch module path in the node name: the TorchScript exporter names nodes
``/layer1/layer1.0/conv1/Conv``; the dynamo exporter names them
``node_Conv_12`` and keeps the path in the node's ``pkg.torch.onnx.name_scopes``
metadata, read from the artifact's ONNX. ONNX Runtime's optimiser renames the
nodes it fuses (``/layer1/layer1.0/relu/Relu_output_0_nchwc`` is the fused
Conv+Add+ReLU whose output was that ReLU's) and inserts layout nodes
(``ReorderInput``/``ReorderOutput``): those land in ``other``.

TensorRT: :class:`LayerTimes` is an ``IProfiler`` (NVIDIA's Python API:
subclass ``trt.IProfiler``, implement ``report_layer_time(layer_name, ms)``,
assign to ``context.profiler``); layer names there join fused ONNX node names
with `` + ``.

OpenVINO: the engine is compiled with ``PERF_COUNT`` and, after each run,
``InferRequest.get_profiling_info()`` gives one record per executed node of
the runtime graph (``node_name``, ``exec_type``, ``real_time``). Node names
keep the ONNX names with OpenVINO's suffixes (``/layer1/layer1.0/conv1/Conv/WithoutBiases``,
fused ops under the name of the op they absorbed into); layout reorders
(``..._abcd_acdb_...``) and not-executed nodes are skipped or land in ``other``.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from deploy_res.engines.base import LayerCounters, LayerProfilerHost

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "head", "other")
TOP_LAYERS = 15
"""How many of the slowest layers each breakdown lists."""

_MODULE_STAGE = {
    # torchvision / timm ResNet family
    "conv1": "stem", "bn1": "stem", "relu": "stem", "act1": "stem", "maxpool": "stem",
    "layer1": "stage1", "layer2": "stage2", "layer3": "stage3", "layer4": "stage4",
    "avgpool": "head", "global_pool": "head", "fc": "head", "head": "head", "classifier": "head", "flatten": "head",
    # Inception-ResNet-v2 (stem, then the 35x35 / 17x17 / 8x8 repeats as stages)
    "conv2d_1a": "stem", "conv2d_2a": "stem", "conv2d_2b": "stem", "maxpool_3a": "stem", "conv2d_3b": "stem",
    "conv2d_4a": "stem", "maxpool_5a": "stem", "mixed_5b": "stem",
    "repeat": "stage1", "mixed_6a": "stage2", "repeat_1": "stage2", "mixed_7a": "stage3", "repeat_2": "stage3",
    "block8": "stage4", "conv2d_7b": "stage4", "classif": "head",
}
_TOP_LEVEL_HEAD_OPS = {"flatten", "reshape", "view", "gemm", "matmul", "globalaveragepool", "reducemean"}


def stage_of(node_name: str, scope: Optional[str] = None) -> str:
    """The network stage of a node from its module path (``scope`` overrides the name's own path)."""
    path = scope if scope is not None else node_name
    parts = [p for p in re.split(r"[/ ]", path.split(" + ")[0]) if p]
    if not parts:
        return "other"
    first = parts[0]
    if first in _MODULE_STAGE:
        return _MODULE_STAGE[first]
    base = first.split(".")[0]
    if base in _MODULE_STAGE:
        return _MODULE_STAGE[base]
    if path.startswith("/") and len(parts) == 1:  # a top-level op with no module: flatten/view before the classifier
        op = re.sub(r"(_\d+)?(_output_\d+.*)?$", "", first).lower()
        if op in _TOP_LEVEL_HEAD_OPS:
            return "head"
    return "other"


def _scopes_of(onnx_path: Path) -> dict[str, str]:
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return {}
    scopes: dict[str, str] = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    names = [n for n in ast.literal_eval(prop.value) if n]
                except (ValueError, SyntaxError):
                    continue
                if names:
                    scope = "/" + "/".join(names)
                    scopes[node.name] = scope
                    for output in node.output:  # ORT names fused nodes after their outputs
                        scopes.setdefault(output, scope)
    return scopes


def onnx_scopes(onnx_path: str | Path, depth: int = 4) -> dict[str, str]:
    """Node and output names -> module path from the dynamo exporter's metadata (empty when there is none).

    Graph passes and ONNX Runtime's optimiser drop node metadata, so when the
    artifact has none, the ONNX it was made from (manifest ``source`` or
    ``inputs.onnx``) is read instead, up to ``depth`` stages back.
    """
    from deploy_res.core.manifest import read_manifest

    path: Optional[Path] = Path(onnx_path)
    for _ in range(depth):
        if path is None or not path.is_file():
            return {}
        scopes = _scopes_of(path)
        if scopes:
            return scopes
        try:
            manifest = read_manifest(path)
        except Exception:
            return {}
        record = manifest.parent if manifest is not None else None
        path = Path(record["path"]) if record else None
    return {}


def _scope_for(name: str, scopes: Mapping[str, str]) -> Optional[str]:
    if not scopes:
        return None
    base = re.sub(r"(_nchwc|_token_\d+)$", "", name)  # ORT's layout copies; QDQ -> QLinear* rewrites
    stripped = re.sub(r"_output_\d+.*$", "", base)
    for candidate in (name, base, stripped, f"node_{stripped}"):
        if candidate in scopes:
            return scopes[candidate]
    return None


def parse_ort_profile(events: Sequence[Mapping[str, Any]] | str | Path, run_batches: Sequence[int],
                      scopes: Optional[Mapping[str, str]] = None, top: int = TOP_LAYERS) -> dict[int, dict[str, Any]]:
    """Per-batch layer breakdowns from ONNX Runtime's profile.

    ``run_batches[i]`` is the batch size of the i-th ``run()`` the session made;
    the result maps each batch size to :func:`breakdown` of its runs' node events.
    """
    if not isinstance(events, (list, tuple)):
        events = json.loads(Path(events).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_batch: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
    runs_per_batch: dict[int, int] = defaultdict(int)
    for index, _ in enumerate(runs[: len(run_batches)]):
        runs_per_batch[run_batches[index]] += 1
    for event in nodes:
        index = next((i for i, (start, end) in enumerate(runs) if start <= event["ts"] <= end), None)
        if index is None or index >= len(run_batches):
            continue
        name = event["name"][: -len("_kernel_time")]
        per_batch[run_batches[index]].append((name, event.get("args", {}).get("op_name", "?"), event["dur"] / 1000))
    return {batch: breakdown(items, runs_per_batch[batch], scopes or {}, top) for batch, items in per_batch.items()}


def breakdown(items: Iterable[tuple[str, str, float]], runs: int, scopes: Mapping[str, str] | None = None, top: int = TOP_LAYERS) -> dict[str, Any]:
    """Mean time per run by layer, op type and stage from ``(name, op_type, ms)`` records over ``runs`` runs."""
    runs = max(runs, 1)
    layers: dict[str, list] = {}
    for name, op_type, ms in items:
        entry = layers.setdefault(name, [op_type, 0.0])
        entry[1] += ms
    total = sum(ms for _, ms in layers.values()) / runs
    by_op: dict[str, float] = defaultdict(float)
    by_stage: dict[str, float] = {stage: 0.0 for stage in STAGES}
    rows = []
    for name, (op_type, ms) in layers.items():
        ms /= runs
        scope = _scope_for(name, scopes or {})
        stage = stage_of(name, scope)
        by_op[op_type] += ms
        by_stage[stage] += ms
        rows.append({"name": name, "module": scope, "op_type": op_type, "stage": stage, "ms": ms, "share": ms / total if total else 0.0})
    rows.sort(key=lambda r: -r["ms"])

    def shares(table: Mapping[str, float], key: str) -> list[dict[str, Any]]:
        return [{key: k, "ms": v, "share": v / total if total else 0.0} for k, v in sorted(table.items(), key=lambda kv: -kv[1]) if v > 0]

    return {"runs": runs, "layers": len(rows), "total_ms": total, "by_op_type": shares(by_op, "op_type"),
            "by_stage": [{"stage": s, "ms": by_stage[s], "share": by_stage[s] / total if total else 0.0} for s in STAGES if by_stage[s] > 0],
            "top_layers": rows[:top]}


def _trt_op(layer_name: str) -> str:
    if " + " in layer_name:
        return "fused"
    last = layer_name.rstrip("/").split("/")[-1]
    return re.sub(r"(_\d+)?(_output_\d+.*)?$", "", last) or "?"


def make_trt_profiler(trt):
    """An ``IProfiler`` collecting ``report_layer_time`` calls (built only when TensorRT is importable)."""

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.records: list[tuple[str, str, float]] = []
            self.runs = 0

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.records.append((layer_name, _trt_op(layer_name), ms))

    return LayerTimes()


def profile_trt_layers(runner: LayerProfilerHost, feeds_by_batch: Mapping[int, Mapping], iterations: int,
                       top: int = TOP_LAYERS) -> dict[int, dict[str, Any]]:
    """Per-batch breakdowns of a TensorRT runner (a :class:`~deploy_res.engines.base.LayerProfilerHost`) through an IProfiler."""
    import tensorrt as trt

    result = {}
    for batch, feeds in feeds_by_batch.items():
        profiler = make_trt_profiler(trt)
        runner.set_profiler(profiler)
        try:
            for _ in range(iterations):
                runner.run(feeds)
        finally:
            runner.set_profiler(None)
        result[batch] = breakdown(profiler.records, iterations, None, top)
    return result


def _ov_scope(name: str, scopes: Mapping[str, str]) -> Optional[str]:
    """The module path of an OpenVINO node: its name, else its name with OpenVINO's ``/Suffix`` parts dropped."""
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        scope = _scope_for("/".join(parts[:end]), scopes)
        if scope is not None:
            return scope
    return None


def profile_openvino_layers(runner: LayerCounters, feeds_by_batch: Mapping[int, Mapping], iterations: int, scopes: Optional[Mapping[str, str]] = None,
                            top: int = TOP_LAYERS) -> dict[int, dict[str, Any]]:
    """Per-batch breakdowns of an OpenVINO runner loaded with ``perf_count=True`` (one warm-up run per batch, not counted)."""
    scopes = dict(scopes or {})
    result = {}
    for batch, feeds in feeds_by_batch.items():
        runner.run(feeds)
        records: list[tuple[str, str, float]] = []
        for _ in range(iterations):
            runner.run(feeds)
            records += runner.profiling_info()
        if scopes:
            for name, _, _ in records:
                if name not in scopes:
                    scope = _ov_scope(name, scopes)
                    if scope is not None:
                        scopes[name] = scope
        result[batch] = breakdown(records, iterations, scopes, top)
    return result
