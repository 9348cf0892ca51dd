"""What the commands print beyond one line: validation and sensitivity tables, written-file lines, the progress bar."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.table import Table

from deploy_res.cli.app import Context
from deploy_res.data.class_names import named


@contextlib.contextmanager
def _progress(ctx: Context, label: str):
    """A progress bar over images, on a terminal only; yields the ``progress(done, total)`` callback the API takes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeRemainingColumn(),
                  console=ctx.console, transient=True, disable=not ctx.console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_sensitivity(ctx: Context, sensitivity: dict, top: int) -> None:
    layers = sensitivity["layers"]
    table = Table(title=f"INT8 sensitivity: {len(layers)} quantised layers, the {min(top, len(layers))} that add the most error")
    for column in ("rank", "layer", "op", "input SQNR dB", "output SQNR dB", "dB lost"):
        table.add_column(column, justify="right" if "dB" in column or column == "rank" else "left")
    for rank, layer in enumerate(layers[:top], start=1):
        table.add_row(str(rank), layer["name"], layer["op_type"], f"{layer['input_sqnr_db']:.1f}", f"{layer['output_sqnr_db']:.1f}", f"{layer['added_error_db']:.2f}")
    ctx.console.print(table)


def _interval(check: dict) -> str:
    if check.get("interval") is None:
        return "every sample"
    low, high = check["interval"]
    return f"[{'-inf' if low is None else f'{low:.4g}'}, {'inf' if high is None else f'{high:.4g}'}]"


OUTCOME_STYLE = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "inconclusive": "[yellow]INCONCLUSIVE[/]"}


def _print_validation(ctx: Context, result: dict) -> None:
    table = Table(title=f"{result['artifact']} ({result['precision']}, {result['backend']}) vs {result['reference']['kind']} {result['reference']['source']}")
    for column in ("check", "value", f"{100 * result.get('confidence', 0.95):g} % interval", "limit", "result"):
        table.add_column(column)
    for check in result["checks"]:
        table.add_row(check["name"], f"{check['value']:.6g}", _interval(check), f"{check['limit']:g}", OUTCOME_STYLE[check["outcome"]])
    metrics = result["metrics"]
    ctx.console.print(table)
    extra = [f"{k} {metrics[k]:.4g}" for k in ("max_abs_error", "mean_abs_error", "cosine_mean", "cosine_p5", "cosine_min", "top1_agreement", "top5_agreement") if k in metrics]
    ctx.console.print(f"inputs: {result['inputs']['samples']} {result['inputs']['kind']} ({result['inputs']['source']}); " + ", ".join(extra))
    if result["accuracy"]:
        acc = result["accuracy"]
        ctx.console.print(f"top-1 accuracy: reference {100 * acc['reference_top1']:.2f}%, artifact {100 * acc['artifact_top1']:.2f}% "
                          f"(drop {acc['top1_drop_points']:.2f} points); top-5 {100 * acc['reference_top5']:.2f}% / {100 * acc['artifact_top5']:.2f}%")
    worst = result.get("worst_samples") or []
    names = result.get("class_names")
    if worst and result["precision"] != "fp32":
        ctx.console.print("lowest cosines (evidence, not a limit): " + ", ".join(
            f"{w['sample']} {w['cosine']:.4f} (class {named(w['reference_class'], names)} ranked {w['reference_class_rank']})" for w in worst[:3]))
    classes = [row for row in result.get("worst_classes") or [] if row["agreement"] < 1]
    if classes and result["precision"] != "fp32":
        ctx.console.print("least agreement by the reference's class: " + ", ".join(
            f"{named(row['class'], names)} {row['agreement']:.3f} of {row['samples']}" for row in classes[:3]))
    ctx.console.print(f"{OUTCOME_STYLE[result['outcome']]}{result['verdict'][len(result['outcome']):]}")
    ctx.console.print(f"result in {result['result_path']}")


def _print_written(ctx: Context, path) -> None:
    size = Path(path).stat().st_size / 1e6
    ctx.console.print(f"wrote {path} ({size:.1f} MB) + {Path(path).name}.json")
