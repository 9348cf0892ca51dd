"""The resumable state of a search (``DIR/tune.state.json``) and the content-verified record of engines built.

The state holds the settings hash, each engine's verdict and every measured point (keyed ``<engine>|<Serving.key>``),
and is rewritten atomically after every measured point, so an interrupted search loses at most the point in flight.
A rerun with the same settings reads it and measures only what is missing; other settings start over. What counts
as "the same settings" is :func:`settings_hash`: everything that changes a measurement or a verdict, not the time
cap (``--budget-minutes``: a rerun with more time continues) nor where ``--triton`` writes.

Engines are reused across searches, whatever the settings, through ``DIR/engines/tune.builds.json``: an engine is
reused only when the file's sha256 is the one recorded when it was built, from an input ONNX of the same sha256 with
the same build settings (calibration data hashed too).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from deploy_res.core.files import json_text, write_json_atomic
from deploy_res.core.records import sha256_file

STATE_FILE = "tune.state.json"
BUILDS_FILE = "tune.builds.json"
STATE_VERSION = 1


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings that decide the search's measurements and verdicts (see the module docstring)."""
    kept = {k: v for k, v in settings.items() if k not in ("budget_minutes", "triton")}
    return hashlib.sha256(json_text({"version": STATE_VERSION, **kept}).encode()).hexdigest()


def fresh_state(digest: str) -> dict[str, Any]:
    return {"version": STATE_VERSION, "settings_hash": digest, "export": None, "engines": {}, "points": {}, "finals": {},
            "measured": 0, "runs": 0}


def load_state(folder: Path, digest: str) -> tuple[dict[str, Any], bool]:
    """``(state, resumed)``: the state in ``folder`` when it was written for the same settings, else a fresh one."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return fresh_state(digest), False
    if not isinstance(state, dict) or state.get("settings_hash") != digest or state.get("version") != STATE_VERSION:
        return fresh_state(digest), False
    return state, True


def save_state(folder: Path, state: Mapping[str, Any]) -> None:
    write_json_atomic(folder / STATE_FILE, state)


def data_fingerprint(path: Optional[str | os.PathLike]) -> Optional[str]:
    """sha256 of a data file, or of a folder's file names, sizes and modification times (None for no data)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = item.stat()
        digest.update(f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def reusable_engine(folder: Path, engine: Path, key: Mapping[str, Any]) -> bool:
    """Whether ``engine`` was built by a search from the same input and settings (``key``) and still holds those bytes."""
    from deploy_res.core.manifest import read_manifest

    record = _builds(folder).get(engine.name)
    if not record or record.get("key") != dict(key) or not engine.is_file():
        return False
    manifest = read_manifest(engine)
    if manifest is None or (manifest.get("artifact") or {}).get("sha256") != record.get("sha256"):
        return False
    return sha256_file(engine) == record.get("sha256")


def record_build(folder: Path, engine: Path, key: Mapping[str, Any]) -> None:
    builds = _builds(folder)
    builds[engine.name] = {"key": dict(key), "sha256": sha256_file(engine)}
    write_json_atomic(folder / BUILDS_FILE, builds)


def _builds(folder: Path) -> dict[str, Any]:
    try:
        builds = json.loads((folder / BUILDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return builds if isinstance(builds, dict) else {}
