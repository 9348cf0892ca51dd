"""``infer``: score a collection of images with a built engine, into a Parquet file.

Every image goes through the engine with the preprocessing its manifest
records (:func:`deploy_res.data.preprocess.preprocess_image`), in batches of ``batch``
images in the loader's order (:mod:`deploy_res.scale.work`). One row per
image, in that order:

========================  ==================================================
``path``                  the image as named by the source (relative to the
                          folder or glob root, or as the Parquet list says)
``label``                 class index from a folder of class sub-folders or a
                          Parquet ``label`` column; null otherwise
``label_name``            the class sub-folder's name, else the label's name
                          in the engine's class names; null otherwise
``top_k_indices``         list of ``top_k`` class indices, best first (ties:
                          lower index first)
``top_k_names``           their names, when the engine's manifest records
                          class names (``export --labels``); null otherwise
``top_k_scores``          their softmax probabilities (float32)
========================  ==================================================

The file is written atomically with a manifest beside it
(``PREDICTIONS.parquet.json``: the engine and its sha256, the data, the
settings, the images skipped): an interrupt leaves no partial file. With
``InferSettings(ray=RayOptions())`` the batches run on Ray Data actors (:mod:`deploy_res.scale.ray_data`)
and the file is the same, row for row.

An engine whose validation result (``<engine>.validation.json``, written by
``deployres validate``, for this very file) says FAILED is refused unless
``InferSettings(force=True)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from deploy_res.core.artifact import write_artifact
from deploy_res.core.records import file_record
from deploy_res.core.manifest import lineage, read_manifest
from deploy_res.core.errors import DeployResError
from deploy_res.data.class_names import class_names_of
from deploy_res.scale.options import RayOptions

DEFAULT_TOP_K = 5
DEFAULT_BATCH = 8
ProgressCallback = Callable[[int, int], None]
"""``progress(images done, images in all)``, called after each batch."""


@dataclass(frozen=True)
class InferSettings:
    """One batch inference; every field has the command line's default.

    top_k: classes kept per image (default 5).
    batch: images per engine run (default None: the manifest's optimal batch size, else 8).
    skip_bad_files: skip images that fail to decode, naming them in the manifest (default False: stop).
    force: use an engine whose validation FAILED (default False: refuse it).
    ray: shard the batches over Ray Data actors (default None: in this process).
    any_batch: run outside the batch range the manifest records (default False; :mod:`deploy_res.core.guards`).
    """

    top_k: int = DEFAULT_TOP_K
    batch: Optional[int] = None
    skip_bad_files: bool = False
    force: bool = False
    ray: Optional[RayOptions] = None
    any_batch: bool = False

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise DeployResError(f"--top-k {self.top_k}: must be at least 1")
        if self.batch is not None and self.batch < 1:
            raise DeployResError(f"--batch {self.batch}: must be at least 1")


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64 [N, k], softmax scores float32 [N, k])`` of each row's ``k`` best classes."""
    scores = np.asarray(logits, dtype=np.float64).reshape(logits.shape[0], -1)
    k = min(k, scores.shape[1])
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")[:, :k]
    shifted = np.exp(scores - np.max(scores, axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return order.astype(np.int64), np.take_along_axis(probabilities, order, axis=1).astype(np.float32)


class InferWorker:
    """One engine session: ``worker(arrays, labels, names)`` -> that batch's prediction columns; leaving ``with`` closes it."""

    def __init__(self, engine: str, top_k: int = DEFAULT_TOP_K, threads: Optional[int] = None) -> None:
        from deploy_res.engines import backend_of, load_engine

        options = {"threads": threads} if threads and backend_of(engine) == "onnxruntime" else {}
        self.runner = load_engine(engine, **options)
        self.info = self.runner.inputs[0]
        self.k = top_k
        self.dtype = np.dtype(self.info.dtype) if self.info.dtype in ("float32", "float16") else np.float32

    def logits(self, arrays: np.ndarray) -> np.ndarray:
        return next(iter(self.runner.run({self.info.name: arrays.astype(self.dtype)}).values())).astype(np.float32)

    def __call__(self, arrays: np.ndarray, labels: Optional[np.ndarray], names: list[str]) -> dict[str, Any]:
        indices, scores = top_k(self.logits(arrays), self.k)
        return {"path": names, "label": None if labels is None else labels.tolist(), "top_k_indices": indices, "top_k_scores": scores}

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "InferWorker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def validation_status(engine: Path) -> Optional[dict[str, Any]]:
    """The validation result recorded for this exact engine file (:func:`deploy_res.validation.verdict.read_verdict`),
    or None when there is none for its current bytes."""
    from deploy_res.validation.verdict import read_verdict

    verdict = read_verdict(engine)
    if not verdict.counts:
        return None
    return {"passed": verdict.status == "passed", "outcome": verdict.status, "source": str(verdict.path), "failed": verdict.failed,
            "verdict": verdict.line}


def _schema(pa):
    return pa.schema([
        ("path", pa.string()),
        ("label", pa.int64()),
        ("label_name", pa.string()),
        ("top_k_indices", pa.list_(pa.int64())),
        ("top_k_names", pa.list_(pa.string())),
        ("top_k_scores", pa.list_(pa.float32())),
    ])


def _table(pa, result: dict[str, Any], class_names: Optional[list[str]], model_names: Optional[list[str]]):
    """One batch's rows: ``class_names`` are the data folder's, ``model_names`` the engine's (either may be None)."""
    labels = result["label"]
    label_names = class_names or model_names
    names = None if labels is None or label_names is None else [label_names[i] if 0 <= i < len(label_names) else None for i in labels]
    top_names = None if model_names is None else [[model_names[i] for i in row] for row in np.asarray(result["top_k_indices"]).tolist()]
    n = len(result["path"])
    return pa.table({
        "path": pa.array(result["path"], pa.string()),
        "label": pa.array(labels if labels is not None else [None] * n, pa.int64()),
        "label_name": pa.array(names if names is not None else [None] * n, pa.string()),
        "top_k_indices": pa.array(list(result["top_k_indices"]), pa.list_(pa.int64())),
        "top_k_names": pa.array(top_names if top_names is not None else [None] * n, pa.list_(pa.string())),
        "top_k_scores": pa.array(list(result["top_k_scores"]), pa.list_(pa.float32())),
    }, schema=_schema(pa))


def infer(engine: str | Path, data: str | Path, output: str | Path, settings: InferSettings = InferSettings(),
          progress: Optional[ProgressCallback] = None, on_note: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Predict the ``top_k`` classes of every image in ``data`` with ``engine``; write them to ``output`` (Parquet).

    ``data``: a folder (class sub-folders give labels), a glob pattern, or a ``.parquet`` list with a ``path``
    column (:func:`deploy_res.data.images.list_images`). ``settings`` (:class:`InferSettings`): top 5, batches
    of the manifest's optimal batch size (else 8), an undecodable image is an error naming it unless
    ``skip_bad_files``, an engine that failed validation is refused unless ``force``, in this process unless
    ``ray``. Returns a summary.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DeployResError("infer writes Parquet and needs pyarrow: pip install 'deployres[ray]' (or pyarrow)") from None
    from deploy_res.data.images import list_images
    from deploy_res.scale.work import load_batch, plan_batches

    engine, output = Path(engine), Path(output)
    if not engine.is_file():
        raise DeployResError(f"engine {engine} not found")
    if output.suffix != ".parquet":
        raise DeployResError(f"output {output} must end in .parquet")
    if output.is_dir():
        raise DeployResError(f"output {output} is a folder; name a .parquet file")
    if not output.parent.is_dir():
        raise DeployResError(f"output folder {output.parent} does not exist; create it first")
    manifest = read_manifest(engine) or {}
    status = validation_status(engine)
    if status is not None and status["outcome"] == "failed" and not settings.force:
        why = "; ".join(status["failed"][:2]) or "see the result file"
        raise DeployResError(f"{engine.name} FAILED validation ({status['source']}: {why}); fix or rebuild it, or pass --force to use it anyway")
    if not manifest.get("preprocessing"):
        raise DeployResError(f"{engine.name} has no manifest with preprocessing; build it with `deployres build-engine` from a deployres export")
    from deploy_res.models import Preprocessing

    pre = Preprocessing.from_dict(manifest["preprocessing"])
    model_names = class_names_of(manifest)
    batch = settings.batch or int((manifest.get("batch_range") or {}).get("opt") or DEFAULT_BATCH)
    images = list_images(data)
    batches = plan_batches(batch, images)
    total = len(images)
    from deploy_res.core.guards import actor_memory, check_batch

    check_batch(engine, manifest, min(batch, max(total, 1)), "--batch", settings.any_batch,
                copies=(settings.ray.actors or 1) if settings.ray else 1)  # one batch per actor at once
    start = time.perf_counter()
    skipped: list[str] = []
    done = 0
    ray, top_k, skip_bad = settings.ray, settings.top_k, settings.skip_bad_files
    execution: dict[str, Any] = {"mode": "ray" if ray else "in-process", "batch": batch}

    def note(text: str) -> None:
        if on_note is not None:
            on_note(text)

    with write_artifact(output) as pending:
        writer = pq.ParquetWriter(str(pending.path), _schema(pa))
        try:
            def emit(result, batch_skipped, size):
                nonlocal done
                if result is not None:
                    writer.write_table(_table(pa, result, images.class_names, model_names))
                skipped.extend(batch_skipped)
                done += size
                if progress is not None:
                    progress(done, total)

            if ray:
                from deploy_res.scale.ray_data import run_on_ray

                def on_plan(plan):
                    execution.update(actors=plan.actors, actor_cpus=plan.num_cpus, actor_gpus=plan.num_gpus, address=ray.where)
                    note(f"Ray: {plan.describe()}")

                with ray.session():
                    pending_results: dict[int, tuple[Any, list[str]]] = {}
                    following = 0  # rows are written in batch order, as in-process
                    for index, result, batch_skipped in run_on_ray(batches, InferWorker, {"engine": str(engine.resolve()), "top_k": top_k},
                                                                   pre, skip_bad, str(data), ray.actors, on_plan,
                                                                   actor_memory=actor_memory(engine, manifest, batch)):
                        pending_results[index] = (result, batch_skipped)
                        while following in pending_results:
                            result, batch_skipped = pending_results.pop(following)
                            emit(result, batch_skipped, len(batches[following]))
                            following += 1
            else:
                with InferWorker(str(engine), top_k) as worker:
                    for work in batches:
                        arrays, labels, names, batch_skipped = load_batch(work, pre, skip_bad, str(data))
                        emit(worker(arrays, labels, names) if arrays is not None else None, batch_skipped, len(work))
        finally:
            writer.close()
        predicted = total - len(skipped)
        if predicted == 0:
            raise DeployResError(f"{data} holds no decodable images; nothing to predict")
        seconds = time.perf_counter() - start
        pending.set_manifest("infer", {
            **lineage(manifest),
            "inputs": {"engine": file_record(engine), "data": str(data)},
            "settings": {"top_k": top_k, "batch": batch, "skip_bad_files": skip_bad, "force": settings.force},
            "validation": status,
            "images": predicted,
            "skipped": skipped,
            "class_names": images.class_names,
            "execution": execution,
            "seconds": round(seconds, 2),
        })
    return {"output": str(output), "images": predicted, "skipped": skipped, "seconds": seconds,
            "images_per_s": predicted / seconds if seconds > 0 else 0.0, "execution": execution, "validation": status}
