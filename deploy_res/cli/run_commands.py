"""`deployres run`: the whole pipeline for one model."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.render import OUTCOME_STYLE
from deploy_res.cli.options import BATCH_SIZES, CHW, ChannelTriple
from deploy_res.core.errors import ValidationFailed, ValidationInconclusive
from deploy_res.engines import BACKENDS
from deploy_res.exporters.torch_export import EXPORTERS
from deploy_res.pipeline import RunSettings

DEFAULTS = RunSettings()


@cli.command("run")
@click.argument("model")
@click.option("-o", "--output", "output_dir", default="out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--int8", is_flag=True, help="Also build, validate and profile an INT8 engine.")
@click.option("--fp16", is_flag=True, help="Also build, validate and profile an FP16 engine.")
@click.option("--bf16", is_flag=True, help="Also build, validate and profile a BF16 engine (OpenVINO; CPUs with AVX512_BF16 or AMX).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint [default: BatchNorm re-estimated on real photos].")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier outputs [default: the checkpoint's, else the zoo's 1000; a factory gets num_classes=N].")
@click.option("--trust-pickle", is_flag=True, help="Load --weights that are a whole pickled model (torch.save(model, PATH)); this runs code from the file.")
@click.option("--labels", type=click.Path(exists=True), help="Class names: a text file, one per line, or a folder of class sub-folders [default: none]; recorded in the manifest for every later stage.")
@click.option("--calib-data", type=click.Path(exists=True), help="INT8 calibration images/arrays [default: crops of scikit-image's sample photos].")
@click.option("--calib-samples", default=DEFAULTS.calib_samples, show_default=True, type=click.IntRange(1), help="Calibration samples.")
@click.option("--fallback-layers", type=click.IntRange(0), help="INT8: leave this many of the most sensitive layers in FP32.")
@click.option("--target-agreement", type=click.FloatRange(0, 1), help="INT8: leave sensitive layers in FP32 until top-1 agreement with FP32 reaches this.")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULTS.backend, show_default=True,
              help="Engine backend; auto on a CPU: ONNX Runtime or OpenVINO per precision, whichever is measured faster.")
@click.option("--batches", default=",".join(map(str, DEFAULTS.batches)), show_default=True, type=BATCH_SIZES, help="Batch sizes to profile.")
@click.option("--duration-s", default=DEFAULTS.duration_s, show_default=True, type=click.FloatRange(0, min_open=True), help="Timed seconds per batch size.")
@click.option("--no-torch", is_flag=True, help="Leave the PyTorch original out of the comparison.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULTS.exporter, show_default=True, help="torch.onnx exporter.")
@click.option("--input-size", type=CHW, help="Input C,H,W [default: the zoo's].")
@click.option("--mean", type=ChannelTriple(), help="Per-channel mean [default: the zoo's, ImageNet's for a factory or program].")
@click.option("--std", type=ChannelTriple(positive=True), help="Per-channel std [default: the zoo's, ImageNet's for a factory or program].")
@pass_ctx
def run_command(ctx: Context, model, output_dir, int8, fp16, bf16, no_torch, **options) -> None:
    """The whole pipeline for MODEL: export, optimise, build FP32 (+INT8/FP16/BF16), validate, profile."""
    from deploy_res.pipeline import run_pipeline
    from deploy_res.reports import rich_table

    precisions = ("fp32",) + (("fp16",) if fp16 else ()) + (("bf16",) if bf16 else ()) + (("int8",) if int8 else ())
    settings = RunSettings(precisions=precisions, torch_modes=() if no_torch else DEFAULTS.torch_modes, **options)
    counter = iter(range(1, 100))
    result = run_pipeline(model, output_dir, settings, quiet=ctx.quiet, console=ctx.console,
                          step=lambda message: ctx.console.print(f"[bold cyan]{next(counter)}.[/] {message}"))
    ctx.console.print(rich_table(result.report))
    for precision, verdict in result.validations.items():
        metrics = verdict["metrics"]
        note = f" [dim]({verdict['note']})[/]" if verdict.get("note") else ""
        ctx.console.print(f"{precision}: cosine {metrics['cosine_mean']:.4f} (p5 {metrics['cosine_p5']:.4f}), top-1 agreement "
                          f"{metrics.get('top1_agreement', float('nan')):.3f} with PyTorch on {verdict['inputs']['samples']} held-out photo crops "
                          f"(no labels: agreement, not accuracy): {OUTCOME_STYLE[verdict['outcome']]}{note}")
        if verdict["outcome"] != "pass":
            ctx.console.print(f"  {verdict['verdict']}")
    click.echo(f"report: {result.report['report_paths']['html']} ({result.seconds:.0f} s)")
    if result.interrupted:
        raise click.exceptions.Abort()
    if result.outcome == "fail":
        raise ValidationFailed("an engine failed validation against PyTorch; see the lines above")
    if result.outcome == "inconclusive":
        raise ValidationInconclusive("an engine's validation was INCONCLUSIVE on the held-out crops; validate it with "
                                     "`deployres validate ENGINE --data DIR` on more (ideally labelled) data")
