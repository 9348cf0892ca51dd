"""Helpers for the Triton tests (tests/serve)."""

from __future__ import annotations

import json
from pathlib import Path


def copy_engine(engine: Path, folder: Path, validation: dict | None = None) -> Path:
    """``engine`` + manifest copied into ``folder`` (manifest and validation rewritten for the copy's path)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / engine.name
    target.write_bytes(engine.read_bytes())
    manifest = json.loads(Path(str(engine) + ".json").read_text())
    manifest["artifact"]["path"] = str(target)
    Path(str(target) + ".json").write_text(json.dumps(manifest))
    result = json.loads(Path(str(engine) + ".validation.json").read_text())
    result.update(validation or {})
    Path(str(target) + ".validation.json").write_text(json.dumps(result))
    return target
