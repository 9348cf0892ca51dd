"""Tiny PyTorch factories for CLI tests: a residual net that exports in well under a second.

Passed to ``deployres export`` as ``tiny_nets:tiny_resnet`` (tests/support is on
pytest's ``pythonpath``).
"""

from __future__ import annotations

import torch
from torch import nn


class _TinyResNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.head(x.mean(dim=(2, 3)))


def tiny_resnet() -> nn.Module:
    """Conv-BN-ReLU, one residual block, global average pool, a 10-way classifier (seeded)."""
    torch.manual_seed(0)
    return _TinyResNet()


class _DataDependent(_TinyResNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: torch.export cannot trace it
            x = x * 2
        return super().forward(x)


def data_dependent() -> nn.Module:
    """A net whose forward branches on the input's values: the dynamo exporter refuses it."""
    torch.manual_seed(0)
    return _DataDependent()
