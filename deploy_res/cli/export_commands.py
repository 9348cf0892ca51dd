"""`deployres export` and `deployres optimize`: PyTorch -> verified ONNX, and the checked graph passes."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import CHW, ChannelTriple, IntTuple, InputShape, input_shapes
from deploy_res.cli.render import _print_written
from deploy_res.exporters.checks import DEFAULT_BATCH as DEFAULT_CHECK_BATCH
from deploy_res.exporters.pass_runner import DEFAULT_TARGET, TARGETS
from deploy_res.exporters.torch_export import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, BatchRange


@cli.command("export")
@click.argument("model")
@click.option("-o", "--output", "output_dir", default="out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint (state dict, optionally wrapped).")
@click.option("--input-size", type=CHW, help="Input C,H,W [default: the zoo's, 3,224,224 for a factory].")
@click.option("--batch-range", default=",".join(map(str, BatchRange().to_dict().values())), show_default=True, type=IntTuple(3, "MIN,OPT,MAX"),
              help="Batch range recorded for engine builds (the ONNX batch axis is always dynamic).")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(13, 23), help="ONNX opset.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULT_EXPORTER, show_default=True, help="torch.onnx exporter.")
@click.option("--target", type=click.Choice(TARGETS), default=DEFAULT_TARGET, show_default=True, help="Graph passes for this runtime.")
@click.option("--no-optimize", is_flag=True, help="Write only the raw export (BatchNorm kept).")
@click.option("--mean", type=ChannelTriple(), help="Per-channel mean for a factory model [default: ImageNet's].")
@click.option("--std", type=ChannelTriple(positive=True), help="Per-channel std for a factory model [default: ImageNet's].")
@pass_ctx
def export_command(ctx: Context, model, output_dir, weights, input_size, batch_range, opset, exporter, target, no_optimize, mean, std) -> None:
    """Export MODEL (a zoo name or package.module:factory) to a verified ONNX file."""
    from deploy_res.export import export
    from deploy_res.models import Preprocessing

    preprocessing = None
    if mean or std:
        base = Preprocessing()
        preprocessing = Preprocessing(base.input_size, mean or base.mean, std or base.std, base.crop_pct, base.interpolation)
    with ctx.console.status(f"exporting {model} ({exporter})"):
        result = export(model, output_dir, weights=weights, input_size=input_size, batch_range=BatchRange(*batch_range),
                        opset=opset, exporter=exporter, optimize=not no_optimize, target=target, preprocessing=preprocessing)
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
@click.option("--target", type=click.Choice(TARGETS), default=DEFAULT_TARGET, show_default=True, help="Runtime the passes prepare the graph for.")
@click.option("--batch", default=DEFAULT_CHECK_BATCH, show_default=True, type=click.IntRange(1), help="Batch size of the numerical checks.")
@click.option("--input-shape", "shapes", multiple=True, type=InputShape(),
              help="Full input shape of the checks, for an ONNX whose H/W are dynamic; repeatable.")
@pass_ctx
def optimize_command(ctx: Context, onnx_file, output, target, batch, shapes) -> None:
    """Fold BatchNorm, fuse residual adds and clean up ONNX_FILE, checking every pass numerically."""
    from deploy_res.optimize import optimize_file, render_report

    with ctx.console.status(f"optimising {onnx_file} for {target}"):
        manifest = optimize_file(onnx_file, output, target=target, batch=batch, **({"input_shapes": input_shapes(shapes)} if shapes else {}))
    ctx.console.print(render_report(manifest["check"]["passes"]))
    _print_written(ctx, manifest["artifact"]["path"])
