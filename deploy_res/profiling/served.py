"""The served-model profile: models on a Triton server under concurrency 1, 2, 4, ..., for the report's ``served`` section.

:func:`profile_server` takes either a model repository folder (what
``deployres triton --python-backend`` writes; started on the ``tritonserver``
that nvidia-pytriton bundles, loopback only, and stopped by its PID when done,
on error and on Ctrl-C too) or ``HOST:PORT`` of a server already running (for
example NVIDIA's container with the ``onnxruntime`` or ``tensorrt`` backend),
which is measured as it is and left running.

Each model (default: every model in the server's repository index; one
without fixed input dims, such as the ``--ensemble`` preprocessing model that
takes encoded image bytes, is listed as not measured with the reason) gets
:func:`deploy_res.serve.load.load_test` once per concurrency level: that many
client threads, each sending the same seeded request (``request_batch``
samples, default 1) back to back for ``seconds``. Per level: requests/s,
samples/s, the latency summary (p50/p90/p95/p99 ms, as in-process) and, from
Triton's own statistics before and after the level, the executions the server
ran, their batch sizes and the samples per execution (what dynamic batching
merged). ``tool`` names the load generator (``perf_analyzer`` did not run
here: its wheels need glibc 2.38).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError

DEFAULT_LEVELS = (1, 2, 4, 8)
SUMMARY_KEYS = ("iterations", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
_FLOATS = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}
_INTS = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16,
         "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_}


def is_repository(server: str | Path) -> bool:
    """True when ``server`` names a folder (a model repository to start), False for ``HOST:PORT``."""
    return Path(server).is_dir()


def _url(server: str) -> str:
    url = str(server).strip()
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    url = url.rstrip("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit() or "/" in url:
        raise DeployResError(f"--server {server!r} is neither a model repository folder nor HOST:PORT of a running Triton server")
    return url


def check_server(server: str | Path, levels: Sequence[int], seconds: float, protocol: str) -> None:
    """One-line errors for a server argument, levels, duration or protocol that cannot work (nothing is started)."""
    if protocol not in ("http", "grpc"):
        raise DeployResError(f"unknown protocol {protocol!r}; use http or grpc")
    if not levels or min(int(c) for c in levels) < 1:
        raise DeployResError(f"concurrency levels must be positive integers, got {tuple(levels)}")
    from deploy_res.serve.load import MAX_CLIENTS

    if max(int(c) for c in levels) > MAX_CLIENTS:
        raise DeployResError(f"concurrency {max(levels)} is more clients than one load test starts (at most {MAX_CLIENTS}); measure fewer")
    if seconds <= 0:
        raise DeployResError("seconds per concurrency level must be positive")
    if not is_repository(server):
        _url(str(server))


def request_inputs(metadata: Mapping[str, Any], max_batch_size: int, request_batch: int = 1,
                   seed: int = 0) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """``(inputs, None)``: seeded arrays for every input of a model from its metadata; ``(None, reason)`` when it cannot be sent.

    ``metadata`` is Triton's model metadata (``inputs[]`` with ``name``, ``datatype``, ``shape``; the
    shape starts with -1 when ``max_batch_size`` > 0). Floats are standard normal, integers zeros.
    """
    if max_batch_size > 0 and request_batch > max_batch_size:
        return None, f"request batch {request_batch} > max_batch_size {max_batch_size}"
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for tensor in metadata.get("inputs") or []:
        dims = [int(d) for d in tensor.get("shape") or []]
        shape = [request_batch, *dims[1:]] if max_batch_size > 0 else dims
        kind = str(tensor.get("datatype"))
        if any(d < 0 for d in shape):
            return None, f"input {tensor.get('name')} has variable dims {dims}: the load test sends fixed-shape tensors"
        if kind in _FLOATS:
            inputs[tensor["name"]] = rng.standard_normal(shape).astype(_FLOATS[kind])
        elif kind in _INTS:
            inputs[tensor["name"]] = np.zeros(shape, dtype=_INTS[kind])
        else:
            return None, f"input {tensor.get('name')} is {kind}: the load test sends numeric tensors"
    if not inputs:
        return None, "the model has no inputs"
    return inputs, None


def _client(url: str, protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise DeployResError("a served-model profile needs tritonclient (pip install 'deployres[triton]')") from None
    return module.InferenceServerClient(url)


def _json(call, protocol: str, *args):
    return call(*args, as_json=True) if protocol == "grpc" else call(*args)


def _model_facts(client, name: str, protocol: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metadata, facts)``: the model's metadata and what its config says about serving it."""
    metadata = _json(client.get_model_metadata, protocol, name)
    config = _json(client.get_model_config, protocol, name)
    config = config.get("config", config)
    batching = config.get("dynamic_batching")
    groups = config.get("instance_group") or []
    facts = {"backend": config.get("backend") or config.get("platform") or metadata.get("platform") or None,
             "max_batch_size": int(config.get("max_batch_size") or 0),
             "dynamic_batching": batching is not None,
             "max_queue_delay_us": int((batching or {}).get("max_queue_delay_microseconds") or 0) if batching is not None else None,
             "instances": sum(int(g.get("count") or 1) for g in groups) or None,
             "instance_kind": next((g.get("kind") for g in groups if g.get("kind")), None)}
    return metadata, facts


def _engine_of(repository: Optional[Path], name: str) -> Optional[dict[str, Any]]:
    """What ``deployres.lineage.json`` beside the model says about its engine (None when there is none)."""
    if repository is None:
        return None
    import json

    try:
        lineage = json.loads((repository / name / "deployres.lineage.json").read_text())
    except (OSError, ValueError):
        return None
    engine = lineage.get("engine") or {}
    return {"path": engine.get("path"), "backend": engine.get("backend"), "precision": engine.get("precision"),
            "sha256": engine.get("sha256"), "served_as": (lineage.get("served") or {}).get("kind")}


def _level_row(level: Mapping[str, Any]) -> dict[str, Any]:
    """One load-test level as the report stores it (every summary key present; batch sizes as a list)."""
    server = level.get("server") or {}
    sizes = server.get("batch_sizes") or {}
    row = {"concurrency": int(level["concurrency"]), "requests": int(level["requests"]), "errors": int(level["errors"]),
           "first_error": level.get("first_error"), "seconds": float(level["seconds"]),
           "requests_per_s": float(level["requests_per_s"]), "throughput": float(level["throughput"])}
    row.update({key: level.get(key) for key in SUMMARY_KEYS})
    row["server"] = {"inferences": int(server.get("inferences") or 0), "executions": int(server.get("executions") or 0),
                     "samples_per_execution": server.get("samples_per_execution"),
                     "batch_sizes": [{"batch_size": int(size), "executions": int(count)} for size, count in sorted(sizes.items())]}
    return row


def _stop_uninterrupted(server) -> None:
    """Stop the server by its PID; a second Ctrl-C while it stops cannot leave it running (bounded: see TritonServer.stop)."""
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        server.stop()


def profile_server(server: str | Path, models: Sequence[str] = (), levels: Sequence[int] = DEFAULT_LEVELS, seconds: float = 5.0,
                   protocol: str = "http", warmup_s: float = 1.0, request_batch: int = 1, ready_timeout_s: float = 180.0,
                   phase: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Measure the models of ``server`` (a repository folder to start, or ``HOST:PORT``) at each concurrency in ``levels``.

    Returns the report's ``served`` section (see :mod:`deploy_res.reports.schema`). Ctrl-C ends it
    early with ``status`` ``"interrupted"`` and the levels measured so far; a server that cannot
    start, or a model named in ``models`` that the server does not have, is a :class:`DeployResError`.
    ``phase(text)`` is told what is being measured.
    """
    from deploy_res.serve.load import TOOL, load_test

    check_server(server, levels, seconds, protocol)
    levels = tuple(dict.fromkeys(int(c) for c in levels))
    say = phase or (lambda _text: None)
    repository = Path(server).absolute() if is_repository(server) else None
    url = None if repository else _url(str(server))
    _client(url or "127.0.0.1:1", protocol).close()  # tritonclient is there (one line if not) before a server starts
    section: dict[str, Any] = {
        "tool": TOOL, "status": "complete", "error": None,
        "server": {"mode": "bundled tritonserver (nvidia-pytriton), loopback" if repository else "running server",
                   "repository": str(repository) if repository else None, "url": url, "protocol": protocol,
                   "name": None, "version": None, "ready_seconds": None},
        "settings": {"concurrency": list(levels), "seconds_per_level": seconds, "warmup_s": warmup_s, "request_batch": request_batch,
                     "loop": "closed loop: each client thread sends its next request when the last one answered"},
        "models": [],
    }
    running = None
    try:
        if repository is not None:
            from deploy_res.serve.server import start_server

            say("starting tritonserver")
            started = time.perf_counter()
            running = start_server(repository, ready_timeout_s=ready_timeout_s)
            section["server"]["ready_seconds"] = round(time.perf_counter() - started, 3)
            section["server"]["pid"] = running.pid
            url = running.grpc_url if protocol == "grpc" else running.http_url
            section["server"]["url"] = url
        control = _client(url, protocol)
        try:
            meta = _json(control.get_server_metadata, protocol)
            section["server"]["name"], section["server"]["version"] = meta.get("name"), meta.get("version")
            index = _json(control.get_model_repository_index, protocol)
            index = index.get("models", []) if isinstance(index, Mapping) else index
            states = {entry["name"]: entry.get("state") or "UNKNOWN" for entry in index}
            missing = [m for m in models if m not in states]
            if missing:
                raise DeployResError(f"the server has no model {missing[0]!r}; it has {', '.join(sorted(states)) or 'none'}")
            plan = []
            for name in (list(models) or sorted(states)):
                entry = {"name": name, "measured": False, "error": None, "engine": _engine_of(repository, name), "levels": []}
                section["models"].append(entry)
                if states[name] != "READY":
                    entry["error"] = f"not ready on the server (state {states[name]})"
                    continue
                metadata, facts = _model_facts(control, name, protocol)
                entry.update(facts)
                inputs, reason = request_inputs(metadata, facts["max_batch_size"], request_batch)
                if inputs is None:
                    entry["error"] = reason
                    continue
                entry["inputs"] = {key: {"shape": list(value.shape), "dtype": str(value.dtype)} for key, value in inputs.items()}
                plan.append((entry, inputs))
        finally:
            control.close()
        for entry, inputs in plan:
            for index, level in enumerate(levels):
                say(f"serving {entry['name']}, concurrency {level}")
                result = load_test(url, entry["name"], inputs, levels=[level], seconds=seconds, protocol=protocol,
                                   warmup_s=warmup_s if index == 0 else 0.0)
                entry["request_batch"] = result["request_batch"]
                entry["levels"].append(_level_row(result["levels"][0]))
                entry["measured"] = any(row["requests"] for row in entry["levels"])
            if not entry["measured"]:
                first = next((row["first_error"] for row in entry["levels"] if row["first_error"]), None)
                entry["error"] = f"every request failed: {first}" if first else "no request was answered"
    except KeyboardInterrupt:
        section["status"] = "interrupted"
        for entry in section["models"]:
            if not entry["measured"] and not entry["error"]:
                entry["error"] = "interrupted before it was measured"
    finally:
        if running is not None:
            _stop_uninterrupted(running)
            section["server"]["exit_code"] = running.process.returncode
    return section


__all__ = ["DEFAULT_LEVELS", "check_server", "is_repository", "profile_server", "request_inputs"]
