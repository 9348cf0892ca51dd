"""``tune``: the fastest deployment on this machine that meets the accuracy and serving budgets, searched and measured.

1. **Engines.** Every (precision, backend) pair of :func:`~deploy_res.tune.space.engine_candidates` this machine runs is
   built with :func:`deploy_res.build.build_engine` into ``DIR/engines`` (INT8 calibrated on ``calib_data``, else
   ``data``); an engine a search built before from the same input and settings, whose bytes still match, is reused
   (:mod:`.state`).
2. **Accuracy first.** Each engine is validated (:func:`deploy_res.validation.validate`) on ``data`` against the FP32
   ONNX it comes from, with ``max_top1_drop`` as its top-1 drop limit when given. Only a PASS is ever timed; FAIL and
   INCONCLUSIVE engines are listed with their verdict line (INCONCLUSIVE is not a pass: the data could not show the
   engine within its limits).
3. **Serving.** Each point is served ``seconds``, and again (pooled) while its p99 budget is INCONCLUSIVE, for the
   requests its interval's width says would decide it (:func:`~deploy_res.tune.judge.serve_longer`), up to ``max_point_seconds`` in
   all; not when deciding it would take longer than that (its p99 lies too near the budget), nor when its first run
   is already more than :data:`~deploy_res.tune.judge.SCREEN` behind the best point meeting the budgets (deciding it
   could not change the answer). Every passing engine's coarse points (:func:`~deploy_res.tune.space.coarse`) are
   measured first; then each engine whose best corner is not over ``SCREEN`` behind the best point meeting the
   budgets is hill-climbed (:func:`~deploy_res.tune.space.neighbours` of its best point so far, until no neighbour
   improves or time runs out): successive halving across engines. Then the best 3 points over all engines are
   measured once more, in turn, and each finalist's two runs are pooled (throughput: the mean; p99 and its interval: over every request of both).
4. **Judging.** A point meets ``p99_ms`` only when its p99's 95 % interval lies at or below it, ``min_throughput`` on
   its measured images/s (:mod:`.judge`). The objective ranks the points that meet every budget.

Every measured point is written to ``DIR/tune.state.json`` at once; a rerun with the same settings resumes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.core.records import sha256_file
from deploy_res.serve.triton_settings import in_streams
from deploy_res.tune import judge as judging
from deploy_res.tune.settings import TuneSettings
from deploy_res.tune.space import Serving, coarse, engine_candidates, neighbours
from deploy_res.tune.state import (data_fingerprint, load_state, record_build, reusable_engine, save_state, settings_hash)

FINALISTS = 3
TOP_BATCH = 16
HARNESSES = ("auto", "triton", "in-process")
BACKENDS = ("onnxruntime", "openvino", "tensorrt")


class BudgetNotMet(DeployResError):
    """The search ran, but no engine or no serving point meets the budgets: exit 1, the report is written."""

    exit_code = 1


@dataclass
class TuneResult:
    """What a search concluded and wrote."""

    output_dir: Path
    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Optional[dict[str, Any]]:
        return self.report.get("chosen")


class _Clock:
    def __init__(self, minutes: Optional[float]) -> None:
        self.start = time.monotonic()
        self.limit = minutes * 60 if minutes else None
        self.ran_out = False

    def out(self) -> bool:
        if self.limit is not None and time.monotonic() - self.start >= self.limit:
            self.ran_out = True
        return self.ran_out

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _has_openvino() -> bool:
    from deploy_res.engines import unavailable

    return unavailable("openvino") is None


def plan_candidates(settings: TuneSettings) -> list[tuple[str, str]]:
    """The (precision, backend) pairs to build; a backend or precision asked for that cannot run here is one line."""
    from deploy_res.engines import missing_bf16_isa, unavailable

    unknown = [b for b in settings.backends if b not in BACKENDS]
    if unknown:
        raise DeployResError(f"--backend {unknown[0]!r} is not one of {', '.join(BACKENDS)}")
    has_openvino, bf16_missing, tensorrt_missing = _has_openvino(), missing_bf16_isa(), unavailable("tensorrt")
    if "openvino" in settings.backends and not has_openvino:
        raise DeployResError("--backend openvino was asked for, but openvino is not importable here (pip install openvino)")
    if "tensorrt" in settings.backends and tensorrt_missing:
        raise DeployResError(f"--backend tensorrt was asked for, but {tensorrt_missing}")
    if "bf16" in settings.precisions and bf16_missing:
        raise DeployResError(f"--precision bf16 was asked for, but {bf16_missing}")
    if "bf16" in settings.precisions and settings.backends and "openvino" not in settings.backends:
        raise DeployResError("--precision bf16 runs on OpenVINO only; add openvino to --backend")
    candidates = engine_candidates(settings.precisions, settings.backends, has_bf16=bf16_missing is None, has_openvino=has_openvino,
                                   has_tensorrt=tensorrt_missing is None)
    if not candidates:
        raise DeployResError(f"no engine to build for --precision {','.join(settings.precisions) or 'default'} and --backend "
                             f"{','.join(settings.backends) or 'default'} on this machine")
    return candidates


def tune(source: str, output_dir: str | Path, settings: TuneSettings, export_settings: Any = None, preprocessing: Any = None,
         harness: str = "auto", step: Callable[[str], None] = lambda message: None) -> TuneResult:
    """Search as the module docstring says; ``source`` is a model (exported with ``export_settings``) or an ``.onnx``
    used as is (``preprocessing`` for its calibration images when it has no manifest). Writes ``tune.json``,
    ``tune.md`` and ``tune.html`` into ``output_dir`` and returns them; raises :class:`BudgetNotMet` (exit 1) after
    writing them when nothing meets the budgets."""
    from deploy_res.data.inputs import check_source

    if harness not in HARNESSES:
        raise DeployResError(f"unknown harness {harness!r}; choose one of {', '.join(HARNESSES)}")
    is_onnx = source.endswith(".onnx")
    if is_onnx and not Path(source).is_file():
        raise DeployResError(f"ONNX file {source} not found")
    check_source(settings.data, settings.samples, what="validation data")
    candidates = plan_candidates(settings)
    calib = settings.calib_data or settings.data
    if any(p == "int8" for p, _ in candidates):
        check_source(calib, settings.calib_samples, what="calibration data")
    cores = settings.cores or usable_cores()
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise DeployResError(f"output path {folder} exists and is not a folder; choose another -o/--output")
    _check_triton_target(settings.triton, folder)

    described = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
                 "source": source, "source_sha256": sha256_file(source) if is_onnx else None,
                 "export": repr(export_settings) if not is_onnx else None, "preprocessing": repr(preprocessing),
                 "data_sha256": data_fingerprint(settings.data), "calib_sha256": data_fingerprint(calib), "cores": cores,
                 "harness": harness, "candidates": [list(c) for c in candidates]}
    digest = settings_hash(described)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _search(source, is_onnx, folder, settings, export_settings, preprocessing, harness, step, candidates, calib, cores,
                       described, digest)
    except DeployResError as exc:
        if created and not isinstance(exc, BudgetNotMet) and not (folder / "engines").exists():
            shutil.rmtree(folder, ignore_errors=True)  # bad input found before any work: nothing left behind
        raise


def _check_triton_target(repo: Optional[Path], folder: Path) -> None:
    if repo is None:
        return
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise DeployResError(f"--triton {repo} exists and is not a folder")
    if repo.is_dir() and any(repo.iterdir()):
        previous = folder / "tune.json"
        import json

        try:
            written = json.loads(previous.read_text()).get("triton", {}).get("repository")
        except (OSError, ValueError, AttributeError):
            written = None
        if written is None or Path(written).resolve() != repo.resolve():
            raise DeployResError(f"--triton {repo} is not empty (and not a repository this tune wrote); choose an empty or new folder")


def _search(source, is_onnx, folder, settings, export_settings, preprocessing, harness, step, candidates, calib, cores, described, digest):
    from deploy_res.tune.measure import open_harness
    from deploy_res.tune.report import write_reports

    clock = _Clock(settings.budget_minutes)
    state, resumed = load_state(folder, digest)
    state["runs"] = state.get("runs", 0) + 1
    measured_before = state.get("measured", 0)
    notes: list[str] = []
    if resumed:
        step(f"resuming the search in {folder / 'tune.state.json'} ({len(state['points'])} points measured before)")
    save_state(folder, state)

    reference, build_from = _source_onnx(source, is_onnx, folder, export_settings, state, step)
    save_state(folder, state)
    engines_dir = folder / "engines"
    engines_dir.mkdir(exist_ok=True)
    def judge_engines(jobs) -> None:
        for name, precision, backend, into, fallback in jobs:
            entry = state["engines"].get(name)
            if clock.out():
                notes.append(f"time budget spent before {name} was built and judged")
                return
            if entry and entry.get("outcome") and Path(entry["path"]).is_file() and sha256_file(entry["path"]) == entry.get("sha256"):
                continue  # judged before, and its bytes are still the ones judged
            state["engines"][name] = _engine(name, precision, backend, build_from, reference, into, settings, calib, preprocessing, step,
                                             fallback=fallback)
            save_state(folder, state)

    judge_engines((f"{precision}-{backend}", precision, backend, engines_dir, None) for precision, backend in candidates)
    judge_engines((name, precision, backend, engines_dir / name, settings.fallback_layers)
                  for name, precision, backend in _fallback_candidates(state, settings))

    passing = {n: e for n, e in state["engines"].items() if e.get("outcome") == "pass"}
    if passing and not clock.out():
        inputs = _request_inputs(settings, build_from, next(iter(passing.values()))["path"])
        runner = open_harness(harness, folder / "serve", cores, notes.append)
        state["harness_used"] = runner.kind
        state["tool"] = runner.tool
        try:
            # Successive halving across engines: every engine's coarse corners first, then a hill-climb only for
            # the engines whose best corner could still win.
            for name, entry in passing.items():
                corners = coarse(cores, entry.get("top_batch") or TOP_BATCH, streams=_has_streams(entry), gpu=_on_gpu(entry))
                _measure_points(name, entry, corners, runner, inputs, settings, state, folder, clock, step)
            for name, entry in passing.items():
                behind = _screened_out(state, name, settings)
                if behind:
                    step(behind)
                    notes.append(behind)
                elif not clock.out():
                    _climb(name, entry, runner, inputs, settings, cores, state, folder, clock, step)
            _finals(runner, inputs, settings, state, folder, clock, step)
        finally:
            runner.close()
            shutil.rmtree(folder / "serve", ignore_errors=True)
    if clock.ran_out:
        notes.append(f"the --budget-minutes {settings.budget_minutes:g} ran out after {clock.seconds:.0f} s: the answer is the best so far")
    report = _answer(state, settings, cores, described, notes, clock, state["measured"] - measured_before, resumed)
    save_state(folder, state)
    result = TuneResult(folder, report, notes=notes)
    if report.get("chosen"):
        _record_manifest(report)
        if settings.triton is not None:
            step(f"writing the Triton repository {settings.triton} with the chosen configuration and checking it served")
            report["triton"] = _write_triton(report["chosen"], Path(settings.triton), cores)
    result.paths = write_reports(report, folder)
    if report["status"] != "chosen":
        raise BudgetNotMet(report["failure"])
    return result


def _source_onnx(source: str, is_onnx: bool, folder: Path, export_settings, state: dict, step) -> tuple[Path, Path]:
    """``(FP32 reference ONNX, ONNX the engines are built from)``: the given file, or the model exported into ``DIR/model``."""
    if is_onnx:
        path = Path(source).resolve()
        return path, path
    recorded = state.get("export")
    if recorded and all(Path(recorded[k]).is_file() and sha256_file(recorded[k]) == recorded[k + "_sha256"] for k in ("onnx", "final")):
        return Path(recorded["onnx"]), Path(recorded["final"])
    from deploy_res.export import ExportSettings, export

    step(f"exporting {source} to ONNX (parity-checked) and running the graph passes")
    exported = export(source, folder / "model", export_settings or ExportSettings())
    onnx_path, final = exported.onnx_path.resolve(), exported.final_path.resolve()
    state["export"] = {"onnx": str(onnx_path), "onnx_sha256": sha256_file(onnx_path), "final": str(final), "final_sha256": sha256_file(final)}
    return onnx_path, final


def _fallback_candidates(state: dict, settings: TuneSettings) -> list[tuple[str, str, str]]:
    """``(name, "int8", backend)`` for each INT8 engine that was built but did not PASS: the same engine with its
    ``fallback_layers`` most sensitive layers kept in float (the sensitivity ranking of ``build-engine
    --fallback-layers``), tried once; none when ``fallback_layers`` is 0."""
    if not settings.fallback_layers:
        return []
    return [(f"int8-fallback{settings.fallback_layers}-{e['backend']}", "int8", e["backend"]) for e in list(state["engines"].values())
            if e["precision"] == "int8" and not e.get("fallback_layers") and e.get("outcome") not in ("pass", "not built", None)]


def _engine(name, precision, backend, build_from: Path, reference: Path, engines_dir: Path, settings: TuneSettings, calib, preprocessing,
            step, fallback: Optional[int] = None) -> dict[str, Any]:
    """Build (or reuse) and validate one engine candidate (INT8 with ``fallback`` sensitive layers in float when
    given, default None); its verdict entry for the state."""
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.core.names import engine_name, model_stem
    from deploy_res.validation import ValidateSettings, validate

    int8 = precision == "int8"
    build = BuildSettings(precision=precision, backend=backend, calib_data=Path(calib) if int8 else None, calib_samples=settings.calib_samples,
                          preprocessing=preprocessing, fallback_layers=fallback)
    key = {"input_sha256": sha256_file(build_from), "precision": precision, "backend": backend,
           "calib_sha256": data_fingerprint(calib) if int8 else None, "calib_samples": settings.calib_samples if int8 else None,
           **({"fallback_layers": fallback} if fallback else {})}
    engines_dir.mkdir(parents=True, exist_ok=True)
    engine = engines_dir / engine_name(model_stem(build_from), precision, backend)
    entry: dict[str, Any] = {"name": name, "precision": precision, "backend": backend, "path": str(engine), "fallback_layers": fallback}
    if reusable_engine(engines_dir, engine, key):
        entry["reused"] = True
        step(f"{name}: reusing {engine.name} (same input, settings and bytes)")
    else:
        kept = f" with its {fallback} most sensitive layers in float" if fallback else ""
        step(f"building the {precision} {backend} engine{kept}")
        try:
            built = build_engine(build_from, engines_dir, build, quiet=True)
        except DeployResError as exc:
            return {**entry, "outcome": "not built", "verdict": f"build failed: {exc}", "sha256": None}
        engine = built.engine
        record_build(engines_dir, engine, key)
        entry.update(path=str(engine), reused=False)
    step(f"validating {name} against the FP32 ONNX on {settings.data}")
    limits = {"top1_drop_points": settings.max_top1_drop} if settings.max_top1_drop is not None else None
    verdict = validate(engine, ValidateSettings(reference=str(reference), data=str(settings.data), samples=settings.samples, limits=limits))
    accuracy = verdict.get("accuracy") or {}
    drop = next((c for c in verdict["checks"] if c["name"] == "top1_drop_points"), None)
    return {**entry, "sha256": sha256_file(engine), "outcome": verdict["outcome"], "verdict": verdict["verdict"],
            "samples": verdict["inputs"]["samples"], "evidence": verdict["evidence"],
            "top1": accuracy.get("artifact_top1"), "reference_top1": accuracy.get("reference_top1"),
            "top1_drop_points": accuracy.get("top1_drop_points"), "top1_drop_interval": drop.get("interval") if drop else None,
            "top1_agreement": verdict["metrics"].get("top1_agreement"), "cosine_mean": verdict["metrics"].get("cosine_mean"),
            "validation": verdict["result_path"], "top_batch": _top_batch(engine)}


def _top_batch(engine: Path) -> int:
    from deploy_res.core.manifest import read_manifest

    batch_range = (read_manifest(engine) or {}).get("batch_range") or {}
    return max(1, min(TOP_BATCH, int(batch_range.get("max") or TOP_BATCH)))


def _request_inputs(settings: TuneSettings, build_from: Path, engine: str) -> dict[str, np.ndarray]:
    """One real sample of ``data`` (batch 1): the request every client sends."""
    import onnx

    from deploy_res.core.manifest import read_manifest
    from deploy_res.data.inputs import load_inputs
    from deploy_res.models import Preprocessing

    graph_input = onnx.load(str(build_from), load_external_data=False).graph.input[0]
    dims = [d.dim_value or None for d in graph_input.type.tensor_type.shape.dim]
    manifest = read_manifest(engine) or {}
    pre = Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None
    shape = tuple((manifest.get("input") or {}).get("shape") or dims)[1:]
    loaded = load_inputs(settings.data, pre, count=1, input_shape=[d if isinstance(d, int) and d > 0 else None for d in shape],
                         input_name=graph_input.name)
    return {graph_input.name: np.ascontiguousarray(loaded.arrays[:1], dtype=np.float32)}


def _point_id(engine: str, serving: Serving) -> str:
    return f"{engine}|{serving.key}"


def _measure(runner, entry: dict, serving: Serving, inputs, settings: TuneSettings, step, seconds: Optional[float] = None) -> dict[str, Any]:
    """One run of one point, ``seconds`` long (default None: ``settings.seconds``)."""
    from deploy_res.core.names import served_name

    name = served_name(entry["path"], entry["backend"], entry["precision"])
    step(f"{entry['name']}: serving {serving.key} ({serving.instances} instance(s) x {serving.threads} thread(s){in_streams(serving.streams)}, max batch "
         f"{serving.max_batch}, queue delay {serving.queue_delay_us} us) at {settings.concurrency} clients")
    raw = runner.measure(Path(entry["path"]), name, serving, inputs, settings.concurrency, seconds or settings.seconds)
    return {k: v for k, v in raw.items() if k != "latencies_ms"} | {"latencies_ms": [round(t, 4) for t in raw["latencies_ms"]]}


def _figures(engine: str, serving: Serving, runs: list[dict[str, Any]], settings: TuneSettings) -> dict[str, Any]:
    """A point's figures from one or more runs: throughput their mean, p50/p99 and the p99 interval over all requests."""
    latencies = [t for run in runs for t in run["latencies_ms"]]
    point = {"engine": engine, "key": serving.key, "serving": serving.to_dict(), "runs": len(runs),
             "throughput": float(np.mean([run["throughput"] for run in runs])), "throughput_runs": [run["throughput"] for run in runs],
             "errors": sum(run["errors"] for run in runs), "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
             "samples_per_execution": runs[-1].get("samples_per_execution"), "batch_sizes": runs[-1].get("batch_sizes"),
             "memory_mib": max((r["memory_mib"] for r in runs if r.get("memory_mib") is not None), default=None),
             "memory_of": runs[-1].get("memory_of"),
             **judging.latency_figures(latencies)}
    point["judgement"] = judging.judge(point, settings.p99_ms, settings.min_throughput)
    return point


def _point(state: dict, engine: str, serving: Serving, settings: TuneSettings) -> Optional[dict[str, Any]]:
    runs = state["points"].get(_point_id(engine, serving))
    return _figures(engine, serving, runs, settings) if runs else None


def _measure_points(name, entry, points, runner, inputs, settings: TuneSettings, state: dict, folder: Path, clock: _Clock, step) -> None:
    """Measure each of ``points`` of engine ``name`` not measured yet, kept in ``state`` as they come. A point whose
    p99 budget its first run cannot decide is served longer (up to ``max_point_seconds``) unless that run is over
    :data:`~deploy_res.tune.judge.SCREEN` behind the best point meeting the budgets."""
    for serving in points:
        if _point_id(name, serving) in state["points"]:
            continue
        if clock.out():
            return
        runs = [_measure(runner, entry, serving, inputs, settings, step)]
        leader = _leader(state, settings)
        first = _figures(name, serving, runs, settings)
        contender = judging.could_win(first, leader, settings.objective)
        if judging.undecided(first) and not contender:
            step(f"{entry['name']}: {serving.key} not served longer: {judging.objective_value(first, settings.objective):.1f} is "
                 f"over {judging.SCREEN:.0%} behind the best point meeting the budgets ({judging.objective_value(leader, settings.objective):.1f})")
        figures = first
        while contender and judging.undecided(figures) and not clock.out():
            longer, why_not = judging.serve_longer(figures, runs, settings.p99_ms, settings.seconds, settings.max_point_seconds)
            if not longer:
                if why_not:
                    step(f"{entry['name']}: {serving.key} left undecided: {why_not}")
                break
            step(f"{entry['name']}: {serving.key} served {longer:.0f} s more: its p99 budget is undecided on {figures['requests']} requests")
            runs.append(_measure(runner, entry, serving, inputs, settings, lambda _m: None, seconds=longer))
            figures = _figures(name, serving, runs, settings)
        state["points"][_point_id(name, serving)] = runs
        state["measured"] = state.get("measured", 0) + 1
        save_state(folder, state)


def _best_of(state: dict, name: str, settings: TuneSettings) -> Optional[dict[str, Any]]:
    """Engine ``name``'s best measured point by the objective (None: none measured)."""
    points = [p for p in (_point(state, name, Serving(**_serving_of(k)), settings) for k in _keys(state, name)) if p]
    return max(points, key=lambda p: judging.score(p, settings.objective)) if points else None


def _screened_out(state: dict, name: str, settings: TuneSettings) -> Optional[str]:
    """Why engine ``name`` is not hill-climbed (None: it is): its best coarse point is over
    :data:`~deploy_res.tune.judge.SCREEN` behind the best point of another engine that meets the budgets."""
    best, leader = _best_of(state, name, settings), _leader(state, settings)
    if best is None or leader is None or leader["engine"] == name or judging.could_win(best, leader, settings.objective):
        return None
    value = judging.objective_value
    return (f"{name} not searched further: its best corner ({value(best, settings.objective):.1f}) is over {judging.SCREEN:.0%} behind "
            f"{leader['engine']} {leader['key']} ({value(leader, settings.objective):.1f}), which meets the budgets")


def _climb(name, entry, runner, inputs, settings: TuneSettings, cores: int, state: dict, folder: Path, clock: _Clock, step) -> None:
    """Coarse points (measured already when screened), then hill-climb from the best one."""
    top = entry.get("top_batch") or TOP_BATCH

    def measure(points) -> None:
        _measure_points(name, entry, points, runner, inputs, settings, state, folder, clock, step)

    measure(coarse(cores, top, streams=_has_streams(entry), gpu=_on_gpu(entry)))
    current = _best_of(state, name, settings)
    visited: set[str] = set()
    while current is not None and not clock.out() and current["key"] not in visited:
        visited.add(current["key"])
        measure(neighbours(Serving(**_serving_of(current["key"])), cores, top, streams=_has_streams(entry), gpu=_on_gpu(entry)))
        better = _best_of(state, name, settings)
        if better is None or judging.score(better, settings.objective) <= judging.score(current, settings.objective):
            break
        current = better


def _leader(state: dict, settings: TuneSettings) -> Optional[dict[str, Any]]:
    """The best point meeting every budget so far, over every engine (None: none yet)."""
    meeting = [p for p in _all_points(state, settings) if p["judgement"]["meets"]]
    return max(meeting, key=lambda p: judging.score(p, settings.objective)) if meeting else None


def _keys(state: dict, engine: str) -> list[str]:
    return [pid.split("|", 1)[1] for pid in state["points"] if pid.split("|", 1)[0] == engine]


def _serving_of(key: str) -> dict[str, int]:
    parts = dict((part[0], int(part[1:])) for part in key.split("_"))
    return {"instances": parts["i"], "threads": parts["t"], "max_batch": parts["b"], "queue_delay_us": parts["d"], "streams": parts.get("s", 1)}


def _has_streams(entry: dict) -> bool:
    """Whether an engine's serving has the streams axis: OpenVINO's ``NUM_STREAMS``."""
    return entry.get("backend") == "openvino"


def _on_gpu(entry: dict) -> bool:
    """Whether an engine is served on the GPU (TensorRT): instances share the GPU, not the cores."""
    return entry.get("backend") == "tensorrt"


def _all_points(state: dict, settings: TuneSettings) -> list[dict[str, Any]]:
    points = []
    for pid, runs in state["points"].items():
        engine, key = pid.split("|", 1)
        serving = Serving(**_serving_of(key))
        points.append(_figures(engine, serving, runs + state["finals"].get(pid, []), settings))
    return points


def _finals(runner, inputs, settings: TuneSettings, state: dict, folder: Path, clock: _Clock, step) -> None:
    """The best :data:`FINALISTS` points measured once more, in turn (A, B, C), so each has two runs to pool."""
    if state.get("finalists_of") != len(state["points"]):  # chosen once per set of measured points, so a resume keeps them
        ranked = sorted(_all_points(state, settings), key=lambda p: judging.score(p, settings.objective), reverse=True)
        state["finalists"] = [_point_id(p["engine"], Serving(**_serving_of(p["key"]))) for p in ranked[:FINALISTS]]
        state["finalists_of"] = len(state["points"])
        save_state(folder, state)
    if len(state["finalists"]) < 2:
        return
    for pid in state["finalists"]:
        point = {"engine": pid.split("|", 1)[0], "key": pid.split("|", 1)[1]}
        if state["finals"].get(pid) or clock.out():
            continue
        entry = state["engines"][point["engine"]]
        step(f"finalist {pid}: measured again")
        state["finals"][pid] = [_measure(runner, entry, Serving(**_serving_of(point["key"])), inputs, settings, lambda _m: None)]
        state["measured"] = state.get("measured", 0) + 1
        save_state(folder, state)


def _public(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != "latencies_ms"}


def _answer(state: dict, settings: TuneSettings, cores: int, described: dict, notes: list[str], clock: _Clock, measured_now: int,
            resumed: bool) -> dict[str, Any]:
    from deploy_res.engines import cpu_fingerprint

    points = _all_points(state, settings)
    for point in points:
        entry = state["engines"][point["engine"]]
        point.update(precision=entry["precision"], backend=entry["backend"], top1_drop_points=entry.get("top1_drop_points"),
                     finalist=_point_id(point["engine"], Serving(**_serving_of(point["key"]))) in state.get("finalists", []))
    ranked = sorted(points, key=lambda p: judging.score(p, settings.objective), reverse=True)
    meeting = [p for p in ranked if p["judgement"]["meets"]]
    # The chosen and the runner-up come from the finalists (measured twice) when there are any.
    finalists = [p for p in meeting if p["finalist"]] or meeting
    chosen = finalists[0] if finalists else None
    runner_up = next((p for p in (finalists[1:] + [p for p in meeting if p not in finalists])), None) if chosen else None
    engines = list(state["engines"].values())
    passing = [e for e in engines if e.get("outcome") == "pass"]
    status, failure = "chosen", None
    if not passing:
        status = "no engine passed"
        failure = ("no engine passes the accuracy limits: " + "; ".join(f"{e['name']} {str(e.get('outcome')).upper()}" for e in engines)
                   if engines else "no engine was built and judged before the time budget ran out")
    elif chosen is None:
        status = "no point meets the budgets"
        closest = ranked[0] if ranked else None
        failure = (f"no serving point meets the budgets; the closest, {closest['engine']} {closest['key']}, fails: "
                   f"{closest['judgement']['failed']}" if closest else "no serving point was measured before the time budget ran out")
    fingerprint = cpu_fingerprint()
    return {
        "schema": "deployres.tune", "schema_version": 1,
        "status": status, "failure": failure, "interrupted_by_budget": clock.ran_out, "seconds": round(clock.seconds, 1),
        "resumed": resumed, "measured_this_run": measured_now, "measured_total": state.get("measured", 0),
        "budgets": {"max_top1_drop": settings.max_top1_drop, "p99_ms": settings.p99_ms, "concurrency": settings.concurrency,
                    "min_throughput": settings.min_throughput, "p99_judged_by": "95 % order-statistic interval of the p99 (pass only when its upper end <= the budget)"},
        "objective": settings.objective,
        "settings": {k: v for k, v in described.items() if k not in ("source_sha256", "data_sha256", "calib_sha256")},
        "harness": state.get("harness_used"), "tool": state.get("tool"),
        "machine": {"cpu": fingerprint.get("model") or fingerprint.get("cpu"), "isa": fingerprint.get("isa") or fingerprint.get("flags"), "cores": cores},
        "engines": engines,
        "points": [_public(p) for p in ranked],
        "chosen": _chosen_block(chosen, state) if chosen else None,
        "runner_up": _public(runner_up) if runner_up else None,
        "margin": judging.margin(chosen, runner_up, settings.objective) if chosen else None,
        "notes": notes,
    }


def _chosen_block(point: dict[str, Any], state: dict) -> dict[str, Any]:
    entry = state["engines"][point["engine"]]
    return {**_public(point), "engine_path": entry["path"], "validation": entry.get("validation"), "verdict": entry.get("verdict")}


def _record_manifest(report: dict[str, Any]) -> None:
    """The chosen engine's manifest gets a ``tune`` block: why it won."""
    from deploy_res.core.manifest import read_manifest, write_manifest

    chosen = report["chosen"]
    engine = Path(chosen["engine_path"])
    manifest = read_manifest(engine) or {}
    body = {k: v for k, v in manifest.items() if k not in ("schema_version", "stage", "artifact", "versions")}
    runner_up = report.get("runner_up")
    block = {"budgets": report["budgets"], "objective": report["objective"], "serving": chosen["serving"], "harness": report["harness"],
             "measured": {k: chosen[k] for k in ("throughput", "p50_ms", "p99_ms", "p99_interval_ms", "requests", "runs")},
             "verdict": chosen.get("verdict"),
             "runner_up": {"engine": runner_up["engine"], "serving": runner_up["serving"], "throughput": runner_up["throughput"],
                           "p99_ms": runner_up["p99_ms"]} if runner_up else None,
             "margin": report.get("margin")}
    write_manifest(engine, manifest.get("stage") or "build-engine", {**body, "tune": block})


def _write_triton(chosen: dict[str, Any], repo: Path, cores: int) -> dict[str, Any]:
    from deploy_res.serve import TritonSettings, triton

    serving = chosen["serving"]
    written = triton([chosen["engine_path"]], repo, TritonSettings(python_backend=True, instances=serving["instances"], threads=serving["threads"],
                                                                  streams=serving.get("streams", 1), cores=cores, max_batch_size=serving["max_batch"],
                                                                  max_queue_delay_us=serving["queue_delay_us"], overwrite=True, check=True))
    return {"repository": str(repo.resolve()), "models": [m["name"] for m in written.models], "checks": written.checks}
