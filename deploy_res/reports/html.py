"""The HTML report: one self-contained file (inline CSS and SVG; no scripts, fonts or network).

Sections: the comparison table; latency distribution per artifact (box plots:
whiskers min..p99, box p25..p75, median line, every sample as a dot);
throughput against batch size; time by network stage and the top layers per
artifact; accuracy (top-1 agreement with the PyTorch original) against p50
latency when validation results were given; with ``--server``, the served
models: a table per model and concurrency level and throughput and p50/p99
latency against concurrency; load, memory and FLOPs; the environment.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Optional, Sequence

from deploy_res.profiling.stats import percentile
from deploy_res.reports.common import (COLUMNS, SERVED_COLUMNS, cells, comparison_rows, environment_rows, ms, number, served_cells,
                                       served_line, served_rows, settings_line, title)

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
STAGE_COLORS = {"stem": "#9c755f", "stage1": "#4e79a7", "stage2": "#59a14f", "stage3": "#edc948", "stage4": "#e15759",
                "head": "#b07aa1", "other": "#bab0ac"}
TOP_N = 10
WIDTH = 1040

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#4e79a7; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink); font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:32px 28px 64px; }
h1 { font-size:26px; margin:0 0 4px; letter-spacing:-.01em; }
h2 { font-size:19px; margin:36px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; color:var(--muted); font-weight:600; }
p.sub { color:var(--muted); margin:0 0 18px; }
.banner { background:#fff8c5; border:1px solid #d4a72c; padding:8px 12px; border-radius:6px; margin:12px 0; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; font-size:13px; }
th, td { padding:6px 8px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:var(--soft); font-weight:600; color:var(--muted); }
th:first-child, td:first-child, td.text, th.text { text-align:left; }
tr.unmeasured td { color:var(--muted); font-style:italic; }
td.reason { white-space:normal; text-align:left; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:baseline; }
.best { font-weight:700; color:#1a7f37; }
figure { margin:8px 0 20px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
svg { display:block; max-width:100%; height:auto; }
svg text { font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif; fill:#1f2328; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(200px,1fr)); gap:12px; margin:18px 0 6px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.card .k { color:var(--muted); font-size:12.5px; }
.card .v { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.note { color:var(--muted); font-size:13px; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(high / step - 1e-9)) + 1)]


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _axis_scale(low: float, high: float, left: float, right: float):
    """``(scale, ticks, log)``: a log axis when values span more than 8x, else linear from 0."""
    if low > 0 and high / low > 8:
        lo, hi = low / 1.25, high
        ticks = [m * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
        span = math.log10(hi) - math.log10(lo)
        return (lambda v: left + (right - left) * (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / span), ticks, True
    ticks = _ticks(high)
    top = ticks[-1]
    return (lambda v: left + (right - left) * min(max(v, 0), top) / top), ticks, False


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>")


def _x_axis(body: list[str], left: int, right: int, top: int, bottom: int, ticks: Sequence[float], scale, label: str) -> None:
    for t in ticks:
        x = scale(t)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eaeef2"/>')
        body.append(f'<text x="{x:.1f}" y="{bottom + 16}" font-size="12" text-anchor="middle" fill="#59636e">{_tick_label(t)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#8c959f"/>')
    body.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 36}" font-size="12.5" text-anchor="middle" fill="#59636e">{_e(label)}</text>')


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def latency_boxes(artifacts: Sequence[Mapping[str, Any]], batch: int, colors: Mapping[str, str]) -> Optional[str]:
    """Box plot of per-iteration latency at ``batch``, one row per measured artifact."""
    rows = [(a, b) for a in artifacts for b in a.get("batches", []) if b["batch"] == batch and b.get("samples_ms")]
    if not rows:
        return None
    left, right, row_h, top = 200, WIDTH - 90, 46, 14
    height = top + row_h * len(rows) + 50
    high = max(b["p99_ms"] for _, b in rows) * 1.12
    scale, ticks, log = _axis_scale(min(b["min_ms"] for _, b in rows), high, left, right)
    high = high if log else ticks[-1]
    axis = f"latency per iteration at batch {batch} (ms{', log scale' if log else ''})"
    body: list[str] = []
    _x_axis(body, left, right, top, top + row_h * len(rows), ticks, scale, axis)
    for index, (art, b) in enumerate(rows):
        samples = sorted(b["samples_ms"])
        y = top + row_h * index + row_h / 2
        color = colors[art["label"]]
        q1, q3 = percentile(samples, 25), percentile(samples, 75)
        body.append(f'<text x="{left - 12}" y="{y + 4:.1f}" font-size="13" text-anchor="end">{_e(_short(art["label"], 28))}</text>')
        step = max(1, len(samples) // 400)
        for j, value in enumerate(samples[::step]):
            jitter = ((j * 7919) % 17 - 8) * 1.1
            body.append(f'<circle cx="{scale(value):.1f}" cy="{y + jitter:.1f}" r="1.6" fill="{color}" fill-opacity="0.28"/>')
        body.append(f'<line x1="{scale(b["min_ms"]):.1f}" y1="{y:.1f}" x2="{scale(b["p99_ms"]):.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="1.5"/>')
        for end in (b["min_ms"], b["p99_ms"]):
            body.append(f'<line x1="{scale(end):.1f}" y1="{y - 7:.1f}" x2="{scale(end):.1f}" y2="{y + 7:.1f}" stroke="{color}" stroke-width="1.5"/>')
        body.append(f'<rect x="{scale(q1):.1f}" y="{y - 11:.1f}" width="{max(scale(q3) - scale(q1), 1.5):.1f}" height="22" rx="2" '
                    f'fill="{color}" fill-opacity="0.35" stroke="{color}" stroke-width="1.5"/>')
        body.append(f'<line x1="{scale(b["p50_ms"]):.1f}" y1="{y - 11:.1f}" x2="{scale(b["p50_ms"]):.1f}" y2="{y + 11:.1f}" stroke="#1f2328" stroke-width="2.5"/>')
        body.append(f'<text x="{right + 10}" y="{y + 4:.1f}" font-size="12.5" fill="#59636e">p50 {_e(ms(b["p50_ms"]))}</text>')
        if b["max_ms"] > high:
            body.append(f'<text x="{right - 2}" y="{y - 13:.1f}" font-size="11" text-anchor="end" fill="#59636e">max {_e(ms(b["max_ms"]))} ▸</text>')
    return _svg(WIDTH, height, body, f"latency distribution at batch {batch}")


def throughput_chart(artifacts: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> Optional[str]:
    """Throughput (samples/s) against batch size, one line per measured artifact."""
    series = [(a, [(b["batch"], b["throughput"]) for b in a.get("batches", [])]) for a in artifacts]
    series = [(a, pts) for a, pts in series if pts]
    if not series:
        return None
    batches = sorted({batch for _, pts in series for batch, _ in pts})
    left, right, top, bottom = 80, WIDTH - 270, 16, 300
    ticks = _ticks(max(t for _, pts in series for _, t in pts) * 1.08)
    high = ticks[-1]
    xpos = {b: left + 40 + (right - left - 80) * (i / max(len(batches) - 1, 1)) for i, b in enumerate(batches)}
    if len(batches) == 1:
        xpos = {batches[0]: (left + right) / 2}
    y = lambda v: bottom - (bottom - top) * v / high  # noqa: E731
    body: list[str] = []
    for t in ticks:
        body.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{right}" y2="{y(t):.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#59636e">{_tick_label(t)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#8c959f"/>')
    for b, x in xpos.items():
        body.append(f'<text x="{x:.1f}" y="{bottom + 18}" font-size="12" text-anchor="middle" fill="#59636e">{b}</text>')
    body.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 40}" font-size="12.5" text-anchor="middle" fill="#59636e">batch size</text>')
    body.append(f'<text transform="translate(20 {(top + bottom) / 2:.0f}) rotate(-90)" font-size="12.5" text-anchor="middle" fill="#59636e">samples / s</text>')
    for index, (art, pts) in enumerate(series):
        color = colors[art["label"]]
        path = " ".join(f"{'M' if i == 0 else 'L'}{xpos[b]:.1f},{y(t):.1f}" for i, (b, t) in enumerate(pts))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
        for b, t in pts:
            body.append(f'<circle cx="{xpos[b]:.1f}" cy="{y(t):.1f}" r="4.5" fill="{color}"><title>{_e(art["label"])}: {t:,.1f} samples/s at batch {b}</title></circle>')
        ly = top + 10 + 22 * index
        body.append(f'<rect x="{right + 24}" y="{ly - 9}" width="14" height="4" rx="1" fill="{color}"/>')
        body.append(f'<text x="{right + 44}" y="{ly - 3}" font-size="12.5">{_e(_short(art["label"], 32))}</text>')
    return _svg(WIDTH, bottom + 52, body, "throughput against batch size")


def stage_bars(artifacts: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """Share of layer time per network stage, one 100% bar per artifact (largest profiled batch)."""
    rows = [(a, a["layers"]["batches"][-1]) for a in artifacts if a.get("layers") and a["layers"].get("batches")]
    if not rows:
        return None
    left, right, row_h, top = 200, WIDTH - 120, 34, 36
    body: list[str] = []
    x = left
    for stage, color in STAGE_COLORS.items():
        body.append(f'<rect x="{x}" y="6" width="12" height="12" rx="2" fill="{color}"/><text x="{x + 17}" y="16" font-size="12.5">{stage}</text>')
        x += 92
    for index, (art, lb) in enumerate(rows):
        y = top + row_h * index
        body.append(f'<text x="{left - 12}" y="{y + 17}" font-size="13" text-anchor="end">{_e(_short(art["label"], 28))}</text>')
        x = float(left)
        for stage in lb["by_stage"]:
            width = (right - left) * stage["share"]
            body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(width, 0.5):.1f}" height="22" fill="{STAGE_COLORS.get(stage["stage"], "#bab0ac")}">'
                        f'<title>{_e(stage["stage"])}: {stage["ms"]:.3f} ms ({100 * stage["share"]:.1f}%)</title></rect>')
            if width > 34:
                body.append(f'<text x="{x + width / 2:.1f}" y="{y + 18}" font-size="11.5" text-anchor="middle" fill="{"#1f2328" if stage["stage"] in ("stage3", "other") else "#fff"}">{100 * stage["share"]:.0f}%</text>')
            x += width
        body.append(f'<text x="{right + 10}" y="{y + 18}" font-size="12.5" fill="#59636e">{_e(ms(lb["total_ms"]))} ms @ {lb["batch"]}</text>')
    return _svg(WIDTH, top + row_h * len(rows) + 8, body, "time by network stage")


def top_layer_bars(art: Mapping[str, Any]) -> Optional[str]:
    """The ``TOP_N`` slowest layers of one artifact (largest profiled batch), coloured by stage."""
    if not art.get("layers") or not art["layers"].get("batches"):
        return None
    lb = art["layers"]["batches"][-1]
    layers = lb["top_layers"][:TOP_N]
    if not layers:
        return None
    left, right, row_h, top = 400, WIDTH - 120, 24, 6
    high = _ticks(layers[0]["ms"] * 1.05)[-1]
    body: list[str] = []
    for index, layer in enumerate(layers):
        y = top + row_h * index
        width = (right - left) * layer["ms"] / high
        label = f'{_short(layer.get("module") or layer["name"], 50)}  ·  {layer["op_type"]}'
        body.append(f'<text x="{left - 10}" y="{y + 15}" font-size="12" text-anchor="end"><title>{_e(layer["name"])}</title>{_e(label)}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{max(width, 1):.1f}" height="16" rx="2" fill="{STAGE_COLORS.get(layer["stage"], "#bab0ac")}"/>')
        body.append(f'<text x="{left + width + 6:.1f}" y="{y + 15}" font-size="12" fill="#59636e">{_e(ms(layer["ms"]))} ms · {100 * layer["share"]:.1f}%</text>')
    return _svg(WIDTH, top + row_h * len(layers) + 6, body, f"top layers of {art['label']}")


def accuracy_chart(artifacts: Sequence[Mapping[str, Any]], colors: Mapping[str, str], batch: int) -> Optional[str]:
    """Top-1 agreement with the PyTorch original against p50 latency at ``batch``."""
    points = []
    for art in artifacts:
        top1 = (art.get("validation") or {}).get("top1_agreement")
        b = next((x for x in art.get("batches", []) if x["batch"] == batch), None)
        if isinstance(top1, (int, float)) and b:
            points.append((art, b["p50_ms"], 100 * float(top1)))
    if not points:
        return None
    left, right, top, bottom = 80, WIDTH - 40, 16, 300
    sx, xticks, log = _axis_scale(min(p for _, p, _ in points), max(p for _, p, _ in points) * 1.25, left, right)
    low_acc = min(a for _, _, a in points)
    span = max(100 - low_acc, 0.25) * 1.6
    y_low = max(0.0, 100 - span)
    span = 100 - y_low
    yticks = [y_low + span * i / 4 for i in range(5)]
    sy = lambda v: bottom - (bottom - top) * (v - y_low) / span  # noqa: E731
    body: list[str] = []
    for t in yticks:
        body.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#59636e">{t:.1f}%</text>')
    _x_axis(body, left, right, top, bottom, xticks, sx, f"p50 latency at batch {batch} (ms{', log scale' if log else ''})")
    body.append(f'<text transform="translate(20 {(top + bottom) / 2:.0f}) rotate(-90)" font-size="12.5" text-anchor="middle" fill="#59636e">top-1 agreement with PyTorch</text>')
    placed: list[tuple[float, float, float]] = []  # label boxes (x0, x1, y) already drawn
    for art, p50, acc in sorted(points, key=lambda p: -p[2]):
        color = colors[art["label"]]
        x, y = sx(p50), sy(acc)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{color}" stroke="#fff" stroke-width="1.5">'
                    f'<title>{_e(art["label"])}: {acc:.2f}% at {p50:.3f} ms</title></circle>')
        text = f"{_short(art['label'], 30)} ({acc:.2f}%)"
        flip = x > left + 0.65 * (right - left)
        x0 = x - 11 - 7 * len(text) if flip else x + 11
        x1 = x0 + 7 * len(text)
        ty = max(y + 4, top + 12)
        while any(a < x1 and x0 < b and abs(ty - py) < 15 for a, b, py in placed):
            ty += 15
        placed.append((x0, x1, ty))
        body.append(f'<text x="{x - 11 if flip else x + 11:.1f}" y="{ty:.1f}" font-size="12.5" text-anchor="{"end" if flip else "start"}">{_e(text)}</text>')
    return _svg(WIDTH, bottom + 50, body, "accuracy against latency")


def served_chart(models: Sequence[Mapping[str, Any]], colors: Mapping[str, str], metric: str) -> Optional[str]:
    """``metric`` against concurrency, one line per served model: ``throughput`` (samples/s), or ``latency``
    (p50 solid, p99 dashed, ms)."""
    keys = [("throughput", "")] if metric == "throughput" else [("p50_ms", ""), ("p99_ms", "6 4")]
    series = [(m, key, dash, [(lv["concurrency"], lv[key]) for lv in m.get("levels", []) if lv.get(key) is not None])
              for m in models for key, dash in keys]
    series = [s for s in series if s[3]]
    if not series:
        return None
    levels = sorted({c for *_, pts in series for c, _ in pts})
    left, right, top, bottom = 80, WIDTH - 270, 16, 280
    ticks = _ticks(max(v for *_, pts in series for _, v in pts) * 1.08)
    high = ticks[-1]
    xpos = {c: left + 40 + (right - left - 80) * (i / max(len(levels) - 1, 1)) for i, c in enumerate(levels)}
    if len(levels) == 1:
        xpos = {levels[0]: (left + right) / 2}
    y = lambda v: bottom - (bottom - top) * v / high  # noqa: E731
    body: list[str] = []
    for t in ticks:
        body.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{right}" y2="{y(t):.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#59636e">{_tick_label(t)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#8c959f"/>')
    for c, x in xpos.items():
        body.append(f'<text x="{x:.1f}" y="{bottom + 18}" font-size="12" text-anchor="middle" fill="#59636e">{c}</text>')
    body.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 40}" font-size="12.5" text-anchor="middle" fill="#59636e">concurrent clients</text>')
    axis = "samples / s" if metric == "throughput" else "latency per request (ms)"
    body.append(f'<text transform="translate(20 {(top + bottom) / 2:.0f}) rotate(-90)" font-size="12.5" text-anchor="middle" fill="#59636e">{axis}</text>')
    for index, (model, key, dash, pts) in enumerate(series):
        color = colors[model["name"]]
        name = key.replace("_ms", "") if metric != "throughput" else "samples/s"
        path = " ".join(f"{'M' if i == 0 else 'L'}{xpos[c]:.1f},{y(v):.1f}" for i, (c, v) in enumerate(pts))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2.5"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        for c, v in pts:
            body.append(f'<circle cx="{xpos[c]:.1f}" cy="{y(v):.1f}" r="4.5" fill="{color}"><title>{_e(model["name"])}: {name} {v:,.1f} at concurrency {c}</title></circle>')
        ly = top + 10 + 22 * index
        body.append(f'<line x1="{right + 24}" y1="{ly - 7}" x2="{right + 38}" y2="{ly - 7}" stroke="{color}" stroke-width="3"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        body.append(f'<text x="{right + 44}" y="{ly - 3}" font-size="12.5">{_e(_short(model["name"], 26))}{"" if metric == "throughput" else " " + name}</text>')
    return _svg(WIDTH, bottom + 52, body, f"served {metric} against concurrency")


def _served_section(report: Mapping[str, Any]) -> list[str]:
    """The served models: how they were measured, the table, the two charts, the models not measured."""
    served = report.get("served") or {}
    parts = ["<h2>Served under concurrency (Triton)</h2>"]
    if served.get("status") == "interrupted":
        parts.append('<div class="banner"><b>Interrupted</b> (Ctrl-C): the levels below are those measured before it.</div>')
    if served.get("error"):
        return parts + [f'<p class="note">Not measured: {_e(served["error"])}</p>']
    parts.append(f'<p class="note">{_e(served_line(report))}. Latency per request at the client; avg batch = samples per execution in the '
                 "server's statistics (what dynamic batching merged); server batches = batch size×executions.</p>")
    models = served.get("models", [])
    colors = {m["name"]: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    rows = served_rows(report)
    measured = [r for r in rows if r["measured"]]
    if measured:
        parts.append("<table><thead><tr>" + "".join(f'<th class="{"text" if i == 0 else ""}">{_e(c)}</th>' for i, c in enumerate(SERVED_COLUMNS))
                     + "</tr></thead><tbody>")
        for row in measured:
            values = served_cells(row)
            swatch = f'<span class="swatch" style="background:{colors[row["model"]]}"></span>'
            parts.append(f"<tr><td>{swatch}{_e(values[0])}</td>" + "".join(f"<td>{_e(v)}</td>" for v in values[1:]) + "</tr>")
        parts.append("</tbody></table>")
        shown = [m for m in models if m.get("levels")]
        parts.append(_figure(served_chart(shown, colors, "throughput"), "Served samples per second (wall clock, all clients) against concurrent clients."))
        parts.append(_figure(served_chart(shown, colors, "latency"), "Latency per request at the client against concurrent clients: p50 solid, p99 dashed."))
    missing = [r for r in rows if not r["measured"]]
    if missing:
        parts.append('<p class="note">Not measured: ' + "; ".join(f"{_e(r['model'])}: {_e(r['reason'])}" for r in missing) + "</p>")
    return parts


def _figure(svg: Optional[str], caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>" if svg else ""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML document."""
    artifacts = report.get("artifacts", [])
    colors = {a["label"]: PALETTE[i % len(PALETTE)] for i, a in enumerate(artifacts)}
    measured = [a for a in artifacts if a.get("measured")]
    batches = (report.get("settings") or {}).get("batches", [])
    parts = [f"<h1>deployres profile · {_e(title(report))}</h1>",
             f'<p class="sub">{_e(settings_line(report) if artifacts else served_line(report))} · made {_e(report.get("created", ""))} in {report.get("seconds", 0):.0f} s</p>']
    if report.get("status") == "interrupted":
        parts.append('<div class="banner"><b>Interrupted</b> (Ctrl-C): this report covers what was measured before it.</div>')

    cards = []
    for batch in batches[:2]:
        best = max((b for a in measured for b in a["batches"] if b["batch"] == batch), key=lambda b: b["throughput"], default=None)
        owner = next((a["label"] for a in measured for b in a["batches"] if b is best), None)
        if best:
            cards.append(f'<div class="card"><div class="k">fastest at batch {batch} (p50)</div><div class="v">{_e(ms(best["p50_ms"]))} ms</div>'
                         f'<div class="k">{_e(owner)}</div></div>')
    flops = next((a.get("flops_per_sample") for a in artifacts if a.get("flops_per_sample")), None)
    if flops:
        cards.append(f'<div class="card"><div class="k">model cost</div><div class="v">{flops / 1e9:.2f} GFLOP</div><div class="k">per sample</div></div>')
    cards.append(f'<div class="card"><div class="k">measured</div><div class="v">{len(measured)} / {len(artifacts)}</div>'
                 f'<div class="k">reference: {_e(report.get("reference") or "–")}</div></div>')
    if artifacts:
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
        parts += _artifact_sections(report, artifacts, measured, batches, colors)
    if report.get("served") is not None:
        parts += _served_section(report)
    parts.append('<h2>Environment</h2><table><tbody>' + "".join(f'<tr><td>{_e(k)}</td><td class="text">{_e(v)}</td></tr>' for k, v in environment_rows(report)) + "</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>deployres profile · {_e(title(report))}</title><style>{CSS}</style></head><body><main>" + "\n".join(parts) + "</main></body></html>\n")


def _artifact_sections(report: Mapping[str, Any], artifacts, measured, batches, colors) -> list[str]:
    """Summary, latency, throughput, accuracy, layers, load and memory of the artifacts measured in-process."""
    parts: list[str] = []
    parts.append("<h2>Summary</h2><table><thead><tr>" + "".join(f'<th class="{"text" if i < 3 else ""}">{_e(c)}</th>' for i, c in enumerate(COLUMNS)) + "</tr></thead><tbody>")
    for row in comparison_rows(report):
        values = cells(row)
        swatch = f'<span class="swatch" style="background:{colors[row["artifact"]]}"></span>'
        if row["measured"]:
            tds = [f"<td>{swatch}{_e(values[0])}</td>"] + [f'<td class="{"text" if i < 2 else ""}">{_e(v)}</td>' for i, v in enumerate(values[1:])]
            parts.append("<tr>" + "".join(tds) + "</tr>")
        else:
            parts.append(f'<tr class="unmeasured"><td>{swatch}{_e(values[0])}</td><td class="text">{_e(values[1])}</td><td class="text">{_e(values[2])}</td>'
                         f'<td class="reason" colspan="{len(COLUMNS) - 3}">not measured: {_e(row["reason"])}</td></tr>')
    parts.append("</tbody></table>")
    parts.append('<p class="note">speedup = reference p50 / this p50; GFLOP/s = model FLOPs × throughput; top-1 agr. = agreement with the PyTorch original\'s top-1 on the validation set.</p>')

    parts.append("<h2>Latency distribution</h2>")
    for batch in batches:
        parts.append(_figure(latency_boxes(measured, batch, colors),
                             f"Batch {batch}: whiskers min to p99, box p25 to p75, black line the median; dots are individual iterations."))
    parts.append("<h2>Throughput against batch size</h2>")
    parts.append(_figure(throughput_chart(measured, colors), "Samples per second (batch size / latency), mean over the timed iterations."))

    accuracy = accuracy_chart(measured, colors, batches[0]) if batches else None
    if accuracy:
        parts.append("<h2>Accuracy against latency</h2>" + _figure(accuracy, "Top-1 agreement with the PyTorch original (validation) against p50 latency; up and left is better."))

    layered = [a for a in measured if a.get("layers") and a["layers"].get("batches")]
    if layered:
        parts.append("<h2>Where the time goes</h2>")
        parts.append(_figure(stage_bars(layered), "Share of per-layer time by network stage at the largest batch size profiled."))
        for art in layered:
            lb = art["layers"]["batches"][-1]
            ops = ", ".join(f'{o["op_type"]} {100 * o["share"]:.0f}%' for o in lb["by_op_type"][:6])
            parts.append(f"<h3>{_e(art['label'])}: top {TOP_N} layers at batch {lb['batch']} <span class=\"note\">· by op type: {_e(ops)}</span></h3>")
            parts.append(_figure(top_layer_bars(art), f"Mean time per run over {lb['runs']} profiled runs; colour = network stage."))
        for note in sorted({a["layers"]["note"] for a in layered}):
            parts.append(f'<p class="note">{_e(note)}.</p>')
    missing = [a for a in artifacts if a.get("measured") and not a.get("layers") and a.get("layers_missing")]
    if missing:
        parts.append('<p class="note">' + "; ".join(f"{_e(a['label'])}: {_e(a['layers_missing'])}" for a in missing) + "</p>")

    parts.append('<h2>Load, memory and FLOPs</h2><table><thead><tr><th>artifact</th><th>load s</th><th>peak RSS MiB</th><th>RSS growth MiB</th>'
                 '<th>GFLOP / sample</th><th>best GFLOP/s</th></tr></thead><tbody>')
    for art in artifacts:
        mem = art.get("memory") or {}
        growth = (mem["rss_after_load_mb"] - mem["rss_before_mb"]) if mem.get("rss_after_load_mb") is not None and mem.get("rss_before_mb") is not None else None
        best = max((b.get("gflops_per_s") or 0 for b in art.get("batches", [])), default=0) or None
        f = art.get("flops_per_sample")
        parts.append(f"<tr><td>{_e(art['label'])}</td><td>{number(art.get('load_seconds'), 2)}</td><td>{number(mem.get('load_peak_rss_mb'), 0)}</td>"
                     f"<td>{number(growth, 0)}</td><td>{f / 1e9:.2f}</td><td>{number(best)}</td></tr>" if f else
                     f"<tr><td>{_e(art['label'])}</td><td>{number(art.get('load_seconds'), 2)}</td><td>{number(mem.get('load_peak_rss_mb'), 0)}</td>"
                     f"<td>{number(growth, 0)}</td><td>–</td><td>–</td></tr>")
    parts.append("</tbody></table>")
    parts.append(f'<p class="note">Peak RSS: resident high-water mark while the artifact loaded and first ran (reset per artifact where the kernel allows); '
                 f'the profiling process peaked at {number(report.get("process_peak_rss_mb"), 0)} MiB.</p>')
    return parts
