"""A small factory with arguments, for ``package.module:factory(ARGS)`` tests (``factory_nets:small_net(...)``)."""

from __future__ import annotations

from torch import nn


def small_net(num_classes: int = 10, width: int = 8, *, pool: str = "avg") -> nn.Module:
    """Conv-BN-ReLU, global pooling (``avg`` or ``max``), a ``num_classes`` classifier; records its arguments."""
    net = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    net.arguments = {"num_classes": num_classes, "width": width, "pool": pool}
    return net
