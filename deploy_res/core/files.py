"""Files on disk: atomic writes, hashes, file records, and the artifact+manifest write unit.

Every pipeline stage reads an artifact and writes one, with a manifest
``<artifact>.json`` beside it that records what went in (path, sha256), the
settings, the library versions and the numerical check the stage ran.

Files are written atomically: into a temporary file in the destination folder,
then renamed over the target, so an error or Ctrl-C never leaves a
half-written artifact behind.

An artifact and its manifest are one unit (:func:`write_artifact`): both are
written first into a private temporary folder beside the target, under their
final names (with any companion file, such as ONNX external data); the commit
then moves the old manifest away, then the old artifact (and companions),
renames the new companions, the new artifact and the new manifest last into
place, and deletes the old pair. An error or Ctrl-C at any step rolls back, so a
folder holds the old pair, the new pair, or neither, never an artifact beside
another run's manifest. Ctrl-C is held back while the renames run. Were the
process killed outright mid-commit, the worst left is an artifact without a
manifest, which every reader treats as a file deployres did not write (and a
stage that reuses a file checks it against the sha256 its manifest recorded);
the next write of that artifact removes the hidden staging folder and backups
such a kill leaves.
:func:`write_hook` is the seam tests use to interrupt each step.

The :class:`~deploy_res.core.manifest.Manifest` type, reading manifests and their lineage live in
:mod:`deploy_res.core.manifest`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from deploy_res.core.errors import DeployResError

MANIFEST_SUFFIX = ".json"
SCHEMA_VERSION = 2
"""Manifest schema: 2 adds ``parent`` (the file this one was made from) to every stage's manifest; :class:`Manifest` reads 1 too."""

_UMASK = os.umask(0)
os.umask(_UMASK)
_VERSIONED_PACKAGES = ("deployres", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "numpy", "openvino", "tensorrt", "ray", "tritonclient")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (absent ones omitted), plus Python's."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check it is writable; one-line error otherwise."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployResError(f"cannot create output folder {folder}: {exc.strerror}; choose a writable -o/--output") from None
    if not folder.is_dir():
        raise DeployResError(f"output path {folder} exists and is not a folder; choose another -o/--output")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DeployResError(f"output folder {folder} is not writable; choose another -o/--output")
    return folder


WRITE_STEPS = ("temp-created", "temp-written", "placed",
               "artifact-written", "manifest-written", "old-manifest-moved", "old-artifact-moved", "old-companion-moved",
               "companion-placed", "artifact-placed", "manifest-placed", "committed", "removed")
"""The steps at which :func:`write_hook`'s hook is called. A single file (:func:`atomic_path`):
temp-created, temp-written, placed. An artifact with its manifest (:func:`write_artifact`):
temp-created, then the stage's own writes into the temporary folder, artifact-written,
manifest-written, old-manifest-moved, old-artifact-moved and old-companion-moved (for each
old file there was), companion-placed (each, e.g. external data), artifact-placed,
manifest-placed, committed. :func:`remove_artifact`: removed, once per file."""

WriteHook = Callable[[str, Path], None]
_write_hook: Optional[WriteHook] = None


@contextlib.contextmanager
def write_hook(hook: WriteHook) -> Iterator[None]:
    """Call ``hook(step, target)`` at every write step (:data:`WRITE_STEPS`) while the block runs.

    The seam for tests: a hook that raises KeyboardInterrupt or OSError at the
    n-th step shows what a folder holds after an interrupt at that instant.
    """
    global _write_hook
    previous, _write_hook = _write_hook, hook
    try:
        yield
    finally:
        _write_hook = previous


def _step(step: str, target: Path) -> None:
    if _write_hook is not None:
        _write_hook(step, target)


_WRITE_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, name)}
"""Errors a stage's own writing into a temporary file can only mean one thing for (full disk, read-only)."""


def _write_error(target: Path, exc: OSError) -> DeployResError:
    """An OSError met while writing ``target`` as one line (permission, read-only, full disk, a folder in the way)."""
    reason = exc.strerror or type(exc).__name__
    if target.is_dir():
        return DeployResError(f"cannot write {target}: it is a folder; name a file")
    return DeployResError(f"cannot write {target}: {reason}; choose a writable path")


def _temp_beside(target: Path, suffix: str) -> Path:
    """A new, empty temporary file beside ``target`` (hidden, ``.part``); one-line error if the folder refuses it."""
    if target.is_dir():
        raise DeployResError(f"cannot write {target}: it is a folder; name a file")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed
    and ``target`` is left as it was. A folder that refuses the file (read-only,
    full, or ``target`` is itself a folder) is a one-line :class:`DeployResError`.
    """
    target = Path(target)
    tmp = _temp_beside(target, ".part")
    try:
        _step("temp-created", target)
        yield tmp
        _step("temp-written", target)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, target)
        except OSError as exc:
            raise _write_error(target, exc) from None
        _step("placed", target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from None
        raise


class PendingArtifact:
    """An artifact being written by :func:`write_artifact`.

    The stage writes the artifact's bytes to :attr:`path`, which has the final
    file name but lies in a private temporary folder beside :attr:`target`
    (the stage may read it back, e.g. for a parity check). Files the writer puts
    beside it under names of their own (ONNX external data ``<name>.data``, an
    OpenVINO IR's ``.bin``) are companions: placed with the artifact, as part of
    the unit. Once the file is final the stage calls :meth:`set_manifest`.
    """

    def __init__(self, target: Path, path: Path) -> None:
        self.target = target
        self.path = path
        self.manifest: Optional[dict[str, Any]] = None

    def set_manifest(self, stage: str, body: dict[str, Any]) -> dict[str, Any]:
        """The manifest for the file now at :attr:`path`, to be placed with it; returns the record."""
        self.manifest = _manifest_record(self.path, stage, body, name_as=self.target)
        return self.manifest


COMPANION_SUFFIXES = (".data",)
"""Files ``<artifact><suffix>`` that belong to an artifact even when a new version has none (ONNX external
data): an old one is removed with the old pair rather than left beside a file that does not use it."""


@contextlib.contextmanager
def write_artifact(target: str | os.PathLike, manifest: bool = True) -> Iterator[PendingArtifact]:
    """Write an artifact and its manifest ``<target>.json`` as one unit.

    Yields a :class:`PendingArtifact`; when the block ends the pair is committed
    (see the module docstring): the folder then holds the new pair. On any
    exception, inside the block or during the commit (KeyboardInterrupt
    included), it holds what it held before: the old pair, or neither. With
    ``manifest=False`` the artifact is written alone and an old manifest is
    removed with the old artifact (it would describe another file).
    """
    target = Path(target)
    if target.is_dir():
        raise DeployResError(f"cannot write {target}: it is a folder; name a file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise _write_error(target, exc) from None
    pending = PendingArtifact(target, staging / target.name)
    try:
        _step("temp-created", target)
        yield pending
        if not pending.path.is_file():
            raise RuntimeError(f"write_artifact({target.name}): the stage wrote no artifact")
        _step("artifact-written", target)
        if manifest:
            if pending.manifest is None:
                raise RuntimeError(f"write_artifact({target.name}): the stage set no manifest")
            manifest_path(pending.path).write_text(_json_text(pending.manifest))
            _step("manifest-written", target)
        _commit(target, staging, manifest)
    except BaseException as exc:
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _step("committed", target)


LEFTOVER_AGE_S = 3600.0
"""Hidden staging folders and backups of ``target`` older than this are a killed process's leftovers."""


def _remove_leftovers(target: Path) -> None:
    """Delete what a process killed outright (no Python left to clean up) left of an earlier write of ``target``:
    its staging folder and the old pair's backups, once older than :data:`LEFTOVER_AGE_S` (a live writer's are newer)."""
    now = time.time()
    patterns = [f".{target.name}.*.tmp", f".{target.name}.*.old", f".{manifest_path(target).name}.*.old"]
    for pattern in patterns:
        for path in target.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime < LEFTOVER_AGE_S:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()


def _commit(target: Path, staging: Path, with_manifest: bool) -> None:
    """Move the staged artifact (its companions first, its manifest last) to ``target``'s folder as one unit, or roll back."""
    folder = target.parent
    old_manifest = manifest_path(target)
    companions = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name not in (target.name, old_manifest.name))
    stale = [folder / (target.name + suffix) for suffix in COMPANION_SUFFIXES if target.name + suffix not in companions]
    moved: list[tuple[Path, Path]] = []  # (backup, original place) of the old pair
    placed: list[Path] = []
    new = [(staging / name, folder / name, "companion-placed") for name in companions] + [(staging / target.name, target, "artifact-placed")]
    if with_manifest:
        new.append((staging / old_manifest.name, old_manifest, "manifest-placed"))
    with _interrupts_held():
        try:
            # The old manifest first: from here on no manifest describes a file it is not beside.
            olds = [(old_manifest, "old-manifest-moved"), (target, "old-artifact-moved")]
            olds += [(folder / name, "old-companion-moved") for name in companions] + [(path, "old-companion-moved") for path in stale]
            for old, step in olds:
                if old.is_file() or old.is_symlink():
                    backup = old.with_name(f".{old.name}.{secrets.token_hex(4)}.old")
                    os.replace(old, backup)
                    moved.append((backup, old))
                    _step(step, target)
            for tmp, final, step in new:
                os.chmod(tmp, 0o666 & ~_UMASK)  # mkdtemp's folder is private; give the files the usual mode
                os.replace(tmp, final)
                placed.append(final)
                _step(step, target)
        except BaseException:
            for final in reversed(placed):
                with contextlib.suppress(OSError):
                    final.unlink()
            for backup, original in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(backup, original)
            raise
        for backup, _original in moved:
            with contextlib.suppress(OSError):
                backup.unlink()


def remove_artifact(target: str | os.PathLike, companions: tuple[str, ...] = ()) -> None:
    """Remove an artifact with its manifest and companion files (``target``'s siblings named in
    ``companions``, plus ``<target>.data``) as one unit: all are moved aside (the manifest first), then
    deleted; an error or Ctrl-C while moving puts them back, so the pair is whole or gone."""
    target = Path(target)
    paths = [manifest_path(target), target] + [target.with_name(name) for name in companions]
    paths += [target.with_name(target.name + suffix) for suffix in COMPANION_SUFFIXES]
    moved: list[tuple[Path, Path]] = []
    with _interrupts_held():
        try:
            for path in paths:
                if path.exists() or path.is_symlink():
                    backup = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
                    os.replace(path, backup)
                    moved.append((backup, path))
                    _step("removed", target)
        except BaseException:
            for backup, original in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(backup, original)
            raise
        for backup, _original in moved:
            if backup.is_dir() and not backup.is_symlink():
                shutil.rmtree(backup, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    backup.unlink()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, then deliver it: a commit is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    except (ValueError, OSError):  # not the main interpreter / no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_bytes_atomic(target, _json_text(obj).encode())


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def manifest_path(artifact: str | os.PathLike) -> Path:
    """The manifest beside an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` for an input or output file; the path is absolute, so a
    manifest still leads to its inputs when read from another working directory."""
    path = Path(path).absolute()
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def matches_record(path: str | os.PathLike, record: Any) -> bool:
    """True when ``path`` is a file whose size and sha256 are those ``record`` (a :func:`file_record`) holds."""
    path = Path(path)
    if not isinstance(record, dict) or not record.get("sha256") or not path.is_file():
        return False
    if isinstance(record.get("bytes"), int) and path.stat().st_size != record["bytes"]:
        return False  # cheaper than hashing, and a truncated file is caught here
    return sha256_file(path) == record["sha256"]


def verify_record(path: str | os.PathLike, record: Any, what: str, remedy: str) -> Path:
    """``path`` if it is the file ``record`` describes, else a one-line error naming it and ``remedy``."""
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"{what} {path} is gone; {remedy}")
    if not matches_record(path, record):
        raise DeployResError(f"{what} {path} has changed since its manifest recorded it (sha256 differs); {remedy}")
    return path


def _manifest_record(artifact: Path, stage: str, body: dict[str, Any], name_as: Optional[Path] = None) -> dict[str, Any]:
    """The manifest of the file at ``artifact``, naming it ``name_as`` (its final place) when given."""
    record = file_record(artifact)
    if name_as is not None:
        record["path"] = str(Path(name_as).absolute())
    parent = body.get("parent") or body.get("source") or (body.get("inputs") or {}).get("onnx")
    return {"schema_version": SCHEMA_VERSION, "stage": stage, "artifact": record, "versions": library_versions(),
            **({"parent": parent} if isinstance(parent, dict) else {}), **body}
