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
