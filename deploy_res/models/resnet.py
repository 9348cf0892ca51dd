"""Plain nets, ResNet, ResNeXt, Wide ResNet, SE-ResNet and SE-ResNeXt.

Designs from He et al., "Deep Residual Learning for Image Recognition" (2016;
plain and residual nets, basic and bottleneck blocks, projection shortcuts),
Xie et al., "Aggregated Residual Transformations" (2017; grouped 3x3 conv),
Zagoruyko & Komodakis, "Wide Residual Networks" (2016) and Hu et al.,
"Squeeze-and-Excitation Networks" (2018).

The code follows torchvision's ``models/resnet.py`` (helpers ``conv3x3`` and
``conv1x1``, ``bias=False`` before every BN, blocks with an ``expansion``) and
timm's ``models/resnet.py`` (an optional attention slot applied before the
residual add). State-dict keys and shapes equal torchvision's for the
resnet/resnext/wide_resnet models and timm's for the SE models, so their
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from typing import Callable, Optional, Type, Union

import torch
from torch import Tensor, nn

from deploy_res.models.registry import register_model

AttnLayer = Optional[Callable[[int], nn.Module]]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.0) -> int:
    """Round ``value`` to a multiple of ``divisor`` (timm's rule for SE reduction widths)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


class SEModule(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate.

    ``rd_ratio`` defaults to 1/16 with widths rounded to multiples of 8, as in timm.
    """

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, residual add, ReLU (ResNet-18/34)."""

    expansion = 1
    residual = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        attn_layer: AttnLayer = None,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = attn_layer(planes) if attn_layer else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class PlainBlock(BasicBlock):
    """A basic block without its skip connection: the paper's plain-network baseline."""

    residual = False


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped for ResNeXt) -> 1x1 expand by 4, residual add, ReLU."""

    expansion = 4
    residual = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        attn_layer: AttnLayer = None,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = attn_layer(planes * self.expansion) if attn_layer else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, global average pool, FC.

    The first block of stages 2-4 halves the resolution with a stride-2 conv; a
    projection shortcut (1x1 conv + BN) appears wherever shape changes.
    Defaults: 1000 classes, groups=1, width_per_group=64, no attention.
    """

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
        attn_layer: AttnLayer = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.attn_layer = attn_layer
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if block.residual and (stride != 1 or self.inplanes != planes * block.expansion):
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        kwargs = dict(groups=self.groups, base_width=self.base_width, attn_layer=self.attn_layer)
        layers = [block(self.inplanes, planes, stride, downsample, **kwargs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


_TIMM_CFG = dict(interpolation="bicubic")


@register_model("plain", "He et al. 2016 (no torchvision equivalent)")
def plain18(**kwargs) -> ResNet:
    """ResNet-18's stages with no skip connections."""
    return ResNet(PlainBlock, [2, 2, 2, 2], **kwargs)


@register_model("plain", "He et al. 2016 (no torchvision equivalent)")
def plain34(**kwargs) -> ResNet:
    """ResNet-34's stages with no skip connections."""
    return ResNet(PlainBlock, [3, 4, 6, 3], **kwargs)


@register_model("resnet", "torchvision")
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("resnet", "torchvision")
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model("resnet", "torchvision")
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model("resnet", "torchvision")
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model("resnet", "torchvision")
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model("resnext", "torchvision")
def resnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


@register_model("resnext", "torchvision")
def resnext101_32x8d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8, **kwargs)


@register_model("wide_resnet", "torchvision")
def wide_resnet50_2(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kwargs)


@register_model("senet", "timm", **_TIMM_CFG)
def seresnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], attn_layer=SEModule, **kwargs)


@register_model("senet", "timm", **_TIMM_CFG)
def seresnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, attn_layer=SEModule, **kwargs)
