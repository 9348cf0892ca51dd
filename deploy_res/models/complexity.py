"""Parameter and multiply-accumulate counts, computed on the meta device (no memory, no time).

MACs count the multiply-accumulates of Conv and Linear layers, the convention
torchvision's "GFLOPS" column uses; FLOPs = 2 x MACs. ResNet-50 at 224x224:
4.09 GMAC = 8.18 GFLOP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    parameters: int
    macs: int

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def measure_complexity(model: nn.Module, input_shape: tuple[int, int, int]) -> Complexity:
    """Parameters and MACs of ``model`` for one input of ``input_shape`` (C, H, W)."""
    total = [0]
    hooks = [m.register_forward_hook(lambda mod, _inp, out: total.__setitem__(0, total[0] + _layer_macs(mod, out)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return Complexity(sum(p.numel() for p in model.parameters()), total[0])


def zoo_complexity(name: str) -> Complexity:
    """Complexity of a zoo model at its registered input size, built on the meta device."""
    from deploy_res.models import get_spec

    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.create().eval()
    return measure_complexity(model, spec.preprocessing.input_size)
