"""The report's SVG charts: latency box plots, throughput and served lines, stage and top-layer bars,
accuracy against latency, with their axis and tick helpers and the colours they share with the page."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Optional, Sequence

from deploy_res.profiling.stats import percentile
from deploy_res.reports.common import ms

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
STAGE_COLORS = {"stem": "#9c755f", "stage1": "#4e79a7", "stage2": "#59a14f", "stage3": "#edc948", "stage4": "#e15759",
                "head": "#b07aa1", "other": "#bab0ac"}
TOP_N = 10
WIDTH = 1040


def esc(text: Any) -> str:
    """``text`` escaped for HTML and SVG (attributes included)."""
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
            f'role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>")


def _x_axis(body: list[str], left: int, right: int, top: int, bottom: int, ticks: Sequence[float], scale, label: str) -> None:
    for t in ticks:
        x = scale(t)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eaeef2"/>')
        body.append(f'<text x="{x:.1f}" y="{bottom + 16}" font-size="12" text-anchor="middle" fill="#59636e">{_tick_label(t)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#8c959f"/>')
    body.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 36}" font-size="12.5" text-anchor="middle" fill="#59636e">{esc(label)}</text>')


def _line_frame(series: Sequence[Any], left: int, right: int, top: int, bottom: int, x_label: str, y_label: str):
    """``(body, xpos, y)`` of a line chart whose points (the last item of each series: ``(x, value)`` pairs) stand at
    evenly spaced x categories: the value grid and ticks from 0, the x axis with its categories, both axis labels."""
    points = [pt for *_, pts in series for pt in pts]
    categories = sorted({x for x, _ in points})
    ticks = _ticks(max(v for _, v in points) * 1.08)
    high = ticks[-1]
    xpos = {c: left + 40 + (right - left - 80) * (i / max(len(categories) - 1, 1)) for i, c in enumerate(categories)}
    if len(categories) == 1:
        xpos = {categories[0]: (left + right) / 2}
    y = lambda v: bottom - (bottom - top) * v / high  # noqa: E731
    body: list[str] = []
    for t in ticks:
        body.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{right}" y2="{y(t):.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#59636e">{_tick_label(t)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#8c959f"/>')
    for c, x in xpos.items():
        body.append(f'<text x="{x:.1f}" y="{bottom + 18}" font-size="12" text-anchor="middle" fill="#59636e">{c}</text>')
    body.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 40}" font-size="12.5" text-anchor="middle" fill="#59636e">{esc(x_label)}</text>')
    body.append(f'<text transform="translate(20 {(top + bottom) / 2:.0f}) rotate(-90)" font-size="12.5" text-anchor="middle" fill="#59636e">{esc(y_label)}</text>')
    return body, xpos, y


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
        body.append(f'<text x="{left - 12}" y="{y + 4:.1f}" font-size="13" text-anchor="end">{esc(_short(art["label"], 28))}</text>')
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
        body.append(f'<text x="{right + 10}" y="{y + 4:.1f}" font-size="12.5" fill="#59636e">p50 {esc(ms(b["p50_ms"]))}</text>')
        if b["max_ms"] > high:
            body.append(f'<text x="{right - 2}" y="{y - 13:.1f}" font-size="11" text-anchor="end" fill="#59636e">max {esc(ms(b["max_ms"]))} ▸</text>')
    return _svg(WIDTH, height, body, f"latency distribution at batch {batch}")


def throughput_chart(artifacts: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> Optional[str]:
    """Throughput (samples/s) against batch size, one line per measured artifact."""
    series = [(a, [(b["batch"], b["throughput"]) for b in a.get("batches", [])]) for a in artifacts]
    series = [(a, pts) for a, pts in series if pts]
    if not series:
        return None
    left, right, top, bottom = 80, WIDTH - 270, 16, 300
    body, xpos, y = _line_frame(series, left, right, top, bottom, "batch size", "samples / s")
    for index, (art, pts) in enumerate(series):
        color = colors[art["label"]]
        path = " ".join(f"{'M' if i == 0 else 'L'}{xpos[b]:.1f},{y(t):.1f}" for i, (b, t) in enumerate(pts))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
        for b, t in pts:
            body.append(f'<circle cx="{xpos[b]:.1f}" cy="{y(t):.1f}" r="4.5" fill="{color}"><title>{esc(art["label"])}: {t:,.1f} samples/s at batch {b}</title></circle>')
        ly = top + 10 + 22 * index
        body.append(f'<rect x="{right + 24}" y="{ly - 9}" width="14" height="4" rx="1" fill="{color}"/>')
        body.append(f'<text x="{right + 44}" y="{ly - 3}" font-size="12.5">{esc(_short(art["label"], 32))}</text>')
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
        body.append(f'<text x="{left - 12}" y="{y + 17}" font-size="13" text-anchor="end">{esc(_short(art["label"], 28))}</text>')
        x = float(left)
        for stage in lb["by_stage"]:
            width = (right - left) * stage["share"]
            body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(width, 0.5):.1f}" height="22" fill="{STAGE_COLORS.get(stage["stage"], "#bab0ac")}">'
                        f'<title>{esc(stage["stage"])}: {stage["ms"]:.3f} ms ({100 * stage["share"]:.1f}%)</title></rect>')
            if width > 34:
                body.append(f'<text x="{x + width / 2:.1f}" y="{y + 18}" font-size="11.5" text-anchor="middle" fill="{"#1f2328" if stage["stage"] in ("stage3", "other") else "#fff"}">{100 * stage["share"]:.0f}%</text>')
            x += width
        body.append(f'<text x="{right + 10}" y="{y + 18}" font-size="12.5" fill="#59636e">{esc(ms(lb["total_ms"]))} ms @ {lb["batch"]}</text>')
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
        body.append(f'<text x="{left - 10}" y="{y + 15}" font-size="12" text-anchor="end"><title>{esc(layer["name"])}</title>{esc(label)}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{max(width, 1):.1f}" height="16" rx="2" fill="{STAGE_COLORS.get(layer["stage"], "#bab0ac")}"/>')
        body.append(f'<text x="{left + width + 6:.1f}" y="{y + 15}" font-size="12" fill="#59636e">{esc(ms(layer["ms"]))} ms · {100 * layer["share"]:.1f}%</text>')
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
                    f'<title>{esc(art["label"])}: {acc:.2f}% at {p50:.3f} ms</title></circle>')
        text = f"{_short(art['label'], 30)} ({acc:.2f}%)"
        flip = x > left + 0.65 * (right - left)
        x0 = x - 11 - 7 * len(text) if flip else x + 11
        x1 = x0 + 7 * len(text)
        ty = max(y + 4, top + 12)
        while any(a < x1 and x0 < b and abs(ty - py) < 15 for a, b, py in placed):
            ty += 15
        placed.append((x0, x1, ty))
        body.append(f'<text x="{x - 11 if flip else x + 11:.1f}" y="{ty:.1f}" font-size="12.5" text-anchor="{"end" if flip else "start"}">{esc(text)}</text>')
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
    left, right, top, bottom = 80, WIDTH - 270, 16, 280
    axis = "samples / s" if metric == "throughput" else "latency per request (ms)"
    body, xpos, y = _line_frame(series, left, right, top, bottom, "concurrent clients", axis)
    for index, (model, key, dash, pts) in enumerate(series):
        color = colors[model["name"]]
        name = key.replace("_ms", "") if metric != "throughput" else "samples/s"
        path = " ".join(f"{'M' if i == 0 else 'L'}{xpos[c]:.1f},{y(v):.1f}" for i, (c, v) in enumerate(pts))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2.5"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        for c, v in pts:
            body.append(f'<circle cx="{xpos[c]:.1f}" cy="{y(v):.1f}" r="4.5" fill="{color}"><title>{esc(model["name"])}: {name} {v:,.1f} at concurrency {c}</title></circle>')
        ly = top + 10 + 22 * index
        body.append(f'<line x1="{right + 24}" y1="{ly - 7}" x2="{right + 38}" y2="{ly - 7}" stroke="{color}" stroke-width="3"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        body.append(f'<text x="{right + 44}" y="{ly - 3}" font-size="12.5">{esc(_short(model["name"], 26))}{"" if metric == "throughput" else " " + name}</text>')
    return _svg(WIDTH, bottom + 52, body, f"served {metric} against concurrency")
