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
from deploy_res.profiling.runners import _close, _first_line, _load, _load_engine, _load_torch, _unique

TORCH_LABELS = {"eager": "torch eager", "compile": "torch.compile"}


def profile(artifacts: Sequence[str | Path], batches: Sequence[int] = (1, 8), warmup_s: float = 1.0, duration_s: float = 5.0,
            iterations: Optional[int] = None, threads: Optional[int] = None, torch_modes: Sequence[str] = (),
            validation_results: Optional[Iterable[Mapping[str, Any]]] = None, output_dir: Optional[str | Path] = None,
            layer_iterations: int = 10, write: bool = True, quiet: bool = True, console=None,
            progress: Optional[Callable[[str, float], None]] = None, server: Optional[str | Path] = None,
            server_models: Sequence[str] = (), concurrency: Sequence[int] = (1, 2, 4, 8), server_duration_s: float = 5.0,
            protocol: str = "http", backend: Optional[str] = None) -> dict[str, Any]:
    """Profile ``artifacts`` (paths to ONNX files, ONNX Runtime engines, TensorRT plans) and write the reports.

    ``torch_modes``: any of ``"eager"``, ``"compile"``: the PyTorch original named in
    the first artifact's manifest joins the comparison, after the artifacts.
    ``validation_results``: dicts from ``deployres validate --json`` (``artifact``,
    ``precision``, ``metrics.top1_agreement``...), matched to artifacts by path or
    file name; entries that match nothing are ignored. ``layer_iterations``: profiled
    runs per batch size for the layer breakdown (0 skips it). ``write``: write
    ``profile.json``, ``profile.md`` and ``profile.html`` into ``output_dir``. A rich
    progress bar is shown on ``console`` unless ``quiet``; ``progress(phase, fraction)``
    is called as the run goes, for callers with their own display.
    ``server``: a model repository folder or ``HOST:PORT`` to profile served
    (:func:`deploy_res.profiling.served.profile_server`) with ``server_models`` (default: all),
    ``concurrency`` levels, ``server_duration_s`` seconds per level and ``protocol``
    (``http`` or ``grpc``); the section is ``served`` (with ``error`` when the server could not
    be measured). ``backend`` (``onnxruntime`` or ``openvino``) runs plain ONNX artifacts on that
    backend instead of ONNX Runtime; engines always run on their own.

    Returns the report (see :mod:`deploy_res.reports.schema` for its schema), with
    ``report_paths`` added when written.
    """
    from deploy_res.core.files import ensure_output_dir
    from deploy_res.core.manifest import read_manifest

    artifacts = [Path(a) for a in artifacts]
    if not artifacts and server is None:
        raise DeployResError("profile needs at least one artifact (or a server)")
    if server is not None:
        from deploy_res.profiling.served import check_server

        check_server(server, concurrency, server_duration_s, protocol)  # a wrong --server fails before anything is measured
    batches = tuple(dict.fromkeys(int(b) for b in batches))
    if not batches or min(batches) < 1:
        raise DeployResError(f"batch sizes must be positive integers, got {batches}")
    if iterations is not None and iterations < 1:
        raise DeployResError("iterations must be at least 1")
    unknown = [m for m in torch_modes if m not in TORCH_LABELS]
    if unknown:
        raise DeployResError(f"unknown torch mode {unknown[0]!r}; choose from {', '.join(TORCH_LABELS)}")
    if output_dir:
        out = Path(output_dir)
    elif artifacts:
        out = artifacts[0].resolve().parent / "report"
    else:  # a server only: beside its repository, or here for HOST:PORT
        out = Path(server).resolve().parent / "report" if Path(server).is_dir() else Path("report")
    if write:
        ensure_output_dir(out)

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
                display.phase(f"loading {entry.label}")
                _load(entry, lambda p=path: _load_engine(p, threads, backend), batches)
            first_manifest = manifests[entries[0].label] if entries else None
            for mode in torch_modes:
                entry = Entry(label=TORCH_LABELS[mode], kind="torch", info={"mode": mode})
                manifests[entry.label] = first_manifest
                entries.append(entry)
                display.phase(f"loading {entry.label}" + (" (compiling)" if mode == "compile" else ""))
                _load(entry, lambda m=mode: _load_torch(first_manifest, m, threads), batches)
            display.phase("measuring")
            if entries:
                interleaved(entries, batches, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations,
                            on_progress=lambda batch, fraction: display.advance(batches.index(batch) + fraction, f"batch {batch}"))
            for entry in entries:
                _close(entry)
            if layer_iterations > 0:
                for entry in entries:
                    if entry.samples:
                        display.phase(f"per-layer profile of {entry.label}")
                        _profile_layers(entry, batches, layer_iterations, threads, out if write else None)
            if server is not None:
                served = _served(server, server_models, concurrency, server_duration_s, protocol, warmup_s, display)
                status = "interrupted" if served["status"] == "interrupted" else status
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        for entry in entries:
            _close(entry)
    if server is not None and served is None:  # Ctrl-C before the server's turn
        served = {"status": "interrupted", "error": "interrupted before the server was measured", "models": []}

    report = build_report(entries, manifests, batches=batches, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations,
                          threads=threads, torch_modes=tuple(torch_modes), layer_iterations=layer_iterations, status=status,
                          validation_results=validation_results, seconds=time.time() - started)
    if served is not None:
        report["served"] = served
    if write:
        from deploy_res.reports import write_reports

        report["report_paths"] = {k: str(v) for k, v in write_reports(report, out).items()}
    return report


def _served(server, models, concurrency, seconds, protocol, warmup_s, display) -> dict[str, Any]:
    """The served section; a server that cannot be measured is recorded with its one-line reason, not raised."""
    from deploy_res.profiling.served import profile_server

    try:
        return profile_server(server, models=models, levels=concurrency, seconds=seconds, protocol=protocol,
                              warmup_s=warmup_s, phase=display.phase)
    except DeployResError as exc:
        return {"status": "complete", "error": _first_line(exc), "server": {"repository": str(server) if Path(server).is_dir() else None,
                                                                           "url": None if Path(server).is_dir() else str(server)},
                "models": []}
