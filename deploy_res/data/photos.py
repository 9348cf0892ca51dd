"""Real photos for machines with no data set.

:func:`write_sample_photos` writes the colour and grey photographs that ship
inside scikit-image's package folder (no downloads), and :func:`random_crops` /
:func:`write_random_crops` cut any number of distinct, seeded random crops from
them; :func:`sample_inputs` preprocesses such crops for a model. The tests and
the benchmarks calibrate and evaluate on those crops.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from deploy_res.core.errors import DeployResError
from deploy_res.data.preprocess import decode_image, preprocess_array
from deploy_res.models.registry import Preprocessing

# Photographs that ship inside scikit-image's package folder (skimage/data/):
# no download needed. Grey ones are converted to RGB.
SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
    "cell.png",
    "clock_motion.png",
    "brick.png",
    "grass.png",
    "gravel.png",
)


def _skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError:
        raise DeployResError("sample photos need scikit-image; pip install 'deployres[samples]' or pass your own images") from None
    return Path(skimage.__file__).parent / "data"


def sample_photo_names() -> list[str]:
    """The sample photos present in this scikit-image install (file names in ``skimage/data``)."""
    folder = _skimage_data_dir()
    return [name for name in SAMPLE_PHOTOS if (folder / name).is_file()]


def sample_photo(name: str) -> np.ndarray:
    """One shipped sample photo as uint8 RGB (H, W, 3); grey photos are replicated to 3 channels."""
    path = _skimage_data_dir() / name
    if not path.is_file():
        raise DeployResError(f"sample photo {name!r} is not in {path.parent}; choose from {', '.join(sample_photo_names())}")
    return np.asarray(decode_image(path).convert("RGB"), dtype=np.uint8)


def write_sample_photos(folder: str | os.PathLike, fmt: str = "png") -> list[Path]:
    """Write every shipped sample photo into ``folder`` as ``<name>.<fmt>`` (png or jpg); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sample_photo_names():
        target = folder / f"{Path(name).stem}.{fmt}"
        _save(sample_photo(name), target, fmt)
        written.append(target)
    return written


def random_crops(
    count: int,
    seed: int = 0,
    size: int = 256,
    scale: tuple[float, float] = (0.1, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> list[np.ndarray]:
    """``count`` distinct random crops of the sample photos, uint8 RGB (size, size, 3).

    Like torchvision's ``RandomResizedCrop``: each crop covers a random fraction
    ``scale`` (default 0.1-1) of its photo's area with a random aspect ratio in
    ``ratio`` (default 3/4-4/3), is flipped left-right half of the time and
    resized to ``size`` (default 256) square with bilinear filtering. Photos are
    used round-robin, so every photo contributes. Deterministic for a ``seed``.
    """
    rng = np.random.default_rng(seed)
    photos = [sample_photo(name) for name in sample_photo_names()]
    if not photos:
        raise DeployResError("no sample photos found in scikit-image's data folder; pass your own images")
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        area = height * width * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        crop_w = int(min(width, max(16, round(np.sqrt(area * aspect)))))
        crop_h = int(min(height, max(16, round(np.sqrt(area / aspect)))))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
    return crops


def write_random_crops(folder: str | os.PathLike, count: int, seed: int = 0, size: int = 256, fmt: str = "jpg") -> list[Path]:
    """Write :func:`random_crops` into ``folder`` as ``crop_00000.<fmt>`` ...; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, crop in enumerate(random_crops(count, seed=seed, size=size)):
        target = folder / f"crop_{index:05d}.{fmt}"
        _save(crop, target, fmt)
        paths.append(target)
    return paths


def sample_inputs(count: int, pre: Preprocessing, seed: int = 0) -> np.ndarray:
    """``count`` random crops of the sample photos preprocessed as ``pre`` says: float32 (N, C, H, W).

    Crops are cut at ``pre.resize_size`` so the preprocessing's resize is the identity
    and only its centre crop and normalisation apply.
    """
    crops = random_crops(count, seed=seed, size=pre.resize_size)
    return np.stack([preprocess_array(crop, pre) for crop in crops])


def _save(array: np.ndarray, target: Path, fmt: str) -> None:
    fmt = fmt.lower()
    if fmt not in ("jpg", "jpeg", "png"):
        raise DeployResError(f"unknown image format {fmt!r}; use jpg or png")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG" if fmt in ("jpg", "jpeg") else "PNG", **({"quality": 95} if fmt != "png" else {}))
    target.write_bytes(buffer.getvalue())
