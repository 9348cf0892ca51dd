"""Which file is which: sha256 hashes, the file records manifests hold (path, sha256, bytes), checking a
file against its record, and the library versions that shaped an artifact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from deploy_res.core.errors import DeployResError

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
