"""Is a CPU's AMX throughput steady here? Per-second GFLOP/s of one-thread matmuls, bf16 against fp32. (Not a test.)

On a CPU with AMX (``amx_bf16`` in /proc/cpuinfo) PyTorch's bf16 matmul runs on
oneDNN's AMX kernels, its fp32 matmul on AVX-512 FMA. Both are timed alone,
one thread, each in a fresh process, alternating (fp32, bf16, fp32, bf16, ...)
so that a slow minute hits both; every second gives one figure. Steal time
(/proc/stat) is printed too: 0 means the hypervisor did not take the vCPU away.

Why: OpenVINO's BF16 and INT8 engines (AMX kernels) ran at ~47 or ~105 img/s
from one minute to the next on a 2-vCPU cloud VM, while its FP32 engine and
ONNX Runtime (AVX-512 VNNI) held steady. If the bf16 matmul swings the same way
and fp32 does not, the swing is the AMX unit's, not OpenVINO's and not deployres'
timing (likely, not proven: a core's one AMX unit is shared with its other
hyperthread, which on a cloud VM may be another tenant's).

    python benchmarks/probe_amx.py [--rounds 3] [--seconds 10] [--size 1024] [--onnx out/resnet50.portable.opt.onnx]

``--onnx`` adds the model itself, batch 1 on one thread: OpenVINO with f32 and with bf16 inference
precision (and the kernels its convolutions run: ``brgconv_avx512_amx_*`` is AMX), and ONNX Runtime FP32.
Given a Q/DQ file (``resnet50.int8.onnxruntime.onnx``) the same rows are the INT8 engines: both runtimes run
its Q/DQ pairs as integer kernels (the bf16 hint changes nothing there).

Measured (benchmarks/results/probe_amx.md):

  Intel Xeon, 2 vCPUs (AVX-512 VNNI, AVX512_BF16, AMX), torch 2.13, 2026-11-30, 6 rounds x 10 s
    fp32  min 92   median 142  max 160 GFLOP/s   (max/min 1.7)   steal 0.1 %
    bf16  min 374  median 840  max 1063 GFLOP/s  (max/min 2.8)   steal 0.0 %
  The bf16 figure drops to ~370-480 for several seconds at a time and comes back; fp32 does not follow.
  With --onnx (ResNet-50, batch 1, one thread): OpenVINO BF16 71-108 and INT8 61-146 images/s (AMX kernels)
  against OpenVINO FP32 15-17 and ONNX Runtime INT8 47-52 (no AMX).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import json, sys, time
kind, size, seconds, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kernels = {}
if kind.startswith("matmul-"):  # one-thread matmul, GFLOP/s
    import torch
    torch.set_num_threads(1)
    dtype = {"matmul-bf16": torch.bfloat16, "matmul-fp32": torch.float32}[kind]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    step, unit = (lambda: a @ b), 2 * size ** 3 / 1e9
else:  # one-thread batch-1 runs of an ONNX model, images/s
    import numpy as np
    if kind.startswith("openvino-"):
        import openvino as ov
        compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1,
                                                          "INFERENCE_PRECISION_HINT": kind.split("-")[1]})
        for op in compiled.get_runtime_model().get_ordered_ops():  # which kernels its convolutions run
            info = op.get_rt_info()
            if "layerType" in info and "Conv" in str(info["layerType"].astype(str)):
                kernel = str(info["primitiveType"].astype(str))
                kernels[kernel] = kernels.get(kernel, 0) + 1
        request = compiled.create_infer_request()
        shape = [d if d > 0 else 1 for d in compiled.input(0).get_partial_shape().get_min_shape()]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        step = lambda: request.infer([x])
    else:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = 1, 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        tensor = session.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in tensor.shape]).astype(np.float32)
        step = lambda: session.run(None, {tensor.name: x})
    unit = 1.0
for _ in range(5):
    step()
def stat():
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return fields[7], sum(fields)
rates, steal = [], []
for _ in range(seconds):
    count, start, before = 0, time.perf_counter(), stat()
    while time.perf_counter() - start < 1.0:
        step()
        count += 1
    after = stat()
    rates.append(unit * count / (time.perf_counter() - start))
    steal.append(100.0 * (after[0] - before[0]) / max(1, after[1] - before[1]))
print(json.dumps({"rates": rates, "steal": steal, "kernels": kernels}))
"""


def cpu_line() -> str:
    model, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    isa = [name for name in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if name in flags]
    return f"{model}; {', '.join(isa)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--onnx", help="also time this float ONNX model (batch 1, one thread) on OpenVINO f32 and bf16 and on ONNX Runtime")
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    kinds = ["matmul-fp32", "matmul-bf16"] + (["openvino-f32", "openvino-bf16", "onnxruntime"] if args.onnx else [])
    figures: dict[str, list[float]] = {kind: [] for kind in kinds}
    steal: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        for kind in kinds:
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(args.size), str(args.seconds), args.onnx or ""],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            figures[kind] += result["rates"]
            steal[kind] += result["steal"]
            kernels = f"  [convolutions: {', '.join(f'{k} x{n}' for k, n in result['kernels'].items())}]" if result["kernels"] and round_ == 0 else ""
            print(f"round {round_ + 1} {kind}: " + " ".join(f"{r:.0f}" for r in result["rates"]) + kernels, flush=True)
            time.sleep(1.0)
    print(f"\nper second, one thread, {args.rounds} rounds x {args.seconds} s, alternating "
          f"(matmul: GFLOP/s of {args.size}x{args.size}; models: images/s at batch 1)")
    for kind, rates in figures.items():
        r = np.array(rates)
        print(f"  {kind:17s} min {r.min():.0f}  median {np.median(r):.0f}  max {r.max():.0f}  (max/min {r.max() / r.min():.1f})  "
              f"steal {np.mean(steal[kind]):.1f} %")


if __name__ == "__main__":
    main()
