"""Fixtures for the precision tests: a small ResNet trained on real digits, exported to plain ONNX.

The network is ``ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)`` trained for
three epochs (one-cycle AdamW, fixed seed, 2 CPU threads; ~5-15 s) on scikit-learn's 8x8 handwritten
digits, upsampled to 24x24 and replicated to 3 channels; 25% of the digits
(stratified, seeded) are held out. The ONNX comes from the TorchScript
exporter, which folds BatchNorm into the convolutions, with a dynamic batch.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from precision_helpers import export_onnx
from trained_nets import digits_arrays, train_resnet

EPOCHS = 3


@dataclass
class DigitsModel:
    onnx_path: Path
    train_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    torch_accuracy: float
    weights_path: Path


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> DigitsModel:
    """A BasicBlock [1,1,1,1] ResNet trained on digits (about 98% held-out top-1) as ONNX."""
    import torch

    train_x, test_x, train_y, test_y = digits_arrays()
    model = train_resnet(train_x, train_y, classes=10, epochs=EPOCHS)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    folder = tmp_path_factory.mktemp("digits")
    path = export_onnx(model, torch.from_numpy(test_x[:1]), folder / "digits_resnet.onnx")
    weights = folder / "digits_resnet.pth"
    torch.save(model.state_dict(), weights)
    return DigitsModel(path, train_x, test_x, test_y, accuracy, weights)


@pytest.fixture(scope="module")
def digits_folder(digits_model, tmp_path_factory) -> Path:
    """A folder per test module with the network's factory (``digits_net:digits_resnet`` once the folder is on
    ``sys.path``), ``calib.npz`` (256 training digits) and ``heldout.npz`` (the held-out digits with their labels)."""
    folder = tmp_path_factory.mktemp("digits_pipeline")
    (folder / "digits_net.py").write_text(textwrap.dedent("""
        from deploy_res.models.resnet import BasicBlock, ResNet

        def digits_resnet():
            return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    """))
    np.savez(folder / "calib.npz", inputs=digits_model.train_x[:256])
    np.savez(folder / "heldout.npz", inputs=digits_model.test_x, labels=digits_model.test_y)
    return folder
