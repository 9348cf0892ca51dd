"""``--backend auto`` on a CPU: build with every candidate backend, time the engines side by side, keep the faster."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from deploy_res.core.artifact import remove_artifact
from deploy_res.core.manifest import read_manifest, write_manifest
from deploy_res.engines import choose, companions


def build_measured(candidates: Sequence[str], build: Callable[..., Any], settings, status: Callable) -> Any:
    """Build with each of ``candidates`` (``build(settings)`` returns a ``BuildEngineResult``), keep the faster engine.

    The winner's manifest records every figure (``auto``); the slower engine and its companions are removed.
    """
    built = {name: build(replace(settings, backend=name)) for name in candidates}
    batch_range = (read_manifest(built[candidates[0]].engine) or {}).get("batch_range") or {}
    low, high = int(batch_range.get("min") or 1), int(batch_range.get("max") or choose.BATCHES[-1])
    batches = tuple(sorted({low, max(low, min(choose.BATCHES[-1], high))}))
    with status(f"timing {' and '.join(candidates)} side by side"):
        speeds = choose.measure({name: result.engine for name, result in built.items()}, batches, threads=settings.threads)
    winner, batch = choose.pick(speeds)
    chosen = built[winner]
    manifest = read_manifest(chosen.engine) or {}
    body = {k: v for k, v in manifest.items() if k not in ("schema_version", "stage", "artifact", "versions")}
    body["auto"] = choose.record(speeds, winner, batch, settings.threads)
    write_manifest(chosen.engine, "build-engine", body)
    for name, result in built.items():
        if name != winner and result.engine is not None:
            _remove_engine(result.engine, name)
    figures = ", ".join(f"{name} {speeds[name][batch]:.1f}" for name in candidates)
    chosen.notes.append(f"auto: {winner} is faster here at batch {batch} ({figures} images/s, timed side by side)")
    small = min(batches)
    fastest = max(speeds, key=lambda name: speeds[name][small])
    if small != batch and fastest != winner:
        chosen.notes.append(f"auto: at batch {small} {fastest} is faster ({', '.join(f'{n} {speeds[n][small]:.1f}' for n in candidates)} images/s); "
                            f"for batch-{small} serving build with --backend {fastest}")
    return chosen


def _remove_engine(engine: Path, backend: str) -> None:
    files, folders = companions(engine, backend)
    remove_artifact(engine, tuple(files))
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
