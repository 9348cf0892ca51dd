"""Helpers for tests/precision: plain ONNX export, the digits data, ORT runs and cosines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGITS_SIZE = 24
EXPORT_KW = dict(dynamo=False, input_names=["input"], output_names=["logits"], opset_version=17,
                 dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def export_onnx(module, example, path: Path) -> Path:
    """Plain FP32 ONNX from the TorchScript exporter (BatchNorm folded), dynamic batch, opset 17."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is the TorchScript exporter, on purpose
        torch.onnx.export(module.eval(), example, str(path), **EXPORT_KW)
    return path


def digits_arrays(seed: int = 0):
    """(train_x, train_y, test_x, test_y): digits as float32 (N, 3, 24, 24) in [-1, 1], 75/25 stratified split."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    images = torch.nn.functional.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1).numpy()
    return train_test_split(images, digits.target.astype(np.int64), test_size=0.25, random_state=seed, stratify=digits.target)


def run_onnx(model, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """Outputs of ``model`` (path or ModelProto) on ORT's CPU provider, 2 threads, in batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the cosine between rows of ``a`` and ``b``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
