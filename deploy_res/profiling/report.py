"""The profile report (schema in :mod:`deploy_res.reports.schema`) from measured entries, and the
validation results matched to them."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from deploy_res.core.errors import DeployResError
from deploy_res.core.manifest import precision_of
from deploy_res.core.timing import BLOCK_S, SETTLE_S
from deploy_res.engines import backend_of
from deploy_res.profiling.measure import MIN_ITERATIONS, Entry, complexity_of, environment, process_peak_rss_mb
from deploy_res.profiling.stats import summarize

SCHEMA_NAME = "deployres.profile"
SCHEMA_VERSION = 1


def read_validation_files(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Validation results from ``deployres validate --json`` files, leniently.

    Each file may hold a list of results, one result (a dict with ``artifact``), or
    a dict with the list under ``results``, ``artifacts`` or ``validations``.
    Entries that are not dicts with an ``artifact`` are skipped.
    """
    import json

    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeployResError(f"cannot read validation results {path}: {exc}") from None
        if isinstance(data, Mapping) and "artifact" not in data:
            data = next((data[k] for k in ("results", "artifacts", "validations") if isinstance(data.get(k), list)), [])
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, Mapping) and item.get("artifact"):
                results.append(dict(item))
    return results


def _precision(entry: Entry, manifest: Optional[Mapping[str, Any]]) -> str:
    if entry.kind == "torch":
        return "fp32"
    try:
        return precision_of(entry.path or "", manifest)
    except DeployResError:  # not readable as ONNX: measured as what it is, labelled by its name
        name = Path(entry.path or "").name.lower()
        return next((p for p in ("int8", "fp16", "bf16") if p in name), "fp32")


def _match_validation(entry: Entry, results: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    for result in results:
        target = result.get("artifact")
        if not target or entry.path is None:
            continue
        target = Path(str(target))
        if target.name == Path(entry.path).name or target.resolve() == Path(entry.path).resolve():
            metrics = result.get("metrics") if isinstance(result.get("metrics"), Mapping) else {}
            from deploy_res.validation.verdict import outcome_of

            return {"precision": result.get("precision"), "metrics": dict(metrics),
                    "top1_agreement": metrics.get("top1_agreement"), "passed": result.get("passed"), "outcome": outcome_of(result),
                    "evidence": result.get("evidence"), "samples": (result.get("inputs") or {}).get("samples"),
                    "worst_classes": [row for row in result.get("worst_classes") or [] if row.get("agreement", 1) < 1][:3],
                    "verdict": result.get("verdict") or ("; ".join(result.get("failed") or []) or None)}
    return None


def build_report(entries: Sequence[Entry], manifests: Mapping[str, Optional[Mapping[str, Any]]], *, batches: Sequence[int],
                 warmup_s: float, duration_s: float, iterations: Optional[int], threads: Optional[int], torch_modes: Sequence[str],
                 layer_iterations: int, status: str, validation_results=None, seconds: float = 0.0) -> dict[str, Any]:
    """The report dict (schema in :mod:`deploy_res.reports.schema`) from measured entries."""
    validation = [v for v in (validation_results or []) if isinstance(v, Mapping)]
    complexities: dict[tuple, dict[str, Any]] = {}
    rows = []
    for entry in entries:
        manifest = manifests.get(entry.label)
        model = (manifest or {}).get("model") or {}
        key = (model.get("source"), tuple(((manifest or {}).get("preprocessing") or {}).get("input_size") or ()))
        if key not in complexities:
            complexities[key] = complexity_of(manifest) if manifest else {"error": "no manifest"}
        complexity = complexities[key]
        flops = complexity.get("flops")
        batch_rows = []
        for batch in batches:
            samples = entry.samples.get(batch)
            if not samples:
                continue
            summary = summarize(samples, batch)
            batch_rows.append({"batch": batch, **summary,
                               "gflops_per_s": flops * summary["throughput"] / 1e9 if flops else None,
                               "first_run_ms": entry.info.get("first_run_ms", {}).get(batch),
                               "samples_ms": [round(s, 4) for s in samples]})
        measured = bool(batch_rows)
        error = entry.error
        if not measured and not error:
            error = "interrupted before it was measured" if status == "interrupted" else "not measured"
        layers = entry.info.get("layers")
        if entry.kind == "torch":
            check = {"precision": "fp32", "metrics": {"top1_agreement": 1.0}, "top1_agreement": 1.0, "passed": True,
                     "note": "the PyTorch original is the reference validation compares against"} if validation else None
        else:
            check = _match_validation(entry, validation)
        rows.append({
            "label": entry.label, "kind": entry.kind, "path": entry.path,
            "backend": entry.info.get("backend") or ("torch" if entry.kind == "torch" else (backend_of(entry.path) if entry.path else None)),
            "device": entry.info.get("device"), "precision": _precision(entry, manifest),
            "model": model.get("source"), "measured": measured, "error": error if not measured else entry.error,
            "notes": entry.info.get("notes", []), "skipped_batches": {str(k): v for k, v in entry.info.get("skipped_batches", {}).items()},
            "load_seconds": entry.info.get("load_seconds"), "memory": entry.info.get("memory"),
            "flops_per_sample": flops, "complexity": complexity,
            "batches": batch_rows,
            "layers": layers, "layers_missing": entry.info.get("layers_missing") if not layers else None,
            "validation": check,
        })
    reference = next((r for r in rows if r["measured"]), None)
    for row in rows:
        for b in row["batches"]:
            ref = next((x for x in (reference or {}).get("batches", []) if x["batch"] == b["batch"]), None)
            b["speedup_p50"] = ref["p50_ms"] / b["p50_ms"] if ref and b["p50_ms"] > 0 else None
            b["throughput_ratio"] = b["throughput"] / ref["throughput"] if ref and ref["throughput"] > 0 else None
    first_manifest = manifests.get(entries[0].label) if entries else None
    return {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": status, "seconds": seconds,
        "settings": {"batches": list(batches), "warmup_s": warmup_s, "duration_s": None if iterations else duration_s,
                     "iterations": iterations, "min_iterations": None if iterations else MIN_ITERATIONS, "threads": threads,
                     "torch_modes": list(torch_modes), "layer_iterations": layer_iterations, "order": "interleaved round-robin of blocks",
                     "settle_s": SETTLE_S, "block_s": BLOCK_S,
                     "timer": "time.perf_counter around each run(), host end-to-end"},
        "environment": environment(threads),
        "model": {"source": ((first_manifest or {}).get("model") or {}).get("source"),
                  "input": (first_manifest or {}).get("input"),
                  "preprocessing": (first_manifest or {}).get("preprocessing")},
        "reference": reference["label"] if reference else None,
        "process_peak_rss_mb": process_peak_rss_mb(),
        "artifacts": rows,
        "validation": validation,
    }
