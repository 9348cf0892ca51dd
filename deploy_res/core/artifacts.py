"""Artifacts on disk: atomic writes, hashes, and the JSON manifest beside each file.

Every pipeline stage reads an artifact and writes one, with a manifest
``<artifact>.json`` beside it that records what went in (path, sha256), the
settings, the library versions and the numerical check the stage ran.

Files are written atomically: into a temporary file in the destination folder,
then renamed over the target, so an error or Ctrl-C never leaves a
half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from deploy_res.core.errors import DeployResError

MANIFEST_SUFFIX = ".json"
SCHEMA_VERSION = 1

_UMASK = os.umask(0)
os.umask(_UMASK)
_VERSIONED_PACKAGES = ("deployres", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "numpy", "tensorrt")


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


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed
    and ``target`` is left as it was.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


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


def write_manifest(artifact: str | os.PathLike, stage: str, body: dict[str, Any]) -> Path:
    """Write the manifest of ``artifact`` for pipeline ``stage``; return its path.

    The manifest always holds the schema version, the stage, the artifact's own
    file record and the library versions; ``body`` adds the stage's inputs,
    settings and checks.
    """
    record = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "artifact": file_record(artifact),
        "versions": library_versions(),
        **body,
    }
    path = manifest_path(artifact)
    write_json_atomic(path, record)
    return path


def read_manifest(artifact: str | os.PathLike, required: bool = False) -> dict[str, Any] | None:
    """Read the manifest beside ``artifact``; ``None`` if absent (an error if ``required``)."""
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise DeployResError(f"no manifest {path.name} beside {artifact}; export the model with `deployres export` or pass the options it would hold")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployResError(f"manifest {path} is unreadable ({exc}); re-run the stage that wrote it") from None


LINEAGE_KEYS = ("model", "input", "output", "batch_range", "preprocessing")
"""Manifest fields every later stage carries forward, so any artifact leads back to its PyTorch original."""


def lineage(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of ``manifest`` that a stage's output inherits (empty when there is none)."""
    return {key: manifest[key] for key in LINEAGE_KEYS if manifest and key in manifest}
