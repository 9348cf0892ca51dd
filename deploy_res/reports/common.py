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
    name = model.get("source") or "model"
    return f"{name} at {'x'.join(str(s) for s in size)}" if size else str(name)


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
