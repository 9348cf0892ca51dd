"""`deployres triton`: a Triton Inference Server model repository from validated engines."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import BATCH_SIZES


@cli.command("triton")
@click.argument("engines", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(), help="Model repository folder to write (whole or not at all).")
@click.option("--name", "names", multiple=True, help="Model name, once per engine in order [default: <model>_<precision>_<backend>].")
@click.option("--latency-budget-ms", type=click.FloatRange(0, min_open=True), help="Queue delay = this budget - the engine's measured latency at the optimal batch [default: no queueing].")
@click.option("--max-queue-delay-us", type=click.IntRange(0), help="Set max_queue_delay_microseconds directly.")
@click.option("--preferred-batch-size", "preferred_batch_sizes", type=BATCH_SIZES, help="Comma-separated preferred_batch_size (Triton advises against it for most models).")
@click.option("--max-batch-size", type=click.IntRange(1), help="max_batch_size [default: the top of the manifest's batch range].")
@click.option("--instances", type=click.IntRange(1), help="Instances per model [default: 1].")
@click.option("--threads", type=click.IntRange(1), help="CPU threads per instance [default: cores / instances].")
@click.option("--streams", type=click.IntRange(1), help="OpenVINO streams per instance, sharing its threads (with --python-backend) [default: 1].")
@click.option("--cores", type=click.IntRange(1), help="Cores of the serving machine [default: this machine's].")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line: label_filename for classification [default: the class names the manifest records, if any].")
@click.option("--python-backend", is_flag=True, help="Serve through Triton's Python backend with deployres' own runner.")
@click.option("--ensemble", is_flag=True, help="Add a preprocessing model (image bytes in) and an ensemble chaining it to each classifier.")
@click.option("--force", is_flag=True, help="Serve engines without a passing validation (recorded in the lineage).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--check", is_flag=True, help="With --python-backend: serve the repository on the tritonserver nvidia-pytriton bundles and compare outputs with the engines.")
@pass_ctx
def triton_command(ctx: Context, engines, output_dir, **options) -> None:
    """Write a Triton Inference Server model repository serving ENGINE... (validated engines)."""
    from deploy_res.serve import triton
    from deploy_res.serve.triton_settings import TritonSettings, in_streams

    result = triton(engines, output_dir, TritonSettings(**{name: value for name, value in options.items() if value is not None}))
    for model in result.models:
        detail = f"max_batch_size {model['max_batch_size']}"
        if "instances" in model:
            threads_note = f" x {model['threads']} threads" if model.get("threads") else ""
            threads_note += in_streams(model.get("streams"))
            detail += f", queue delay {model['max_queue_delay_us']} us ({model['queue_delay_from']}), {model['instances']} instance(s){threads_note}, validation {model['validation']}"
        ctx.console.print(f"{model['name']} [dim]({model['backend']})[/]: {detail}")
    for note in result.notes:
        ctx.console.print(f"[yellow]warning:[/] {note}")
    for item in result.checks:
        ctx.console.print(f"checked {item['model']} on tritonserver at {item['url']}: max rel error {item['max_rel_error']:.2g} vs the engine in-process [green]ok[/]")
    click.echo(f"wrote {result.repository} ({len(result.models)} models)")
