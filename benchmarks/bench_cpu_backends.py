"""ONNX Runtime and OpenVINO on this CPU, side by side: FP32, BF16, INT8 and the outside anchors. (Not a test.)

ResNet-50 at 224x224 with BatchNorm statistics re-estimated on real photos (as
``deployres run`` does), exported with the TorchScript exporter, built with
deployres' own API, ``--threads`` threads everywhere (default 2):

  torch eager       the PyTorch original (``torch.inference_mode``)
  ort-fp32          deployres FP32 engine, ONNX Runtime (the baseline of every ratio)
  ort-int8          deployres INT8 engine, ONNX Runtime (Q/DQ ``onnxruntime`` layout: uint8 act., int8 per-channel weights)
  ov-fp32           deployres FP32 engine, OpenVINO (INFERENCE_PRECISION_HINT f32)
  ov-bf16           deployres BF16 engine, OpenVINO (only where the CPU has AVX512_BF16 or AMX)
  ov-int8           deployres INT8 engine, OpenVINO, from the same Q/DQ ONNX as ort-int8
  ov-bf16-streams   ov-bf16 in one stream per thread (``streams=--threads``: each batch cut into one slice per
  ov-int8-streams   stream, run at once; what ``deployres triton --streams`` and tune's streams axis serve)
  ov-int8-trt       OpenVINO on the symmetric ``tensorrt`` Q/DQ layout (same ranges): which layout OpenVINO runs fastest
  qs-ort            outside anchor: ONNX Runtime ``quantize_static`` with its defaults on the same calibration crops
  qs-ov             outside anchor: OpenVINO running that file

Timing is ``profile``'s (:func:`deploy_res.core.timing.interleave`): engines
alternate in blocks, each after a 50 ms settle pause, so no figure depends
on the engine before it (ONNX Runtime's spinning pool threads, FACTS.md).
``--cross-check`` then times every engine alone in its own process and prints
both figures side by side. Cosine = mean logit cosine against ort-fp32 on 64
held-out photo crops (other crops than the calibration ones).

    python benchmarks/bench_cpu_backends.py [--threads 2] [--iterations 12] [--cross-check] [--workdir DIR]

Results: ``benchmarks/results/bench_cpu_backends_<isa>.md``; the README's
"OpenVINO on the CPU" table quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "resnet50"
LABELS = ("torch", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-bf16-streams", "ov-int8", "ov-int8-streams", "ov-int8-trt",
          "qs-ort", "qs-ov")
DESCRIPTIONS = {
    "torch": "PyTorch eager",
    "ort-fp32": "ONNX Runtime FP32 (deployres)",
    "ort-int8": "ONNX Runtime INT8 (deployres, onnxruntime Q/DQ)",
    "ov-fp32": "OpenVINO FP32 (deployres, f32 forced)",
    "ov-bf16": "OpenVINO BF16 (deployres)",
    "ov-int8": "OpenVINO INT8 (deployres, same Q/DQ as ort-int8)",
    "ov-bf16-streams": "OpenVINO BF16, a stream per thread",
    "ov-int8-streams": "OpenVINO INT8, a stream per thread",
    "ov-int8-trt": "OpenVINO on the tensorrt Q/DQ layout",
    "qs-ort": "anchor: ORT quantize_static defaults",
    "qs-ov": "anchor: OpenVINO on that file",
}


def isa_name() -> str:
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint

    isa = set(cpu_fingerprint()["isa"])
    parts = ["avx512" if "avx512f" in isa else "avx2" if "avx2" in isa else "sse"]
    parts += [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in isa]
    return "+".join(parts)


def build(folder: Path, calib_samples: int, threads: int) -> dict[str, Path]:
    """Every engine of the table (reused when already in ``folder``)."""
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.data.photos import sample_inputs
    from deploy_res.demo import bn_recalibrated_checkpoint
    from deploy_res.engines.openvino import missing_bf16_isa
    from deploy_res.export import ExportSettings, export
    from deploy_res.models import Preprocessing

    paths_file = folder / "paths.json"
    if paths_file.is_file():
        return {k: Path(v) for k, v in json.loads(paths_file.read_text()).items()}
    start = time.perf_counter()
    weights = bn_recalibrated_checkpoint(MODEL, folder / "weights")
    exported = export(MODEL, folder, ExportSettings(weights=weights, exporter="torchscript", optimize=False))
    pre = Preprocessing.from_dict(exported.manifest["preprocessing"])
    calib = folder / "calib.npy"
    np.save(calib, sample_inputs(calib_samples, pre, seed=0))
    np.save(folder / "eval.npy", sample_inputs(64, pre, seed=7))
    print(f"exported {MODEL} with photo BN statistics ({time.perf_counter() - start:.0f} s)", flush=True)
    paths: dict[str, Path] = {"onnx": exported.onnx_path}
    for label, backend, precision in (("ort-fp32", "onnxruntime", "fp32"), ("ort-int8", "onnxruntime", "int8"),
                                      ("ov-fp32", "openvino", "fp32"), ("ov-bf16", "openvino", "bf16"), ("ov-int8", "openvino", "int8")):
        if precision == "bf16" and missing_bf16_isa():
            print(missing_bf16_isa(), flush=True)
            continue
        start = time.perf_counter()
        settings = BuildSettings(backend=backend, precision=precision, calib_data=calib if precision == "int8" else None,
                                 calib_samples=calib_samples, threads=threads if backend == "openvino" else None)
        result = build_engine(exported.onnx_path, folder, settings, quiet=True)
        paths[label] = result.engine
        print(f"built {label}: {result.engine.name} ({time.perf_counter() - start:.0f} s)", flush=True)
    paths.update(anchors(folder, paths, calib, threads))
    paths_file.write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
    return paths


def anchors(folder: Path, paths: dict[str, Path], calib: Path, threads: int) -> dict[str, Path]:
    """The tensorrt-layout Q/DQ (same ranges) and ``quantize_static`` with its defaults on the same crops."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from deploy_res.core.manifest import read_manifest
    from deploy_res.engines.precision.calibration import calibrate
    from deploy_res.engines.precision.qdq import emit_qdq

    def parent(path):
        manifest = read_manifest(path)
        return Path((manifest.get("parent") or manifest.get("source") or manifest["inputs"]["onnx"])["path"])

    qdq = parent(paths["ort-int8"])
    float_graph = parent(qdq)
    method = read_manifest(qdq)["calibration"]["method"]
    ranges = calibrate(float_graph, np.load(calib), method=method, cache_path=folder / f"{MODEL}.calib-{method}.json", quiet=True)
    trt = folder / f"{MODEL}.int8.tensorrt-layout.onnx"
    onnx.save(emit_qdq(onnx.load(str(float_graph)), ranges, "tensorrt"), str(trt))
    out = {"ov-int8-trt": trt}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[None]} for x in np.load(calib)])

        def get_next(self):
            return next(self.items, None)

    static = folder / f"{MODEL}.quantize_static.onnx"
    start = time.perf_counter()
    quantize_static(str(float_graph), str(static), Reader())  # QDQ, QInt8/QInt8, per-tensor, MinMax: the defaults
    print(f"quantize_static defaults: {time.perf_counter() - start:.0f} s", flush=True)
    out["qs-ort"] = out["qs-ov"] = static
    return out


def load(label: str, path: Path, threads: int, manifest_source: Path):
    """A runner for ``label``: deployres engines through load_engine; anchors through the backend asked for."""
    from deploy_res.core.manifest import read_manifest
    from deploy_res.engines import load_engine

    if label == "torch":
        from deploy_res.profiling.torch_ref import load_torch_runner

        return load_torch_runner(read_manifest(manifest_source), "eager", threads)
    if label in ("ov-int8-trt", "qs-ov"):
        from deploy_res.engines.openvino import OpenVINOBackend

        return OpenVINOBackend().load(path, threads=threads)  # a plain ONNX: compiled at FP32 (+ its Q/DQ)
    if label == "qs-ort":
        from deploy_res.engines.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend().load(path, threads=threads)
    if label.endswith("-streams"):
        return load_engine(path, threads=threads, streams=threads)
    return load_engine(path, threads=threads)


def measure(labels, paths, threads: int, iterations: int, batches) -> dict[str, dict[int, float]]:
    from deploy_res.core.timing import interleave

    runners = {label: load(label, paths.get(label, paths["onnx"]), threads, paths["onnx"]) for label in labels}
    rng = np.random.default_rng(0)
    speeds: dict[str, dict[int, float]] = {label: {} for label in labels}
    for batch in batches:
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        runs = {label: (lambda r=r: r.run({r.inputs[0].name: x})) for label, r in runners.items()}
        times = interleave(runs, iterations=iterations, warmup=2)
        for label, ms in times.items():
            speeds[label][batch] = batch * 1000 / statistics.median(ms)
    for runner in runners.values():
        runner.close()
    return speeds


def cosines(labels, paths, threads: int, folder: Path) -> dict[str, float]:
    x = np.load(folder / "eval.npy")

    def outputs(label):
        runner = load(label, paths.get(label, paths["onnx"]), threads, paths["onnx"])
        name = runner.inputs[0].name
        out = np.concatenate([next(iter(runner.run({name: x[i:i + 8]}).values())) for i in range(0, len(x), 8)])
        runner.close()
        return out.astype(np.float64)

    reference = outputs("ort-fp32")
    result = {}
    for label in labels:
        out = reference if label == "ort-fp32" else outputs(label)
        result[label] = float(np.mean(np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=12, help="timed runs per engine and batch size (median)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/deployres-bench-cpu"), help="built files, reused across runs")
    parser.add_argument("--only", nargs="+", choices=LABELS, help="time only these engines")
    parser.add_argument("--alone", choices=LABELS, help="time this engine alone (the cross-check runs this in its own process)")
    parser.add_argument("--cross-check", action="store_true", help="afterwards, time every engine alone in its own process")
    args = parser.parse_args()

    import openvino
    import onnxruntime
    import torch

    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = build(args.workdir, args.calib_samples, args.threads)
    paths.update({f"{label}-streams": paths[label] for label in ("ov-bf16", "ov-int8") if label in paths and args.threads > 1})
    labels = [l for l in LABELS if (l in paths or l == "torch") and (not args.only or l in args.only)]
    if args.alone:
        speeds = measure([args.alone], paths, args.threads, args.iterations, args.batches)
        print(json.dumps({str(b): v for b, v in speeds[args.alone].items()}))
        return
    cpu = cpu_fingerprint()
    print(f"\n{cpu['model']}, {os.cpu_count()} CPUs, ISA {isa_name()}; onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.get_version().split('-')[0]}, torch {torch.__version__}; {args.threads} threads; {time.strftime('%Y-%m-%d')}")
    speeds = measure(labels, paths, args.threads, args.iterations, args.batches)
    cos = cosines([l for l in labels if l != "torch"], paths, args.threads, args.workdir)
    alone = {}
    if args.cross_check:
        for label in labels:
            done = subprocess.run([sys.executable, __file__, "--alone", label, "--threads", str(args.threads), "--iterations", str(args.iterations),
                                   "--workdir", str(args.workdir), "--batches", *map(str, args.batches)], capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            alone[label] = {int(k): v for k, v in json.loads(lines[-1]).items()} if done.returncode == 0 and lines else {}
    lo, hi = min(args.batches), max(args.batches)
    base = speeds["ort-fp32"]
    print(f"\nResNet-50 224x224, median of {args.iterations} runs per engine and batch, interleaved in settled blocks"
          + (" | alone = each engine timed in its own process" if alone else ""))
    head = f"| engine | b{lo} img/s | b{lo} x ORT FP32 | b{hi} img/s | b{hi} x ORT FP32 | cosine vs ORT FP32 |"
    if alone:
        head += f" alone b{lo} / b{hi} img/s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label in labels:
        row = (f"| {DESCRIPTIONS[label]} | {speeds[label][lo]:.1f} | {speeds[label][lo] / base[lo]:.2f} | {speeds[label][hi]:.1f} | "
               f"{speeds[label][hi] / base[hi]:.2f} | {cos.get(label, float('nan')):.4f} |")
        if alone:
            a = alone.get(label, {})
            row += f" {a.get(lo, float('nan')):.1f} / {a.get(hi, float('nan')):.1f} |"
        print(row)
    # what --backend auto picks at build on this CPU: the faster at the larger batch, per precision
    for precision in ("fp32", "int8"):
        ort, ov = f"ort-{precision}", f"ov-{precision}"
        if ort in speeds and ov in speeds:
            pick = ov if speeds[ov][hi] > speeds[ort][hi] else ort
            print(f"auto {precision}: {pick} (b{hi} {speeds[ov][hi] / speeds[ort][hi]:.2f}x OpenVINO/ORT; b{lo} {speeds[ov][lo] / speeds[ort][lo]:.2f}x)")
    for label in ("ov-bf16", "ov-int8"):
        if f"{label}-streams" in speeds:
            print(f"{label} in {args.threads} streams / in one: b{hi} {speeds[label + '-streams'][hi] / speeds[label][hi]:.2f}x, "
                  f"b{lo} {speeds[label + '-streams'][lo] / speeds[label][lo]:.2f}x")
    if "ov-int8" in speeds and "ov-int8-trt" in speeds:
        print(f"OpenVINO Q/DQ layout: onnxruntime {speeds['ov-int8'][hi]:.1f} vs tensorrt {speeds['ov-int8-trt'][hi]:.1f} img/s at b{hi} "
              f"(cosine {cos['ov-int8']:.4f} vs {cos['ov-int8-trt']:.4f})")


if __name__ == "__main__":
    main()
