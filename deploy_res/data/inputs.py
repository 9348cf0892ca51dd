"""Model inputs from a path: ``.npy`` arrays, ``.npz`` archives, or a folder of images.

* a ``.npy`` array or an ``.npz`` archive, checked against the model input's
  shape and dtype; an ``.npz`` may carry ``labels`` (:func:`load_array_file`);
* :func:`load_inputs` picks the right loader for a path (image folders are read
  by :mod:`deploy_res.data.images`); :func:`check_source` fails early, without
  decoding anything, when a path cannot hold the samples asked for.

Calibration (INT8), validation and batch inference read their samples through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.data.images import Samples, _check_count, _image_files, load_image_folder, load_labelled_folder
from deploy_res.models.registry import Preprocessing

ARRAY_SUFFIXES = (".npy", ".npz")
# Keys an .npz archive may hold its inputs under when none is named after the model input.
_NPZ_INPUT_KEYS = ("inputs", "input", "x", "data", "images")


# --------------------------------------------------------------------------- array files


def _check_shape(array: np.ndarray, path: Path, input_shape: Sequence[int | None] | None, dtype: np.dtype, input_name: str) -> np.ndarray:
    if array.dtype != dtype:
        raise DeployResError(
            f"{path.name} holds {array.dtype} data; the model input {input_name!r} expects {np.dtype(dtype).name} (convert with .astype(np.{np.dtype(dtype).name}))"
        )
    if input_shape is None:
        if array.ndim < 2:
            raise DeployResError(f"{path.name} has shape {array.shape}; expected (N, ...) samples with a batch axis first")
        return array
    expected = tuple(input_shape)
    if array.ndim != len(expected) + 1 or any(want is not None and want != got for want, got in zip(expected, array.shape[1:])):
        want = ", ".join("?" if d is None else str(d) for d in expected)
        raise DeployResError(f"{path.name} has shape {tuple(array.shape)}; the model input {input_name!r} expects (N, {want})")
    return array


def check_finite(array: np.ndarray, source: str) -> None:
    """A one-line error if a float ``array`` of samples (N, ...) holds NaN or Inf: no input is ever meant to."""
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1) if array.ndim > 1 else np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DeployResError(f"{source}: {bad.size} of {array.shape[0]} samples hold NaN or Inf (first: sample {bad[0]}); inputs must be finite numbers")


def load_array_file(
    path: str | os.PathLike,
    input_shape: Sequence[int | None] | None = None,
    dtype: np.dtype | type = np.float32,
    count: int | None = None,
    input_name: str = "input",
) -> Samples:
    """A ``.npy`` array or ``.npz`` archive of samples -> :class:`Samples`.

    ``input_shape`` is one sample's shape, e.g. ``(3, 224, 224)`` (``None``
    entries match any size; default None: no check beyond a batch axis).
    ``dtype`` (default float32) must match exactly: nothing is converted
    silently. An ``.npz`` holds the inputs under the model input's name, or
    ``inputs``/``input``/``x``/``data``/``images``, or as its only array, and may
    hold integer ``labels`` of length N. ``count`` (default: all) takes the
    first ``count`` samples; fewer is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"data file {path} does not exist; pass a folder of images or a .npy/.npz file")
    labels = None
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                candidates = [k for k in (input_name, *_NPZ_INPUT_KEYS) if k in keys]
                others = [k for k in keys if k != "labels"]
                if candidates:
                    key = candidates[0]
                elif len(others) == 1:
                    key = others[0]
                else:
                    raise DeployResError(f"{path.name} holds arrays {keys}; name the inputs {input_name!r} or 'inputs' (and optional 'labels')")
                array = archive[key]
                labels = archive["labels"] if "labels" in keys else None
        else:
            raise DeployResError(f"{path.name} is not a .npy or .npz file; pass a folder of images or a .npy/.npz array file")
    except DeployResError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DeployResError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; write it with numpy.save / numpy.savez") from None
    array = _check_shape(array, path, input_shape, np.dtype(dtype), input_name)
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != array.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise DeployResError(f"{path.name}: 'labels' must be integers of shape ({array.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        labels = labels.astype(np.int64)
    _check_count(int(array.shape[0]), count, path, 0)
    if count is not None:
        array = array[:count]
        labels = None if labels is None else labels[:count]
    check_finite(array, path.name)
    names = [f"{path.name}[{i}]" for i in range(array.shape[0])]
    return Samples(np.ascontiguousarray(array), labels, names, None, str(path))


def check_source(source: str | os.PathLike, count: int | None = None, what: str = "data") -> None:
    """Fail now, in one line, if ``source`` cannot hold ``count`` samples: it is missing, an empty folder,
    a folder with fewer files than ``count``, or a file that is not ``.npy``/``.npz``. Cheap (nothing is
    decoded): stages call it before any work starts, so a bad ``--calib-data`` is not found after an export."""
    path = Path(source)
    if path.suffix in ARRAY_SUFFIXES and not path.is_dir():
        if not path.is_file():
            raise DeployResError(f"{what} file {path} does not exist; pass a folder of images or a .npy/.npz file")
        rows = _array_rows(path)
        if count is not None and rows is not None and rows < count:
            raise DeployResError(f"{what} file {path} holds {rows} samples, fewer than the {count} asked for; add data or ask for fewer samples")
        return
    if path.is_file():
        raise DeployResError(f"{path} is a file but not .npy/.npz; pass a folder of images or a .npy/.npz array file")
    files = _image_files(path)
    if count is not None and len(files) < count:
        raise DeployResError(f"{what} folder {path} holds {len(files)} files, fewer than the {count} samples asked for; add images or ask for fewer samples")


def samples_held(source: str | os.PathLike) -> int | None:
    """How many samples ``source`` holds, read without decoding: an array file's rows (:func:`_array_rows`), a
    folder's files; None when that cannot be told (a missing path, unreadable headers)."""
    path = Path(source)
    if path.is_file():
        return _array_rows(path)
    return len(_image_files(path)) if path.is_dir() else None


def _array_rows(path: Path) -> int | None:
    """Samples in a ``.npy`` (its first dimension) or ``.npz`` (the longest array but ``labels``), read from the
    array headers alone; None when they cannot be read (:func:`load_array_file` then says why)."""
    import zipfile

    def rows(handle) -> int | None:
        version = np.lib.format.read_magic(handle)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        shape = header(handle)[0] if header else ()
        return shape[0] if shape else None

    try:
        if path.suffix == ".npy":
            with open(path, "rb") as handle:
                return rows(handle)
        with zipfile.ZipFile(path) as archive:
            found = [rows(archive.open(name)) for name in archive.namelist() if name.endswith(".npy") and name != "labels.npy"]
        found = [n for n in found if n is not None]
        return max(found) if found else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def load_inputs(
    source: str | os.PathLike,
    pre: Preprocessing | None = None,
    count: int | None = None,
    skip_bad: bool = False,
    labelled: bool = False,
    input_shape: Sequence[int | None] | None = None,
    dtype: np.dtype | type = np.float32,
    input_name: str = "input",
) -> Samples:
    """Load samples from a folder of images or a ``.npy``/``.npz`` file.

    Folders need ``pre`` (the model's preprocessing); ``labelled=True`` reads
    class sub-folders. Arrays are checked against ``input_shape`` / ``dtype``
    (default float32). A folder's images are checked against ``input_shape``
    too, so a preprocessing that does not fit the model fails here. ``count``
    and ``skip_bad`` as in :func:`load_image_folder`.
    """
    path = Path(source)
    if path.suffix in ARRAY_SUFFIXES and not path.is_dir():
        return load_array_file(path, input_shape, dtype, count, input_name)
    if path.is_file():
        raise DeployResError(f"{path} is a file but not .npy/.npz; pass a folder of images or a .npy/.npz array file")
    if pre is None:
        raise DeployResError(f"reading images from {path} needs the model's preprocessing (input size, mean, std, crop); pass them or the model's manifest")
    loader = load_labelled_folder if labelled else load_image_folder
    samples = loader(path, pre, count, skip_bad)
    if input_shape is not None:
        _check_shape(samples.arrays, path, input_shape, np.dtype(dtype), input_name)
    return samples


def batches(arrays: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
    """Consecutive slices of ``arrays`` along axis 0, the last one possibly shorter."""
    for start in range(0, arrays.shape[0], batch_size):
        yield arrays[start : start + batch_size]
