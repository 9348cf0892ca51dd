"""The profile run: check the settings, load every artifact, time them interleaved, profile their layers,
measure the server, and build and write the report (the steps are described in :mod:`deploy_res.profiling`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from deploy_res.core.errors import DeployResError
from deploy_res.profiling.layer_runs import _profile_layers
from deploy_res.profiling.measure import Entry, interleaved
from deploy_res.profiling.progress import _Display
from deploy_res.profiling.report import build_report
from deploy_res.profiling.settings import ProfileSettings, ServedSettings
from deploy_res.profiling.runners import _close, _first_line, _load, _load_engine, _load_torch, _unique

TORCH_LABELS = {"eager": "torch eager", "compile": "torch.compile"}


def profile(artifacts: Sequence[str | Path], settings: ProfileSettings = ProfileSettings(),
            validation_results: Optional[Iterable[Mapping[str, Any]]] = None, output_dir: Optional[str | Path] = None,
            write: bool = True, quiet: bool = True, console=None, progress: Optional[Callable[[str, float], None]] = None) -> dict[str, Any]:
    """Profile ``artifacts`` (ONNX files, ONNX Runtime and OpenVINO engines, TensorRT plans) as ``settings`` say; write the reports.

    ``settings`` (:class:`~deploy_res.profiling.settings.ProfileSettings`): the batch sizes, timing, threads,
    the PyTorch original (joins after the artifacts), the per-layer breakdown and the served section
    (:func:`deploy_res.profiling.served.profile_server`; ``served`` with ``error`` when the server could not
    be measured). ``validation_results``: dicts from ``deployres validate --json`` (``artifact``,
    ``precision``, ``metrics.top1_agreement``...), matched to artifacts by path or file name; entries that
    match nothing are ignored. ``write``: write ``profile.json``, ``profile.md`` and ``profile.html`` into
    ``output_dir`` (default: ``report/`` beside the first artifact). A rich progress bar is shown on
    ``console`` unless ``quiet``; ``progress(phase, fraction)`` is called as the run goes, for callers with
    their own display.

    Returns the report (see :mod:`deploy_res.reports.schema` for its schema), with
    ``report_paths`` added when written.
    """
    from deploy_res.core.files import check_output_dir, ensure_output_dir
    from deploy_res.core.manifest import read_manifest

    artifacts = [Path(a) for a in artifacts]
    served_settings, batches, threads = settings.served, settings.batches, settings.threads
    server = served_settings.server if served_settings else None
    if not artifacts and server is None:
        raise DeployResError("profile needs at least one artifact (or a server)")
    if served_settings is not None:
        from deploy_res.profiling.served import check_server

        check_server(server, served_settings.concurrency, served_settings.duration_s, served_settings.protocol)  # fails before anything is measured
    if output_dir:
        out = Path(output_dir)
    elif artifacts:
        out = artifacts[0].resolve().parent / "report"
    else:  # a server only: beside its repository, or here for HOST:PORT
        out = Path(server).resolve().parent / "report" if Path(server).is_dir() else Path("report")
    if write:
        check_output_dir(out)  # created only when there is a report to write
    refused = _guard_batches(artifacts, batches, settings, len(artifacts) + len(settings.torch_modes))

    display = _Display(console, quiet, progress, len(batches))
    entries: list[Entry] = []
    manifests: dict[str, Optional[Mapping[str, Any]]] = {}
    status = "complete"
    served: Optional[dict[str, Any]] = None
    started = time.time()
    try:
        with display:
            for path in artifacts:
                manifest = read_manifest(path) if path.is_file() else None
                entry = Entry(label=_unique(path.name, entries), kind="artifact", path=str(path))
                manifests[entry.label] = manifest
                entries.append(entry)
                runnable = [b for b in batches if b not in refused.get(path, {})]
                if not runnable:  # every batch size is outside its range: not loaded
                    entry.error = next(iter(refused[path].values()))
                    continue
                display.phase(f"loading {entry.label}")
                _load(entry, lambda p=path: _load_engine(p, threads, settings.backend), runnable)
                entry.info.setdefault("skipped_batches", {}).update(refused.get(path, {}))
            first_manifest = manifests[entries[0].label] if entries else None
            for mode in settings.torch_modes:
                entry = Entry(label=TORCH_LABELS[mode], kind="torch", info={"mode": mode})
                manifests[entry.label] = first_manifest
                entries.append(entry)
                display.phase(f"loading {entry.label}" + (" (compiling)" if mode == "compile" else ""))
                _load(entry, lambda m=mode: _load_torch(first_manifest, m, threads), batches)
            display.phase("measuring")
            if entries:
                interleaved(entries, batches, warmup_s=settings.warmup_s, duration_s=settings.timed_s, iterations=settings.iterations,
                            on_progress=lambda batch, fraction: display.advance(batches.index(batch) + fraction, f"batch {batch}"))
            for entry in entries:
                _close(entry)
            if settings.layer_iterations > 0:
                for entry in entries:
                    if entry.samples:
                        display.phase(f"per-layer profile of {entry.label}")
                        _profile_layers(entry, batches, settings.layer_iterations, threads, out if write else None)
            if served_settings is not None:
                served = _served(served_settings, settings.warmup_s, display)
                status = "interrupted" if served["status"] == "interrupted" else status
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        for entry in entries:
            _close(entry)
    if server is not None and served is None:  # Ctrl-C before the server's turn
        served = {"status": "interrupted", "error": "interrupted before the server was measured", "models": []}

    report = build_report(entries, manifests, batches=batches, warmup_s=settings.warmup_s, duration_s=settings.timed_s, iterations=settings.iterations,
                          threads=threads, torch_modes=settings.torch_modes, layer_iterations=settings.layer_iterations, status=status,
                          validation_results=validation_results, seconds=time.time() - started)
    if served is not None:
        report["served"] = served
    if write:
        from deploy_res.reports import write_reports

        _require_measured(report, status)
        ensure_output_dir(out)
        report["report_paths"] = {k: str(v) for k, v in write_reports(report, out).items()}
    return report


def _guard_batches(artifacts: Sequence[Path], batches: Sequence[int], settings: ProfileSettings, held: int) -> dict[Path, dict[int, str]]:
    """``{artifact: {batch: why it is not run}}`` for batch sizes outside an artifact's recorded range
    (:func:`deploy_res.core.guards.outside_range`); a one-line error when the batches that remain, held by
    ``held`` runners at once, need more memory than this machine has (nothing loaded yet)."""
    from deploy_res.core.guards import check_batch, outside_range
    from deploy_res.core.manifest import read_manifest

    refused: dict[Path, dict[int, str]] = {}
    for path in artifacts:
        manifest = read_manifest(path) if path.is_file() else None
        reasons = {b: why for b in batches if (why := outside_range(b, manifest, settings.any_batch, "batch"))}
        if reasons:
            refused[path] = reasons
        runnable = [b for b in batches if b not in reasons]
        if runnable and path.is_file():  # the largest batch named on its own first: the line names the batch size typed
            check_batch(path, manifest, max(runnable), "batch", any_batch=True, copies=max(1, held))
            # the feeds of every batch size are held while the artifacts are timed together
            check_batch(path, manifest, sum(runnable), "--batches", any_batch=True, copies=max(1, held))
    return refused


def _require_measured(report: Mapping[str, Any], status: str) -> None:
    """A one-line error, before any report is written, when nothing at all was measured (an interrupted run still
    writes what it has)."""
    if status == "interrupted":
        return
    rows = report.get("artifacts") or []
    served = report.get("served")
    if any(row.get("measured") for row in rows) or (served and any(m.get("measured") for m in served.get("models") or [])):
        return
    first = next((row for row in rows if row.get("error")), None)
    if first:
        raise DeployResError(f"nothing was measured: {first['label']}: {first['error']}")
    if served:
        raise DeployResError(f"nothing was measured: {served.get('error') or 'the server has no models'}")
    raise DeployResError("nothing was measured")


def _served(served: ServedSettings, warmup_s: float, display) -> dict[str, Any]:
    """The served section; a server that cannot be measured is recorded with its one-line reason, not raised."""
    from deploy_res.profiling.served import profile_server

    server = served.server
    try:
        return profile_server(server, models=served.models, levels=served.concurrency, seconds=served.duration_s, protocol=served.protocol,
                              warmup_s=warmup_s, phase=display.phase)
    except DeployResError as exc:
        return {"status": "complete", "error": _first_line(exc), "server": {"repository": str(server) if Path(server).is_dir() else None,
                                                                           "url": None if Path(server).is_dir() else str(server)},
                "models": []}
