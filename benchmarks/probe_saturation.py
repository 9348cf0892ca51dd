"""Does this CPU's INT8 lose accuracy in its integer kernels? 8-bit against 7-bit Q/DQ weights. (Not a test.)

x86 CPUs without VNNI or AMX (AVX2, AVX-512 without VNNI) multiply u8 activations by s8 weights with
``VPMADDUBSW``, whose 16-bit pair sums saturate where both are large (OpenVINO's "saturation issue", NNCF's
``overflow_fix``, ONNX Runtime's ``reduce_range``). This probe tells that loss apart from the calibration's:

  ResNet-50 (BatchNorm statistics re-estimated on real photos, as ``deployres run`` does, the same network as
  ``bench_tune.py``), exported and built by deployres (``build-engine --int8 --onnx-only``, 128 calibration photo
  crops, the default percentile ranges), in three Q/DQ variants from the one set of ranges:

    8-bit              ``--overflow-fix none``: every weight at +-127
    first layer 7-bit  ``--overflow-fix first_layer``: the image-fed layer's weights at +-64 (``auto`` on these CPUs)
    all 7-bit          every Conv/Gemm weight at +-64 (ORT's ``reduce_range``), for comparison

  each run three ways on 256 held-out photo crops: ONNX Runtime's integer kernels (full graph optimisation, as its
  engine), OpenVINO's (f32 hint, as its engine), and "exact": ONNX Runtime with graph optimisation off, so each
  Q/DQ pair runs as the float ops it defines, no integer kernels and no saturation. Each against the FP32 ONNX:
  mean cosine, 5th-percentile cosine and top-1 agreement with 95 % intervals. Kernels worse than the exact run of
  the same Q/DQ is the saturation; the exact run's own loss is the ranges' and the weights' rounding.

    python benchmarks/probe_saturation.py [--samples 256] [--workdir /tmp/probe-saturation]   # ~10 min on 2 cores

Results: ``benchmarks/results/probe_saturation_<isa>.md``; the README's "INT8 on a CPU without VNNI" quotes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "support"), str(HERE)]

INPUT_SIZE = (3, 224, 224)


def qdq_variants(work: Path) -> tuple[Path, dict[str, onnx.ModelProto]]:
    """The FP32 ONNX the Q/DQ files come from and ``{variant: Q/DQ model}`` (files reused when in ``work``)."""
    from bench_tune import MODEL, prepare
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.core.manifest import read_manifest
    from deploy_res.engines.precision.qdq import seven_bit_weights
    from deploy_res.export import ExportSettings, export

    weights, _data, calib = prepare(work, INPUT_SIZE)
    exported = work / "export" / f"{MODEL}.opt.onnx"
    if not exported.is_file():
        exported = export(MODEL, work / "export", ExportSettings(weights=weights, exporter="torchscript", input_size=INPUT_SIZE)).final_path
    models = {}
    for fix in ("none", "first_layer"):  # one folder: the second build reuses the first's calibration cache
        built = build_engine(exported, work / "int8", BuildSettings(precision="int8", backend="onnxruntime", calib_data=calib,
                                                                    onnx_only=True, overflow_fix=fix), quiet=True)
        models[fix] = onnx.load(str(built.precision_onnx))
    float_path = Path(read_manifest(built.precision_onnx)["inputs"]["onnx"]["path"])
    all_seven = seven_bit_weights(onnx.ModelProto.FromString(models["none"].SerializeToString()), onnx.load(str(float_path)), layers="all")
    return float_path, {"8-bit": models["none"], "first layer 7-bit": models["first_layer"], "all 7-bit": all_seven}


def openvino_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    return np.concatenate([next(iter(compiled(x[i:i + 32]).values())) for i in range(0, len(x), 32)])


def row(variant: str, runtime: str, reference: np.ndarray, logits: np.ndarray) -> str:
    from deploy_res.core.intervals import mean_interval, proportion_interval, quantile, quantile_interval
    from deploy_res.validation.metrics import MetricState

    state = MetricState.of(reference, logits)
    n, cos = state.samples, np.sort(state.cosines)
    mean_low, mean_high = mean_interval(cos)
    p5_low, p5_high = quantile_interval(cos, 0.05)
    agree_low, agree_high = proportion_interval(state.top1_agree, n)

    def bound(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    return (f"| {variant} | {runtime} | {n} | {np.mean(cos):.4f} [{mean_low:.4f}, {mean_high:.4f}] "
            f"| {quantile(cos, 0.05):.4f} [{bound(p5_low)}, {bound(p5_high)}] "
            f"| {state.top1_agree / n:.3f} [{agree_low:.3f}, {agree_high:.3f}] |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256, help="held-out photo crops compared (at most 256) [default: 256]")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/probe-saturation"), help="export, builds and data (reused)")
    parser.add_argument("--output", type=Path, help="results file [default: benchmarks/results/probe_saturation_<isa>.md]")
    args = parser.parse_args()
    from bench_cpu_backends import isa_name
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint
    from deploy_res.engines.precision.qdq import overflow_fix_for
    from precision_helpers import run_onnx

    args.workdir.mkdir(parents=True, exist_ok=True)
    float_path, variants = qdq_variants(args.workdir)
    x = np.load(args.workdir / "photos.npz")["inputs"][: args.samples]
    reference = run_onnx(float_path, x, batch=32)
    cpu = cpu_fingerprint()
    out = ["# INT8 saturation probe: integer kernels against the exact Q/DQ run\n",
           f"{cpu.get('model', '?')}, ISA {isa_name()} (`--overflow-fix auto` here: {overflow_fix_for(cpu['isa'])}); "
           f"`python benchmarks/probe_saturation.py --samples {args.samples}`. ResNet-50 with photo BatchNorm statistics, "
           f"{len(x)} held-out photo crops at 224, each engine against the FP32 ONNX on ONNX Runtime; intervals are 95 %.\n",
           "| Q/DQ weights | run by | N | mean cosine [CI] | cosine p5 [CI] | top-1 agreement [CI] |", "|---|---|---|---|---|---|"]
    print("\n".join(out), flush=True)
    for variant, model in variants.items():
        for runtime, run in (("ONNX Runtime kernels", lambda m: run_onnx(m, x, batch=32)), ("OpenVINO kernels", lambda m: openvino_run(m, x)),
                             ("exact (float ops)", lambda m: run_onnx(m, x, batch=32, exact=True))):
            out.append(row(variant, runtime, reference, run(model)))
            print(out[-1], flush=True)
    path = args.output or HERE / "results" / f"probe_saturation_{isa_name()}.md"
    path.write_text("\n".join(out) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
