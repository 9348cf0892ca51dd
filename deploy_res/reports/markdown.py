"""The Markdown summary of a profile report, fit for a pull request description."""

from __future__ import annotations

from typing import Any, Mapping

from deploy_res.reports.common import (COLUMNS, SERVED_COLUMNS, cells, comparison_rows, environment_rows, ms, number, served_cells, validation_rows,
                                       served_line, served_rows, settings_line, title)

TOP_N = 5


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: comparison table, reasons, layers by stage, top layers, memory, environment."""
    out = [f"## deployres profile: {title(report)}", ""]
    if report.get("status") == "interrupted":
        out += ["> **Interrupted** (Ctrl-C): the numbers below cover what was measured before it.", ""]
    rows = comparison_rows(report)
    if report.get("artifacts"):
        out += [settings_line(report) + f". Reference for ratios: **{report.get('reference') or '–'}** (speedup = its p50 / this p50).", ""]
        out += _table(COLUMNS, [cells(r) for r in rows]) + [""]
    missing = [r for r in rows if not r["measured"]]
    if missing:
        out += ["**Not measured**", ""] + [f"- `{r['artifact']}`: {r['reason']}" for r in missing] + [""]
    verdicts = validation_rows(report)
    if verdicts:
        out += ["### Validation against the PyTorch original", ""] + _table(["artifact", "verdict", "evidence", "checks (95 % intervals)"], verdicts) + [""]
    if report.get("served") is not None:
        out += served_markdown(report)

    layered = [a for a in report.get("artifacts", []) if a.get("layers") and a["layers"].get("batches")]
    if layered:
        stages = ["stem", "stage1", "stage2", "stage3", "stage4", "head", "other"]
        out += ["### Time by network stage", ""]
        body = []
        for art in layered:
            for lb in art["layers"]["batches"]:
                shares = {s["stage"]: s["share"] for s in lb["by_stage"]}
                body.append([art["label"], lb["batch"], ms(lb["total_ms"])] + [f"{100 * shares[s]:.0f}%" if s in shares else "–" for s in stages])
        out += _table(["artifact", "batch", "layers ms"] + stages, body) + [""]
        out += [f"### Top {TOP_N} layers (largest batch)", ""]
        body = []
        for art in layered:
            lb = art["layers"]["batches"][-1]
            for layer in lb["top_layers"][:TOP_N]:
                body.append([art["label"], lb["batch"], f"`{layer['name']}`" + (f" ({layer['module']})" if layer.get("module") else ""), layer["op_type"], layer["stage"], ms(layer["ms"]), f"{100 * layer['share']:.1f}%"])
        out += _table(["artifact", "batch", "layer", "op", "stage", "ms", "share"], body) + [""]
        notes = sorted({a["layers"]["note"] for a in layered})
        out += [f"_{n}._" for n in notes] + [""]

    body = []
    for art in report.get("artifacts", []):
        mem = art.get("memory") or {}
        flops = art.get("flops_per_sample")
        body.append([art["label"], number(art.get("load_seconds"), 2), number(mem.get("load_peak_rss_mb"), 0),
                     number((mem.get("rss_after_load_mb") or 0) - (mem.get("rss_before_mb") or 0), 0) if mem else "–",
                     number(flops / 1e9, 2) if flops else "–"])
    if body:
        out += ["### Load, memory and FLOPs", ""]
        out += _table(["artifact", "load s", "peak RSS MiB", "RSS growth MiB", "GFLOP/sample"], body) + [""]
    out += ["<details><summary>Environment</summary>", ""] + _table(["", ""], environment_rows(report)) + ["", "</details>", ""]
    return "\n".join(out)


def served_markdown(report: Mapping[str, Any]) -> list[str]:
    """The served-model section: one row per model and concurrency level, then the models not measured."""
    served = report.get("served") or {}
    out = ["### Served (Triton, under concurrency)", ""]
    if served.get("status") == "interrupted":
        out += ["> **Interrupted** (Ctrl-C): the levels below are those measured before it.", ""]
    if served.get("error"):
        return out + [f"Not measured: {served['error']}", ""]
    out += [served_line(report) + ". Latency is per request at the client; avg batch = samples per execution "
            "in the server's statistics (what dynamic batching merged); server batches = batch size×executions.", ""]
    rows = served_rows(report)
    measured = [r for r in rows if r["measured"]]
    if measured:
        out += _table(SERVED_COLUMNS, [served_cells(r) for r in measured]) + [""]
    missing = [r for r in rows if not r["measured"]]
    if missing:
        out += ["**Served models not measured**", ""] + [f"- `{r['model']}`: {r['reason']}" for r in missing] + [""]
    return out
