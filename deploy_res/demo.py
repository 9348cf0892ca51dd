"""Zoo models with activations like a trained network's, from data that ships with a package.

No ImageNet weights can be downloaded here, and an untrained network's
activations look nothing like a trained one's (which is what INT8 calibration
and validation are about). So: build the zoo model, re-estimate its
BatchNorm statistics on random crops of scikit-image's sample photos, and
save the result as an ordinary checkpoint that every later stage names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from deploy_res.artifacts import atomic_path, ensure_output_dir
from deploy_res.models import Preprocessing

BN_SAMPLES = 64
"""Crops used to re-estimate BatchNorm statistics (seed 1000, disjoint from calibration's seed 0)."""
BN_SEED = 1000


def bn_recalibrated_checkpoint(model: str, output_dir: str | Path, samples: int = BN_SAMPLES, seed: int = BN_SEED,
                               input_size: Optional[tuple[int, int, int]] = None) -> Path:
    """Write ``<output_dir>/<model>.bn-photos.pth``: the zoo model with BN statistics from real photos,
    cropped at ``input_size`` (default: the zoo's) -- the size the model will run at."""
    from deploy_res.data import sample_inputs
    from deploy_res.loading import load_model
    from deploy_res.models.bn_recalibration import recalibrate_batchnorm

    folder = ensure_output_dir(output_dir)
    target = folder / f"{model}.bn-photos.pth"
    loaded = load_model(model)
    pre = loaded.preprocessing
    if input_size is not None:
        pre = Preprocessing(tuple(input_size), pre.mean, pre.std, pre.crop_pct, pre.interpolation)
    inputs = sample_inputs(samples, pre, seed=seed)
    recalibrate_batchnorm(loaded.module, inputs)
    with atomic_path(target) as tmp:
        torch.save(loaded.module.state_dict(), tmp)
    return target
