"""Fixtures for the tune tests: the digits ResNet trained here (BasicBlock [1,1,1,1], 24x24, ~5-15 s on 2 CPU threads)
as a factory module with its checkpoint, calibration digits and labelled held-out digits."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DIGITS_MODEL = ("--input-size", "3,24,24", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--exporter", "torchscript")


@dataclass
class Digits:
    folder: Path
    weights: Path
    calib: Path
    heldout: Path

    def model_args(self) -> tuple:
        return ("tune_digits_net:digits_resnet", "--weights", self.weights, *DIGITS_MODEL, "--data", self.heldout, "--calib-data", self.calib)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Digits:
    import torch
    from trained_nets import digits_arrays, train_resnet

    train_x, test_x, train_y, test_y = digits_arrays()
    model = train_resnet(train_x, train_y, classes=10, epochs=3)
    folder = tmp_path_factory.mktemp("tune_digits")
    torch.save(model.state_dict(), folder / "digits.pth")
    (folder / "tune_digits_net.py").write_text(textwrap.dedent("""
        from deploy_res.models.resnet import BasicBlock, ResNet

        def digits_resnet():
            return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    """))
    np.savez(folder / "calib.npz", inputs=train_x[:256])
    np.savez(folder / "heldout.npz", inputs=test_x, labels=test_y)
    return Digits(folder, folder / "digits.pth", folder / "calib.npz", folder / "heldout.npz")


@pytest.fixture
def on_path(digits, monkeypatch):
    monkeypatch.syspath_prepend(str(digits.folder))
    return digits
