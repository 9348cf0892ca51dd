"""``validate``: run an artifact and its reference on the same inputs and judge the difference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from deploy_res.core.files import write_json_atomic
from deploy_res.core.records import file_record
from deploy_res.core.manifest import Manifest, precision_of, read_manifest
from deploy_res.core.names import validation_result_path
from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import seeded_array
from deploy_res.data.class_names import class_names_of
from deploy_res.validation.checks import describe, evaluate, samples_to_decide, verdict
from deploy_res.validation.metrics import MetricState
from deploy_res.validation.reference import resolve_reference
from deploy_res.validation.settings import DEFAULT_RANDOM_SAMPLES, ValidateSettings
from deploy_res.validation.thresholds import EXACT_PRECISIONS, every_sample_limits, thresholds_for

RESULT_SCHEMA_VERSION = 2
"""2: an outcome (pass / fail / inconclusive), checks with intervals, the evidence and the worst samples; files of
schema 1 (``passed`` only) are still read (:mod:`.verdict`)."""
RANDOM_ONLY = "no data: agreement on random inputs only"


def _work(data: Optional[str], manifest: Mapping[str, Any], samples: Optional[int], batch: int, input_shape: tuple, seed: int):
    """``(batches, preprocessing, class_names, description)``: the inputs cut into numbered batches.

    Images (a folder, a glob, a .parquet list) are listed, not decoded: each
    batch is decoded where it runs (:mod:`deploy_res.scale.work`).
    """
    from deploy_res.scale.work import plan_batches

    if data is None:
        from deploy_res.core.guards import Footprint, check_memory

        count = samples or DEFAULT_RANDOM_SAMPLES  # generated as float64, kept as float32: 12 bytes a value, refused before
        check_memory(count, Footprint(inputs=12 * int(np.prod(input_shape)), source="the random inputs' shape"), "--samples")
        arrays = seeded_array((count, *input_shape), np.float32, np.random.default_rng(seed))
        return plan_batches(batch, arrays=arrays), None, None, {"kind": "random", "source": f"seeded standard normal (seed {seed})", "note": "no --data given: random inputs, no accuracy"}
    from deploy_res.data.images import is_image_source, list_images
    from deploy_res.data.inputs import load_inputs
    from deploy_res.models import Preprocessing

    pre = Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None
    if is_image_source(data):
        if pre is None:
            raise DeployResError(f"reading images from {data} needs the model's preprocessing (input size, mean, std, crop); give the artifact's manifest or a .npy of inputs")
        images = list_images(data)
        return plan_batches(batch, images, limit=samples), pre, images.class_names, {"kind": "images", "source": str(data), "labelled": images.labels is not None}
    loaded = load_inputs(Path(data), pre, count=None, input_shape=input_shape)
    arrays, labels = loaded.arrays[:samples], None if loaded.labels is None else loaded.labels[:samples]
    return (plan_batches(batch, arrays=arrays, labels=labels, names=loaded.names[:samples]), pre, loaded.class_names,
            {"kind": "arrays", "source": str(data), "labelled": labels is not None})


class ValidateWorker:
    """One engine session and one reference: ``worker(arrays, labels, names)`` -> that batch's :class:`MetricState`.

    The in-process loop and every Ray actor run this same object on the same
    batches. ``threads`` (default: the runtimes' own) bounds ONNX Runtime's
    intra-op threads. A context manager: leaving it closes the engine.
    """

    def __init__(self, artifact: str, reference: Optional[str] = None, reference_weights: Optional[str] = None,
                 input_shape: Optional[tuple] = None, threads: Optional[int] = None, backend: Optional[str] = None,
                 manifest: Optional[Manifest] = None) -> None:
        from deploy_res.engines import ONNX_BACKENDS, backend_of, load_engine

        manifest = manifest if manifest is not None else read_manifest(artifact) or Manifest()
        self.reference = resolve_reference(manifest, reference, reference_weights)
        runs_on = backend or backend_of(artifact)
        self.runner = load_engine(artifact, backend=backend, **({"threads": threads} if threads and runs_on in ONNX_BACKENDS else {}))
        self.info = self.runner.inputs[0]
        try:
            self.reference.check_input(tuple(self.info.shape), Path(artifact).name)
        except DeployResError:
            self.runner.close()
            raise
        self.input_shape = tuple(input_shape) if input_shape else None
        self.name = Path(artifact).name
        self.feed_dtype = np.dtype(self.info.dtype) if self.info.dtype in ("float32", "float16") else np.float32
        self.kept: Optional[list[np.ndarray]] = None  # set to [] to keep every batch's inputs (per-layer sensitivity)

    def __call__(self, arrays: np.ndarray, labels: Optional[np.ndarray], names: list[str]) -> MetricState:
        if self.input_shape is not None and tuple(arrays.shape[1:]) != self.input_shape:
            raise DeployResError(f"inputs have shape {tuple(arrays.shape[1:])}; {self.name} expects {self.input_shape}")
        reference_logits = np.asarray(self.reference.run(arrays))
        artifact_logits = next(iter(self.runner.run({self.info.name: arrays.astype(self.feed_dtype)}).values())).astype(np.float32)
        if reference_logits.shape != artifact_logits.shape:
            raise DeployResError(f"output shapes differ: reference {reference_logits.shape}, artifact {artifact_logits.shape}")
        if self.kept is not None:
            self.kept.append(arrays)
        return MetricState.of(reference_logits, artifact_logits, labels if reference_logits.ndim == 2 else None, names)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "ValidateWorker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _judge(state: MetricState, metrics: Mapping[str, Any], accuracy: Optional[Mapping[str, float]], precision: str,
           settings: ValidateSettings, kind: str, output_name: str) -> dict[str, Any]:
    """The verdict's part of the result: evidence, limits, checks, outcome, what failed or is undecided, one line."""
    evidence = "labelled" if accuracy else "random" if kind == "random" else "unlabelled"
    limits = thresholds_for(precision, settings.limits, labelled=bool(accuracy))
    checks = evaluate(state, metrics, accuracy, limits, every_sample_limits(precision), settings.confidence)
    outcome = verdict(checks)
    needed = samples_to_decide(checks) if outcome == "inconclusive" else None
    caveat = f" ({RANDOM_ONLY})" if evidence == "random" and precision not in EXACT_PRECISIONS else ""
    deciding = [c for c in checks if c["outcome"] == outcome] if outcome != "pass" else checks[1:]
    line = f"{outcome.upper()}{caveat} on {state.samples} {evidence} samples: " + "; ".join(describe(c, with_samples=False) for c in deciding)
    if outcome == "inconclusive":
        line += f"; about {needed:,} samples would decide" if needed else "; more samples cannot decide at these values"
    return {"evidence": evidence, "confidence": settings.confidence, "thresholds": limits, "checks": checks,
            "outcome": outcome, "passed": outcome == "pass",
            "failed": [f"output '{output_name}': {describe(c)}" for c in checks if c["outcome"] == "fail"],
            "undecided": [f"output '{output_name}': {describe(c)}" for c in checks if c["outcome"] == "inconclusive"],
            "samples_to_decide": needed, "verdict": line}


def _named_sample(worst: dict[str, Any], names: Optional[list[str]]) -> dict[str, Any]:
    """A worst-sample record with its classes' names beside their indices (when there are names)."""
    if not names:
        return dict(worst)
    def name(index: Optional[int]) -> Optional[str]:
        return names[index] if index is not None and 0 <= index < len(names) else None

    return {**worst, "reference_name": name(worst.get("reference_class")), "artifact_name": name(worst.get("artifact_class"))}


def validate(artifact: str | Path, settings: ValidateSettings = ValidateSettings(), output: Optional[str | Path] = None,
             progress: Optional[Callable[[int, int], None]] = None, on_note: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Compare ``artifact`` with its reference as ``settings`` say; return the result and write it to ``output``.

    Defaults (:class:`ValidateSettings`): the PyTorch model the manifest names; every sample of ``data`` (image
    folder, labelled folder, glob, .parquet list, .npy/.npz), or 32 seeded random inputs when none is given; batches
    of 8; the precision's limits from :mod:`.thresholds`, judged as :mod:`.checks` says at 95 % confidence; the
    result at ``<artifact>.validation.json``. Its ``outcome`` is ``pass``, ``fail`` or ``inconclusive`` (the data
    cannot decide: ``samples_to_decide`` says how many samples would), ``verdict`` says it in one line, and
    ``worst_samples`` names the samples of lowest cosine as evidence. ``per_layer``
    (INT8 artifacts) adds ``sensitivity``: the quantised layers ranked by the error they add
    (:mod:`.sensitivity`), on the same inputs.

    Images are read in batches as they are compared, never all at once; an undecodable image is an error
    naming it unless ``skip_bad_files``. With ``ray`` the batches run on Ray Data actors: every metric is
    merged exactly, so the result holds the same numbers as in one process, plus an ``execution`` block.
    ``progress(done, total)`` is called after each batch; ``on_note(text)`` with what the run notices.
    ``backend`` runs a plain ONNX artifact on that backend; an engine runs on its own.
    """
    from deploy_res.core.guards import actor_memory, check_batch
    from deploy_res.engines import backend_of

    artifact = Path(artifact)
    if not artifact.is_file():
        raise DeployResError(f"artifact {artifact} not found")
    manifest = read_manifest(artifact) or Manifest()
    precision = precision_of(artifact, manifest)
    runs_on = settings.backend or backend_of(artifact)
    reference, reference_weights, data, batch, ray = settings.reference, settings.reference_weights, settings.data, settings.batch, settings.ray
    with ValidateWorker(str(artifact), reference, reference_weights, backend=settings.backend, manifest=manifest) as worker:  # closed on the way out, also on an error
        ref, runner, info = worker.reference, worker.runner, worker.info
        input_shape = tuple(manifest.get("input", {}).get("shape", [None, *info.shape[1:]])[1:])
        if any(not isinstance(d, int) for d in input_shape):
            raise DeployResError(f"{artifact.name} has no fixed input size {input_shape}; give its manifest or a .npy of inputs")
        worker.input_shape = input_shape
        batches, pre, class_names, inputs_desc = _work(data, manifest, settings.samples, batch, input_shape, settings.seed)
        total = sum(len(work) for work in batches)
        check_batch(artifact, manifest, max((len(work) for work in batches), default=1), "--batch", settings.any_batch,
                    copies=2 * (ray.actors or 1 if ray else 1))  # the artifact's and the reference's runs at once, per actor
        device, output_name, notes = runner.device, runner.outputs[0].name, list(runner.notes)

        start = time.perf_counter()
        states: list[MetricState] = []
        skipped: list[str] = []
        execution: Optional[dict[str, Any]] = None

        def collect(state: Optional[MetricState], batch_skipped: list[str]) -> None:
            if state is not None:
                states.append(state)
            skipped.extend(batch_skipped)
            if progress is not None:
                progress(sum(s.samples for s in states) + len(skipped), total)

        if ray:
            from deploy_res.scale.ray_data import run_on_ray

            execution = {"mode": "ray", "address": ray.where, "batch": batch}

            def on_plan(plan) -> None:
                execution.update(actors=plan.actors, actor_cpus=plan.num_cpus, actor_gpus=plan.num_gpus)
                if on_note is not None:
                    on_note(f"Ray: {plan.describe()}")

            worker.close()  # the actors load their own; this copy only checked the artifact and the reference
            kwargs = {"artifact": str(artifact.resolve()), "reference": reference, "reference_weights": reference_weights, "input_shape": input_shape,
                      "backend": settings.backend}
            with ray.session():
                for _index, state, batch_skipped in run_on_ray(batches, ValidateWorker, kwargs, pre, settings.skip_bad_files, str(data), ray.actors, on_plan,
                                                             actor_memory=actor_memory(artifact, manifest, batch, copies=2)):
                    collect(state, batch_skipped)
        else:
            from deploy_res.scale.work import load_batch

            if settings.per_layer:
                worker.kept = []
            for work in batches:
                arrays, labels, names, batch_skipped = load_batch(work, pre, settings.skip_bad_files, str(data))
                collect(worker(arrays, labels, names) if arrays is not None else None, batch_skipped)
        state = MetricState.merged(states)
        if state.samples == 0:
            raise DeployResError(f"{data} holds no usable samples; put decodable images in it")
        if state.labelled and state.max_label >= state.classes:
            raise DeployResError(f"{data} has {len(class_names or []) or state.max_label + 1} classes; the model outputs {state.classes}: use a folder whose classes the model knows")

        names = class_names_of(manifest) or class_names  # the model's own, else the labelled folder's (label i = output i)
        metrics, accuracy = state.finalize()
        judged = _judge(state, metrics, accuracy, precision, settings, inputs_desc["kind"], output_name)
        result = {
            "schema_version": RESULT_SCHEMA_VERSION,
            "artifact": str(artifact),
            "artifact_sha256": file_record(artifact)["sha256"],
            "backend": runs_on,
            "device": device,
            "precision": precision,
            "notes": notes,
            "reference": {"kind": ref.kind, "source": ref.source, "weights": ref.weights},
            "inputs": {**inputs_desc, "samples": state.samples, **({"skipped": skipped} if skipped else {})},
            "outputs": [{"name": output_name, **metrics}],
            "metrics": {**metrics, **(accuracy or {})},
            "accuracy": accuracy,
            **judged,
            "class_names": names,
            "worst_samples": [_named_sample(w, names) for w in state.worst],
            "worst_classes": [{**row, "name": names[row["class"]] if names and row["class"] < len(names) else None}
                              for row in state.worst_classes()] if state.classes > 1 else [],
            "seconds": round(time.perf_counter() - start, 2),
            **({"execution": execution} if execution else {}),
        }
        if settings.per_layer:
            from deploy_res.validation.sensitivity import qdq_sources, rank_layers

            qdq_path, float_path = qdq_sources(artifact)
            result["sensitivity"] = {"qdq_onnx": str(qdq_path), "float_onnx": str(float_path), "metric": "SQNR dB lost per layer",
                                     "layers": rank_layers(qdq_path, float_path, np.concatenate(worker.kept), batch)}
        output = Path(output) if output else validation_result_path(artifact)
        write_json_atomic(output, result)
        result["result_path"] = str(output)
        return result
