"""Residual networks really trained on the CPU, on real images that ship inside packages.

- :func:`digits_arrays`: scikit-learn's 8x8 handwritten digits, upsampled to 24x24, 3 channels, 75/25 split.
- :func:`photo_crops`: which of scikit-image's sample photos a small crop comes from (one class per photo).
  Training crops come from the top 70 % of every photo, held-out ones from the bottom 30 %, so no held-out
  crop overlaps a training one; any number can be cut, at random positions and scales, with a seed.
- :func:`train_resnet`: a BasicBlock ResNet trained with one-cycle AdamW, seeded, on 2 threads.

The tests (``tests/precision/conftest.py``, ``tests/validation``) and ``benchmarks/verdict_limits.py`` use these.
"""

from __future__ import annotations

import numpy as np

DIGITS_SIZE = 24
PHOTO_CROP = 32
PHOTO_SPLIT = 0.7
"""Photo crops: training crops lie above this share of each photo's height, held-out crops below it."""


def digits_arrays(seed: int = 0):
    """(train_x, test_x, train_y, test_y): digits as float32 (N, 3, 24, 24) in [-1, 1], 75/25 stratified split."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    images = torch.nn.functional.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1).numpy()
    return train_test_split(images, digits.target.astype(np.int64), test_size=0.25, random_state=seed, stratify=digits.target)


def shifted_digits(x: np.ndarray, y: np.ndarray, copies: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` labelled variants of every held-out digit, each shifted by up to 2 pixels and lightly noised
    (labels kept): a large labelled set from a small one, for the verdict tests."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(copies):
        dy, dx = rng.integers(-2, 3, size=2)
        shifted = np.roll(x, (int(dy), int(dx)), axis=(2, 3))
        xs.append((shifted + rng.normal(0, 0.1, size=x.shape)).astype(np.float32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def photo_crops(split: str, count: int, seed: int = 0, size: int = PHOTO_CROP) -> tuple[np.ndarray, np.ndarray]:
    """``count`` crops (float32 (N, 3, size, size), ImageNet-normalised) and their photo index, from the ``train``
    (top 70 %) or ``test`` (bottom 30 %) part of each sample photo; each crop covers 48-160 pixels square."""
    from PIL import Image

    from deploy_res.data.photos import sample_photo, sample_photo_names

    rng = np.random.default_rng(seed)
    photos = [sample_photo(name) for name in sample_photo_names()]
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    xs, ys = np.empty((count, 3, size, size), np.float32), np.empty(count, np.int64)
    for index in range(count):
        label = int(rng.integers(len(photos)))
        photo = photos[label]
        cut = int(photo.shape[0] * PHOTO_SPLIT)
        part = photo[:cut] if split == "train" else photo[cut:]
        side = int(min(rng.integers(48, 161), part.shape[0], part.shape[1]))
        top, left = int(rng.integers(0, part.shape[0] - side + 1)), int(rng.integers(0, part.shape[1] - side + 1))
        image = Image.fromarray(part[top:top + side, left:left + side]).resize((size, size), Image.Resampling.BILINEAR)
        xs[index] = ((np.asarray(image, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        ys[index] = label
    return xs, ys


def train_resnet(train_x: np.ndarray, train_y: np.ndarray, classes: int, epochs: int, layers=(1, 1, 1, 1), seed: int = 0, lr: float = 4e-3):
    """A ``ResNet(BasicBlock, layers, num_classes=classes)`` trained on the arrays (one-cycle AdamW, batches of 64,
    ``torch.manual_seed(seed)``, 2 threads), returned in eval mode."""
    import torch

    from deploy_res.models.resnet import BasicBlock, ResNet

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(seed)
        model = ResNet(BasicBlock, list(layers), num_classes=classes)
        x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * -(-len(x) // 64))
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=generator).split(64):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimiser.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
