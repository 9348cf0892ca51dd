"""`deployres validate`: an artifact against its PyTorch original."""

from __future__ import annotations

from pathlib import Path

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import Limit, any_batch_option, ray_options, ray_options_from
from deploy_res.cli.render import _print_sensitivity, _print_validation, _progress
from deploy_res.core.errors import ValidationFailed, ValidationInconclusive
from deploy_res.engines import ONNX_BACKENDS
from deploy_res.validation.settings import ValidateSettings

DEFAULTS = ValidateSettings()


@cli.command("validate")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--reference", help="Zoo name, package.module:factory or FP32 .onnx to compare with [default: the manifest's PyTorch model].")
@click.option("--reference-weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint for --reference MODEL.")
@click.option("--data", type=click.Path(), help="Image folder (sub-folders = classes for accuracy), glob, .parquet list of paths, or .npy/.npz [default: seeded random inputs].")
@click.option("--samples", type=click.IntRange(1), help="Inputs to compare, at most [default: all of --data; 32 random inputs without it].")
@click.option("--batch", default=DEFAULTS.batch, show_default=True, type=click.IntRange(1), help="Batch size of the runs.")
@click.option("--max-rel-error", type=Limit(0, 1e6), help="FP32: limit on max |error| / max |reference| over every sample [default: 1e-3].")
@click.option("--min-cosine", type=Limit(-1, 1), help="FP32: limit on every sample's cosine [default: 0.99999].")
@click.option("--min-mean-cosine", type=Limit(-1, 1), help="Limit on the mean cosine [default: per precision].")
@click.option("--min-cosine-p5", type=Limit(-1, 1), help="Limit on the 5th percentile of the per-sample cosine [default: per precision].")
@click.option("--min-top1-agreement", type=Limit(0, 1), help="Limit on top-1 agreement, 0-1 [default: per precision].")
@click.option("--max-top1-drop", type=Limit(0, 100), help="Limit on the top-1 accuracy drop in points, with labels [default: per precision].")
@click.option("--max-top5-drop", type=Limit(0, 100), help="Limit on the top-5 accuracy drop in points, with labels [default: per precision].")
@click.option("--confidence", default=DEFAULTS.confidence, show_default=True, type=click.FloatRange(0.5, 1, max_open=True),
              help="Confidence level of the intervals statistical limits are judged by.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Result file [default: <artifact>.validation.json].")
@click.option("--per-layer", is_flag=True, help="INT8: rank the quantised layers by the error they add.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="With --per-layer: layers to print.")
@click.option("--skip-bad-files", is_flag=True, help="Skip images that fail to decode (named in the result) instead of stopping.")
@click.option("--backend", type=click.Choice(ONNX_BACKENDS), help="Run plain ONNX files on this backend [default: ONNX Runtime]; engines run on their own.")
@any_batch_option
@ray_options
@pass_ctx
def validate_command(ctx: Context, artifact, max_rel_error, min_cosine, min_mean_cosine, min_cosine_p5, min_top1_agreement, max_top1_drop,
                     max_top5_drop, json_path, top, ray, ray_address, actors, ray_cpus, **options) -> None:
    """Compare ARTIFACT with its PyTorch original; exit 0 on PASS, 1 on FAIL, 3 on INCONCLUSIVE (the data cannot decide)."""
    from deploy_res.validation import validate

    given = {"max_rel_error": max_rel_error, "cosine_min": min_cosine, "cosine_mean": min_mean_cosine, "cosine_p5": min_cosine_p5,
             "top1_agreement": min_top1_agreement, "top1_drop_points": max_top1_drop, "top5_drop_points": max_top5_drop}
    settings = ValidateSettings(limits={name: value for name, value in given.items() if value is not None},
                                ray=ray_options_from(ray, ray_address, actors, ray_cpus), **options)
    with _progress(ctx, f"validating {Path(artifact).name}") as progress:
        result = validate(artifact, settings, output=json_path, progress=progress, on_note=lambda text: ctx.console.print(f"[dim]{text}[/]"))
    if result["inputs"].get("skipped"):
        ctx.console.print(f"skipped {len(result['inputs']['skipped'])} undecodable file(s): {', '.join(result['inputs']['skipped'][:5])}")
    for note in result.get("notes", []):
        ctx.console.print(f"[dim]{note}[/]")
    _print_validation(ctx, result)
    if settings.per_layer:
        _print_sensitivity(ctx, result["sensitivity"], top)
    if result["outcome"] == "fail":
        raise ValidationFailed(f"{Path(artifact).name} FAILED validation: {'; '.join(result['failed'])}")
    if result["outcome"] == "inconclusive":
        needed = result["samples_to_decide"]
        raise ValidationInconclusive(f"{Path(artifact).name}: validation INCONCLUSIVE on {result['inputs']['samples']} samples; "
                                     + (f"validate on about {needed:,} samples to decide" if needed else "more samples cannot decide at these values")
                                     + " (or set the limits the data can decide)")
