"""Preprocessing: one decoded image -> the model's float32 (C, H, W), as the model's manifest says.

Every loader in :mod:`deploy_res.data` and the serving layer turn pixels into model inputs here:
Pillow decodes (:func:`decode_image`), the short side is resized to ``Preprocessing.resize_size``
with the preprocessing's interpolation, centre-cropped to the input size, scaled to [0, 1] and
normalised by mean/std (:func:`preprocess_image`, :func:`preprocess_array`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deploy_res.core.errors import DeployResError
from deploy_res.models.registry import Preprocessing

# Pillow resampling filters by the names the registry uses (timm's names).
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def preprocess_image(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """One PIL image -> float32 (C, H, W) as ``pre`` says.

    Converts to RGB (L when ``pre.input_size[0] == 1``; 16-bit greyscale is
    scaled to 8 bits first, not clipped), resizes the short side
    to ``pre.resize_size`` (more if needed so the crop fits) with
    ``pre.interpolation``, centre-crops to ``pre.input_size[1:]``, scales to
    [0, 1] and normalises by ``pre.mean`` / ``pre.std``.
    """
    channels, height, width = pre.input_size
    if channels not in (1, 3):
        raise DeployResError(f"image input needs 1 or 3 channels, the model input has {channels}; pass a .npy/.npz array instead")
    try:
        resample = _RESAMPLE[pre.interpolation]
    except KeyError:
        raise DeployResError(f"unknown interpolation {pre.interpolation!r}; use one of {', '.join(_RESAMPLE)}") from None
    image = _eight_bit(image).convert("RGB" if channels == 3 else "L")
    w, h = image.size
    scale = max(pre.resize_size / min(w, h), height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[:, :, None] if array.ndim == 2 else array
    mean = np.asarray(pre.mean[:channels], dtype=np.float32)
    std = np.asarray(pre.std[:channels], dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (Pillow modes ``I;16*``, or ``I`` holding 0..65535) scaled to 8-bit ``L``.

    Pillow's own ``convert`` clips such pixels at 255 (a 16-bit PNG turns almost all white); every
    other mode is returned as it is.
    """
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    array = np.asarray(image).astype(np.int64)
    if image.mode == "I" and (array.min(initial=0) < 0 or array.max(initial=0) > 65535):
        return image  # 32-bit data of unknown range: left to Pillow as before
    return Image.fromarray(((array * 255 + 32767) // 65535).astype(np.uint8))


def preprocess_array(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) image array -> float32 (C, H, W); see :func:`preprocess_image`."""
    return preprocess_image(Image.fromarray(np.asarray(image, dtype=np.uint8)), pre)


def decode_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (Pillow is lazy: ``load`` forces the pixels)."""
    with Image.open(path) as image:
        image.load()
        return image.copy()
