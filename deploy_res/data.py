"""Model inputs from disk: image folders, labelled image folders and array files.

Calibration (INT8) and validation read their samples through this module:

* a folder of images (searched recursively, sorted by path): each is decoded
  with Pillow, converted to RGB (or L for one-channel models), its short side
  resized to ``Preprocessing.resize_size`` with the preprocessing's
  interpolation, centre-cropped to the input size, scaled to [0, 1] and
  normalised by mean/std -> float32 NCHW (:func:`load_image_folder`);
* a folder whose sub-folders are classes (:func:`load_labelled_folder`): the
  same, plus integer labels in sorted sub-folder order;
* a ``.npy`` array or an ``.npz`` archive, checked against the model input's
  shape and dtype; an ``.npz`` may carry ``labels`` (:func:`load_array_file`).

:func:`load_inputs` picks the right loader for a path. Every problem a user
can cause is a one-line :class:`~deploy_res.core.errors.DeployResError`: a missing
or empty folder, files that fail to decode (named; skipped only with
``skip_bad=True``), arrays of the wrong shape or dtype, fewer samples than
asked for.

Real photos for machines with no data set: :func:`write_sample_photos` writes
the colour and grey photographs that ship inside scikit-image's package folder
(no downloads), and :func:`random_crops` / :func:`write_random_crops` cut any
number of distinct, seeded random crops from them. The tests and the
benchmarks calibrate and evaluate on those crops.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

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
ARRAY_SUFFIXES = (".npy", ".npz")
# Keys an .npz archive may hold its inputs under when none is named after the model input.
_NPZ_INPUT_KEYS = ("inputs", "input", "x", "data", "images")
_MAX_NAMED = 5  # bad files named in one error line


@dataclass
class Samples:
    """Model-ready samples: ``arrays`` (N, C, H, W), optional integer ``labels`` (N,).

    ``names`` say where each sample came from (relative file paths, or
    ``file[i]`` for array files); ``class_names`` are the labelled folder's
    sub-folder names (label ``i`` is ``class_names[i]``); ``skipped`` lists the
    files skipped with ``skip_bad=True``.
    """

    arrays: np.ndarray
    labels: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.arrays.shape[0])


# --------------------------------------------------------------------------- preprocessing


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


def _decode(path: Path) -> Image.Image:
    """Open and fully decode an image file (Pillow is lazy: ``load`` forces the pixels)."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


# --------------------------------------------------------------------------- image folders


def _image_files(folder: Path) -> list[Path]:
    """Every non-hidden regular file under ``folder``, sorted by relative path."""
    if not folder.exists():
        raise DeployResError(f"data folder {folder} does not exist; pass a folder of images or a .npy/.npz file")
    if not folder.is_dir():
        raise DeployResError(f"{folder} is not a folder; pass a folder of images or a .npy/.npz file")
    files = [
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not files:
        raise DeployResError(f"data folder {folder} is empty; put images in it (JPEG, PNG, ...) or pass a .npy/.npz file")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _bad_files_error(folder: Path, bad: list[tuple[str, str]]) -> DeployResError:
    named = ", ".join(f"{name} ({why})" for name, why in bad[:_MAX_NAMED])
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return DeployResError(
        f"{len(bad)} file(s) in {folder} are not decodable images: {named}{more}; remove them or skip them with --skip-bad-files (skip_bad=True)"
    )


def _load_files(
    folder: Path,
    files: Sequence[Path],
    pre: Preprocessing,
    count: int | None,
    skip_bad: bool,
) -> tuple[list[np.ndarray], list[str], list[int], list[str]]:
    """Decode files in order until ``count`` good ones (all when None); return arrays, names, indices, skipped."""
    arrays: list[np.ndarray] = []
    names: list[str] = []
    indices: list[int] = []
    bad: list[tuple[str, str]] = []
    for index, path in enumerate(files):
        if count is not None and len(arrays) >= count:
            break
        name = path.relative_to(folder).as_posix()
        try:
            image = _decode(path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append((name, _why(exc)))
            continue
        arrays.append(preprocess_image(image, pre))
        names.append(name)
        indices.append(index)
    if bad and not skip_bad:
        raise _bad_files_error(folder, bad)
    return arrays, names, indices, [name for name, _ in bad]


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:60]


def _check_count(got: int, count: int | None, source: Path | str, skipped: int) -> None:
    if count is not None and got < count:
        note = f" ({skipped} undecodable skipped)" if skipped else ""
        raise DeployResError(f"{source} holds {got} usable samples{note}, fewer than the {count} asked for; add data or ask for fewer samples")
    if got == 0:
        raise DeployResError(f"{source} holds no usable images; put decodable images in it")


def load_image_folder(folder: str | os.PathLike, pre: Preprocessing, count: int | None = None, skip_bad: bool = False) -> Samples:
    """Images under ``folder`` (recursive, sorted by path) -> :class:`Samples` without labels.

    ``count``: take the first ``count`` decodable images (default: all); fewer
    is an error. ``skip_bad`` (default False): skip files that fail to decode
    instead of failing on them (they are listed in ``Samples.skipped``).
    """
    folder = Path(folder)
    files = _image_files(folder)
    arrays, names, _, skipped = _load_files(folder, files, pre, count, skip_bad)
    _check_count(len(arrays), count, folder, len(skipped))
    return Samples(np.stack(arrays), None, names, None, str(folder), skipped)


def load_labelled_folder(folder: str | os.PathLike, pre: Preprocessing, count: int | None = None, skip_bad: bool = False) -> Samples:
    """A folder of class sub-folders (``folder/<class>/<images>``) -> :class:`Samples` with labels.

    Labels are indices into the sorted sub-folder names (``Samples.class_names``),
    as torchvision's ``ImageFolder`` assigns them. ``count`` (default: all)
    takes samples round-robin across classes so a small count still covers
    them; ``skip_bad`` as in :func:`load_image_folder`.
    """
    folder = Path(folder)
    classes, order = _labelled_order(folder)
    arrays, names, indices, skipped = _load_files(folder, [path for _, path in order], pre, count, skip_bad)
    _check_count(len(arrays), count, folder, len(skipped))
    labels = np.asarray([order[i][0] for i in indices], dtype=np.int64)
    return Samples(np.stack(arrays), labels, names, classes, str(folder), skipped)


def _labelled_order(folder: Path) -> tuple[list[str], list[tuple[int, Path]]]:
    """A labelled folder's class names and its (label, file) pairs, round-robin over the classes."""
    if not folder.is_dir():
        raise DeployResError(f"labelled data folder {folder} does not exist or is not a folder; pass a folder of class sub-folders")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DeployResError(f"{folder} has no class sub-folders; put each class's images in {folder}/<class name>/")
    per_class = {}
    for label, name in enumerate(classes):
        files = [p for p in _image_files_or_empty(folder / name)]
        per_class[label] = files
    order: list[tuple[int, Path]] = []
    depth = max(len(files) for files in per_class.values())
    for position in range(depth):  # round-robin over classes
        order += [(label, files[position]) for label, files in per_class.items() if position < len(files)]
    if not order:
        raise DeployResError(f"the class sub-folders of {folder} are empty; put images in {folder}/<class name>/")
    return classes, order


def _image_files_or_empty(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


# --------------------------------------------------------------------------- image lists (batch inference, sharding)

_GLOB_CHARS = "*?["


@dataclass
class ImageList:
    """Image files in the order every loader here reads them, not yet decoded.

    ``names`` are the paths as reported (relative to the folder or glob root,
    or as a Parquet list gives them); ``labels`` are class indices into
    ``class_names`` where the layout gives them (a folder of class
    sub-folders, or a Parquet ``label`` column), else None.
    """

    source: str
    files: list[Path]
    names: list[str]
    labels: list[int] | None = None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)


def is_image_source(source: str | os.PathLike) -> bool:
    """True for what :func:`list_images` reads: a folder, a glob pattern or a ``.parquet`` list."""
    text = str(source)
    return Path(text).is_dir() or any(c in text for c in _GLOB_CHARS) or text.endswith(".parquet")


def list_images(source: str | os.PathLike, labelled: bool | None = None) -> ImageList:
    """The images ``source`` names, in order: a folder, a glob pattern, or a Parquet list.

    * a folder: every file under it, sorted by relative path; when it holds
      class sub-folders (``labelled`` None = detect, as ``validate`` does) the
      order and labels of :func:`load_labelled_folder`;
    * a glob (``photos/**/*.jpg``; ``**`` recurses): the matching files,
      sorted, named relative to the pattern's folder part; no labels;
    * a ``.parquet`` file with a string ``path`` column (relative paths are
      relative to the Parquet file's folder) and an optional integer
      ``label`` column.
    """
    text = str(source)
    path = Path(text)
    if text.endswith(".parquet") and not path.is_dir():
        return _parquet_list(path)
    if any(c in text for c in _GLOB_CHARS) and not path.exists():
        import glob

        prefix = text[: min(text.index(c) for c in _GLOB_CHARS if c in text)]
        root = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DeployResError(f"no files match {text}; check the pattern (quote it so the shell does not expand it)")
        return ImageList(text, files, [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in files])
    if labelled is None:
        labelled = path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
    if labelled:
        classes, order = _labelled_order(path)
        files = [file for _, file in order]
        return ImageList(text, files, [f.relative_to(path).as_posix() for f in files], [label for label, _ in order], classes)
    files = _image_files(path)
    return ImageList(text, files, [f.relative_to(path).as_posix() for f in files])


def _parquet_list(path: Path) -> ImageList:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DeployResError("reading a .parquet list of images needs pyarrow: pip install 'deployres[ray]' (or pyarrow)") from None
    if not path.is_file():
        raise DeployResError(f"image list {path} does not exist; pass a folder, a glob or a .parquet file with a 'path' column")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own types for every kind of bad file
        raise DeployResError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0][:200]}") from None
    if "path" not in table.column_names:
        raise DeployResError(f"{path.name} has columns {table.column_names}; it needs a string 'path' column (and optionally an integer 'label')")
    names = [str(p) for p in table.column("path").to_pylist()]
    if not names:
        raise DeployResError(f"{path.name} lists no images")
    files = [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]
    labels = None
    if "label" in table.column_names:
        labels = table.column("label").to_pylist()
        if any(not isinstance(label, int) or label < 0 for label in labels):
            raise DeployResError(f"{path.name}: the 'label' column must hold non-negative integers for every row")
    return ImageList(str(path), files, names, labels)


def decode_images(files: Sequence[Path], names: Sequence[str], pre: Preprocessing, skip_bad: bool = False,
                  source: str | os.PathLike = "the data") -> tuple[np.ndarray | None, list[int], list[str]]:
    """Decode and preprocess ``files``: ``(arrays (M, C, H, W) or None, kept positions, skipped names)``.

    A file that fails to decode is an error naming it (as every loader here
    does) unless ``skip_bad``; then it is left out and listed.
    """
    arrays, kept, bad = [], [], []
    for position, (path, name) in enumerate(zip(files, names)):
        try:
            image = _decode(Path(path))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append((name, _why(exc)))
            continue
        arrays.append(preprocess_image(image, pre))
        kept.append(position)
    if bad and not skip_bad:
        raise _bad_files_error(Path(source), bad)
    return (np.stack(arrays) if arrays else None), kept, [name for name, _ in bad]


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
        return
    if path.is_file():
        raise DeployResError(f"{path} is a file but not .npy/.npz; pass a folder of images or a .npy/.npz array file")
    files = _image_files(path)
    if count is not None and len(files) < count:
        raise DeployResError(f"{what} folder {path} holds {len(files)} files, fewer than the {count} samples asked for; add images or ask for fewer samples")


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


# --------------------------------------------------------------------------- sample photos

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
    return np.asarray(_decode(path).convert("RGB"), dtype=np.uint8)


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
