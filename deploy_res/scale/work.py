"""Units of work shared by the in-process loop and the Ray Data pipeline.

The inputs are cut into numbered batches of ``batch`` samples, in the order
the data loaders read them (:func:`deploy_res.data.images.list_images`). A batch is
the unit everywhere: the in-process loop runs the batches in order, Ray Data
ships each batch as one row to one actor. Each sample therefore meets the
engine (and the reference) in the same batch, with the same neighbours, in
both modes; engines and PyTorch may pick different kernels for different
batch sizes, so this is what makes sharded results equal, bit for bit, to
single-process ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.data.images import ImageList, decode_images
from deploy_res.models import Preprocessing


@dataclass
class WorkBatch:
    """One batch: image files to decode, or ready arrays; their names and labels (or None)."""

    index: int
    names: list[str]
    files: Optional[list[str]] = None
    arrays: Optional[np.ndarray] = None
    labels: Optional[list[int]] = None

    def __len__(self) -> int:
        return len(self.names)


def plan_batches(batch: int, images: Optional[ImageList] = None, arrays: Optional[np.ndarray] = None,
                 labels: Optional[Sequence[int]] = None, names: Optional[Sequence[str]] = None,
                 limit: Optional[int] = None) -> list[WorkBatch]:
    """Consecutive batches of ``batch`` samples (the last one shorter) over ``images`` or ``arrays``.

    ``limit`` (default: all) keeps the first ``limit`` samples.
    """
    if batch < 1:
        raise DeployResError(f"batch size {batch} must be at least 1")
    if images is not None:
        files = [str(f) for f in images.files]
        names, labels = list(images.names), images.labels
    else:
        if arrays is None:
            raise ValueError("plan_batches needs images or arrays")
        files = None
        names = list(names) if names is not None else [f"input[{i}]" for i in range(arrays.shape[0])]
    total = len(names) if limit is None else min(limit, len(names))
    out = []
    for number, start in enumerate(range(0, total, batch)):
        stop = min(start + batch, total)
        out.append(WorkBatch(
            number,
            names[start:stop],
            files[start:stop] if files is not None else None,
            None if arrays is None or files is not None else np.ascontiguousarray(arrays[start:stop]),
            None if labels is None else [int(x) for x in labels[start:stop]],
        ))
    return out


def load_batch(work: WorkBatch, pre: Optional[Preprocessing], skip_bad: bool = False, source: str = "the data"):
    """``(arrays or None, labels or None, names, skipped names)`` of one batch, decoding its images.

    Undecodable files are an error naming them, or skipped with ``skip_bad``.
    """
    if work.files is None:
        labels = None if work.labels is None else np.asarray(work.labels, dtype=np.int64)
        return work.arrays, labels, list(work.names), []
    if pre is None:
        raise DeployResError("reading images needs the model's preprocessing; the engine's manifest has none (rebuild it with deployres)")
    arrays, kept, skipped = decode_images([Path(f) for f in work.files], work.names, pre, skip_bad, source)
    names = [work.names[i] for i in kept]
    labels = None if work.labels is None else np.asarray([work.labels[i] for i in kept], dtype=np.int64)
    return arrays, labels, names, skipped
