"""``validate``: run an artifact and its reference on the same inputs and judge the difference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.artifacts import file_record, read_manifest, write_json_atomic
from deploy_res.core.errors import DeployResError
from deploy_res.models import Preprocessing
from deploy_res.validation.metrics import accuracy_block, compare
from deploy_res.validation.reference import resolve_reference
from deploy_res.validation.thresholds import UPPER_BOUNDS, evaluate, thresholds_for

RESULT_SCHEMA_VERSION = 1
DEFAULT_SAMPLES = 32
DEFAULT_BATCH = 8


def artifact_precision(artifact: Path, manifest: Mapping[str, Any]) -> str:
    """fp32 / fp16 / int8: from the manifest, else from the ONNX itself (Q/DQ nodes, FP16 weights)."""
    precision = (manifest.get("settings") or {}).get("precision")
    if precision:
        return precision
    if artifact.suffix != ".onnx":
        return "fp32"
    import onnx

    model = onnx.load(str(artifact), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def _inputs(data: Optional[str], manifest: Mapping[str, Any], samples: int, input_shape: tuple, seed: int):
    """(arrays, labels, class_names, description) from ``data`` or seeded random inputs."""
    if data is None:
        rng = np.random.default_rng(seed)
        arrays = rng.standard_normal((samples, *input_shape)).astype(np.float32)
        return arrays, None, None, {"kind": "random", "source": f"seeded standard normal (seed {seed})", "note": "no --data given: random inputs, no accuracy"}
    from deploy_res.data import load_inputs

    path = Path(data)
    pre = Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None
    labelled = path.is_dir() and any(p.is_dir() for p in path.iterdir())
    loaded = load_inputs(path, pre, count=None, labelled=labelled, input_shape=input_shape)
    arrays, labels = loaded.arrays[:samples], None if loaded.labels is None else loaded.labels[:samples]
    kind = "images" if path.is_dir() else "arrays"
    return arrays, labels, loaded.class_names, {"kind": kind, "source": str(path), "labelled": labels is not None}


def validate(
    artifact: str | Path,
    reference: Optional[str] = None,
    reference_weights: Optional[str] = None,
    data: Optional[str] = None,
    samples: int = DEFAULT_SAMPLES,
    batch: int = DEFAULT_BATCH,
    thresholds: Optional[Mapping[str, Optional[float]]] = None,
    seed: int = 0,
    output: Optional[str | Path] = None,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Compare ``artifact`` with its reference on ``samples`` inputs; return (and write) the result.

    Defaults: the PyTorch model the manifest names; 32 seeded random inputs
    when ``data`` (image folder, labelled folder, .npy/.npz) is not given;
    batches of 8; the precision's limits from :mod:`thresholds`; the JSON
    result written to ``<artifact>.validation.json``. ``per_layer`` (INT8
    artifacts) adds ``sensitivity``: the quantised layers ranked by the error
    they add (:mod:`.sensitivity`), on the same inputs.
    """
    from deploy_res.engines import backend_of, load_engine

    artifact = Path(artifact)
    if not artifact.is_file():
        raise DeployResError(f"artifact {artifact} not found")
    manifest = read_manifest(artifact) or {}
    precision = artifact_precision(artifact, manifest)
    ref = resolve_reference(manifest, reference, reference_weights)
    runner = load_engine(artifact)
    info = runner.inputs[0]
    input_shape = tuple(manifest.get("input", {}).get("shape", [None, *info.shape[1:]])[1:])
    if any(not isinstance(d, int) for d in input_shape):
        raise DeployResError(f"{artifact.name} has no fixed input size {input_shape}; give its manifest or a .npy of inputs")
    arrays, labels, class_names, inputs_desc = _inputs(data, manifest, samples, input_shape, seed)
    if tuple(arrays.shape[1:]) != input_shape:
        raise DeployResError(f"inputs have shape {tuple(arrays.shape[1:])}; {artifact.name} expects {input_shape}")

    start = time.perf_counter()
    ref_out, got_out = [], []
    feed_dtype = np.dtype(info.dtype) if info.dtype in ("float32", "float16") else np.float32
    for i in range(0, len(arrays), batch):
        chunk = arrays[i:i + batch]
        ref_out.append(ref.run(chunk))
        got_out.append(next(iter(runner.run({info.name: chunk.astype(feed_dtype)}).values())).astype(np.float32))
    reference_logits, artifact_logits = np.concatenate(ref_out), np.concatenate(got_out)
    if reference_logits.shape != artifact_logits.shape:
        raise DeployResError(f"output shapes differ: reference {reference_logits.shape}, artifact {artifact_logits.shape}")
    if labels is not None and reference_logits.ndim == 2 and labels.max() >= reference_logits.shape[1]:
        raise DeployResError(f"{data} has {len(class_names or []) or int(labels.max()) + 1} classes; the model outputs {reference_logits.shape[1]}: use a folder whose classes the model knows")

    output_name = runner.outputs[0].name
    metrics = compare(reference_logits, artifact_logits)
    accuracy = accuracy_block(reference_logits, artifact_logits, labels)
    try:
        limits = thresholds_for(precision, thresholds)
    except KeyError as exc:
        raise DeployResError(f"unknown threshold {exc.args[0]!r}; known: max_rel_error, cosine_mean, cosine_min, top1_agreement, top1_drop_points") from None
    checks = evaluate(metrics, accuracy, limits)
    passed = all(c["passed"] for c in checks)
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "artifact": str(artifact),
        "artifact_sha256": file_record(artifact)["sha256"],
        "backend": backend_of(artifact),
        "device": runner.device,
        "precision": precision,
        "reference": {"kind": ref.kind, "source": ref.source, "weights": ref.weights},
        "inputs": {**inputs_desc, "samples": int(len(arrays))},
        "outputs": [{"name": output_name, **metrics}],
        "metrics": {**metrics, **(accuracy or {})},
        "accuracy": accuracy,
        "thresholds": limits,
        "checks": checks,
        "failed": [f"output '{output_name}': {c['name']} {c['value']:.6g} {'>' if c['name'] in (*UPPER_BOUNDS, 'finite') else '<'} {c['limit']:g}" for c in checks if not c["passed"]],
        "passed": passed,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if per_layer:
        from deploy_res.validation.sensitivity import qdq_sources, rank_layers

        qdq_path, float_path = qdq_sources(artifact)
        result["sensitivity"] = {"qdq_onnx": str(qdq_path), "float_onnx": str(float_path), "metric": "SQNR dB lost per layer",
                                 "layers": rank_layers(qdq_path, float_path, arrays, batch)}
    output = Path(output) if output else artifact.with_name(artifact.name + ".validation.json")
    write_json_atomic(output, result)
    result["result_path"] = str(output)
    runner.close()
    return result
