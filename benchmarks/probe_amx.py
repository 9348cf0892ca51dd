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

    python benchmarks/probe_amx.py [--rounds 3] [--seconds 10] [--size 1024]

Measured (benchmarks/results/probe_amx.md):

  Intel Xeon, 2 vCPUs (AVX-512 VNNI, AVX512_BF16, AMX), torch 2.13, 2026-11-30, 6 rounds x 10 s
    fp32  min 92   median 142  max 160 GFLOP/s   (max/min 1.7)   steal 0.1 %
    bf16  min 374  median 840  max 1063 GFLOP/s  (max/min 2.8)   steal 0.0 %
  An earlier 3-round run on the same machine, in a steady minute: fp32 1.3x, bf16 1.5x. The bf16
  figure drops to ~370-480 for several seconds at a time and comes back; fp32 does not follow.
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
import torch
torch.set_num_threads(1)
dtype, size, seconds = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[1]], int(sys.argv[2]), int(sys.argv[3])
a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
for _ in range(5):
    a @ b
def stat():
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return fields[7], sum(fields)
rates, steal = [], []
for _ in range(seconds):
    count, start, before = 0, time.perf_counter(), stat()
    while time.perf_counter() - start < 1.0:
        a @ b
        count += 1
    after = stat()
    rates.append(2 * size ** 3 * count / (time.perf_counter() - start) / 1e9)
    steal.append(100.0 * (after[0] - before[0]) / max(1, after[1] - before[1]))
print(json.dumps({"rates": rates, "steal": steal}))
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
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    figures: dict[str, list[float]] = {"fp32": [], "bf16": []}
    steal: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_ in range(args.rounds):
        for dtype in figures:
            out = subprocess.run([sys.executable, "-c", CHILD, dtype, str(args.size), str(args.seconds)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            figures[dtype] += result["rates"]
            steal[dtype] += result["steal"]
            print(f"round {round_ + 1} {dtype}: " + " ".join(f"{r:.0f}" for r in result["rates"]), flush=True)
            time.sleep(1.0)
    print(f"\nGFLOP/s per second of one-thread {args.size}x{args.size} matmuls ({args.rounds} rounds x {args.seconds} s, alternating)")
    for dtype, rates in figures.items():
        r = np.array(rates)
        print(f"  {dtype}  min {r.min():.0f}  median {np.median(r):.0f}  max {r.max():.0f}  (max/min {r.max() / r.min():.1f})  "
              f"steal {np.mean(steal[dtype]):.1f} %")


if __name__ == "__main__":
    main()
