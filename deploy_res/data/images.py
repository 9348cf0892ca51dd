"""Images from disk: image folders, labelled folders (class sub-folders) and image lists.

* a folder of images (searched recursively, sorted by path): each is decoded
  with Pillow and preprocessed (:mod:`deploy_res.data.preprocess`) -> float32
  NCHW :class:`Samples` (:func:`load_image_folder`);
* a folder whose sub-folders are classes (:func:`load_labelled_folder`): the
  same, plus integer labels in sorted sub-folder order;
* :func:`list_images` names the files of a folder, a glob or a Parquet list in
  that same order without decoding them; :func:`decode_images` decodes a batch of them.

Files that fail to decode are named in one :class:`~deploy_res.core.errors.DeployResError`
(skipped only with ``skip_bad=True``); fewer samples than asked for is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import UnidentifiedImageError

from deploy_res.core.errors import DeployResError
from deploy_res.data.preprocess import decode_image, preprocess_image
from deploy_res.models.registry import Preprocessing

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
        f"{len(bad)} file(s) in {folder} are not decodable images: {named}{more}; remove them or skip them with --skip-bad-files"
    )


def _decode(files: Sequence[Path], names: Sequence[str], pre: Preprocessing, count: int | None = None
            ) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:
    """Decode and preprocess ``files`` in order until ``count`` good ones (default None: all): arrays, their
    positions in ``files``, and the (name, why) of each file that failed."""
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[tuple[str, str]] = []
    for position, (path, name) in enumerate(zip(files, names)):
        if count is not None and len(arrays) >= count:
            break
        try:
            image = decode_image(Path(path))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append((name, _why(exc)))
            continue
        arrays.append(preprocess_image(image, pre))
        kept.append(position)
    return arrays, kept, bad


def _load_files(
    folder: Path,
    files: Sequence[Path],
    pre: Preprocessing,
    count: int | None,
    skip_bad: bool,
) -> tuple[list[np.ndarray], list[str], list[int], list[str]]:
    """Decode files in order until ``count`` good ones (all when None); return arrays, names, indices, skipped."""
    names = [path.relative_to(folder).as_posix() for path in files]
    arrays, indices, bad = _decode(files, names, pre, count)
    if bad and not skip_bad:
        raise _bad_files_error(folder, bad)
    return arrays, [names[i] for i in indices], indices, [name for name, _ in bad]


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
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
        import pyarrow as pa
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
    column = table.schema.field("path").type
    if not (pa.types.is_string(column) or pa.types.is_large_string(column)):
        raise DeployResError(f"{path.name}: its 'path' column holds {column}; it needs one string path per row (and optionally an integer 'label')")
    names = table.column("path").to_pylist()
    if any(name is None or not name for name in names):
        raise DeployResError(f"{path.name}: its 'path' column has empty or null rows (first: row {next(i for i, n in enumerate(names) if not n)}); give every row a path")
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
    arrays, kept, bad = _decode(files, names, pre)
    if bad and not skip_bad:
        raise _bad_files_error(Path(source), bad)
    return (np.stack(arrays) if arrays else None), kept, [name for name, _ in bad]
