"""`deployres profile`: artifacts (and served models) measured interleaved, with a report."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import BATCH_SIZES, IntList, TorchModes, any_batch_option
from deploy_res.core.errors import DeployResError
from deploy_res.engines import ONNX_BACKENDS
from deploy_res.profiling.settings import DEFAULT_DURATION_S, PROTOCOLS, ProfileSettings, ServedSettings

DEFAULTS = ProfileSettings()


@cli.command("profile")
@click.argument("artifacts", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--batches", default=",".join(map(str, DEFAULTS.batches)), show_default=True, type=BATCH_SIZES, help="Batch sizes to measure.")
@click.option("--warmup-s", default=DEFAULTS.warmup_s, show_default=True, type=click.FloatRange(0), help="Untimed warm-up per batch size, seconds.")
@click.option("--duration-s", type=click.FloatRange(0, min_open=True), help=f"Timed seconds per batch size, all artifacts together [default: {DEFAULT_DURATION_S:g}].")
@click.option("--iterations", type=click.IntRange(1), help="Timed rounds per batch size instead of a duration.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads for ONNX Runtime and torch [default: the runtime's].")
@click.option("--torch", "with_torch", is_flag=True, help="Add the PyTorch original named in the first artifact's manifest.")
@click.option("--torch-modes", type=TorchModes(), default="both", show_default=True, help="With --torch: eager, compile (torch.compile), both, or eager,compile.")
@click.option("--validation", "validation_files", multiple=True, type=click.Path(exists=True, dir_okay=False), help="`deployres validate --json` output; repeatable.")
@click.option("--layer-iterations", default=DEFAULTS.layer_iterations, show_default=True, type=click.IntRange(0), help="Profiled runs per batch size for the per-layer breakdown (0: none).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), help="Report folder [default: <first artifact's folder>/report].")
@click.option("--server", metavar="REPO|HOST:PORT", help="Also profile served models: a model repository (--python-backend) started on the bundled "
              "tritonserver on loopback, or HOST:PORT of a running Triton.")
@click.option("--server-model", "server_models", multiple=True, help="With --server: a model to measure; repeatable [default: every model it serves].")
@click.option("--concurrency", default="1,2,4,8", show_default=True, type=IntList("concurrency levels", "1,2,4,8"), help="With --server: concurrent clients per level.")
@click.option("--server-duration-s", default=DEFAULT_DURATION_S, show_default=True, type=click.FloatRange(0, min_open=True), help="With --server: timed seconds per concurrency level.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="http", show_default=True, help="With --server: the client protocol.")
@click.option("--backend", type=click.Choice(ONNX_BACKENDS), help="Run plain ONNX files on this backend [default: ONNX Runtime]; engines run on their own.")
@any_batch_option
@pass_ctx
def profile_command(ctx: Context, artifacts, with_torch, torch_modes, validation_files, output_dir, server, server_models, concurrency,
                    server_duration_s, protocol, **options) -> None:
    """Measure and compare ARTIFACT... (ONNX files, ONNX Runtime and OpenVINO engines, TensorRT plans) interleaved.

    \b
    Prints one table (p50/p99/throughput and the speedup over the first
    artifact at each batch size) and writes profile.json, profile.md and
    profile.html. With --server, then the served models under each
    concurrency level (throughput, p50/p99, the server's batch sizes).
    Ctrl-C stops early and still writes the report.
    """
    from deploy_res.profiling import profile, read_validation_files
    from deploy_res.reports import rich_table

    if not artifacts and not server:
        raise click.UsageError("give ARTIFACT... to profile, or --server REPO|HOST:PORT")
    modes = torch_modes if with_torch else ()
    served = ServedSettings(server, tuple(server_models), concurrency, server_duration_s, protocol) if server else None
    settings = ProfileSettings(torch_modes=modes, served=served, **options)
    report = profile(artifacts, settings, validation_results=read_validation_files(validation_files), output_dir=output_dir,
                     quiet=ctx.quiet, console=ctx.console)
    # The table is the command's result: printed with --quiet too (which hides the progress bar).
    console = ctx.console if not ctx.quiet else Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    for row in report["artifacts"]:
        for note in row.get("notes") or []:
            ctx.console.print(f"[dim]{row['label']}: {note}[/]")
    if report["artifacts"]:
        console.print(rich_table(report))
    served = report.get("served")
    if served is not None:
        from deploy_res.reports import rich_served_table

        console.print(rich_served_table(report))
    paths = report.get("report_paths", {})
    click.echo(f"wrote {paths.get('html')} (+ profile.json, profile.md)")
    if report["status"] == "interrupted":
        click.echo("interrupted: the report covers what was measured before Ctrl-C", err=True)
        sys.exit(130)
    if artifacts and not any(row["measured"] for row in report["artifacts"]):
        first = next((row for row in report["artifacts"] if row.get("error")), None)
        raise DeployResError("nothing was measured" + (f": {first['label']}: {first['error']}" if first else ""))
    if served is not None and not any(model["measured"] for model in served["models"]):
        first = next((model for model in served["models"] if model.get("error")), None)
        reason = served.get("error") or (f"{first['name']}: {first['error']}" if first else "the server has no models")
        raise DeployResError(f"no served model was measured: {reason}")
