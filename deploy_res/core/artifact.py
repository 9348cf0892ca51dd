"""An artifact and its manifest written as one unit (:func:`write_artifact`), and removed as one (:func:`remove_artifact`).

Every pipeline stage reads an artifact and writes one, with a manifest
``<artifact>.json`` beside it (:mod:`deploy_res.core.manifest`). Both are
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
such a kill leaves. :func:`deploy_res.core.files.write_hook` interrupts each step in tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from deploy_res.core.errors import DeployResError
from deploy_res.core.files import WRITE_ERRNOS, interrupts_held, json_text, placed_mode, write_error, write_step
from deploy_res.core.manifest import manifest_path, manifest_record

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
        self.manifest = manifest_record(self.path, stage, body, name_as=self.target)
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
        raise write_error(target, exc) from None
    pending = PendingArtifact(target, staging / target.name)
    try:
        write_step("temp-created", target)
        yield pending
        if not pending.path.is_file():
            raise RuntimeError(f"write_artifact({target.name}): the stage wrote no artifact")
        write_step("artifact-written", target)
        if manifest:
            if pending.manifest is None:
                raise RuntimeError(f"write_artifact({target.name}): the stage set no manifest")
            manifest_path(pending.path).write_text(json_text(pending.manifest))
            write_step("manifest-written", target)
        _commit(target, staging, manifest)
    except BaseException as exc:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_error(target, exc) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_step("committed", target)


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
    with interrupts_held():
        try:
            # The old manifest first: from here on no manifest describes a file it is not beside.
            olds = [(old_manifest, "old-manifest-moved"), (target, "old-artifact-moved")]
            olds += [(folder / name, "old-companion-moved") for name in companions] + [(path, "old-companion-moved") for path in stale]
            for old, step in olds:
                if old.is_file() or old.is_symlink():
                    backup = old.with_name(f".{old.name}.{secrets.token_hex(4)}.old")
                    os.replace(old, backup)
                    moved.append((backup, old))
                    write_step(step, target)
            for tmp, final, step in new:
                os.chmod(tmp, placed_mode())  # mkdtemp's folder is private; give the files the usual mode
                os.replace(tmp, final)
                placed.append(final)
                write_step(step, target)
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
    with interrupts_held():
        try:
            for path in paths:
                if path.exists() or path.is_symlink():
                    backup = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
                    os.replace(path, backup)
                    moved.append((backup, path))
                    write_step("removed", target)
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
