"""``--backend auto`` on a CPU: build with every candidate backend, time the engines side by side, keep the faster.

A reduced-precision candidate is first judged by the validation verdict (:func:`deploy_res.validation.validate`)
against the FP32 graph it was built from, on the calibration data, and :func:`gate` keeps the candidates of the
best outcome present: when any PASSES, only the passing ones, as ``tune`` times only PASSING engines (a FAIL or an
INCONCLUSIVE one is removed and never timed); when none passes, the INCONCLUSIVE ones; when every one fails, all,
and the faster is kept with a note saying so (the build's own ``validate`` then fails it). So auto never picks a faster engine that fails the limits, nor one
the data cannot show within them over one that it can.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from deploy_res.core.artifact import remove_artifact
from deploy_res.core.manifest import read_manifest, write_manifest
from deploy_res.engines import choose, companions


def build_measured(candidates: Sequence[str], build: Callable[..., Any], settings, status: Callable, reference: Path) -> Any:
    """Build with each of ``candidates`` (``build(settings)`` returns a ``BuildEngineResult``), keep the faster engine
    of those that do not fail the accuracy gate (reduced precisions; ``reference`` is the FP32 ONNX built from).

    The winner's manifest records every figure (``auto``); the other engines and their companions are removed.
    """
    built = {name: build(replace(settings, backend=name)) for name in candidates}
    judged = _judge(built, reference, settings, status) if settings.precision != "fp32" else {}
    removed, gate_notes = gate(judged, settings.precision)
    for name in removed:
        _remove_engine(built.pop(name).engine, name)
    candidates = [name for name in candidates if name in built]
    if len(built) == 1:
        (winner, chosen), = built.items()
        _record(chosen.engine, {"chosen": winner, "rule": "the only candidate the accuracy gate keeps", "accuracy": judged,
                                "threads": settings.threads})
        chosen.notes += gate_notes
        return chosen
    batch_range = (read_manifest(built[candidates[0]].engine) or {}).get("batch_range") or {}
    low, high = int(batch_range.get("min") or 1), int(batch_range.get("max") or choose.BATCHES[-1])
    batches = tuple(sorted({low, max(low, min(choose.BATCHES[-1], high))}))
    with status(f"timing {' and '.join(candidates)} side by side"):
        speeds = choose.measure({name: result.engine for name, result in built.items()}, batches, threads=settings.threads)
    winner, batch = choose.pick(speeds)
    chosen = built[winner]
    _record(chosen.engine, {**choose.record(speeds, winner, batch, settings.threads), **({"accuracy": judged} if judged else {})})
    for name, result in built.items():
        if name != winner and result.engine is not None:
            _remove_engine(result.engine, name)
    figures = ", ".join(f"{name} {speeds[name][batch]:.1f}" for name in candidates)
    chosen.notes += gate_notes
    chosen.notes.append(f"auto: {winner} is faster here at batch {batch} ({figures} images/s, timed side by side)")
    small = min(batches)
    fastest = max(speeds, key=lambda name: speeds[name][small])
    if small != batch and fastest != winner:
        chosen.notes.append(f"auto: at batch {small} {fastest} is faster ({', '.join(f'{n} {speeds[n][small]:.1f}' for n in candidates)} images/s); "
                            f"for batch-{small} serving build with --backend {fastest}")
    return chosen


def gate(judged: Mapping[str, Mapping[str, Any]], precision: str) -> tuple[list[str], list[str]]:
    """``(candidates removed before timing, notes)`` from each candidate's verdict: the candidates of the best
    outcome present are kept, the others removed. When any PASSES, only the passing ones are timed (as ``tune`` times
    only PASSING engines); when none passes, the INCONCLUSIVE ones; when every one FAILS, all (the faster is kept,
    and the build's own ``validate`` fails it)."""
    passing, undecided, failing = ([name for name, verdict in judged.items() if verdict["outcome"] == outcome]
                                   for outcome in ("pass", "inconclusive", "fail"))
    kept = passing or undecided or failing
    notes = [f"auto: {name} {verdict['verdict']}" for name, verdict in judged.items()]
    if failing and kept is not failing:
        notes.append(f"auto: {', '.join(failing)} removed: it fails the {precision} limits, so it is not timed")
    if undecided and kept is passing:
        notes.append(f"auto: {', '.join(undecided)} removed: its verdict is INCONCLUSIVE and {', '.join(passing)} passes the {precision} "
                     f"limits, so it is not timed")
    if kept is undecided:
        notes.append(f"auto: no candidate passes the {precision} limits on these samples; the INCONCLUSIVE ones are timed "
                     f"(more --calib-samples may decide)")
    elif kept and kept is failing:
        notes.append(f"auto: every candidate fails the {precision} limits; the faster is kept (try --fallback-layers)")
    return [name for name in judged if name not in kept], notes


def _judge(built: Mapping[str, Any], reference: Path, settings, status: Callable) -> dict[str, dict[str, Any]]:
    """Each candidate's verdict against the FP32 ``reference`` on the calibration data (``settings.calib_samples`` of it)."""
    from deploy_res.validation import ValidateSettings, validate

    judged = {}
    with tempfile.TemporaryDirectory() as scratch:  # the gate's results live in the manifest, not beside the engine
        for name, result in built.items():
            with status(f"judging the {name} {settings.precision} engine against the FP32 graph on the calibration data"):
                verdict = validate(result.engine, ValidateSettings(reference=str(reference), data=str(settings.calib_data) if settings.calib_data else None,
                                                                   samples=settings.calib_samples, skip_bad_files=settings.skip_bad_files),
                                   output=Path(scratch) / f"{name}.json")
            judged[name] = {"outcome": verdict["outcome"], "verdict": verdict["verdict"], "samples": verdict["inputs"]["samples"],
                            "evidence": verdict["evidence"], "checks": verdict["checks"]}
    return judged


def _record(engine: Path, auto: dict[str, Any]) -> None:
    """Write ``auto`` into the engine's manifest."""
    manifest = read_manifest(engine) or {}
    body = {k: v for k, v in manifest.items() if k not in ("schema_version", "stage", "artifact", "versions")}
    write_manifest(engine, "build-engine", {**body, "auto": auto})


def _remove_engine(engine: Path, backend: str) -> None:
    files, folders = companions(engine, backend)
    remove_artifact(engine, tuple(files))
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
