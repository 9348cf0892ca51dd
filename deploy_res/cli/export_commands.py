"""`deployres export` and `deployres optimize`: PyTorch -> verified ONNX, and the checked graph passes."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import CHW, ChannelTriple, IntTuple, InputShape, input_shapes, preprocessing_from
from deploy_res.cli.render import _print_written
from deploy_res.export import ExportSettings
from deploy_res.exporters.pass_runner import TARGETS
from deploy_res.exporters.torch_export import EXPORTERS, BatchRange
from deploy_res.optimize import OptimizeSettings

DEFAULTS = ExportSettings()
OPTIMIZE_DEFAULTS = OptimizeSettings()


@cli.command("export")
@click.argument("model")
@click.option("-o", "--output", "output_dir", default="out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint (state dict, optionally wrapped).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier outputs [default: the checkpoint's, else the zoo's 1000; a factory gets num_classes=N].")
@click.option("--trust-pickle", is_flag=True, help="Load --weights that are a whole pickled model (torch.save(model, PATH)); this runs code from the file.")
@click.option("--input-size", type=CHW, help="Input C,H,W [default: the zoo's, 3,224,224 for a factory].")
@click.option("--labels", type=click.Path(exists=True), help="Class names: a text file, one per line, or a folder of class sub-folders [default: none]; recorded in the manifest for every later stage.")
@click.option("--batch-range", default=",".join(map(str, DEFAULTS.batch_range.to_dict().values())), show_default=True, type=IntTuple(3, "MIN,OPT,MAX"),
              help="Batch range recorded for engine builds (the ONNX batch axis is always dynamic).")
@click.option("--opset", default=DEFAULTS.opset, show_default=True, type=click.IntRange(13, 23), help="ONNX opset.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULTS.exporter, show_default=True, help="torch.onnx exporter.")
@click.option("--target", type=click.Choice(TARGETS), default=DEFAULTS.target, show_default=True, help="Graph passes for this runtime.")
@click.option("--no-optimize", is_flag=True, help="Write only the raw export (BatchNorm kept).")
@click.option("--mean", type=ChannelTriple(), help="Per-channel mean [default: the zoo's, ImageNet's for a factory or program].")
@click.option("--std", type=ChannelTriple(positive=True), help="Per-channel std [default: the zoo's, ImageNet's for a factory or program].")
@pass_ctx
def export_command(ctx: Context, model, output_dir, batch_range, no_optimize, mean, std, **options) -> None:
    """Export MODEL (a zoo name, package.module:factory or package.module:factory(LITERAL ARGS)) to a verified ONNX file."""
    from deploy_res.export import export

    settings = ExportSettings(batch_range=BatchRange(*batch_range), optimize=not no_optimize, preprocessing=preprocessing_from(mean=mean, std=std), **options)
    with ctx.console.status(f"exporting {model} ({settings.exporter})"):
        result = export(model, output_dir, settings)
    for note in result.notes:
        ctx.console.print(note)
    parity = result.manifest["check"]["parity"]
    for b in parity["batches"]:
        ctx.console.print(f"parity batch {b['batch']}: max |diff| {b['max_abs_error']:.2e} ({b['max_rel_error']:.1e} of max logit) [green]ok[/]")
    _print_written(ctx, result.onnx_path)
    if result.optimized_path:
        from deploy_res.optimize import render_report

        ctx.console.print(render_report(result.optimized_manifest["check"]["passes"]))
        _print_written(ctx, result.optimized_path)


@cli.command("optimize")
@click.argument("onnx_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output ONNX (default: <input>.opt.onnx beside it).")
@click.option("--target", type=click.Choice(TARGETS), default=OPTIMIZE_DEFAULTS.target, show_default=True, help="Runtime the passes prepare the graph for.")
@click.option("--batch", default=OPTIMIZE_DEFAULTS.batch, show_default=True, type=click.IntRange(1), help="Batch size of the numerical checks.")
@click.option("--input-shape", "shapes", multiple=True, type=InputShape(),
              help="Full input shape of the checks, for an ONNX whose H/W are dynamic; repeatable.")
@pass_ctx
def optimize_command(ctx: Context, onnx_file, output, target, batch, shapes) -> None:
    """Fold BatchNorm, fuse residual adds and clean up ONNX_FILE, checking every pass numerically."""
    from deploy_res.optimize import optimize_file, render_report

    with ctx.console.status(f"optimising {onnx_file} for {target}"):
        manifest = optimize_file(onnx_file, output, OptimizeSettings(target=target, batch=batch, input_shapes=input_shapes(shapes)))
    ctx.console.print(render_report(manifest["check"]["passes"]))
    _print_written(ctx, manifest["artifact"]["path"])
