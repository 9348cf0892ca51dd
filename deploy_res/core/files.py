"""Files on disk, written atomically: a temporary file beside the target, renamed over it, so an error or
Ctrl-C never leaves a half-written file behind.

:func:`atomic_path` writes one file; :func:`write_hook` is the seam tests use to interrupt each write step
(:data:`WRITE_STEPS`); :func:`interrupts_held` holds Ctrl-C back while renames run. An artifact written
together with its manifest, as one unit, is :mod:`deploy_res.core.artifact`; hashes and the file records
manifests hold are :mod:`deploy_res.core.records`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from deploy_res.core.errors import DeployResError

_UMASK = os.umask(0)
os.umask(_UMASK)


def placed_mode() -> int:
    """The mode a placed file gets: what an ordinary ``open()`` would give it under this process's umask (temporary files start private)."""
    return 0o666 & ~_UMASK


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


def check_output_dir(path: str | os.PathLike) -> Path:
    """What :func:`ensure_output_dir` checks, creating nothing: ``path`` is a writable folder, or could be made one
    (its nearest existing ancestor is a writable folder); one-line error otherwise."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise DeployResError(f"output path {folder} exists and is not a folder; choose another -o/--output")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DeployResError(f"output folder {folder} is not writable; choose another -o/--output")
        return folder
    ancestor = folder.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise DeployResError(f"cannot create output folder {folder}: {ancestor} is not a writable folder; choose a writable -o/--output")
    return folder


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with output_folder(path) as folder:`` creates ``path`` (:func:`ensure_output_dir`) and, when the block
    raises, removes every folder it created, so a failed command leaves nothing behind (a folder that existed
    before stays, with what was in it)."""
    folder = Path(path)
    created = None
    probe = folder.absolute()
    while not probe.exists():
        created, probe = probe, probe.parent
    ensure_output_dir(folder)
    try:
        yield folder
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


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


def write_step(step: str, target: Path) -> None:
    """Tell the :func:`write_hook` hook, if any, that ``target``'s write reached ``step``."""
    if _write_hook is not None:
        _write_hook(step, target)


WRITE_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, name)}
"""Errors a stage's own writing into a temporary file can only mean one thing for (full disk, read-only)."""


def write_error(target: Path, exc: OSError) -> DeployResError:
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
        raise write_error(target, exc) from None
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
        write_step("temp-created", target)
        yield tmp
        write_step("temp-written", target)
        try:
            os.chmod(tmp, placed_mode())  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, target)
        except OSError as exc:
            raise write_error(target, exc) from None
        write_step("placed", target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_error(target, exc) from None
        raise


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
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
    write_bytes_atomic(target, json_text(obj).encode())


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
