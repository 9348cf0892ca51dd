"""Does pre-optimising the ONNX pay off on ONNX Runtime's CPU provider? (Not a test.)

For each model and batch size, three sessions run side by side, interleaved
in settled blocks (:func:`deploy_res.core.timing.interleave`: a 50 ms pause,
then 0.2 s of back-to-back runs, round-robin), so drift hits all three alike
and no figure depends on the session that ran before it (ONNX Runtime's pool
threads spin after a run, FACTS.md):

  A. raw export          at ORT_ENABLE_ALL   (the baseline)
  B. optimised file      at ORT_ENABLE_ALL   (must not be slower than A: ratio <= 1.02)
  C. optimised file      at ORT_DISABLE_ALL  (what the pre-fusion buys without ORT's rewrites)

The raw export keeps BatchNorm (TorchScript exporter, ``training=PRESERVE``,
or the dynamo exporter with ``optimize=False``); the optimised file is
``exporters.pass_runner.optimize(raw, target="onnxruntime")``. Printed: latency
median and p90 per run, images/s, the median ratio to A, and session-creation
time (median of ``--session-repeats`` creations).

Usage (full measurement; ~10 minutes on 2 cores):

    python benchmarks/bench_optimize.py --repeats 50
    python benchmarks/bench_optimize.py --models resnet50 --batches 1 8 --repeats 30 --json out.json

Weights are random (latency does not depend on them). Compare ratios, not
absolute times, across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from deploy_res.core.numerics import cpu_session
from deploy_res.core.timing import interleave

DEFAULT_MODELS = ("resnet50", "resnet152", "resnext50_32x4d")
VARIANTS = (
    ("A raw @ ENABLE_ALL", "raw", "ORT_ENABLE_ALL"),
    ("B opt @ ENABLE_ALL", "opt", "ORT_ENABLE_ALL"),
    ("C opt @ DISABLE_ALL", "opt", "ORT_DISABLE_ALL"),
)


def export_raw(name: str, path: Path, size: int, exporter: str) -> None:
    """Export a zoo model with BatchNorm kept and a dynamic batch axis."""
    import torch

    from deploy_res.models import create_model

    model = create_model(name).eval()
    example = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                model, example, str(path), dynamo=False, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
            )
        else:
            program = torch.onnx.export(
                model, (example,), dynamo=True, optimize=False, input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=20, external_data=False,
            )
            program.save(str(path))


def make_session(path: Path, level: str, threads: int):
    start = time.perf_counter()
    session = cpu_session(path, level, threads=threads)
    return session, time.perf_counter() - start


def bench_model(name: str, args, workdir: Path) -> list[dict]:
    from deploy_res.core.onnx_io import save_onnx
    from deploy_res.exporters.pass_runner import optimize

    raw = workdir / f"{name}-{args.size}-{args.exporter}.onnx"
    opt = workdir / f"{name}-{args.size}-{args.exporter}.opt.onnx"
    if not raw.exists():
        t0 = time.perf_counter()
        export_raw(name, raw, args.size, args.exporter)
        print(f"[{name}] exported in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not opt.exists():
        t0 = time.perf_counter()
        model, report = optimize(raw, target="onnxruntime")
        save_onnx(model, opt)
        print(f"[{name}] optimised in {time.perf_counter() - t0:.1f} s: {report['ops_after']}", file=sys.stderr)
    files = {"raw": raw, "opt": opt}

    sessions, creation = {}, {}
    for label, which, level in VARIANTS:
        times = []
        for _ in range(args.session_repeats):
            session, seconds = make_session(files[which], level, args.threads)
            times.append(seconds)
        sessions[label], creation[label] = session, statistics.median(times)

    rows = []
    rng = np.random.default_rng(0)
    for batch in args.batches:
        feeds = {"input": rng.standard_normal((batch, 3, args.size, args.size)).astype(np.float32)}
        outputs = {label: session.run(None, feeds)[0] for label, session in sessions.items()}
        reference = outputs[VARIANTS[0][0]]
        calls = {label: (lambda s=session: s.run(None, feeds)) for label, session in sessions.items()}
        latencies = {label: [ms / 1e3 for ms in times]
                     for label, times in interleave(calls, iterations=args.repeats, warmup=args.warmup).items()}
        labels = list(sessions)
        base = statistics.median(latencies[labels[0]])
        for label in labels:
            values = sorted(latencies[label])
            median = statistics.median(values)
            diff = float(np.max(np.abs(outputs[label] - reference)) / max(1.0, float(np.max(np.abs(reference)))))
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "variant": label,
                    "median_ms": median * 1e3,
                    "p90_ms": values[min(len(values) - 1, int(0.9 * len(values)))] * 1e3,
                    "images_per_s": batch / median,
                    "ratio_to_A": median / base,
                    "session_ms": creation[label] * 1e3,
                    "max_rel_diff_vs_A": diff,
                }
            )
        print(f"[{name}] batch {batch} done", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="zoo model names (default: %(default)s)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="batch sizes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per variant and batch (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first (default: %(default)s)")
    parser.add_argument("--session-repeats", type=int, default=3, help="session creations timed per variant (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads, 0 = ORT's default (default: %(default)s)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="how the raw file is exported (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep exports here and reuse them (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.models:
            rows += bench_model(name, args, workdir)

    print(f"ONNX Runtime {ort.__version__}, CPU, {args.size}x{args.size}, FP32, {args.repeats} interleaved runs per variant, threads={args.threads or 'default'}")
    print("| model | batch | variant | median ms | p90 ms | img/s | ratio to A | session ms |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['batch']} | {row['variant']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
            f"{row['images_per_s']:.1f} | {row['ratio_to_A']:.3f} | {row['session_ms']:.0f} |"
        )
    worst = max((r["max_rel_diff_vs_A"] for r in rows), default=0.0)
    print(f"largest output difference vs A (relative to the largest logit): {worst:.2e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
