"""`deployres models` and `deployres sample-photos`: the model zoo and its sample photos."""

from __future__ import annotations

import click
from rich.table import Table

from deploy_res.cli.app import Context, cli, pass_ctx


@cli.command("models")
@pass_ctx
def models_command(ctx: Context) -> None:
    """List the model zoo: family, input size, parameters, GFLOPs."""
    from deploy_res.models import get_spec, list_models
    from deploy_res.models.complexity import zoo_complexity

    table = Table(title="deployres model zoo")
    for column in ("model", "family", "input", "params", "GMACs", "GFLOPs", "reference"):
        table.add_column(column, justify="right" if column in ("params", "GMACs", "GFLOPs") else "left")
    for name in list_models():
        spec = get_spec(name)
        cost = zoo_complexity(name)
        size = "x".join(str(s) for s in spec.preprocessing.input_size[1:])
        table.add_row(name, spec.family, size, f"{cost.parameters:,}", f"{cost.macs / 1e9:.2f}", f"{cost.gflops:.2f}", spec.reference)
    ctx.console.print(table)


@cli.command("sample-photos")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--count", default=128, type=click.IntRange(1), help="Random crops to write.")
@click.option("--seed", default=0, type=int, help="Seed of the crops.")
@pass_ctx
def sample_photos_command(ctx: Context, folder, count, seed) -> None:
    """Write COUNT real-photo crops (scikit-image's sample photos) into FOLDER, e.g. for --calib-data."""
    from deploy_res.core.files import ensure_output_dir
    from deploy_res.data.photos import write_random_crops

    paths = write_random_crops(ensure_output_dir(folder), count, seed=seed)
    click.echo(f"wrote {len(paths)} crops of scikit-image's sample photos into {folder}")
