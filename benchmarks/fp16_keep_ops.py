"""Does keeping the global average pool / ReduceMean and the SE sigmoid in FP32 help FP16 accuracy?

For each model (default: seresnet50 and inception_resnet_v2, random weights
with BatchNorm statistics re-estimated on scikit-image crops), export plain
ONNX (TorchScript exporter, BN folded), convert to FP16 with different
op types kept in FP32, and compare the logits with the FP32 ONNX on real
crops not used for the BN re-estimation: max |diff|, mean cosine, top-1
agreement. ONNX Runtime's CPU provider runs the FP16 graphs: tensors are
stored (rounded) in FP16 between ops; ops without an FP16 CPU kernel compute
in FP32 internally, so this measures storage precision, not TensorRT's FP16
accumulation.

    python benchmarks/fp16_keep_ops.py [--models seresnet50 inception_resnet_v2] [--samples 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy_res.data.photos import sample_inputs  # noqa: E402
from deploy_res.models import create_model, get_spec  # noqa: E402
from deploy_res.models.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from deploy_res.engines.precision.fp16 import convert_fp16  # noqa: E402

VARIANTS = {
    "all fp16": (),
    "keep pools": ("GlobalAveragePool", "ReduceMean"),
    "keep sigmoid": ("Sigmoid",),
    "keep pools+sigmoid": ("GlobalAveragePool", "ReduceMean", "Sigmoid"),
}


def run(model, x: np.ndarray, threads: int = 2) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i : i + 8]})[0] for i in range(0, len(x), 8)]).astype(np.float64)


def measure(name: str, samples: int, folder: Path) -> None:
    torch.manual_seed(0)
    pre = get_spec(name).preprocessing
    model = create_model(name).eval()
    recalibrate_batchnorm(model, sample_inputs(samples, pre, seed=100))
    path = folder / f"{name}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *pre.input_size), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    x = sample_inputs(samples, pre, seed=2)
    ref = run(path, x)
    print(f"{name}: {samples} crops at {pre.input_size[1]}, |logits| max {np.abs(ref).max():.3f}", flush=True)
    for label, keep in VARIANTS.items():
        start = time.perf_counter()
        out = run(convert_fp16(str(path), keep_op_types=keep), x)
        cosine = np.mean(np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)))
        agree = np.mean(out.argmax(1) == ref.argmax(1))
        print(f"  {label:20s} max|diff| {np.abs(out - ref).max():.5f}  mean |diff| {np.abs(out - ref).mean():.6f}  "
              f"cosine {cosine:.6f}  top-1 agreement {agree:.3f}  ({time.perf_counter() - start:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["seresnet50", "inception_resnet_v2"])
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            measure(name, args.samples, Path(tmp))


if __name__ == "__main__":
    main()
