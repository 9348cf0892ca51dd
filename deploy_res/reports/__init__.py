"""Profile reports: JSON (schema in :mod:`deploy_res.reports.schema`), Markdown, self-contained HTML, console table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from deploy_res.reports.common import COLUMNS, cells, comparison_rows

REPORT_FILES = {"json": "profile.json", "markdown": "profile.md", "html": "profile.html"}


def write_reports(report: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``profile.json``, ``profile.md`` and ``profile.html`` into ``output_dir`` (atomically); return their paths."""
    from deploy_res.core.files import write_bytes_atomic
    from deploy_res.reports.html import render_html
    from deploy_res.reports.markdown import render_markdown
    from deploy_res.reports.schema import write_json

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / name for kind, name in REPORT_FILES.items()}
    body = {**report, "report_paths": {k: str(v) for k, v in paths.items()}}
    write_json(body, paths["json"])
    write_bytes_atomic(paths["markdown"], render_markdown(body).encode())
    write_bytes_atomic(paths["html"], render_html(body).encode())
    return paths


def rich_table(report: Mapping[str, Any]):
    """The comparison table for the console (rich)."""
    from rich.table import Table

    from deploy_res.reports.common import settings_line, title

    from rich.console import Group
    from rich.text import Text

    table = Table(title=f"deployres profile: {title(report)}", caption=settings_line(report))
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 3 else "right", no_wrap=index == 0)
    reasons = []
    for row in comparison_rows(report):
        values = cells(row)
        if row["measured"]:
            table.add_row(*values)
        else:
            reasons.append(Text.assemble((f"{row['artifact']}", "bold"), f" not measured: {row['reason']}", style="yellow"))
            table.add_row(values[0], values[1], values[2], "–", "[yellow]not measured[/]", *["–"] * (len(COLUMNS) - 5))
    if report.get("status") == "interrupted":
        reasons.append(Text("interrupted: the table covers what was measured before Ctrl-C", style="yellow"))
    return Group(table, *reasons)


def rich_served_table(report: Mapping[str, Any]):
    """The served-model table for the console (rich): one row per model and concurrency level."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from deploy_res.reports.common import SERVED_COLUMNS, served_cells, served_line, served_rows

    served = report.get("served") or {}
    table = Table(title="served (Triton, under concurrency)", caption=served_line(report))
    for index, column in enumerate(SERVED_COLUMNS):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    reasons = []
    if served.get("error"):
        reasons.append(Text(f"not measured: {served['error']}", style="yellow"))
    for row in served_rows(report):
        if row["measured"]:
            table.add_row(*served_cells(row))
        else:
            reasons.append(Text.assemble((row["model"], "bold"), f" not measured: {row['reason']}", style="yellow"))
    if served.get("status") == "interrupted":
        reasons.append(Text("interrupted: the served table covers the levels measured before Ctrl-C", style="yellow"))
    return Group(table, *reasons)


__all__ = ["REPORT_FILES", "rich_served_table", "rich_table", "write_reports"]
