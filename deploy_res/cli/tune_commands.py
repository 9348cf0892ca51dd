"""`deployres tune`: the fastest engine and serving configuration that meets the accuracy and serving budgets."""

from __future__ import annotations

import click

from deploy_res.cli.app import Context, cli, pass_ctx
from deploy_res.cli.options import CHW, ChannelTriple, Limit, Names
from deploy_res.exporters.torch_export import EXPORTERS
from deploy_res.tune.settings import OBJECTIVES, TuneSettings

DEFAULTS = TuneSettings(data="-")


@cli.command("tune")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True), help="Validation data: a labelled image folder, or .npz with inputs (and labels).")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Output folder (engines, state, report).")
@click.option("--calib-data", type=click.Path(exists=True), help="INT8 calibration images/arrays [default: --data].")
@click.option("--calib-samples", default=DEFAULTS.calib_samples, type=click.IntRange(1), help="Calibration samples.")
@click.option("--fallback-layers", default=DEFAULTS.fallback_layers, type=click.IntRange(0),
              help="An INT8 engine that does not pass is tried again with this many sensitive layers in float (0: never).")
@click.option("--samples", type=click.IntRange(1), help="Validation samples per engine [default: all of --data].")
@click.option("--max-top1-drop", type=Limit(0, 100), help="Accuracy budget: top-1 drop in points, judged on its 95 % interval [default: each precision's limits].")
@click.option("--p99-ms", type=click.FloatRange(0, min_open=True), help="Served p99 latency budget (ms), judged on its 95 % interval [default: none].")
@click.option("--concurrency", default=DEFAULTS.concurrency, type=click.IntRange(1), help="Closed-loop clients the serving points are measured at.")
@click.option("--min-throughput", type=click.FloatRange(0, min_open=True), help="Served images/s at least [default: none].")
@click.option("--objective", type=click.Choice(OBJECTIVES), default=DEFAULTS.objective, help="What to maximise among the points that meet the budgets (cost: fewest cores).")
@click.option("--precision", "precisions", type=Names(), default="", help="Precisions to try, e.g. fp32,int8 [default: fp32, int8, and bf16 where the CPU has it].")
@click.option("--backend", "backends", type=Names(), default="", help="Backends to try: onnxruntime,openvino,tensorrt [default: every one that runs here; tensorrt needs a GPU and TensorRT].")
@click.option("--cores", type=click.IntRange(1), help="Cores the serving configurations may use [default: this machine's].")
@click.option("--seconds", default=DEFAULTS.seconds, type=click.FloatRange(0, min_open=True), help="Served seconds per measured point.")
@click.option("--max-point-seconds", default=DEFAULTS.max_point_seconds, type=click.FloatRange(0, min_open=True),
              help="A point whose p99 budget is inconclusive is served longer, up to this many seconds in all (one that would need more is left inconclusive).")
@click.option("--budget-minutes", type=click.FloatRange(0, min_open=True), help="Stop searching after this long and answer with the best so far.")
@click.option("--triton", type=click.Path(file_okay=False), help="Also write the chosen configuration as a Triton repository here and check it served.")
@click.option("--harness", type=click.Choice(("auto", "triton", "in-process")), default="auto",
              help="How points are served: the bundled tritonserver, in-process, or auto (tritonserver where it starts).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint of MODEL [default: the zoo's seeded weights].")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier outputs [default: the checkpoint's, else the zoo's].")
@click.option("--trust-pickle", is_flag=True, help="Load --weights that are a whole pickled model; this runs code from the file.")
@click.option("--exporter", type=click.Choice(EXPORTERS), help="torch.onnx exporter [default: export's].")
@click.option("--input-size", type=CHW, help="Input C,H,W [default: the zoo's].")
@click.option("--mean", type=ChannelTriple(), help="Per-channel mean [default: the zoo's, ImageNet's for a factory].")
@click.option("--std", type=ChannelTriple(positive=True), help="Per-channel std [default: the zoo's, ImageNet's for a factory].")
@pass_ctx
def tune_command(ctx: Context, model, output_dir, harness, weights, num_classes, trust_pickle, exporter, input_size, mean, std, **options) -> None:
    """Search engines (precision x backend) and serving configurations for MODEL (a model or an .onnx) on this machine:
    accuracy first, then served p99 and throughput, measured; write the answer and the chosen engine's manifest."""
    from deploy_res.cli.options import preprocessing_from
    from deploy_res.tune import tune

    settings = TuneSettings(**options)
    is_onnx = model.endswith(".onnx")
    export_settings = preprocessing = None
    if is_onnx:
        if weights or num_classes or trust_pickle or exporter:
            raise click.BadParameter("--weights, --num-classes, --trust-pickle and --exporter are for a model, not an .onnx file", param_hint="MODEL")
        preprocessing = preprocessing_from(input_size, mean, std)
    else:
        from deploy_res.export import ExportSettings

        extra = {"exporter": exporter} if exporter else {}
        export_settings = ExportSettings(weights=weights, num_classes=num_classes, trust_pickle=trust_pickle, input_size=input_size,
                                         preprocessing=_preprocessing(mean, std), **extra)
    counter = iter(range(1, 10_000))
    result = tune(model, output_dir, settings, export_settings=export_settings, preprocessing=preprocessing, harness=harness,
                  step=lambda message: ctx.console.print(f"[bold cyan]{next(counter)}.[/] {message}"))
    from deploy_res.tune.report import summary_lines

    for line in summary_lines(result.report):
        ctx.console.print(line)
    click.echo(f"report: {result.paths['html']}")


def _preprocessing(mean, std):
    if not (mean or std):
        return None
    from deploy_res.models import Preprocessing

    base = Preprocessing()
    return Preprocessing(base.input_size, mean or base.mean, std or base.std, base.crop_pct, base.interpolation)
