"""The HTML report page: one self-contained file (inline CSS and SVG; no scripts, fonts or network).
This module assembles the page (CSS, sections, tables); the charts are drawn in :mod:`deploy_res.reports.plots`.

Sections: the comparison table; latency distribution per artifact (box plots:
whiskers min..p99, box p25..p75, median line, every sample as a dot);
throughput against batch size; time by network stage and the top layers per
artifact; accuracy (top-1 agreement with the PyTorch original) against p50
latency when validation results were given; with ``--server``, the served
models: a table per model and concurrency level and throughput and p50/p99
latency against concurrency; load, memory and FLOPs; the environment.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from deploy_res.reports.common import (COLUMNS, SERVED_COLUMNS, cells, comparison_rows, environment_rows, ms, number, served_cells, validation_rows,
                                       served_line, served_rows, settings_line, title)
from deploy_res.reports.plots import (PALETTE, TOP_N, accuracy_chart, esc, latency_boxes, served_chart, stage_bars, throughput_chart,
                                      top_layer_bars)

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


def _table_head(columns: Sequence[str], text_columns: int) -> str:
    """``<table>`` and its header row; the first ``text_columns`` columns are left-aligned text."""
    return "<table><thead><tr>" + "".join(f'<th class="{"text" if i < text_columns else ""}">{esc(c)}</th>' for i, c in enumerate(columns)) + "</tr></thead><tbody>"


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{color}"></span>'


def _served_section(report: Mapping[str, Any]) -> list[str]:
    """The served models: how they were measured, the table, the two charts, the models not measured."""
    served = report.get("served") or {}
    parts = ["<h2>Served under concurrency (Triton)</h2>"]
    if served.get("status") == "interrupted":
        parts.append('<div class="banner"><b>Interrupted</b> (Ctrl-C): the levels below are those measured before it.</div>')
    if served.get("error"):
        return parts + [f'<p class="note">Not measured: {esc(served["error"])}</p>']
    parts.append(f'<p class="note">{esc(served_line(report))}. Latency per request at the client; avg batch = samples per execution in the '
                 "server's statistics (what dynamic batching merged); server batches = batch size×executions.</p>")
    models = served.get("models", [])
    colors = {m["name"]: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    rows = served_rows(report)
    measured = [r for r in rows if r["measured"]]
    if measured:
        parts.append(_table_head(SERVED_COLUMNS, 1))
        for row in measured:
            values = served_cells(row)
            parts.append(f"<tr><td>{_swatch(colors[row['model']])}{esc(values[0])}</td>" + "".join(f"<td>{esc(v)}</td>" for v in values[1:]) + "</tr>")
        parts.append("</tbody></table>")
        shown = [m for m in models if m.get("levels")]
        parts.append(_figure(served_chart(shown, colors, "throughput"), "Served samples per second (wall clock, all clients) against concurrent clients."))
        parts.append(_figure(served_chart(shown, colors, "latency"), "Latency per request at the client against concurrent clients: p50 solid, p99 dashed."))
    missing = [r for r in rows if not r["measured"]]
    if missing:
        parts.append('<p class="note">Not measured: ' + "; ".join(f"{esc(r['model'])}: {esc(r['reason'])}" for r in missing) + "</p>")
    return parts


def _figure(svg: Optional[str], caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>" if svg else ""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML document."""
    artifacts = report.get("artifacts", [])
    colors = {a["label"]: PALETTE[i % len(PALETTE)] for i, a in enumerate(artifacts)}
    measured = [a for a in artifacts if a.get("measured")]
    batches = (report.get("settings") or {}).get("batches", [])
    parts = [f"<h1>deployres profile · {esc(title(report))}</h1>",
             f'<p class="sub">{esc(settings_line(report) if artifacts else served_line(report))} · made {esc(report.get("created", ""))} in {report.get("seconds", 0):.0f} s</p>']
    if report.get("status") == "interrupted":
        parts.append('<div class="banner"><b>Interrupted</b> (Ctrl-C): this report covers what was measured before it.</div>')

    cards = []
    for batch in batches[:2]:
        best = max((b for a in measured for b in a["batches"] if b["batch"] == batch), key=lambda b: b["throughput"], default=None)
        owner = next((a["label"] for a in measured for b in a["batches"] if b is best), None)
        if best:
            cards.append(f'<div class="card"><div class="k">fastest at batch {batch} (p50)</div><div class="v">{esc(ms(best["p50_ms"]))} ms</div>'
                         f'<div class="k">{esc(owner)}</div></div>')
    flops = next((a.get("flops_per_sample") for a in artifacts if a.get("flops_per_sample")), None)
    if flops:
        cards.append(f'<div class="card"><div class="k">model cost</div><div class="v">{flops / 1e9:.2f} GFLOP</div><div class="k">per sample</div></div>')
    cards.append(f'<div class="card"><div class="k">measured</div><div class="v">{len(measured)} / {len(artifacts)}</div>'
                 f'<div class="k">reference: {esc(report.get("reference") or "–")}</div></div>')
    if artifacts:
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
        parts += _artifact_sections(report, artifacts, measured, batches, colors)
    if report.get("served") is not None:
        parts += _served_section(report)
    parts.append('<h2>Environment</h2><table><tbody>' + "".join(f'<tr><td>{esc(k)}</td><td class="text">{esc(v)}</td></tr>' for k, v in environment_rows(report)) + "</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>deployres profile · {esc(title(report))}</title><style>{CSS}</style></head><body><main>" + "\n".join(parts) + "</main></body></html>\n")


def _artifact_sections(report: Mapping[str, Any], artifacts, measured, batches, colors) -> list[str]:
    """Summary, latency, throughput, accuracy, layers, load and memory of the artifacts measured in-process."""
    parts: list[str] = []
    parts.append("<h2>Summary</h2>" + _table_head(COLUMNS, 3))
    for row in comparison_rows(report):
        values = cells(row)
        swatch = _swatch(colors[row["artifact"]])
        if row["measured"]:
            tds = [f"<td>{swatch}{esc(values[0])}</td>"] + [f'<td class="{"text" if i < 2 else ""}">{esc(v)}</td>' for i, v in enumerate(values[1:])]
            parts.append("<tr>" + "".join(tds) + "</tr>")
        else:
            parts.append(f'<tr class="unmeasured"><td>{swatch}{esc(values[0])}</td><td class="text">{esc(values[1])}</td><td class="text">{esc(values[2])}</td>'
                         f'<td class="reason" colspan="{len(COLUMNS) - 3}">not measured: {esc(row["reason"])}</td></tr>')
    parts.append("</tbody></table>")
    parts.append('<p class="note">speedup = reference p50 / this p50; GFLOP/s = model FLOPs × throughput; top-1 agr. = agreement with the PyTorch original\'s top-1 on the validation set.</p>')

    verdicts = validation_rows(report)
    if verdicts:
        parts.append("<h2>Validation against the PyTorch original</h2>" + _table_head(("artifact", "verdict", "evidence", "checks (intervals)"), 4))
        parts += [f'<tr><td>{esc(a)}</td><td class="text">{esc(o)}</td><td class="text">{esc(e)}</td><td class="text">{esc(v)}</td></tr>' for a, o, e, v in verdicts]
        parts.append("</tbody></table>")
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
            parts.append(f"<h3>{esc(art['label'])}: top {TOP_N} layers at batch {lb['batch']} <span class=\"note\">· by op type: {esc(ops)}</span></h3>")
            parts.append(_figure(top_layer_bars(art), f"Mean time per run over {lb['runs']} profiled runs; colour = network stage."))
        for note in sorted({a["layers"]["note"] for a in layered}):
            parts.append(f'<p class="note">{esc(note)}.</p>')
    missing = [a for a in artifacts if a.get("measured") and not a.get("layers") and a.get("layers_missing")]
    if missing:
        parts.append('<p class="note">' + "; ".join(f"{esc(a['label'])}: {esc(a['layers_missing'])}" for a in missing) + "</p>")

    parts.append('<h2>Load, memory and FLOPs</h2><table><thead><tr><th>artifact</th><th>load s</th><th>peak RSS MiB</th><th>RSS growth MiB</th>'
                 '<th>GFLOP / sample</th><th>best GFLOP/s</th></tr></thead><tbody>')
    for art in artifacts:
        mem = art.get("memory") or {}
        growth = (mem["rss_after_load_mb"] - mem["rss_before_mb"]) if mem.get("rss_after_load_mb") is not None and mem.get("rss_before_mb") is not None else None
        best = max((b.get("gflops_per_s") or 0 for b in art.get("batches", [])), default=0) or None
        f = art.get("flops_per_sample")
        flops = f"<td>{f / 1e9:.2f}</td><td>{number(best)}</td>" if f else "<td>–</td><td>–</td>"
        parts.append(f"<tr><td>{esc(art['label'])}</td><td>{number(art.get('load_seconds'), 2)}</td><td>{number(mem.get('load_peak_rss_mb'), 0)}</td>"
                     f"<td>{number(growth, 0)}</td>{flops}</tr>")
    parts.append("</tbody></table>")
    parts.append(f'<p class="note">Peak RSS: resident high-water mark while the artifact loaded and first ran (reset per artifact where the kernel allows); '
                 f'the profiling process peaked at {number(report.get("process_peak_rss_mb"), 0)} MiB.</p>')
    return parts
