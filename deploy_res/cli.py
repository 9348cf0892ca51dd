"""The ``deployres`` command: a thin click layer over the Python API.

Each command parses its options, calls one API function, and prints. Every
error a user can cause is one line on stderr, ``error: <what and what to do>``,
and a non-zero exit: a :class:`DeployResError` (its exit code), a click usage
error (bad option value, unknown option or command: exit 2) and a file system
refusal (permission, read-only, a folder where a file goes: exit 2). Ctrl-C
anywhere, an import that Ctrl-C cut short included, exits 130 with one line;
nothing half-written is left (the API writes an artifact and its manifest as
one unit). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import contextlib
import errno
import logging
import math
import signal
import sys
import warnings
from typing import Optional

import click
from rich.console import Console
from rich.table import Table

from pathlib import Path

from deploy_res.core.errors import DeployResError, ValidationFailed

TARGETS = ("onnxruntime", "tensorrt", "portable")


class Context:
    """Shared CLI state: where to print and how much."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        # Piped or captured output keeps whole table rows instead of wrapping at 80 columns.
        self.console = Console(quiet=quiet, highlight=False, width=None if sys.stdout.isatty() else 160)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


class UserError(click.ClickException):
    """A DeployResError on its way out: ``error: <one line>`` and the error's exit code."""

    def __init__(self, error: DeployResError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {_one_line(self.format_message())}", err=True)


class Interrupted(click.ClickException):
    """Ctrl-C: one line on stderr and exit code 130."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted; nothing half-written was left behind")

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


_USER_ERRNOS = {getattr(errno, name) for name in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST")
                if hasattr(errno, name)}
"""File-system refusals a user meets (permissions, a full or read-only disk, a folder where a file goes): one line, not a traceback."""


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, or an error raised while handling one: a Ctrl-C during ``import onnxruntime`` surfaces as an ImportError."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def _library_chatter_off():
    """Libraries' own warnings and log lines (torch, ONNX Runtime's quantiser) stay off stderr while a command
    runs: deployres prints its notes and its one error line itself. ``python -W`` / PYTHONWARNINGS still apply."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


class DeployResGroup(click.Group):
    """A click group whose every way out is one line: ``error: ...`` (or the interrupt line) and an exit code.

    Used as a program (the console script, ``CliRunner``) it handles click's
    usage errors itself, so no ``Usage: ... Try ...`` block is printed: just
    ``error: <click's message>`` and exit 2.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeployResError as exc:
            raise UserError(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if _interrupted(exc):
                raise Interrupted() from None
            if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
                where = f": {exc.filename}" if exc.filename else ""
                raise UserError(DeployResError(f"{exc.strerror or type(exc).__name__}{where}")) from None
            raise
        except KeyboardInterrupt:
            raise Interrupted() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with _library_chatter_off():
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `deployres`: the help text is the answer
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (UserError, Interrupted) as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            Interrupted().show()
            sys.exit(130)
        except Exception as exc:
            if not _interrupted(exc):
                raise
            Interrupted().show()
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


def _int_tuple(count: int, label: str):
    def parse(_ctx, param, value):
        if value is None:
            return None
        parts = value.replace("x", ",").split(",")
        try:
            numbers = tuple(int(p) for p in parts)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not {count} integers separated by commas ({label})") from None
        if len(numbers) != count or min(numbers) < 1:
            raise click.BadParameter(f"{value!r} must be {count} positive integers ({label})")
        return numbers
    return parse


def _input_shapes(_ctx, _param, values):
    """``--input-shape [NAME:]D0,D1,...`` (repeatable) -> ``{name or None: shape}``; None names the only input."""
    shapes = {}
    for value in values or ():
        name, _, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not [NAME:]N,C,H,W (integers separated by commas)") from None
        if min(shape) < 1:
            raise click.BadParameter(f"{value!r} must be positive integers, e.g. 1,3,224,224")
        shapes[name or None] = shape
    return shapes or None


def _float_triple(_ctx, param, value):
    if value is None:
        return None
    try:
        numbers = tuple(float(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not three numbers separated by commas") from None
    if len(numbers) != 3:
        raise click.BadParameter(f"{value!r} must be three numbers, one per channel")
    if not all(math.isfinite(n) for n in numbers):
        raise click.BadParameter(f"{value!r} must be finite numbers")
    if param is not None and param.name == "std" and min(numbers) <= 0:
        raise click.BadParameter(f"{value!r}: every std must be positive (inputs are divided by it)")
    return numbers


def _limit(low: float, high: float):
    """A callback for a validation limit: a finite number in [low, high] (nan would pass or fail everything)."""
    def check(_ctx, _param, value):
        if value is None:
            return None
        if not math.isfinite(value) or not low <= value <= high:
            raise click.BadParameter(f"{value!r} is not a number from {low:g} to {high:g}")
        return value
    return check


@click.group(cls=DeployResGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final result line.")
@click.version_option(package_name="deployres")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """ResNet-family CNNs from PyTorch to fast, verified inference engines.

    \b
    Pipeline: export -> optimize -> build-engine -> validate -> profile,
    each stage writing an artifact and a JSON manifest beside it.
    """
    ctx.obj = Context(quiet=quiet)


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


@cli.command("export")
@click.argument("model")
@click.option("-o", "--output", "output_dir", default="out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint (state dict, optionally wrapped).")
@click.option("--input-size", callback=_int_tuple(3, "C,H,W"), help="Input C,H,W (default: the zoo's, 3,224,224 for a factory).")
@click.option("--batch", "batch", default="1,8,32", callback=_int_tuple(3, "min,opt,max"), help="Batch range min,opt,max recorded for engine builds.")
@click.option("--opset", default=20, type=click.IntRange(13, 23), help="ONNX opset.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", help="torch.onnx exporter.")
@click.option("--target", type=click.Choice(TARGETS), default="onnxruntime", help="Graph passes for this runtime.")
@click.option("--no-optimize", is_flag=True, help="Write only the raw export (BatchNorm kept).")
@click.option("--mean", callback=_float_triple, help="Per-channel mean for a factory model (default ImageNet).")
@click.option("--std", callback=_float_triple, help="Per-channel std for a factory model (default ImageNet).")
@pass_ctx
def export_command(ctx: Context, model, output_dir, weights, input_size, batch, opset, exporter, target, no_optimize, mean, std) -> None:
    """Export MODEL (a zoo name or package.module:factory) to a verified ONNX file."""
    from deploy_res.export import export
    from deploy_res.models import Preprocessing
    from deploy_res.exporters.torch_export import BatchRange

    preprocessing = None
    if mean or std:
        base = Preprocessing()
        preprocessing = Preprocessing(base.input_size, mean or base.mean, std or base.std, base.crop_pct, base.interpolation)
    with ctx.console.status(f"exporting {model} ({exporter})"):
        result = export(model, output_dir, weights=weights, input_size=input_size, batch_range=BatchRange(*batch),
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
@click.option("--target", type=click.Choice(TARGETS), default="onnxruntime", help="Runtime the passes prepare the graph for.")
@click.option("--batch", default=2, type=click.IntRange(1), help="Batch size of the numerical checks.")
@click.option("--input-shape", "input_shapes", multiple=True, callback=_input_shapes,
              help="[NAME:]N,C,H,W: full input shape of the checks, for an ONNX whose H/W are dynamic; repeatable.")
@pass_ctx
def optimize_command(ctx: Context, onnx_file, output, target, batch, input_shapes) -> None:
    """Fold BatchNorm, fuse residual adds and clean up ONNX_FILE, checking every pass numerically."""
    from deploy_res.optimize import optimize_file, render_report

    with ctx.console.status(f"optimising {onnx_file} for {target}"):
        manifest = optimize_file(onnx_file, output, target=target, batch=batch, **({"input_shapes": input_shapes} if input_shapes else {}))
    ctx.console.print(render_report(manifest["check"]["passes"]))
    _print_written(ctx, manifest["artifact"]["path"])


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


def _ray_options(command):
    """``--ray``, ``--ray-address``, ``--actors``, ``--ray-cpus``: run the batches on Ray Data (deploy_res.scale.ray_data)."""
    for option in reversed((
        click.option("--ray", is_flag=True, help="Shard the work over Ray Data actors on a new local cluster (pip install 'deployres[ray]')."),
        click.option("--ray-address", help="Join this Ray cluster instead (ray://HOST:10001 or HOST:6379; implies --ray)."),
        click.option("--actors", type=click.IntRange(1), help="With --ray: inference actors [default: one per GPU, else one per CPU left after decoding]."),
        click.option("--ray-cpus", type=click.IntRange(1), help="With --ray: CPUs of the local cluster [default: all of this machine's]."),
    )):
        command = option(command)
    return command


@contextlib.contextmanager
def _progress(ctx: Context, label: str):
    """A progress bar over images; yields the ``progress(done, total)`` callback the API takes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeRemainingColumn(),
                  console=ctx.console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@cli.command("validate")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--reference", help="Zoo name, package.module:factory or FP32 .onnx to compare with [default: the manifest's PyTorch model].")
@click.option("--reference-weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint for --reference MODEL.")
@click.option("--data", type=click.Path(), help="Image folder (sub-folders = classes for accuracy), glob, .parquet list of paths, or .npy/.npz [default: seeded random inputs].")
@click.option("--samples", default=32, type=click.IntRange(1), help="Inputs to compare (at most).")
@click.option("--batch", default=8, type=click.IntRange(1), help="Batch size of the runs.")
@click.option("--max-rel-error", type=float, callback=_limit(0, 1e6), help="Limit on max |error| / max |reference| [default: per precision].")
@click.option("--min-cosine", type=float, callback=_limit(-1, 1), help="Limit on the smallest per-sample cosine [default: per precision].")
@click.option("--min-mean-cosine", type=float, callback=_limit(-1, 1), help="Limit on the mean cosine [default: per precision].")
@click.option("--min-top1-agreement", type=float, callback=_limit(0, 1), help="Limit on top-1 agreement, 0-1 [default: per precision].")
@click.option("--max-top1-drop", type=float, callback=_limit(0, 100), help="Limit on the top-1 accuracy drop in points, with labels [default: per precision].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Result file [default: <artifact>.validation.json].")
@click.option("--per-layer", is_flag=True, help="INT8: rank the quantised layers by the error they add.")
@click.option("--top", default=10, type=click.IntRange(1), help="With --per-layer: layers to print.")
@click.option("--skip-bad-files", is_flag=True, help="Skip images that fail to decode (named in the result) instead of stopping.")
@_ray_options
@pass_ctx
def validate_command(ctx: Context, artifact, reference, reference_weights, data, samples, batch, max_rel_error, min_cosine, min_mean_cosine,
                     min_top1_agreement, max_top1_drop, json_path, per_layer, top, skip_bad_files, ray, ray_address, actors, ray_cpus) -> None:
    """Compare ARTIFACT with its PyTorch original; exit 0 on pass, 1 on fail."""
    from deploy_res.validation import validate

    overrides = {key: value for key, value in {"max_rel_error": max_rel_error, "cosine_min": min_cosine,
                 "cosine_mean": min_mean_cosine, "top1_agreement": min_top1_agreement, "top1_drop_points": max_top1_drop}.items() if value is not None}
    with _progress(ctx, f"validating {Path(artifact).name}") as progress:
        result = validate(artifact, reference, reference_weights, data, samples, batch, overrides, output=json_path, per_layer=per_layer,
                          skip_bad=skip_bad_files, ray=ray or bool(ray_address), ray_address=ray_address, actors=actors, ray_cpus=ray_cpus,
                          progress=progress, on_note=lambda text: ctx.console.print(f"[dim]{text}[/]"))
    if result["inputs"].get("skipped"):
        ctx.console.print(f"skipped {len(result['inputs']['skipped'])} undecodable file(s): {', '.join(result['inputs']['skipped'][:5])}")
    for note in result.get("notes", []):
        ctx.console.print(f"[dim]{note}[/]")
    _print_validation(ctx, result)
    if per_layer:
        _print_sensitivity(ctx, result["sensitivity"], top)
    if not result["passed"]:
        raise ValidationFailed(f"{Path(artifact).name} FAILED validation: {'; '.join(result['failed'])}")


@cli.command("infer")
@click.argument("engine", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(), help="Image folder (sub-folders = classes give labels), glob (quoted), or .parquet list with a 'path' column.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Predictions file (.parquet), written atomically with a manifest beside it.")
@click.option("--top-k", default=5, type=click.IntRange(1), help="Classes kept per image.")
@click.option("--batch", type=click.IntRange(1), help="Images per engine run [default: the manifest's optimal batch, else 8].")
@click.option("--skip-bad-files", is_flag=True, help="Skip images that fail to decode (named in the manifest) instead of stopping.")
@click.option("--force", is_flag=True, help="Use an engine whose validation FAILED.")
@_ray_options
@pass_ctx
def infer_command(ctx: Context, engine, data, output, top_k, batch, skip_bad_files, force, ray, ray_address, actors, ray_cpus) -> None:
    """Predict the top-k classes of every image in --data with ENGINE into a Parquet file."""
    from deploy_res.infer import infer

    with _progress(ctx, f"infer {Path(engine).name}") as progress:
        result = infer(engine, data, output, top_k=top_k, batch=batch, skip_bad=skip_bad_files, force=force, ray=ray or bool(ray_address),
                       ray_address=ray_address, actors=actors, ray_cpus=ray_cpus, progress=progress,
                       on_note=lambda text: ctx.console.print(f"[dim]{text}[/]"))
    if result["validation"] is None:
        ctx.console.print(f"[yellow]note:[/] {Path(engine).name} has no validation result; run `deployres validate {engine} --data ...` to check it")
    elif not result["validation"]["passed"]:
        ctx.console.print(f"[yellow]warning:[/] {Path(engine).name} FAILED validation; used because of --force")
    if result["skipped"]:
        ctx.console.print(f"skipped {len(result['skipped'])} undecodable file(s): {', '.join(result['skipped'][:5])}")
    ctx.console.print(f"wrote {result['output']} ({result['images']} images, {result['images_per_s']:.1f} img/s, {result['execution']['mode']}) + {Path(result['output']).name}.json")


def _print_sensitivity(ctx: Context, sensitivity: dict, top: int) -> None:
    layers = sensitivity["layers"]
    table = Table(title=f"INT8 sensitivity: {len(layers)} quantised layers, the {min(top, len(layers))} that add the most error")
    for column in ("rank", "layer", "op", "input SQNR dB", "output SQNR dB", "dB lost"):
        table.add_column(column, justify="right" if "dB" in column or column == "rank" else "left")
    for rank, layer in enumerate(layers[:top], start=1):
        table.add_row(str(rank), layer["name"], layer["op_type"], f"{layer['input_sqnr_db']:.1f}", f"{layer['output_sqnr_db']:.1f}", f"{layer['added_error_db']:.2f}")
    ctx.console.print(table)


def _print_validation(ctx: Context, result: dict) -> None:
    table = Table(title=f"{result['artifact']} ({result['precision']}, {result['backend']}) vs {result['reference']['kind']} {result['reference']['source']}")
    for column in ("check", "value", "limit", "result"):
        table.add_column(column)
    for check in result["checks"]:
        table.add_row(check["name"], f"{check['value']:.6g}", f"{check['limit']:g}", "[green]pass[/]" if check["passed"] else "[red]FAIL[/]")
    metrics = result["metrics"]
    ctx.console.print(table)
    extra = [f"{k} {metrics[k]:.4g}" for k in ("max_abs_error", "mean_abs_error", "cosine_mean", "top5_agreement") if k in metrics]
    ctx.console.print(f"inputs: {result['inputs']['samples']} {result['inputs']['kind']} ({result['inputs']['source']}); " + ", ".join(extra))
    if result["accuracy"]:
        acc = result["accuracy"]
        ctx.console.print(f"top-1 accuracy: reference {100 * acc['reference_top1']:.2f}%, artifact {100 * acc['artifact_top1']:.2f}% "
                          f"(drop {acc['top1_drop_points']:.2f} points); top-5 {100 * acc['reference_top5']:.2f}% / {100 * acc['artifact_top5']:.2f}%")
    ctx.console.print(f"{'[green]PASS[/]' if result['passed'] else '[red]FAIL[/]'} - result in {result['result_path']}")


def _batch_list(_ctx, _param, value):
    try:
        numbers = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not batch sizes separated by commas, e.g. 1,8") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r} must be positive batch sizes, e.g. 1,8")
    return numbers


def _level_list(value):
    try:
        return _batch_list(None, None, value)
    except click.BadParameter:
        raise click.BadParameter(f"{value!r} must be positive concurrency levels separated by commas, e.g. 1,2,4,8") from None


@cli.command("profile")
@click.argument("artifacts", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--batch", "batches", default="1,8", callback=_batch_list, help="Batch sizes, comma-separated.")
@click.option("--warmup-s", default=1.0, type=click.FloatRange(0), help="Untimed warm-up per batch size, seconds.")
@click.option("--duration-s", type=click.FloatRange(0, min_open=True), help="Timed seconds per batch size, all artifacts together [default: 5].")
@click.option("--iterations", type=click.IntRange(1), help="Timed rounds per batch size instead of a duration.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads for ONNX Runtime and torch [default: the runtime's].")
@click.option("--torch", "with_torch", is_flag=True, help="Add the PyTorch original named in the first artifact's manifest.")
@click.option("--torch-modes", default="eager,compile", help="With --torch: eager, compile (torch.compile) or both.")
@click.option("--validation", "validation_files", multiple=True, type=click.Path(exists=True, dir_okay=False), help="`deployres validate --json` output; repeatable.")
@click.option("--layer-iterations", default=10, type=click.IntRange(0), help="Profiled runs per batch size for the per-layer breakdown (0: none).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), help="Report folder [default: <first artifact's folder>/report].")
@click.option("--server", metavar="REPO|HOST:PORT", help="Also profile served models: a model repository (--python-backend) started on the bundled "
              "tritonserver on loopback, or HOST:PORT of a running Triton.")
@click.option("--server-model", "server_models", multiple=True, help="With --server: a model to measure; repeatable [default: every model it serves].")
@click.option("--concurrency", "concurrency", default="1,2,4,8", callback=lambda c, p, v: _level_list(v), help="With --server: concurrent clients per level, comma-separated.")
@click.option("--server-duration-s", default=5.0, type=click.FloatRange(0, min_open=True), help="With --server: timed seconds per concurrency level.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", help="With --server: the client protocol.")
@pass_ctx
def profile_command(ctx: Context, artifacts, batches, warmup_s, duration_s, iterations, threads, with_torch, torch_modes,
                    validation_files, layer_iterations, output_dir, server, server_models, concurrency, server_duration_s, protocol) -> None:
    """Measure and compare ARTIFACT... (ONNX files, ONNX Runtime engines, TensorRT plans) interleaved.

    \b
    Prints one table (p50/p99/throughput and the speedup over the first
    artifact at each batch size) and writes profile.json, profile.md and
    profile.html. With --server, then the served models under each
    concurrency level (throughput, p50/p99, the server's batch sizes).
    Ctrl-C stops early and still writes the report.
    """
    from deploy_res.profiling import profile, read_validation_files
    from deploy_res.reports import rich_table

    if duration_s is not None and iterations is not None:
        raise click.BadParameter("give --duration-s or --iterations, not both", param_hint="--iterations")
    if not artifacts and not server:
        raise click.UsageError("give ARTIFACT... to profile, or --server REPO|HOST:PORT")
    modes = ()
    if with_torch:
        modes = ("eager", "compile") if torch_modes.strip() == "both" else (_names(torch_modes) or ("eager",))
        bad = [m for m in modes if m not in ("eager", "compile")]
        if bad:
            raise click.BadParameter(f"{bad[0]!r}: choose eager, compile or both", param_hint="--torch-modes")
    report = profile(artifacts, batches=batches, warmup_s=warmup_s, duration_s=duration_s or 5.0, iterations=iterations,
                     threads=threads, torch_modes=modes, validation_results=read_validation_files(validation_files),
                     output_dir=output_dir, layer_iterations=layer_iterations, quiet=ctx.quiet, console=ctx.console,
                     server=server, server_models=server_models, concurrency=concurrency, server_duration_s=server_duration_s, protocol=protocol)
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


@cli.command("run")
@click.argument("model")
@click.option("-o", "--output", "output_dir", default="out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--int8", is_flag=True, help="Also build, validate and profile an INT8 engine.")
@click.option("--fp16", is_flag=True, help="Also build, validate and profile an FP16 engine.")
@click.option("--bf16", is_flag=True, help="Also build, validate and profile a BF16 engine (OpenVINO; CPUs with AVX512_BF16 or AMX).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint [default: BatchNorm re-estimated on real photos].")
@click.option("--calib-data", type=click.Path(exists=True), help="INT8 calibration images/arrays [default: crops of scikit-image's sample photos].")
@click.option("--calib-samples", default=128, type=click.IntRange(1), help="Calibration samples.")
@click.option("--fallback-layers", type=click.IntRange(0), help="INT8: leave this many of the most sensitive layers in FP32.")
@click.option("--target-agreement", type=click.FloatRange(0, 1), help="INT8: leave sensitive layers in FP32 until top-1 agreement with FP32 reaches this.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino", "tensorrt"]), default="auto",
              help="Engine backend; auto on a CPU: ONNX Runtime or OpenVINO per precision, whichever is measured faster.")
@click.option("--batch", "batches", default="1,8", callback=lambda c, p, v: _batch_list(c, p, v), help="Batch sizes to profile.")
@click.option("--duration-s", default=5.0, type=click.FloatRange(0, min_open=True), help="Timed seconds per batch size.")
@click.option("--no-torch", is_flag=True, help="Leave the PyTorch original out of the comparison.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", help="torch.onnx exporter.")
@click.option("--input-size", callback=_int_tuple(3, "C,H,W"), help="Input C,H,W (default: the zoo's).")
@pass_ctx
def run_command(ctx: Context, model, output_dir, int8, fp16, bf16, weights, calib_data, calib_samples, fallback_layers, target_agreement, backend, batches, duration_s, no_torch, exporter, input_size) -> None:
    """The whole pipeline for MODEL: export, optimise, build FP32 (+INT8/FP16/BF16), validate, profile."""
    from deploy_res.pipeline import run_pipeline
    from deploy_res.reports import rich_table

    precisions = ["fp32"] + (["fp16"] if fp16 else []) + (["bf16"] if bf16 else []) + (["int8"] if int8 else [])
    counter = iter(range(1, 100))
    if (fallback_layers is not None or target_agreement is not None) and not int8:
        raise DeployResError("--fallback-layers and --target-agreement go with --int8")
    result = run_pipeline(model, output_dir, precisions, weights=weights, calib_data=calib_data, calib_samples=calib_samples,
                          fallback_layers=fallback_layers, target_agreement=target_agreement,
                          backend=backend, batches=batches, duration_s=duration_s, torch_modes=() if no_torch else ("eager",),
                          exporter=exporter, input_size=input_size, quiet=ctx.quiet, console=ctx.console,
                          step=lambda message: ctx.console.print(f"[bold cyan]{next(counter)}.[/] {message}"))
    ctx.console.print(rich_table(result.report))
    for precision, verdict in result.validations.items():
        metrics = verdict["metrics"]
        state = "[green]pass[/]" if verdict["passed"] else "[red]FAIL[/] (" + "; ".join(verdict["failed"]) + ")"
        note = f" [dim]({verdict['note']})[/]" if verdict.get("note") else ""
        ctx.console.print(f"{precision}: cosine {metrics['cosine_mean']:.4f}, top-1 agreement {metrics.get('top1_agreement', float('nan')):.3f} "
                          f"on {verdict['inputs']['samples']} held-out photo crops: {state}{note}")
    click.echo(f"report: {result.report['report_paths']['html']} ({result.seconds:.0f} s)")
    if result.interrupted:
        raise click.exceptions.Abort()
    if not result.passed:
        raise ValidationFailed("an engine failed validation against PyTorch; see the table above")


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


@cli.command("triton")
@click.argument("engines", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(), help="Model repository folder to write (whole or not at all).")
@click.option("--name", "names", multiple=True, help="Model name, once per engine in order [default: <model>_<precision>_<backend>].")
@click.option("--latency-budget-ms", type=click.FloatRange(0, min_open=True), help="Queue delay = this budget - the engine's measured latency at the optimal batch [default: no queueing].")
@click.option("--max-queue-delay-us", type=click.IntRange(0), help="Set max_queue_delay_microseconds directly.")
@click.option("--preferred-batch-size", "preferred", help="Comma-separated preferred_batch_size (Triton advises against it for most models).")
@click.option("--max-batch-size", type=click.IntRange(1), help="max_batch_size [default: the top of the manifest's batch range].")
@click.option("--instances", type=click.IntRange(1), help="Instances per model [default: 1].")
@click.option("--threads", type=click.IntRange(1), help="CPU threads per instance [default: cores / instances].")
@click.option("--cores", type=click.IntRange(1), help="Cores of the serving machine [default: this machine's].")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line: label_filename for classification.")
@click.option("--python-backend", is_flag=True, help="Serve through Triton's Python backend with deployres' own runner.")
@click.option("--ensemble", is_flag=True, help="Add a preprocessing model (image bytes in) and an ensemble chaining it to each classifier.")
@click.option("--force", is_flag=True, help="Serve engines without a passing validation (recorded in the lineage).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--check", is_flag=True, help="With --python-backend: serve the repository on the tritonserver nvidia-pytriton bundles and compare outputs with the engines.")
@pass_ctx
def triton_command(ctx: Context, engines, output_dir, names, latency_budget_ms, max_queue_delay_us, preferred, max_batch_size, instances,
                   threads, cores, labels, python_backend, ensemble, force, overwrite, check) -> None:
    """Write a Triton Inference Server model repository serving ENGINE... (validated engines)."""
    from deploy_res.serve import triton

    preferred_sizes = _batch_list(None, None, preferred) if preferred else ()
    result = triton(engines, output_dir, names=names, latency_budget_ms=latency_budget_ms, max_queue_delay_us=max_queue_delay_us,
                    preferred_batch_sizes=preferred_sizes, max_batch_size=max_batch_size, instances=instances, threads=threads,
                    cores=cores, labels=labels, python_backend=python_backend, ensemble=ensemble, force=force, overwrite=overwrite, check=check)
    for model in result.models:
        detail = f"max_batch_size {model['max_batch_size']}"
        if "instances" in model:
            threads_note = f" x {model['threads']} threads" if model.get("threads") else ""
            detail += f", queue delay {model['max_queue_delay_us']} us ({model['queue_delay_from']}), {model['instances']} instance(s){threads_note}, validation {model['validation']}"
        ctx.console.print(f"{model['name']} [dim]({model['backend']})[/]: {detail}")
    for note in result.notes:
        ctx.console.print(f"[yellow]warning:[/] {note}")
    for item in result.checks:
        ctx.console.print(f"checked {item['model']} on tritonserver at {item['url']}: max rel error {item['max_rel_error']:.2g} vs the engine in-process [green]ok[/]")
    click.echo(f"wrote {result.repository} ({len(result.models)} models)")


def _names(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _print_written(ctx: Context, path) -> None:
    from pathlib import Path

    size = Path(path).stat().st_size / 1e6
    ctx.console.print(f"wrote {path} ({size:.1f} MB) + {Path(path).name}.json")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: the CLI; every error one line (see :class:`DeployResGroup`), Ctrl-C exit 130."""
    try:
        cli.main(args=argv, prog_name="deployres")
    finally:
        # The command is over and has said so: a Ctrl-C during the interpreter's shutdown (torch's and
        # ONNX Runtime's threads joining) would only turn its exit status into 130 without a word.
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
