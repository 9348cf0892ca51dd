"""The JSON report (``profile.json``): its schema, a writer and a small validator.

``schema`` = ``"deployres.profile"``, ``schema_version`` = 1. Within a major
version fields are only added, never renamed or removed. Times are in
milliseconds, throughput in samples per second, memory in MiB (2^20 bytes).

==========================================  ==========================================================
field                                       meaning
==========================================  ==========================================================
``schema``, ``schema_version``              ``"deployres.profile"``, ``1``
``created``                                 ISO 8601 UTC time the report was made
``status``                                  ``"complete"`` or ``"interrupted"`` (Ctrl-C: what was measured)
``seconds``                                 wall time of the whole profile run
``settings``                                ``batches``, ``warmup_s``, ``duration_s`` (null with ``iterations``),
                                            ``iterations``, ``min_iterations``, ``threads`` (null = runtime default),
                                            ``torch_modes``, ``layer_iterations``, ``order``, ``settle_s``, ``block_s``, ``timer``
``environment``                             ``cpu`` {model, machine, isa, logical/physical/usable_cores},
                                            ``gpu`` {name, count} or null, ``os``, ``versions`` {library: version},
                                            ``threads`` {requested, onnxruntime_intra_op, torch, OMP_NUM_THREADS}
``model``                                   ``source`` (zoo name or module:factory), ``input``, ``preprocessing``
                                            of the first artifact's manifest
``reference``                               label of the artifact ratios are relative to (the first measured)
``process_peak_rss_mb``                     the profiling process's resident high-water mark
``artifacts[]``                             one per artifact, in command-line order, then the torch entries:
``  .label``, ``.kind``                     file name (or ``torch eager`` / ``torch.compile``); ``artifact`` | ``torch``
``  .path``, ``.backend``, ``.device``      artifact path (null for torch); ``onnxruntime`` | ``tensorrt`` | ``torch``
``  .precision``, ``.model``                ``fp32`` | ``fp16`` | ``int8``; the model source its manifest names
``  .measured``, ``.error``                 false with ``error`` = the reason when it could not load or run here
``  .notes``, ``.skipped_batches``          runner notes; {batch: reason} for batch sizes it could not run
``  .load_seconds``                         time to load the engine (or build/compile the torch model)
``  .memory``                               ``rss_before_mb``, ``load_peak_rss_mb`` (high-water mark while it loaded
                                            and first ran), ``rss_after_load_mb``, ``peak_is_per_artifact``
``  .flops_per_sample``, ``.complexity``    2 x MACs of Conv/Linear for one sample at the manifest's input size;
                                            ``complexity`` {macs, flops, parameters, input_size, source} or {error}
``  .batches[]``                            one per measured batch size: ``batch``, ``iterations``, ``mean_ms``,
                                            ``std_ms``, ``min_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``,
                                            ``max_ms``, ``throughput`` (samples/s), ``gflops_per_s``,
                                            ``first_run_ms``, ``speedup_p50`` (reference p50 / this p50),
                                            ``throughput_ratio`` (this / reference), ``samples_ms`` (every timing)
``  .layers``                               null, or ``source``, ``note``, ``trace`` (raw profiler JSON),
                                            ``batches[]``: ``batch``, ``runs``, ``layers``, ``total_ms``,
                                            ``by_op_type[]`` {op_type, ms, share}, ``by_stage[]`` {stage, ms, share}
                                            (stem, stage1-4, head, other), ``top_layers[]`` {name, module (the
                                            PyTorch module path, when only metadata has it), op_type, stage,
                                            ms, share}; ms are means per run
``  .layers_missing``                       why there is no layer breakdown
``  .validation``                           null, or {precision, metrics, top1_agreement, passed} from the
                                            validation results matched to this artifact
``validation``                              the validation results as given
``served``                                  only with ``deployres profile --server``: models on a Triton
                                            server under load (:mod:`deploy_res.profiling.served`):
``  .status``, ``.error``                   ``complete`` | ``interrupted``; why the server could not be
                                            measured (null when it was)
``  .tool``                                 the load generator (``tritonclient closed loop ...``)
``  .server``                               ``mode``, ``repository`` (started here) or null, ``url``,
                                            ``protocol`` (http | grpc), ``name``, ``version``,
                                            ``ready_seconds``, ``pid``, ``exit_code`` (after the stop by PID)
``  .settings``                             ``concurrency`` (levels), ``seconds_per_level``, ``warmup_s``,
                                            ``request_batch`` (samples per request), ``loop``
``  .models[]``                             ``name``, ``measured``, ``error``, ``backend``, ``max_batch_size``,
                                            ``dynamic_batching``, ``max_queue_delay_us``, ``instances``,
                                            ``instance_kind``, ``inputs`` {name: {shape, dtype}}, ``engine``
                                            (from ``deployres.lineage.json``: path, backend, precision,
                                            sha256, served_as) or null, ``request_batch``,
``  .models[].levels[]``                    one per concurrency: ``concurrency``, ``requests``, ``errors``,
                                            ``first_error``, ``seconds``, ``requests_per_s``, ``throughput``
                                            (samples/s, wall clock), ``iterations``, ``mean_ms``, ``std_ms``,
                                            ``min_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``,
                                            ``max_ms`` (null when no request was answered), ``server``
                                            {``inferences``, ``executions``, ``samples_per_execution``
                                            (average batch the server ran), ``batch_sizes[]``
                                            {batch_size, executions}} from Triton's statistics
==========================================  ==========================================================

:data:`SCHEMA` states the same as JSON Schema (draft 2020-12); :func:`validate`
checks a report against it (the subset of JSON Schema it uses: ``type``,
``properties``, ``required``, ``items``, ``enum``, ``const``, ``minimum``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_SHARES = lambda key: {"type": "array", "items": {"type": "object", "required": [key, "ms", "share"],  # noqa: E731
                                                  "properties": {key: {"type": "string"}, "ms": _NUM, "share": _NUM}}}

BATCH_SCHEMA = {
    "type": "object",
    "required": ["batch", "iterations", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                 "throughput", "gflops_per_s", "speedup_p50", "throughput_ratio", "samples_ms"],
    "properties": {
        "batch": {"type": "integer", "minimum": 1}, "iterations": {"type": "integer", "minimum": 1},
        **{k: _NUM for k in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput")},
        "gflops_per_s": _NUM_OR_NULL, "first_run_ms": _NUM_OR_NULL, "speedup_p50": _NUM_OR_NULL, "throughput_ratio": _NUM_OR_NULL,
        "samples_ms": {"type": "array", "items": _NUM},
    },
}

LAYERS_SCHEMA = {
    "type": ["object", "null"],
    "required": ["source", "note", "batches"],
    "properties": {
        "source": {"type": "string"}, "note": {"type": "string"}, "trace": _STR_OR_NULL,
        "batches": {"type": "array", "items": {
            "type": "object", "required": ["batch", "runs", "total_ms", "by_op_type", "by_stage", "top_layers"],
            "properties": {
                "batch": {"type": "integer"}, "runs": {"type": "integer"}, "layers": {"type": "integer"}, "total_ms": _NUM,
                "by_op_type": _SHARES("op_type"),
                "by_stage": {"type": "array", "items": {"type": "object", "required": ["stage", "ms", "share"], "properties": {
                    "stage": {"enum": ["stem", "stage1", "stage2", "stage3", "stage4", "head", "other"]}, "ms": _NUM, "share": _NUM}}},
                "top_layers": {"type": "array", "items": {"type": "object", "required": ["name", "op_type", "stage", "ms", "share"],
                                                          "properties": {"name": {"type": "string"}, "op_type": {"type": "string"},
                                                                         "stage": {"type": "string"}, "ms": _NUM, "share": _NUM}}},
            }}},
    },
}

ARTIFACT_SCHEMA = {
    "type": "object",
    "required": ["label", "kind", "path", "backend", "precision", "measured", "error", "batches", "layers", "validation",
                 "flops_per_sample", "memory"],
    "properties": {
        "label": {"type": "string"}, "kind": {"enum": ["artifact", "torch"]}, "path": _STR_OR_NULL,
        "backend": _STR_OR_NULL, "device": _STR_OR_NULL, "precision": {"type": "string"}, "model": _STR_OR_NULL,
        "measured": {"type": "boolean"}, "error": _STR_OR_NULL,
        "notes": {"type": "array", "items": {"type": "string"}}, "skipped_batches": {"type": "object"},
        "load_seconds": _NUM_OR_NULL,
        "memory": {"type": ["object", "null"], "properties": {"rss_before_mb": _NUM_OR_NULL, "load_peak_rss_mb": _NUM_OR_NULL,
                                                              "rss_after_load_mb": _NUM_OR_NULL, "peak_is_per_artifact": {"type": "boolean"}}},
        "flops_per_sample": {"type": ["integer", "null"]}, "complexity": {"type": "object"},
        "batches": {"type": "array", "items": BATCH_SCHEMA},
        "layers": LAYERS_SCHEMA, "layers_missing": _STR_OR_NULL,
        "validation": {"type": ["object", "null"], "properties": {"top1_agreement": _NUM_OR_NULL, "metrics": {"type": "object"}}},
    },
}

SERVED_LEVEL_SCHEMA = {
    "type": "object",
    "required": ["concurrency", "requests", "errors", "seconds", "requests_per_s", "throughput", "p50_ms", "p99_ms", "server"],
    "properties": {
        "concurrency": {"type": "integer", "minimum": 1}, "requests": {"type": "integer", "minimum": 0},
        "errors": {"type": "integer", "minimum": 0}, "first_error": _STR_OR_NULL, "seconds": _NUM,
        "requests_per_s": _NUM, "throughput": _NUM, "iterations": {"type": ["integer", "null"]},
        **{k: _NUM_OR_NULL for k in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")},
        "server": {"type": "object", "required": ["inferences", "executions", "samples_per_execution", "batch_sizes"], "properties": {
            "inferences": {"type": "integer"}, "executions": {"type": "integer"}, "samples_per_execution": _NUM_OR_NULL,
            "batch_sizes": {"type": "array", "items": {"type": "object", "required": ["batch_size", "executions"], "properties": {
                "batch_size": {"type": "integer", "minimum": 1}, "executions": {"type": "integer", "minimum": 1}}}}}},
    },
}

SERVED_SCHEMA = {
    "type": "object",
    "required": ["status", "models"],
    "properties": {
        "status": {"enum": ["complete", "interrupted"]}, "error": _STR_OR_NULL, "tool": {"type": "string"},
        "server": {"type": "object", "properties": {"repository": _STR_OR_NULL, "url": _STR_OR_NULL,
                                                    "protocol": {"enum": ["http", "grpc"]}, "version": _STR_OR_NULL}},
        "settings": {"type": "object", "required": ["concurrency", "seconds_per_level", "request_batch"], "properties": {
            "concurrency": {"type": "array", "items": {"type": "integer", "minimum": 1}}, "seconds_per_level": _NUM,
            "warmup_s": _NUM, "request_batch": {"type": "integer", "minimum": 1}}},
        "models": {"type": "array", "items": {"type": "object", "required": ["name", "measured", "error", "levels"], "properties": {
            "name": {"type": "string"}, "measured": {"type": "boolean"}, "error": _STR_OR_NULL, "backend": _STR_OR_NULL,
            "max_batch_size": {"type": "integer", "minimum": 0}, "max_queue_delay_us": {"type": ["integer", "null"]},
            "instances": {"type": ["integer", "null"]}, "engine": {"type": ["object", "null"]},
            "levels": {"type": "array", "items": SERVED_LEVEL_SCHEMA}}}},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://deployres.invalid/schemas/profile-1.json",
    "title": "deployres profile report",
    "type": "object",
    "required": ["schema", "schema_version", "created", "status", "settings", "environment", "model", "reference", "artifacts", "validation"],
    "properties": {
        "schema": {"const": "deployres.profile"},
        "schema_version": {"const": 1},
        "created": {"type": "string"},
        "status": {"enum": ["complete", "interrupted"]},
        "seconds": _NUM,
        "settings": {"type": "object", "required": ["batches", "warmup_s", "duration_s", "iterations", "threads"], "properties": {
            "batches": {"type": "array", "items": {"type": "integer", "minimum": 1}}, "warmup_s": _NUM, "duration_s": _NUM_OR_NULL,
            "iterations": {"type": ["integer", "null"]}, "threads": {"type": ["integer", "null"]},
            "torch_modes": {"type": "array", "items": {"enum": ["eager", "compile"]}}, "layer_iterations": {"type": "integer"}}},
        "environment": {"type": "object", "required": ["cpu", "gpu", "versions", "threads"], "properties": {
            "cpu": {"type": "object", "required": ["model", "logical_cores"]}, "gpu": {"type": ["object", "null"]},
            "versions": {"type": "object"}, "threads": {"type": "object"}}},
        "model": {"type": "object", "properties": {"source": _STR_OR_NULL}},
        "reference": _STR_OR_NULL,
        "process_peak_rss_mb": _NUM,
        "artifacts": {"type": "array", "items": ARTIFACT_SCHEMA},
        "validation": {"type": "array"},
        "served": SERVED_SCHEMA,
        "report_paths": {"type": "object"},
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, Mapping), "array": lambda v: isinstance(v, list), "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
}


def validate(instance: Any, schema: Mapping[str, Any] = SCHEMA, path: str = "$") -> list[str]:
    """Every place ``instance`` breaks ``schema``, as ``"<json path>: <problem>"`` (empty when it conforms)."""
    errors: list[str] = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not one of {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return errors + [f"{path}: expected {'/'.join(types)}, got {type(instance).__name__} {str(instance)[:40]}"]
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
    if isinstance(instance, Mapping):
        errors += [f"{path}: missing required {key!r}" for key in schema.get("required", []) if key not in instance]
        for key, sub in schema.get("properties", {}).items():
            if key in instance:
                errors += validate(instance[key], sub, f"{path}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    return errors


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON, atomically."""
    from deploy_res.core.files import write_json_atomic

    write_json_atomic(path, _finite(report))
    return Path(path)


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
