"""What runs inside Triton's Python backend: deployres' own runner behind ``TritonPythonModel``.

``deployres triton --python-backend`` writes a one-line ``model.py`` that
imports :class:`ClassifierModel` (and, with ``--ensemble``,
:class:`PreprocessModel`) from here, so the serving code is the package's,
tested in-process, not text pasted into a repository.

A classifier model's version folder holds ``engine/`` (the engine file with
its manifest, as built) and, for CPU engines, ``engine/source.onnx`` (the
portable ONNX it was built from): ONNX Runtime and OpenVINO engines belong to
the CPU and runtime version they were built on, so on another machine the
runner re-optimises from that source instead (the notes say so in Triton's
log).

Dynamic batching hands :meth:`ClassifierModel.execute` several requests at
once; they are concatenated along the batch axis, run as one batch, and split
back, which is what makes Triton's batching pay off here.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SPEC_FILE = "deployres.serve.json"
"""Written beside ``engine/`` in a Python-backend model's version folder: which file to load and how."""


def load_served_engine(version_dir: str | Path, threads: Optional[int] = None, streams: Optional[int] = None):
    """Load the engine a Python-backend model ships (see the module docstring) with ``threads`` (default None: the
    engine's) and, for OpenVINO, ``streams`` (default None: one); returns ``(runner, notes)``."""
    from deploy_res.core.errors import DeployResError
    from deploy_res.engines import load_engine

    version_dir = Path(version_dir)
    spec = json.loads((version_dir / SPEC_FILE).read_text())
    engine = version_dir / spec["engine"]
    options = {"threads": threads} if threads and spec.get("backend") in ("onnxruntime", "openvino") else {}
    if streams and spec.get("backend") == "openvino":
        options["streams"] = streams
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = load_engine(engine, **options)
        notes += [str(w.message) for w in caught]
    except DeployResError as exc:
        source = version_dir / spec["source"] if spec.get("source") else None
        if source is None or not source.is_file():
            raise
        notes.append(f"{exc}; loading the bundled source {source.name} instead")
        from deploy_res.engines import get_backend

        runner = get_backend(spec["backend"]).load(source, **options)
    return runner, notes + list(runner.notes)


def run_batched(runner, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Run several requests' inputs as one batch (concatenated on axis 0) and split the outputs back per request."""
    sizes = [len(next(iter(feeds.values()))) for feeds in requests]
    names = list(requests[0])
    batch = {name: np.concatenate([feeds[name] for feeds in requests]) if len(requests) > 1 else requests[0][name] for name in names}
    dtypes = {info.name: np.dtype(info.dtype) for info in runner.inputs}
    batch = {name: np.ascontiguousarray(array, dtype=dtypes.get(name, array.dtype)) for name, array in batch.items()}
    outputs = runner.run(batch)
    results, start = [], 0
    for size in sizes:
        results.append({name: np.ascontiguousarray(value[start:start + size]) for name, value in outputs.items()})
        start += size
    return results


def decode_images(blobs: Sequence[bytes], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Encoded images (JPEG, PNG, ...) -> float32 (N, C, H, W) with the manifest's preprocessing
    (deployres' own :func:`deploy_res.data.preprocess.preprocess_image`: resize, centre crop, mean/std)."""
    from PIL import Image

    from deploy_res.core.errors import DeployResError
    from deploy_res.data.preprocess import preprocess_image
    from deploy_res.models.registry import Preprocessing

    pre = Preprocessing.from_dict(dict(preprocessing))
    arrays = []
    for index, blob in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(bytes(blob))) as image:
                image.load()
                arrays.append(preprocess_image(image, pre))
        except (OSError, ValueError) as exc:
            raise DeployResError(f"image {index} of the batch is not a decodable image ({type(exc).__name__}: {exc})") from None
    return np.stack(arrays)


def _as_numpy(tensor) -> np.ndarray:
    """A Python-backend input tensor as numpy, through DLPack (see :func:`_tensor`)."""
    from torch.utils import dlpack

    return dlpack.from_dlpack(tensor.to_dlpack()).numpy()


def _tensor(pb, name: str, array: np.ndarray):
    """A Python-backend output tensor, through DLPack (torch) rather than ``pb.Tensor(name, array)``.

    The stub that nvidia-pytriton 0.7.0 bundles was built against the numpy 1.x C API; under
    numpy 2 its numpy bridge reads the wrong descriptor fields (measured here: outputs sent with
    ``binary_data_size: 0``, BYTES inputs unpacked with absurd lengths). DLPack does not go
    through numpy's C API, so the same model works with numpy 1 and 2 and on NVIDIA's containers.
    """
    import torch

    return pb.Tensor.from_dlpack(name, torch.from_numpy(np.ascontiguousarray(array)))


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (model_config.get("parameters") or {}).items()}


class ClassifierModel:
    """Triton Python-backend model: a deployres engine, run by deployres' runner."""

    def initialize(self, args: Mapping[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        threads = int(params["threads"]) if params.get("threads") else None
        streams = int(params["streams"]) if params.get("streams") else None
        self.runner, notes = load_served_engine(version_dir, threads, streams)
        self.inputs = [item["name"] for item in config["input"]]
        self.outputs = [item["name"] for item in config["output"]]
        logger = getattr(pb_utils, "Logger", None)
        for note in notes:
            if logger is not None:
                logger.log_warn(f"{args['model_name']}: {note}")

    def execute(self, requests):
        pb = self._pb
        try:
            feeds = [{name: _as_numpy(pb.get_input_tensor_by_name(request, name)) for name in self.inputs} for request in requests]
            results = run_batched(self.runner, feeds)
        except Exception as exc:  # every request of the failed batch gets the error
            return [pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(exc).__name__}: {exc}")) for _ in requests]
        return [pb.InferenceResponse(output_tensors=[_tensor(pb, name, result[name]) for name in self.outputs]) for result in results]

    def finalize(self) -> None:
        runner, self.runner = getattr(self, "runner", None), None
        if runner is not None:
            runner.close()


class PreprocessModel:
    """Triton Python-backend model: encoded image bytes (UINT8, one image per batch row) -> the classifier's input tensor."""

    def initialize(self, args: Mapping[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        self.preprocessing = json.loads(_parameters(config)["preprocessing"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        pb = self._pb
        responses = []
        for request in requests:  # one bad image fails its own request only
            try:
                rows = _as_numpy(pb.get_input_tensor_by_name(request, self.input))  # (batch, bytes): one encoded image per row
                blobs = [row.tobytes() for row in rows.reshape(rows.shape[0], -1)]
                responses.append(pb.InferenceResponse(output_tensors=[_tensor(pb, self.output, decode_images(blobs, self.preprocessing))]))
            except Exception as exc:
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses
