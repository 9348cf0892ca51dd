"""``profile``: latency, throughput, per-layer time, FLOPs and memory of engines, compared in one run.

Like trtexec, perf_analyzer and OpenVINO's benchmark_app, but several
artifacts at once: every artifact (and optionally the PyTorch original, the
``torch`` pseudo-artifact) is loaded, run once per batch size (first-run
cost, torch.compile's compilation), warmed up, then timed interleaved
(A, B, C, A, B, C, ...) so that noise hits all alike. Each artifact's ratio is
to the reference: the first artifact that was measured. After timing, each
ONNX Runtime artifact is run again in a separate, profiled session (the
profiler's own overhead never touches the timed runs) for the per-layer
breakdown; TensorRT plans through an IProfiler.

An artifact that cannot load here (a TensorRT plan without a GPU) is kept in
the report as not measured, with the reason. Ctrl-C during the run ends it
early: the report of what was measured is still written, with status
``interrupted``.

``server`` adds a served-model profile (:mod:`deploy_res.profiling.served`):
a model repository started on the bundled ``tritonserver`` (loopback, stopped
by its PID), or ``HOST:PORT`` of a running Triton, measured under each
concurrency level after the artifacts, into the report's ``served`` section.
With a server, the artifacts may be none.

Defaults: batches (1, 8); warmup 1 s and duration 5 s per batch size (all
artifacts together); ``iterations`` replaces the duration with a fixed number
of rounds; threads: the runtime's default (ONNX Runtime: one per physical
core; torch: its own); 10 profiled runs per batch size for the layer
breakdown; reports in ``<first artifact's folder>/report/``.

The rooms: :mod:`.run` (the run, :func:`profile`), :mod:`.runners` (loading
artifacts and first runs), :mod:`.measure` (interleaved timing, memory,
environment), :mod:`.layer_runs` and :mod:`.layers` (per-layer runs and their
parsing), :mod:`.served` (the served section), :mod:`.report` (the report
dict, :func:`build_report`), :mod:`.progress` (the progress bar).
"""

from deploy_res.profiling.report import SCHEMA_NAME, SCHEMA_VERSION, build_report, read_validation_files
from deploy_res.profiling.run import profile
from deploy_res.profiling.settings import ProfileSettings, ServedSettings

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "ProfileSettings", "ServedSettings", "build_report", "profile", "read_validation_files"]
