"""Inception-ResNet-v2.

Design from Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning" (AAAI 2017): a stem down to 35x35, ten
Inception-ResNet-A blocks, reduction A, twenty Inception-ResNet-B blocks,
reduction B, ten Inception-ResNet-C blocks (the last without its ReLU), a 1x1
conv to 1536 channels, global average pool and a linear classifier. Each
Inception-ResNet block adds its branch output scaled by a constant (0.17, 0.10,
0.20; the final block 1.0) to its input: ``out = branch * scale + x``, which the
exported graph keeps as a Mul by a constant followed by an Add.

The code follows timm's ``models/inception_resnet_v2.py`` (itself a port of the
TensorFlow-slim model): the same module names (``conv2d_1a`` ... ``mixed_5b``,
``repeat``, ``mixed_6a``, ``repeat_1``, ``mixed_7a``, ``repeat_2``, ``block8``,
``conv2d_7b``, ``classif``), ``bias=False`` convs with BN ``eps=0.001`` and
biased 1x1 "up" convs in the residual blocks, so that timm's state dict loads
with ``strict=True`` and gives the same outputs. Input 299x299; the 8x8 final
feature map is averaged.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deploy_res.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model

Size = Union[int, tuple[int, int]]


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN (eps 0.001, as in TF-slim) -> ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: Size, stride: int = 1, padding: Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Mixed_5b(nn.Module):
    """Last stem stage (35x35, 192 -> 320 channels): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, 1)
        self.branch1 = nn.Sequential(BasicConv2d(192, 48, 1), BasicConv2d(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(192, 64, 1),
            BasicConv2d(64, 96, 3, padding=1),
            BasicConv2d(96, 96, 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            BasicConv2d(192, 64, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block35(nn.Module):
    """Inception-ResNet-A (35x35, 320 channels): three branches, 1x1 up-conv, scaled residual, ReLU."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(320, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(320, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(320, 32, 1),
            BasicConv2d(32, 48, 3, padding=1),
            BasicConv2d(48, 64, 3, padding=1),
        )
        self.conv2d = nn.Conv2d(128, 320, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
        out = out * self.scale + x
        return self.relu(out)


class Mixed_6a(nn.Module):
    """Reduction-A (35x35 -> 17x17, 320 -> 1088 channels): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(320, 256, 1),
            BasicConv2d(256, 256, 3, padding=1),
            BasicConv2d(256, 384, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Block17(nn.Module):
    """Inception-ResNet-B (17x17, 1088 channels): 1x1 | 1x1-1x7-7x1, 1x1 up-conv, scaled residual, ReLU."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1088, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1088, 128, 1),
            BasicConv2d(128, 160, (1, 7), padding=(0, 3)),
            BasicConv2d(160, 192, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1088, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        out = out * self.scale + x
        return self.relu(out)


class Mixed_7a(nn.Module):
    """Reduction-B (17x17 -> 8x8, 1088 -> 2080 channels): three conv branches and a max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(1088, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(1088, 256, 1),
            BasicConv2d(256, 288, 3, padding=1),
            BasicConv2d(288, 320, 3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block8(nn.Module):
    """Inception-ResNet-C (8x8, 2080 channels): 1x1 | 1x1-1x3-3x1, 1x1 up-conv, scaled residual, ReLU.

    ``no_relu=True`` drops the final ReLU (the last block before ``conv2d_7b``).
    """

    def __init__(self, scale: float = 1.0, no_relu: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(2080, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(2080, 192, 1),
            BasicConv2d(192, 224, (1, 3), padding=(0, 1)),
            BasicConv2d(224, 256, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(448, 2080, kernel_size=1)
        self.relu = None if no_relu else nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        out = out * self.scale + x
        if self.relu is not None:
            out = self.relu(out)
        return out


class InceptionResnetV2(nn.Module):
    """Stem, 10 x A (scale 0.17), reduction A, 20 x B (0.10), reduction B, 9 x C (0.20) + 1 x C (1.0, no ReLU),
    1x1 conv to 1536, global average pool, linear classifier ``classif``.
    """

    num_features = 1536

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        # Stem: 299 -> 149 -> 147 -> 147 -> 73 -> 73 -> 71 -> 35.
        self.conv2d_1a = BasicConv2d(in_chans, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed_5b()
        self.repeat = nn.Sequential(*[Block35(scale=0.17) for _ in range(10)])
        self.mixed_6a = Mixed_6a()
        self.repeat_1 = nn.Sequential(*[Block17(scale=0.10) for _ in range(20)])
        self.mixed_7a = Mixed_7a()
        self.repeat_2 = nn.Sequential(*[Block8(scale=0.20) for _ in range(9)])
        self.block8 = Block8(no_relu=True)
        self.conv2d_7b = BasicConv2d(2080, self.num_features, 1)
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classif = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x)))
        x = self.repeat(self.mixed_5b(self.maxpool_5a(x)))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.block8(self.repeat_2(self.mixed_7a(x)))
        return self.conv2d_7b(x)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.global_pool(self.forward_features(x)), 1)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classif(x)


@register_model(
    "inception_resnet",
    "timm",
    input_size=(3, 299, 299),
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
    crop_pct=0.8975,
    interpolation="bicubic",
)
def inception_resnet_v2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> InceptionResnetV2:
    """Inception-ResNet-v2 at 299x299 (timm ``inception_resnet_v2``; 55.8M parameters)."""
    return InceptionResnetV2(num_classes=num_classes, in_chans=in_chans, **kwargs)
