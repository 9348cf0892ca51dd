"""The README is the front door: the figures it states about the code are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from deploy_res.validation.thresholds import DEFAULTS

README = Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = {"max rel. error": "max_rel_error", "mean cosine": "cosine_mean", "worst cosine": "cosine_min", "cosine p5": "cosine_p5",
           "top-1 agreement": "top1_agreement", "top-1 drop (labels)": "top1_drop_points", "top-5 drop (labels)": "top5_drop_points"}


def _limits_table() -> dict[str, dict[str, float | None]]:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| precision | max rel. error"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        row = {}
        for name, cell in zip(header[1:], cells[1:]):
            number = re.match(r"[0-9.e+-]+", cell)
            row[COLUMNS[name]] = float(number.group()) if number and cell != "—" else None
        table[cells[0]] = row
    return table


def test_the_validation_limits_table_is_the_code():
    table = _limits_table()
    assert set(table) == set(DEFAULTS)
    for precision, limits in DEFAULTS.items():
        assert {k: v for k, v in table[precision].items() if v is not None} == limits, precision


def test_the_python_example_runs(tmp_path, monkeypatch):
    """The README's "From Python" block, verbatim, in an empty folder."""
    text = README.read_text()
    block = text[text.index("### From Python"):]
    code = block[block.index("```python\n") + len("```python\n"):block.index("```\n", block.index("```python"))]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "out" / "resnet18.int8.cpu.ort.onnx").is_file()
    assert (tmp_path / "out" / "report" / "profile.html").is_file()
