"""The pass runner's report as a table: op counts before and after, one row per pass, the first skip reasons."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import onnx


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first; non-default domains as ``domain.Op``."""
    counts = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}" for node in model.graph.node)
    return dict(counts.most_common())


def render_report(report: Mapping[str, Any], max_reasons: int = 6) -> Any:
    """The report as a short rich renderable: op counts before/after, one row per pass, the first skip reasons.

    Print it with ``rich.console.Console().print(render_report(report))``.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ops = Table(title=f"ops ({report['nodes_before']} -> {report['nodes_after']} nodes)", show_edge=False)
    ops.add_column("op")
    ops.add_column("before", justify="right")
    ops.add_column("after", justify="right")
    before, after = report["ops_before"], report["ops_after"]
    for op in list(before) + [op for op in after if op not in before]:
        b, a = before.get(op, 0), after.get(op, 0)
        ops.add_row(op, str(b), str(a), style=None if a == b else "bold")

    passes = Table(title=f"passes (target {report['target']}, batch {report['batch']}, rtol {report['rtol']:g})", show_edge=False)
    for column, justify in (("#", "right"), ("pass", "left"), ("changed", "right"), ("skipped", "right"), ("max abs err", "right"), ("max rel err", "right"), ("time s", "right")):
        passes.add_column(column, justify=justify)
    reasons = []
    for entry in report["passes"]:
        passes.add_row(
            str(entry["step"]),
            entry["name"],
            str(entry["changed"]),
            str(len(entry["skipped"])),
            f"{entry['max_abs_error']:.2e}",
            f"{entry['max_rel_error']:.2e}",
            f"{entry['seconds']:.2f}",
        )
        reasons += [f"{entry['name']}: {reason}" for reason in entry["skipped"]]
    parts: list[Any] = [ops, passes]
    if reasons:
        lines = [f"skipped: {reason}" for reason in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            lines.append(f"... and {len(reasons) - max_reasons} more (see the manifest)")
        parts.append(Text("\n".join(lines), style="dim"))
    if "residual_adds" in report:
        parts.append(Text(f"{len(report['residual_adds'])} residual Adds listed in the manifest (the finder the INT8 stage quantises by)"))
    if report.get("checks_by_identity"):
        steps = ", ".join(str(step) for step in report["checks_by_identity"])
        parts.append(Text(f"steps {steps} left the graph identical (structure and weights, bit for bit): checked by identity, not run again", style="dim"))
    parts.append(Text(f"end to end: max abs error {report['max_abs_error']:.2e}, max rel error {report['max_rel_error']:.2e}, {report['seconds']:.1f} s"))
    return Group(*parts)
