"""Formatting shared by the console table, the Markdown and the HTML report."""

from __future__ import annotations

from typing import Any, Mapping, Optional

COLUMNS = ("artifact", "precision", "backend", "batch", "p50 ms", "p99 ms", "mean ± std ms", "samples/s", "GFLOP/s", "speedup", "top-1 agr.")


def ms(value: Optional[float]) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def number(value: Optional[float], digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if value < 1e4 else f"{value:,.0f}"


def ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def title(report: Mapping[str, Any]) -> str:
    model = report.get("model") or {}
    size = (model.get("preprocessing") or {}).get("input_size")
    served = [m["name"] for m in (report.get("served") or {}).get("models", [])]
    name = model.get("source") or (", ".join(served[:3]) + (", …" if len(served) > 3 else "") if served else "model")
    return f"{name} at {'x'.join(str(s) for s in size)}" if size else str(name)


def validation_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(artifact, OUTCOME, evidence, verdict line)`` for every artifact with a validation result."""
    rows = []
    for art in report.get("artifacts", []):
        check = art.get("validation") or {}
        if check.get("outcome"):
            evidence = f"{check.get('samples') or '?'} {check.get('evidence') or ''} samples".replace("  ", " ")
            classes = check.get("worst_classes") or []
            if classes:  # the reference's classes the artifact agrees with least, named where the manifest names them
                evidence += "; least agreement: " + ", ".join(
                    f"{row['name'] + ' (' + str(row['class']) + ')' if row.get('name') else row['class']} {row['agreement']:.2f} of {row['samples']}"
                    for row in classes)
            rows.append((art["label"], check["outcome"].upper(), evidence, check.get("verdict") or "–"))
    return rows


def comparison_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact and batch size (one row with the reason for an artifact not measured)."""
    rows = []
    for art in report.get("artifacts", []):
        top1 = (art.get("validation") or {}).get("top1_agreement")
        base = {"artifact": art["label"], "precision": art.get("precision") or "–", "backend": art.get("backend") or "–", "top1": top1}
        if not art.get("measured"):
            rows.append({**base, "measured": False, "reason": art.get("error") or "not measured"})
            continue
        for b in art["batches"]:
            rows.append({**base, "measured": True, "batch": b["batch"], "p50": b["p50_ms"], "p99": b["p99_ms"], "mean": b["mean_ms"],
                         "std": b["std_ms"], "throughput": b["throughput"], "gflops": b.get("gflops_per_s"), "speedup": b.get("speedup_p50"),
                         "iterations": b["iterations"]})
    return rows


def cells(row: Mapping[str, Any]) -> list[str]:
    """The row as the strings of :data:`COLUMNS`."""
    if not row["measured"]:
        return [row["artifact"], row["precision"], row["backend"], "–", "not measured", "–", "–", "–", "–", "–", percent(row.get("top1"))]
    return [row["artifact"], row["precision"], row["backend"], str(row["batch"]), ms(row["p50"]), ms(row["p99"]),
            f"{ms(row['mean'])} ± {ms(row['std'])}", number(row["throughput"]), number(row["gflops"]), ratio(row["speedup"]), percent(row.get("top1"))]


def settings_line(report: Mapping[str, Any]) -> str:
    s = report.get("settings") or {}
    how = f"{s.get('iterations')} iterations" if s.get("iterations") else f"{s.get('duration_s')} s (≥ {s.get('min_iterations')} iterations)"
    threads = s.get("threads") or "default"
    return (f"batches {', '.join(str(b) for b in s.get('batches', []))}; warmup {s.get('warmup_s')} s; {how} per batch size, "
            f"interleaved round-robin{_blocks(s)}; threads {threads}")


def _blocks(settings: Mapping[str, Any]) -> str:
    """How each turn was timed (reports before blocks existed say nothing)."""
    if settings.get("settle_s") is None:
        return ""
    return f" in {settings.get('block_s', 0):g} s blocks, each after a {1e3 * settings['settle_s']:.0f} ms settle pause"


def environment_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    env = report.get("environment") or {}
    cpu = env.get("cpu") or {}
    threads = env.get("threads") or {}
    rows = [("CPU", f"{cpu.get('model') or '?'} ({cpu.get('machine')}, {', '.join(cpu.get('isa') or []) or 'no ISA flags'})"),
            ("cores", f"{cpu.get('physical_cores') or '?'} physical, {cpu.get('logical_cores')} logical, {cpu.get('usable_cores')} usable"),
            ("GPU", (env.get("gpu") or {}).get("name") or "none"),
            ("OS", env.get("os") or "?"),
            ("threads", ", ".join(f"{k} {v}" for k, v in threads.items() if v is not None) or "defaults")]
    rows += [(name, version) for name, version in (env.get("versions") or {}).items()]
    return rows


SERVED_COLUMNS = ("model", "concurrency", "req/s", "samples/s", "p50 ms", "p90 ms", "p99 ms", "avg batch", "server batches", "errors")
"""The served-model table (``served`` section): one row per model and concurrency level."""


def served_batches(level: Mapping[str, Any]) -> str:
    """The batch sizes the server ran at a level, as ``size×executions`` (e.g. ``1×40, 2×12``)."""
    sizes = (level.get("server") or {}).get("batch_sizes") or []
    return ", ".join(f"{s['batch_size']}×{s['executions']}" for s in sizes) or "–"


def served_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per served model and concurrency (one row with the reason for a model not measured)."""
    rows = []
    for model in (report.get("served") or {}).get("models", []):
        if not model.get("levels"):
            rows.append({"model": model["name"], "measured": False, "reason": model.get("error") or "not measured"})
            continue
        for level in model["levels"]:
            rows.append({"model": model["name"], "measured": True, "level": level})
    return rows


def served_cells(row: Mapping[str, Any]) -> list[str]:
    """The row as the strings of :data:`SERVED_COLUMNS`."""
    if not row["measured"]:
        return [row["model"], "–", "not measured", *["–"] * (len(SERVED_COLUMNS) - 3)]
    level = row["level"]
    merged = (level.get("server") or {}).get("samples_per_execution")
    return [row["model"], str(level["concurrency"]), number(level["requests_per_s"]), number(level["throughput"]), ms(level.get("p50_ms")),
            ms(level.get("p90_ms")), ms(level.get("p99_ms")), "–" if merged is None else f"{merged:.2f}", served_batches(level), str(level["errors"])]


def served_line(report: Mapping[str, Any]) -> str:
    """How the served models were measured, in one line."""
    served = report.get("served") or {}
    server = served.get("server") or {}
    s = served.get("settings") or {}
    where = (f"tritonserver {server.get('version') or '?'} started on {server.get('repository')}" if server.get("repository")
             else f"Triton at {server.get('url') or '?'}")
    if not s:
        return where
    return (f"{where}, {server.get('protocol')}; concurrency {', '.join(str(c) for c in s.get('concurrency', []))}; "
            f"{s.get('seconds_per_level')} s per level after {s.get('warmup_s')} s warm-up; {s.get('request_batch')} sample(s) per request; "
            f"{served.get('tool')}")
