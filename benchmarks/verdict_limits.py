"""The numbers behind validate's default limits: per-sample agreement of real trained networks' INT8, FP16 and BF16
engines with their PyTorch originals, on large labelled held-out sets, and how each statistic moves with N.

Two residual networks are trained here on the CPU on real images (``tests/support/trained_nets.py``): the digits
ResNet (scikit-learn's digits; 3600 held-out samples = 450 held-out digits x 8 shifted, noised copies) and the
photo ResNet (which of scikit-image's sample photos a crop comes from; 4000 crops from the photos' held-out bottom
30 %). Engines: INT8 (deployres' ``onnxruntime`` Q/DQ layout, calibrated on 256 training samples) on ONNX Runtime
and on OpenVINO, FP16 on ONNX Runtime, BF16 on OpenVINO (CPUs with native BF16 only), and a damaged INT8 engine
(the last convolution's weight scales multiplied by ``--damage``) that must fail.

For each: top-1 / top-5 drop with its 95 % interval (Newcombe's paired method), top-1 agreement, mean cosine and
the 1st / 5th percentile of the per-sample cosine with their intervals, and the worst sample's cosine over the
first 32, 256 and all samples (it falls as N grows; the percentiles do not).

    python benchmarks/verdict_limits.py            # ~3-6 min on 2 cores
Results: ``benchmarks/results/verdict_limits_<isa>.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "support"), str(HERE)]


def _ort(model, x: np.ndarray) -> np.ndarray:
    from precision_helpers import run_onnx

    return run_onnx(model, x)


def _openvino(model, x: np.ndarray, precision: str) -> np.ndarray:
    import openvino as ov

    core = ov.Core()
    source = core.read_model(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model))
    compiled = core.compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2})
    return np.concatenate([next(iter(compiled(x[i:i + 64]).values())) for i in range(0, len(x), 64)])


def engines(onnx_path: Path, calib: np.ndarray, factor: float) -> dict:
    """``{name: callable(x) -> logits}`` for every engine of the table."""
    from bench_cpu_backends import isa_name
    from deploy_res.engines.precision.calibration import calibrate
    from deploy_res.engines.precision.fp16 import convert_fp16
    from deploy_res.engines.precision.qdq import emit_qdq
    from precision_helpers import damage

    qdq = emit_qdq(onnx.load(str(onnx_path)), calibrate(onnx_path, calib, quiet=True), "onnxruntime")
    table = {
        "INT8, ONNX Runtime": lambda x: _ort(qdq, x),
        "INT8, OpenVINO": lambda x: _openvino(qdq, x, "f32"),
        "FP16, ONNX Runtime": lambda x, m=convert_fp16(str(onnx_path)): _ort(m, x),
    }
    if "avx512_bf16" in isa_name() or "amx_bf16" in isa_name():
        table["BF16, OpenVINO"] = lambda x: _openvino(onnx_path, x, "bf16")
    table[f"INT8 damaged (last conv's scales x{factor:g})"] = lambda x, m=damage(qdq, factor): _ort(m, x)
    return table


def row(name: str, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> str:
    from deploy_res.core.intervals import paired_difference_interval, proportion_interval, quantile, quantile_interval, mean_interval
    from deploy_res.validation.metrics import MetricState

    state = MetricState.of(reference, logits, labels)
    n = state.samples
    cos = np.sort(state.cosines)

    def drop(k: str) -> str:
        table = state.table(k)
        low, high = paired_difference_interval(*table)
        return f"{100 * (table[1] - table[2]) / n:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"

    def q(p: float) -> str:
        low, high = quantile_interval(cos, p)
        return f"{quantile(cos, p):.4f} [{low if low is None else round(low, 4)}, {high if high is None else round(high, 4)}]"

    agree_low, agree_high = proportion_interval(state.top1_agree, n)
    mean_low, mean_high = mean_interval(cos)
    worst = " / ".join(f"{np.min(MetricState.of(reference[:k], logits[:k]).cosines):.4f}" for k in (32, 256, n))
    return (f"| {name} | {n} | {drop('top1')} | {drop('top5')} | {state.top1_agree / n:.4f} [{agree_low:.4f}, {agree_high:.4f}] "
            f"| {np.mean(cos):.5f} [{mean_low:.5f}, {mean_high:.5f}] | {q(0.01)} | {q(0.05)} | {worst} |")


def network(name: str, build, out: list[str], factor: float) -> None:
    import torch

    from precision_helpers import export_onnx

    model, calib, x, y, accuracy_text = build()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        onnx_path = export_onnx(model, torch.from_numpy(x[:1]), Path(folder) / "net.onnx")
        reference = np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])
        out.append(f"\n### {name}: {accuracy_text}, PyTorch top-1 {100 * np.mean(reference.argmax(1) == y):.2f} % on {len(x)} held-out samples\n")
        out.append("| engine | N | top-1 drop, points [95 % CI] | top-5 drop | top-1 agreement [CI] | mean cosine [CI] | cosine p1 [CI] | cosine p5 [CI] | worst cosine over 32 / 256 / N |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for engine, run in engines(onnx_path, calib, factor).items():
            out.append(row(engine, reference, run(x), y))
            print(out[-1], flush=True)


def digits():
    from trained_nets import digits_arrays, shifted_digits, train_resnet

    train_x, test_x, train_y, test_y = digits_arrays()
    x, y = shifted_digits(test_x, test_y, copies=8, seed=1)
    return train_resnet(train_x, train_y, 10, epochs=3), train_x[:256], x, y, "ResNet [1,1,1,1] on digits, 3 epochs"


def photos():
    from trained_nets import photo_crops, train_resnet

    train_x, train_y = photo_crops("train", 6000, seed=0)
    x, y = photo_crops("test", 4000, seed=1)
    classes = int(max(train_y.max(), y.max()) + 1)
    return (train_resnet(train_x, train_y, classes, epochs=4), train_x[:256], x, y,
            f"ResNet [1,1,1,1] on {classes}-photo crops (32x32), 6000 training crops, 4 epochs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damage", type=float, default=2.0, help="factor on the last convolution's weight scales in the damaged engine")
    parser.add_argument("--output", type=Path, help="results file [default: benchmarks/results/verdict_limits_<isa>.md]")
    args = parser.parse_args()
    from bench_cpu_backends import isa_name
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint

    out = [f"# Verdict limits: per-sample agreement of trained networks' reduced-precision engines\n",
           f"{cpu_fingerprint().get('model', '?')}, ISA {isa_name()}; `python benchmarks/verdict_limits.py --damage {args.damage:g}`. "
           "Drops are reference minus engine (positive = the engine is worse); intervals are 95 %.\n"]
    network("digits", digits, out, args.damage)
    network("photos", photos, out, args.damage)
    path = args.output or HERE / "results" / f"verdict_limits_{isa_name()}.md"
    path.write_text("\n".join(out) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
