"""`deployres build-engine`: an engine from ONNX at FP32, BF16, FP16 or INT8."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import _float_triple, _input_shapes, _int_tuple, _names
from deploy_res.core.errors import DeployResError


@cli.command("build-engine")
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), help="Output folder (default: beside the input).")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino", "tensorrt"]), default="auto",
              help="auto: TensorRT with a GPU and TensorRT; on a CPU, ONNX Runtime or OpenVINO, whichever is measured faster at build (BF16: OpenVINO).")
@click.option("--fp16", is_flag=True, help="FP16-typed ONNX (inputs/outputs stay FP32).")
@click.option("--bf16", is_flag=True, help="BF16 OpenVINO engine from the float graph (CPUs with AVX512_BF16 or AMX).")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ from calibration on --calib-data.")
@click.option("--calib-data", type=click.Path(), help="Folder of images, or .npy/.npz arrays, for INT8 calibration.")
@click.option("--calib-samples", default=128, type=click.IntRange(1), help="Calibration samples to use.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), help="Range method [default: percentile].")
@click.option("--skip-bad-files", is_flag=True, help="Skip calibration files that fail to decode instead of stopping.")
@click.option("--fp16-keep-op-types", help="Comma-separated op types kept in FP32 (replaces the default list).")
@click.option("--fp16-keep-nodes", help="Comma-separated node names kept in FP32.")
@click.option("--onnx-only", is_flag=True, help="Write the FP16 / Q/DQ ONNX the build would use, and stop.")
@click.option("--target-agreement", type=click.FloatRange(0, 1), help="INT8: leave the most sensitive layers in FP32 until top-1 agreement with FP32 reaches this.")
@click.option("--fallback-layers", type=click.IntRange(0), help="INT8: leave this many of the most sensitive layers in FP32.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="ONNX Runtime device.")
@click.option("--threads", type=click.IntRange(1), help="OpenVINO inference threads, recorded in the engine [default: OpenVINO's].")
@click.option("--perf-hint", type=click.Choice(["latency", "throughput"]), help="OpenVINO performance hint [default: latency].")
@click.option("--input-size", callback=_int_tuple(3, "C,H,W"), help="Preprocessing for an ONNX file without a manifest.")
@click.option("--mean", callback=_float_triple, help="Preprocessing mean for an ONNX file without a manifest.")
@click.option("--std", callback=_float_triple, help="Preprocessing std for an ONNX file without a manifest.")
@click.option("--crop-pct", type=click.FloatRange(0.1, 1.0), help="Resize-then-crop ratio for an ONNX file without a manifest [default: 0.875].")
@click.option("--workspace-mb", type=click.IntRange(1), help="TensorRT workspace limit [default: 1024].")
@click.option("--opt-level", type=click.IntRange(0, 5), help="TensorRT builder optimisation level [default: 3].")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file [default: <output>/tensorrt.timing.cache].")
@click.option("--input-shape", "input_shapes", multiple=True, callback=_input_shapes,
              help="[NAME:]N,C,H,W: full input shape of the graph passes' checks, for an ONNX whose H/W are dynamic; repeatable.")
@pass_ctx
def build_engine_command(ctx: Context, onnx_file, output_dir, backend, fp16, bf16, int8, calib_data, calib_samples, calib_method, skip_bad_files,
                         fp16_keep_op_types, fp16_keep_nodes, onnx_only, target_agreement, fallback_layers, device, threads, perf_hint, input_size, mean, std, crop_pct, workspace_mb, opt_level, timing_cache,
                         input_shapes) -> None:
    """Build an engine from ONNX_FILE at FP32, BF16, FP16 or INT8."""
    from deploy_res.build import build_engine
    from deploy_res.models import Preprocessing

    if (target_agreement is not None or fallback_layers is not None) and not int8:
        raise DeployResError("--target-agreement and --fallback-layers go with --int8")
    if target_agreement is not None and fallback_layers is not None:
        raise DeployResError("give --target-agreement or --fallback-layers, not both")
    if fp16 and int8:
        raise DeployResError("--fp16 and --int8 together: neither backend here takes a mixed FP16/INT8 ONNX yet; choose one")
    if bf16 and (fp16 or int8):
        raise DeployResError("--bf16 goes alone: choose one of --bf16, --fp16, --int8")
    preprocessing = None
    if input_size or mean or std or crop_pct:
        base = Preprocessing()
        preprocessing = Preprocessing(input_size or base.input_size, mean or base.mean, std or base.std, crop_pct or base.crop_pct)
    result = build_engine(
        onnx_file, output_dir, backend=backend, precision="int8" if int8 else "fp16" if fp16 else "bf16" if bf16 else "fp32",
        calib_data=calib_data, calib_samples=calib_samples, calib_method=calib_method, skip_bad=skip_bad_files,
        fp16_keep_op_types=_names(fp16_keep_op_types), fp16_keep_nodes=_names(fp16_keep_nodes) or (),
        onnx_only=onnx_only, target_agreement=target_agreement, fallback_layers=fallback_layers, device=device, preprocessing=preprocessing,
        workspace_bytes=workspace_mb * (1 << 20) if workspace_mb else None, optimization_level=opt_level,
        timing_cache=timing_cache, input_shapes=input_shapes, threads=threads, perf_hint=perf_hint, quiet=ctx.quiet, console=ctx.console,
    )
    for note in result.notes:
        ctx.console.print(f"[dim]{note}[/]")
    for item in result.artifacts:
        click.echo(f"wrote {item['path']} ({item['bytes'] / 1e6:.1f} MB, {item['precision']}, {item['seconds']:.1f} s)")
