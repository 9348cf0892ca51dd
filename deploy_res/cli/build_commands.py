"""`deployres build-engine`: an engine from ONNX at FP32, BF16, FP16 or INT8."""

from __future__ import annotations

import click

from deploy_res.build.settings import DEVICES, OVERFLOW_FIX_CHOICES, PERF_HINTS, BuildSettings
from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import InputShape, Names, input_shapes, preprocessing_from, preprocessing_options
from deploy_res.core.errors import DeployResError
from deploy_res.engines import BACKENDS
from deploy_res.engines.precision.calibration import METHODS

DEFAULTS = BuildSettings()


@cli.command("build-engine")
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), help="Output folder [default: beside the input].")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULTS.backend, show_default=True,
              help="auto: TensorRT with a GPU and TensorRT; on a CPU, ONNX Runtime or OpenVINO, whichever is measured faster at build (BF16: OpenVINO).")
@click.option("--fp16", is_flag=True, help="FP16-typed ONNX (inputs/outputs stay FP32).")
@click.option("--bf16", is_flag=True, help="BF16 OpenVINO engine from the float graph (CPUs with AVX512_BF16 or AMX).")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ from calibration on --calib-data.")
@click.option("--calib-data", type=click.Path(), help="Folder of images, or .npy/.npz arrays, for INT8 calibration.")
@click.option("--calib-samples", default=DEFAULTS.calib_samples, show_default=True, type=click.IntRange(1), help="Calibration samples to use.")
@click.option("--calib-method", type=click.Choice(METHODS), default=DEFAULTS.calib_method, show_default=True, help="Range method.")
@click.option("--skip-bad-files", is_flag=True, help="Skip calibration files that fail to decode instead of stopping.")
@click.option("--fp16-keep-op-types", type=Names(empty=None), help="Comma-separated op types kept in FP32 (replaces the default list).")
@click.option("--fp16-keep-nodes", type=Names(), default="", help="Comma-separated node names kept in FP32.")
@click.option("--onnx-only", is_flag=True, help="Write the FP16 / Q/DQ ONNX the build would use, and stop.")
@click.option("--target-agreement", type=click.FloatRange(0, 1), help="INT8: leave the most sensitive layers in FP32 until top-1 agreement with FP32 reaches this.")
@click.option("--overflow-fix", type=click.Choice(OVERFLOW_FIX_CHOICES), default=DEFAULTS.overflow_fix, show_default=True,
              help="INT8 on the CPU: 7-bit weights in the image-fed layers (first_layer), where u8 x s8 sums saturate; auto: on x86 CPUs without VNNI.")
@click.option("--fallback-layers", type=click.IntRange(0), help="INT8: leave this many of the most sensitive layers in FP32.")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULTS.device, show_default=True, help="ONNX Runtime device.")
@click.option("--threads", type=click.IntRange(1), help="OpenVINO inference threads, recorded in the engine [default: OpenVINO's].")
@click.option("--perf-hint", type=click.Choice(PERF_HINTS), help="OpenVINO performance hint [default: latency].")
@preprocessing_options
@click.option("--workspace-mb", type=click.IntRange(1), help="TensorRT workspace limit [default: 1024].")
@click.option("--opt-level", type=click.IntRange(0, 5), help="TensorRT builder optimisation level [default: 3].")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file [default: <output>/tensorrt.timing.cache].")
@click.option("--input-shape", "input_shapes_given", multiple=True, type=InputShape(),
              help="Full input shape of the graph passes' checks, for an ONNX whose H/W are dynamic; repeatable.")
@pass_ctx
def build_engine_command(ctx: Context, onnx_file, output_dir, fp16, bf16, int8, input_size, mean, std, crop_pct, input_shapes_given, **options) -> None:
    """Build an engine from ONNX_FILE at FP32, BF16, FP16 or INT8."""
    from deploy_res.build import build_engine

    if sum((fp16, bf16, int8)) > 1:
        raise DeployResError("choose one of --bf16, --fp16, --int8 (neither backend here takes a mixed-precision ONNX yet)")
    settings = BuildSettings(precision="int8" if int8 else "fp16" if fp16 else "bf16" if bf16 else "fp32",
                             preprocessing=preprocessing_from(input_size, mean, std, crop_pct),
                             input_shapes=input_shapes(input_shapes_given), **options)
    result = build_engine(onnx_file, output_dir, settings, quiet=ctx.quiet, console=ctx.console)
    for note in result.notes:
        ctx.console.print(f"[dim]{note}[/]")
    for item in result.artifacts:
        click.echo(f"wrote {item['path']} ({item['bytes'] / 1e6:.1f} MB, {item['precision']}, {item['seconds']:.1f} s)")
