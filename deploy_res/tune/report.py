"""The answer of ``deployres tune``: ``tune.json`` (everything), ``tune.md`` (the tables) and ``tune.html`` (the tables
and an inline SVG plot of served p99 against throughput, one colour per engine, the Pareto front joined, the p99 budget
drawn, the chosen point ringed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from deploy_res.core.files import write_bytes_atomic, write_json_atomic
from deploy_res.reports.html import CSS
from deploy_res.reports.plots import PALETTE, WIDTH, _axis_scale, _svg, _x_axis, esc
from deploy_res.serve.triton_settings import in_streams


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The measured points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    usable = [p for p in points if p.get("p99_ms") is not None and p.get("throughput")]
    front = [p for p in usable if not any(q is not p and q["throughput"] >= p["throughput"] and q["p99_ms"] <= p["p99_ms"]
                                          and (q["throughput"] > p["throughput"] or q["p99_ms"] < p["p99_ms"]) for q in usable)]
    return sorted(front, key=lambda p: p["throughput"])


def _n(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _interval(values) -> str:
    low, high = (values or [None, None])
    return f"[{_n(low, 2)}, {_n(high, 2)}]"


def engine_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for e in report["engines"]:
        drop = e.get("top1_drop_points")
        rows.append([e["name"], str(e.get("outcome", "-")).upper(), "-" if drop is None else f"{drop:+.2f} {_interval(e.get('top1_drop_interval'))}",
                     _n(e.get("top1_agreement"), 3), str(e.get("samples", "-")), "yes" if e.get("reused") else "no", e.get("verdict") or ""])
    return rows


ENGINE_COLUMNS = ("engine", "verdict", "top-1 drop, points [95 %]", "top-1 agr.", "samples", "reused", "verdict line")
POINT_COLUMNS = ("engine", "instances x threads", "max batch", "queue delay us", "img/s", "p50 ms", "p99 ms", "p99 95 % interval", "memory MiB", "requests",
                 "runs", "meets budgets", "why not")


def _layout(serving: Mapping[str, Any]) -> str:
    """``instances x threads``, and the streams per instance where there are several (OpenVINO)."""
    return f"{serving['instances']} x {serving['threads']}{in_streams(serving.get('streams', 1))}"


def point_rows(report: Mapping[str, Any]) -> list[list[str]]:
    chosen = report.get("chosen") or {}
    rows = []
    for p in report["points"]:
        s = p["serving"]
        mark = " (chosen)" if chosen and p["engine"] == chosen.get("engine") and p["key"] == chosen.get("key") else ""
        rows.append([p["engine"] + mark, _layout(s), str(s["max_batch"]), str(s["queue_delay_us"]), _n(p["throughput"]),
                     _n(p["p50_ms"], 2), _n(p["p99_ms"], 2), _interval(p["p99_interval_ms"]), _n(p.get("memory_mib"), 0), str(p["requests"]), str(p["runs"]),
                     "yes" if p["judgement"]["meets"] else "no", p["judgement"]["failed"] or ""])
    return rows


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    budgets = report["budgets"]
    parts = [f"top-1 drop <= {budgets['max_top1_drop']:g} points" if budgets["max_top1_drop"] is not None else "each precision's default accuracy limits",
             f"p99 <= {budgets['p99_ms']:g} ms" if budgets["p99_ms"] is not None else "no p99 budget",
             f"throughput >= {budgets['min_throughput']:g} img/s" if budgets["min_throughput"] is not None else "no throughput budget"]
    lines = [f"Budgets: {', '.join(parts)}, at {budgets['concurrency']} concurrent clients; objective: {report['objective']}.",
             f"Measured with: {report.get('tool') or 'nothing (no engine passed)'}; machine: {report['machine']['cpu']} "
             f"({', '.join(report['machine']['isa'] or [])}), {report['machine']['cores']} cores for serving.",
             f"{len(report['points'])} points measured ({report['measured_this_run']} measurements in this run, the finalists' second runs "
             f"counted{'; resumed' if report['resumed'] else ''}), {report['seconds']:.0f} s."]
    chosen = report.get("chosen")
    if chosen:
        s = chosen["serving"]
        lines.append(f"Chosen: {chosen['engine']} with {s['instances']} instance(s) x {s['threads']} thread(s){in_streams(s.get('streams', 1))}, max batch {s['max_batch']}, "
                     f"queue delay {s['queue_delay_us']} us: {chosen['throughput']:.1f} img/s, p99 {chosen['p99_ms']:.2f} ms "
                     f"{_interval(chosen['p99_interval_ms'])} over {chosen['requests']} requests in {chosen['runs']} run(s).")
        runner_up, margin = report.get("runner_up"), report.get("margin") or {}
        if runner_up:
            lines.append(f"Runner-up: {runner_up['engine']} {runner_up['key']}: {runner_up['throughput']:.1f} img/s, p99 {runner_up['p99_ms']:.2f} ms; "
                         f"throughput ratio {_n(margin.get('throughput_ratio'), 3)}, p99 ratio {_n(margin.get('p99_ratio'), 3)} (> 1: chosen better).")
    else:
        lines.append(f"Nothing chosen: {report['failure']}.")
    lines += [f"Note: {note}" for note in report.get("notes", [])]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    out = ["# deployres tune", ""] + [f"- {line}" for line in summary_lines(report)] + ["", "## Engines (accuracy first: only PASS is timed)", ""]
    out += _md_table(ENGINE_COLUMNS, engine_rows(report))
    out += ["", "## Serving points", ""] + _md_table(POINT_COLUMNS, point_rows(report))
    return "\n".join(out) + "\n"


def _md_table(columns, rows) -> list[str]:
    clean = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]


def _accuracy(engine: Mapping[str, Any]) -> str:
    """An engine's accuracy in a few words: its top-1 drop (labelled data) or its top-1 agreement with FP32."""
    if engine.get("top1_drop_points") is not None:
        return f"top-1 drop {engine['top1_drop_points']:+.2f} pt"
    if engine.get("top1_agreement") is not None:
        return f"top-1 agreement {engine['top1_agreement']:.3f}"
    return ""


def pareto_chart(report: Mapping[str, Any]) -> Optional[str]:
    """p99 (ms) against served throughput (img/s), one colour per engine, its accuracy in the legend; the Pareto front
    joined; the budget dashed."""
    points = [p for p in report["points"] if p.get("p99_ms") is not None and p.get("throughput")]
    if not points:
        return None
    engines = sorted({p["engine"] for p in points})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(engines)}
    left, right, top, bottom = 80, WIDTH - 220, 16, 320
    sx, xticks, xlog = _axis_scale(min(p["throughput"] for p in points), max(p["throughput"] for p in points) * 1.1, left, right)
    budget = report["budgets"].get("p99_ms")
    high = max([p["p99_ms"] for p in points] + ([budget] if budget else [])) * 1.15
    sy_lin, yticks, ylog = _axis_scale(min(p["p99_ms"] for p in points), high, 0, bottom - top)
    sy = lambda v: bottom - sy_lin(v)  # noqa: E731
    body: list[str] = []
    for t in yticks:
        body.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#59636e">{t:g}</text>')
    _x_axis(body, left, right, top, bottom, xticks, sx, f"served images/s{' (log scale)' if xlog else ''}")
    body.append(f'<text transform="translate(20 {(top + bottom) / 2:.0f}) rotate(-90)" font-size="12.5" text-anchor="middle" fill="#59636e">'
                f'p99 latency (ms{", log scale" if ylog else ""})</text>')
    if budget:
        body.append(f'<line x1="{left}" y1="{sy(budget):.1f}" x2="{right}" y2="{sy(budget):.1f}" stroke="#cf222e" stroke-dasharray="6 4"/>')
        body.append(f'<text x="{right - 4}" y="{sy(budget) - 5:.1f}" font-size="12" text-anchor="end" fill="#cf222e">p99 budget {budget:g} ms</text>')
    front = pareto_front(points)
    if len(front) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p['throughput']):.1f},{sy(p['p99_ms']):.1f}" for i, p in enumerate(front))
        body.append(f'<path d="{path}" fill="none" stroke="#8c959f" stroke-width="1.5"/>')
    chosen = report.get("chosen") or {}
    for p in points:
        x, y = sx(p["throughput"]), sy(p["p99_ms"])
        low, high_ = p["p99_interval_ms"]
        if low is not None and high_ is not None:
            body.append(f'<line x1="{x:.1f}" y1="{sy(low):.1f}" x2="{x:.1f}" y2="{sy(high_):.1f}" stroke="{colors[p["engine"]]}" stroke-width="1.5"/>')
        fill = colors[p["engine"]] if p["judgement"]["meets"] else "#fff"
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="{colors[p["engine"]]}" stroke-width="2">'
                    f'<title>{esc(p["engine"])} {esc(p["key"])}: {p["throughput"]:.1f} img/s, p99 {p["p99_ms"]:.2f} ms</title></circle>')
        if p["engine"] == chosen.get("engine") and p["key"] == chosen.get("key"):
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="none" stroke="#1a7f37" stroke-width="2.5"/>')
    accuracy = {e["name"]: _accuracy(e) for e in report["engines"]}
    for i, name in enumerate(engines):
        ly = top + 14 + 30 * i
        body.append(f'<circle cx="{right + 30}" cy="{ly - 4}" r="6" fill="{colors[name]}"/>')
        body.append(f'<text x="{right + 44}" y="{ly}" font-size="12.5">{esc(name)}<title>{esc(accuracy.get(name, ""))}</title></text>')
        body.append(f'<text x="{right + 44}" y="{ly + 11}" font-size="10.5" fill="#59636e">{esc(accuracy.get(name, ""))}</text>')
    ly = top + 14 + 30 * len(engines)
    body.append(f'<text x="{right + 24}" y="{ly + 6}" font-size="12" fill="#59636e">filled: meets the budgets</text>')
    body.append(f'<text x="{right + 24}" y="{ly + 24}" font-size="12" fill="#59636e">ring: chosen; bars: p99 95 %</text>')
    return _svg(WIDTH, bottom + 50, body, "served p99 latency against throughput")


def render_html(report: Mapping[str, Any]) -> str:
    def table(columns, rows) -> str:
        head = "".join(f"<th class='text'>{esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td class='text'>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    chart = pareto_chart(report)
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>deployres tune</title>", f"<style>{CSS}</style></head><body><main>",
             "<h1>deployres tune</h1>", "".join(f"<p class='sub'>{esc(line)}</p>" for line in summary_lines(report)),
             "<h2>Served p99 against throughput</h2>",
             f"<figure>{chart}<figcaption>Every measured point; the grey line joins the Pareto front (no point has both more images/s and a "
             f"lower p99).</figcaption></figure>" if chart else "<p class='note'>No point was measured.</p>",
             "<h2>Engines (accuracy first: only PASS is timed)</h2>", table(ENGINE_COLUMNS, engine_rows(report)),
             "<h2>Serving points</h2>", table(POINT_COLUMNS, point_rows(report)), "</main></body></html>"]
    return "".join(parts)


def write_reports(report: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """``tune.json``, ``tune.md`` and ``tune.html`` in ``folder``, each written atomically."""
    paths = {"json": folder / "tune.json", "md": folder / "tune.md", "html": folder / "tune.html"}
    write_json_atomic(paths["json"], {**report, "report_paths": {k: str(v) for k, v in paths.items()}})
    write_bytes_atomic(paths["md"], render_markdown(report).encode())
    write_bytes_atomic(paths["html"], render_html(report).encode())
    return paths
