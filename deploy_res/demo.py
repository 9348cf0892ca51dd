"""Zoo models with activations like a trained network's, from data that ships with a package.

No ImageNet weights can be downloaded here, and an untrained network's
activations look nothing like a trained one's (which is what INT8 calibration
and validation are about). So: build the zoo model, set each residual
branch's last BatchNorm gain to 0.25 (training shrinks these gains; an
untrained ResNet with gain 1 amplifies any perturbation about 3x per stage),
re-estimate its BatchNorm statistics on random crops of scikit-image's sample
photos, and save the result as an ordinary checkpoint that every later stage
names. The classifier stays untrained, so top-1 agreement on such a model is
a weak measure; cosine is the one to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from deploy_res.core.files import atomic_path, ensure_output_dir
from deploy_res.models import Preprocessing

BN_SAMPLES = 64
"""Crops used to re-estimate BatchNorm statistics (seed 1000, disjoint from calibration's seed 0)."""
BN_SEED = 1000
RESIDUAL_GAIN = 0.25
"""Gain of each residual branch's last BatchNorm (see the module docstring)."""


def bn_recalibrated_checkpoint(model: str, output_dir: str | Path, samples: int = BN_SAMPLES, seed: int = BN_SEED,
                               input_size: Optional[tuple[int, int, int]] = None, residual_gain: Optional[float] = RESIDUAL_GAIN) -> Path:
    """Write ``<output_dir>/<model>.bn-photos.pth``: the zoo model with BN statistics from real photos,
    cropped at ``input_size`` (default: the zoo's) -- the size the model will run at."""
    from deploy_res.data.photos import sample_inputs
    from deploy_res.loading import load_model
    from deploy_res.models.bn_recalibration import recalibrate_batchnorm, shrink_residual_gains

    folder = ensure_output_dir(output_dir)
    target = folder / f"{model}.bn-photos.pth"
    loaded = load_model(model)
    pre = loaded.preprocessing
    if input_size is not None:
        pre = Preprocessing(tuple(input_size), pre.mean, pre.std, pre.crop_pct, pre.interpolation)
    inputs = sample_inputs(samples, pre, seed=seed)
    if residual_gain is not None:
        shrink_residual_gains(loaded.module, residual_gain)
    recalibrate_batchnorm(loaded.module, inputs)
    with atomic_path(target) as tmp:
        torch.save(loaded.module.state_dict(), tmp)
    return target
