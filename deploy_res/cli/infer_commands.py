"""`deployres infer`: top-k predictions of an engine over a data set into Parquet."""

from __future__ import annotations

from pathlib import Path

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import any_batch_option, ray_options, ray_options_from
from deploy_res.cli.render import _progress
from deploy_res.infer import InferSettings

DEFAULTS = InferSettings()


@cli.command("infer")
@click.argument("engine", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(), help="Image folder (sub-folders = classes give labels), glob (quoted), or .parquet list with a 'path' column.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Predictions file (.parquet), written atomically with a manifest beside it.")
@click.option("--top-k", default=DEFAULTS.top_k, show_default=True, type=click.IntRange(1), help="Classes kept per image.")
@click.option("--batch", type=click.IntRange(1), help="Images per engine run [default: the manifest's optimal batch, else 8].")
@click.option("--skip-bad-files", is_flag=True, help="Skip images that fail to decode (named in the manifest) instead of stopping.")
@click.option("--force", is_flag=True, help="Use an engine whose validation FAILED.")
@any_batch_option
@ray_options
@pass_ctx
def infer_command(ctx: Context, engine, data, output, ray, ray_address, actors, ray_cpus, **options) -> None:
    """Predict the top-k classes of every image in --data with ENGINE into a Parquet file."""
    from deploy_res.infer import infer

    settings = InferSettings(ray=ray_options_from(ray, ray_address, actors, ray_cpus), **options)
    with _progress(ctx, f"infer {Path(engine).name}") as progress:
        result = infer(engine, data, output, settings, progress=progress, on_note=lambda text: ctx.console.print(f"[dim]{text}[/]"))
    if result["validation"] is None:
        ctx.console.print(f"[yellow]note:[/] {Path(engine).name} has no validation result; run `deployres validate {engine} --data ...` to check it")
    elif result["validation"]["outcome"] == "failed":
        ctx.console.print(f"[yellow]warning:[/] {Path(engine).name} FAILED validation; used because of --force")
    elif result["validation"]["outcome"] == "inconclusive":
        ctx.console.print(f"[yellow]note:[/] {Path(engine).name}'s validation was INCONCLUSIVE ({result['validation']['verdict']}); "
                          "validate it on more data to know its accuracy")
    if result["skipped"]:
        ctx.console.print(f"skipped {len(result['skipped'])} undecodable file(s): {', '.join(result['skipped'][:5])}")
    ctx.console.print(f"wrote {result['output']} ({result['images']} images, {result['images_per_s']:.1f} img/s, {result['execution']['mode']}) + {Path(result['output']).name}.json")
