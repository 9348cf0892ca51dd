"""Re-estimate BatchNorm statistics on real data.

A randomly initialised network has BatchNorm running statistics of mean 0 and
variance 1, which match nothing: its activations explode or vanish layer by
layer and no quantisation, FP16 or accuracy check on it means much. Running
real images through it in train mode with ``momentum=None`` (a cumulative
average, as in "AdaBN" / torch.optim.swa_utils.update_bn) gives every
BatchNorm the statistics of real data, so activations look like a trained
network's. Benchmarks, the precision tests and ``deployres run`` use this on
zoo models that have no checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: np.ndarray | torch.Tensor, batch_size: int = 16) -> nn.Module:
    """Reset and re-estimate every BatchNorm's running mean/var on ``inputs`` (N, C, H, W); return ``model``.

    Defaults: batches of 16; statistics are the cumulative average over all
    batches (``momentum=None``). Only BatchNorm buffers change: weights,
    biases and every module's train/eval mode are restored as they were.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    data = torch.as_tensor(np.asarray(inputs, dtype=np.float32)) if not isinstance(inputs, torch.Tensor) else inputs.float()
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        for start in range(0, data.shape[0], batch_size):
            model(data[start : start + batch_size])
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    return model


@torch.no_grad()
def shrink_residual_gains(model: nn.Module, gain: float) -> int:
    """Set the gain (weight) of each residual branch's last BatchNorm to ``gain``; return how many.

    Training shrinks these gains (zero-initialising them, torchvision's
    ``zero_init_residual``, is the usual shortcut to a trained network's
    behaviour); an untrained ResNet with gain 1 amplifies any perturbation
    about 3x per stage. Applies to residual blocks with ``bn3`` (bottleneck)
    or ``bn2`` (basic block); plain blocks and other models are left alone.
    """
    count = 0
    for module in model.modules():
        if not getattr(module, "residual", False):
            continue
        last = getattr(module, "bn3", None) or getattr(module, "bn2", None)
        if isinstance(last, nn.modules.batchnorm._BatchNorm):
            nn.init.constant_(last.weight, gain)
            count += 1
    return count
