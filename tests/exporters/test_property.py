"""Property: any small residual network, through either exporter and every optimize target, computes what PyTorch does.

Hypothesis draws networks from the cases real models bring (DESIGN.md,
"Graph passes"): grouped and depthwise convolutions, convolutions with and
without bias, random BatchNorm statistics and epsilon, squeeze-and-excitation
gates, scaled residuals (``x + scale * branch``), projection shortcuts, a
BatchNorm whose output has two readers and one whose input has another
reader. Each network is exported with the dynamo and the TorchScript
exporter, optimised for every target (``onnxruntime``, ``tensorrt``,
``portable``; each pass checked by the runner) and compared with PyTorch on
fresh inputs at another batch size.

The default run is bounded (a few derandomised examples, well under a
minute). For a longer search set ``DEPLOYRES_PROPERTY_EXAMPLES``::

    DEPLOYRES_PROPERTY_EXAMPLES=200 python -m pytest tests/exporters/test_property.py

(random examples, not derandomised; a failure prints the drawn network and
the seed to reproduce it with ``@reproduce_failure``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from torch import nn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deploy_res.exporters.checks import run_ort  # noqa: E402
from deploy_res.exporters.pass_runner import TARGETS, optimize
from deploy_res.exporters.torch_export import export_onnx  # noqa: E402

EXAMPLES = int(os.environ.get("DEPLOYRES_PROPERTY_EXAMPLES", "0") or 0)
settings.register_profile("deployres-default", max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deployres-long", max_examples=max(EXAMPLES, 1), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = "deployres-long" if EXAMPLES else "deployres-default"
NIGHTLY_EXAMPLES = 200
"""Networks the ``nightly``-marked run draws (``python -m pytest -m nightly``), fresh ones each night."""
settings.register_profile("deployres-nightly", max_examples=NIGHTLY_EXAMPLES, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SIZE = 12
"""Input height and width: small, so an example costs little; every block still has spatial extent."""
RTOL = 1e-4
"""|ONNX Runtime - PyTorch| <= RTOL * max(1, max|PyTorch|): float32 reordering only, far below a folding bug."""


@dataclass(frozen=True)
class Block:
    out_channels: int
    stride: int
    groups: str  # "1", "2" or "depthwise"
    bias: bool
    eps: float
    se: bool
    scale: float  # 1.0: a plain residual Add
    bn_two_readers: bool  # the branch's first BN output also feeds the block output
    conv_two_readers: bool  # the branch's first Conv output also read before its BN (the BN cannot fold into it)


@st.composite
def networks(draw):
    stem = draw(st.sampled_from([4, 8]))
    blocks, channels = [], stem
    for _ in range(draw(st.integers(1, 3))):
        project = draw(st.booleans())
        out = channels * 2 if project and draw(st.booleans()) else channels
        blocks.append(
            Block(
                out_channels=out,
                stride=2 if project and draw(st.booleans()) else 1,
                groups=draw(st.sampled_from(["1", "2", "depthwise"])),
                bias=draw(st.booleans()),
                eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
                se=draw(st.booleans()),
                scale=draw(st.sampled_from([1.0, 0.17, -0.5])),
                bn_two_readers=draw(st.booleans()),
                conv_two_readers=draw(st.booleans()),
            )
        )
        channels = out
    return stem, tuple(blocks), draw(st.integers(0, 2**16))


class SEGate(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(2, channels // 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        w = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(w))))


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, spec: Block) -> None:
        super().__init__()
        out = spec.out_channels
        groups = {"1": 1, "2": 2, "depthwise": in_channels}[spec.groups]
        if out % groups:
            groups = 1
        self.spec = spec
        self.conv1 = nn.Conv2d(in_channels, out, 3, spec.stride, 1, groups=groups, bias=spec.bias)
        self.bn1 = nn.BatchNorm2d(out, eps=spec.eps)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=spec.bias)
        self.bn2 = nn.BatchNorm2d(out, eps=spec.eps)
        self.se = SEGate(out) if spec.se else None
        self.project = None
        if spec.stride != 1 or in_channels != out:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out, 1, spec.stride, bias=False), nn.BatchNorm2d(out, eps=spec.eps))

    def forward(self, x):
        z = self.conv1(x)
        y = self.bn1(z)
        side = y if self.spec.bn_two_readers else 0.0
        if self.spec.conv_two_readers:
            side = side + 0.25 * z
        y = self.bn2(self.conv2(torch.relu(y)))
        if self.se is not None:
            y = self.se(y)
        shortcut = self.project(x) if self.project is not None else x
        y = shortcut + (y if self.spec.scale == 1.0 else self.spec.scale * y)
        return torch.relu(y + side) if not isinstance(side, float) else torch.relu(y)


class TinyResNet(nn.Module):
    def __init__(self, stem: int, blocks: tuple[Block, ...], classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        layers, channels = [], stem
        for spec in blocks:
            layers.append(ResidualBlock(channels, spec))
            channels = spec.out_channels
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


def build(stem: int, blocks: tuple[Block, ...], seed: int) -> nn.Module:
    """The network in eval mode, every BatchNorm with random statistics and affine parameters."""
    torch.manual_seed(seed)
    net = TinyResNet(stem, blocks)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=generator) * 2.0 + 0.05)
            bn.weight.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    return net.eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(settings.get_profile(PROFILE))
@given(network=networks())
def test_random_residual_networks_survive_every_exporter_and_target(tmp_path_factory, network):
    survives_every_exporter_and_target(tmp_path_factory, network)


@pytest.mark.nightly
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(settings.get_profile("deployres-nightly"))
@given(network=networks())
def test_many_random_residual_networks_survive_every_exporter_and_target(tmp_path_factory, network):
    """The nightly search: NIGHTLY_EXAMPLES random (not derandomised) networks (60 took 78 s on 2 cores)."""
    survives_every_exporter_and_target(tmp_path_factory, network)


def survives_every_exporter_and_target(tmp_path_factory, network) -> None:
    """Export ``network`` with both exporters, run every optimize target, and compare each with PyTorch."""
    stem, blocks, seed = network
    net = build(stem, blocks, seed)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected = net(x).numpy()
    tolerance = RTOL * max(1.0, float(np.abs(expected).max()))
    folder = tmp_path_factory.mktemp("property")
    for exporter in ("dynamo", "torchscript"):
        path = folder / f"{exporter}.onnx"
        raw = export_onnx(net, path, (3, SIZE, SIZE), exporter=exporter)
        bn_before = Counter(n.op_type for n in raw.graph.node)["BatchNormalization"]
        for target in TARGETS:
            optimized, report = optimize(raw, target=target)
            got = run_ort(optimized, {"input": x.numpy()})["logits"]
            error = float(np.abs(got - expected).max())
            assert error <= tolerance, f"{exporter}/{target}: max abs error {error:.3g} > {tolerance:.3g} for {network}"
            left = Counter(n.op_type for n in optimized.graph.node)["BatchNormalization"]
            # A BN stays only where its Conv output has another reader, and then not even always (it may become Mul+Add).
            assert left <= min(bn_before, sum(spec.conv_two_readers for spec in blocks)), (exporter, target, left, report["passes"])
            assert isinstance(optimized, onnx.ModelProto)
