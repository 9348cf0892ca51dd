"""ResNet-50 FP32 vs INT8 Q/DQ on ONNX Runtime's CPU provider, batch 1 and 8, interleaved. (Not a test.)

Three sessions side by side, all at ORT_ENABLE_ALL with ``--threads`` intra-op
threads (default 2), timed interleaved in blocks (:func:`deploy_res.core.timing.interleave`:
a 50 ms settle pause, then 0.2 s of back-to-back runs, round-robin) so drift hits
all alike and no figure depends on the session that ran before it:

  fp32          the plain TorchScript export (BatchNorm folded)
  int8-ort      ``emit_qdq(..., layout="onnxruntime")``: uint8 activations, int8 per-channel weights
  int8-trt      ``emit_qdq(..., layout="tensorrt")``: symmetric int8 (for information: the GPU layout)

Sessions keep ONNX Runtime's defaults, thread spinning included (what users
run); the settle pause is what keeps one session's spinning threads from
slowing the next (FACTS.md: without it INT8 after FP32 read 2.0x instead of 3.3x).

The network has random weights with BatchNorm statistics re-estimated on
scikit-image crops and is calibrated (default method) on 32 other crops;
latency does not depend on the weights. Printed per batch: median and p90
latency, images/s and the throughput ratio to FP32, plus how many Conv nodes
ONNX Runtime fused into integer kernels in each INT8 graph (its optimised
graph is dumped and counted), and which SIMD extensions the CPU has: ORT's
uint8 x int8 kernels are fastest with AVX-512 VNNI (or AMX); with AVX2 only
the INT8 gain is much smaller. Target on a 2-core AVX-512-VNNI CPU:
int8-ort >= 3.3x fp32 at batch 8.

    python benchmarks/bench_int8.py [--rounds 40] [--batches 1 8] [--threads 2] [--alone LABEL]

``--alone LABEL`` times only that engine (same files, same method) in this
process: the cross-check that a side-by-side ratio equals the engines timed
alone, each in its own process.

Measured (img/s and ratio to FP32, batch 1 / batch 8; benchmarks/results/bench_int8.md):

  Intel Xeon (AVX-512 VNNI, AMX), ORT 1.32, 2026-11-30, settled blocks   fp32 29.0 / 34.2   int8-ort 77.8 (2.69x) / 104.7 (3.06x)   int8-trt 0.51x / 0.50x
    the same engines each alone in its own process:                         int8-ort 3.13x / 2.94x
  AMD EPYC, AVX2 only (no VNNI), ORT 1.32, 2026-11-27, old round-robin      int8-ort 1.88x / 2.16x

All 53 convolutions, 16 residual Adds, the pool and the classifier run as integer kernels in
int8-ort; int8-trt keeps 53 float Convs fed by 162 DequantizeLinear nodes on ORT's CPU provider
(its layout is for TensorRT, where those Q/DQ pairs become INT8 kernels).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy_res.core.timing import SETTLE_S, interleave  # noqa: E402


def build(folder: Path) -> dict[str, Path]:
    """The three ONNX files in ``folder``: reused when all are there (``--workdir``), else made."""
    paths = {"fp32": folder / "resnet50.onnx", **{label: folder / f"resnet50.{label}.onnx" for label in ("int8-ort", "int8-trt")}}
    if all(p.is_file() for p in paths.values()):
        return paths
    import onnx
    import torch

    from deploy_res.data.photos import sample_inputs
    from deploy_res.models import create_model, get_spec
    from deploy_res.models.bn_recalibration import recalibrate_batchnorm
    from deploy_res.engines.precision.calibration import DEFAULT_METHOD, calibrate
    from deploy_res.engines.precision.qdq import emit_qdq

    pre = get_spec("resnet50").preprocessing
    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    recalibrate_batchnorm(model, sample_inputs(32, pre, seed=100))
    fp32 = folder / "resnet50.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *pre.input_size), str(fp32), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    start = time.perf_counter()
    ranges = calibrate(fp32, sample_inputs(32, pre, seed=1), method=DEFAULT_METHOD)
    print(f"calibration ({DEFAULT_METHOD}, 32 crops): {time.perf_counter() - start:.1f} s", flush=True)
    paths = {"fp32": fp32}
    for label, target in (("int8-ort", "onnxruntime"), ("int8-trt", "tensorrt")):
        paths[label] = folder / f"resnet50.{label}.onnx"
        onnx.save(emit_qdq(onnx.load(str(fp32)), ranges, target), str(paths[label]))
    return paths


def session(path: Path, threads: int, dump: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if dump is not None:
        options.optimized_model_filepath = str(dump)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fused_ops(path: Path, threads: int, folder: Path) -> str:
    import onnx

    dump = folder / (path.stem + ".ort-optimised.onnx")
    session(path, threads, dump)
    ops = Counter(node.op_type for node in onnx.load(str(dump)).graph.node)
    integer = {op: n for op, n in ops.items() if op.startswith("QLinear") or op in ("ConvInteger", "MatMulInteger", "QGemm")}
    return f"{sum(n for op, n in ops.items() if 'Conv' in op)} conv nodes, integer kernels {dict(integer) or 'none'}, float Conv left {ops.get('Conv', 0) + ops.get('FusedConv', 0)}, DequantizeLinear left {ops.get('DequantizeLinear', 0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed runs per session and batch (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per session and batch (default 3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alone", choices=("fp32", "int8-ort", "int8-trt"), help="time only this engine (cross-check)")
    parser.add_argument("--workdir", type=Path, help="keep the built files here and reuse them (default: a temporary folder)")
    args = parser.parse_args()
    import os
    import platform

    import onnxruntime
    import torch

    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), []) \
        if Path("/proc/cpuinfo").exists() else []
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({', '.join(simd) or 'no AVX flags seen'}); "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; sessions use {args.threads} threads", flush=True)
    torch.set_num_threads(os.cpu_count() or 1)  # building (BN re-estimation, export) may use every core
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = build(folder)
        if args.alone:
            paths = {args.alone: paths[args.alone]}
        for label in ("int8-ort", "int8-trt"):
            if label in paths:
                print(f"{label}: {fused_ops(paths[label], args.threads, folder)}", flush=True)
        sessions = {label: session(path, args.threads) for label, path in paths.items()}
        rng = np.random.default_rng(0)
        labels = list(sessions)
        for batch in args.batches:
            feed = {"input": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
            calls = {label: (lambda s=s: s.run(None, feed)) for label, s in sessions.items()}
            times = {label: [t / 1e3 for t in ms] for label, ms in interleave(calls, iterations=args.rounds, warmup=args.warmup).items()}
            base = batch / statistics.median(times["fp32"]) if "fp32" in times else None
            print(f"\nbatch {batch} ({args.rounds} timed runs each, interleaved in blocks with a {SETTLE_S * 1e3:.0f} ms settle pause, {args.threads} threads)")
            print(f"  {'engine':10s} {'median ms':>10s} {'p90 ms':>8s} {'img/s':>8s} {'vs fp32':>8s}")
            for label in labels:
                ordered = sorted(times[label])
                median = statistics.median(ordered)
                p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
                ratio = f"{batch / median / base:7.2f}x" if base else "    (alone)"
                print(f"  {label:10s} {1e3 * median:10.1f} {1e3 * p90:8.1f} {batch / median:8.1f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
