"""The side an artifact is judged against: its PyTorch original, or an FP32 ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from deploy_res.core.records import verify_record
from deploy_res.core.errors import DeployResError


@dataclass
class Reference:
    """``run(batch) -> first output`` plus a description for the result."""

    kind: str
    source: str
    run: Callable[[np.ndarray], np.ndarray]
    weights: Optional[str] = None
    input_shape: Optional[tuple] = None
    """The input shape an ONNX reference declares (ints, or None for a dynamic axis); None for PyTorch (any shape)."""

    def check_input(self, shape: tuple, artifact: str) -> None:
        """A one-line error when this reference cannot take the input ``shape`` that ``artifact`` takes: another rank,
        or a fixed non-batch axis of another size (default: nothing to check for a PyTorch reference)."""
        if self.input_shape is None:
            return
        fixed = lambda dims: tuple(d if isinstance(d, int) and d > 0 else None for d in dims)  # noqa: E731
        ours, theirs = fixed(shape), fixed(self.input_shape)
        if len(ours) == len(theirs) and all(a is None or b is None or a == b for a, b in list(zip(ours, theirs))[1:]):
            return
        raise DeployResError(f"reference {Path(self.source).name} takes input of shape {_shape(theirs)} but {artifact} takes {_shape(ours)}: "
                             "it is not the same model's graph; pass the ONNX this artifact was built from, or --reference MODEL")


def _torch_reference(model: dict[str, Any], weights: Optional[str]) -> Reference:
    """The PyTorch model a manifest-style ``model`` block names (source, seed, classes, trust), rebuilt with ``weights``."""
    import torch

    from deploy_res.loading import load_manifest_model
    from deploy_res.exporters.torch_export import first_output

    source = model["source"]
    module = load_manifest_model(model, weights).module

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return first_output(module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))).numpy()

    return Reference("pytorch", source, run, weights)


def _onnx_reference(path: Path) -> Reference:
    from deploy_res.core.numerics import cpu_session

    try:  # the one CPU session factory; the reference is not an engine
        session = cpu_session(path, "ORT_ENABLE_BASIC")
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise DeployResError(f"ONNX Runtime cannot load {path.name}: {str(exc).strip().splitlines()[0][:300]}") from None
    declared = session.get_inputs()[0]
    name = declared.name

    def run(batch: np.ndarray) -> np.ndarray:
        try:
            return session.run(None, {name: batch.astype(np.float32)})[0]
        except Exception as exc:  # ORT's InvalidArgument for inputs it cannot take: one line, never its traceback
            if type(exc).__module__.startswith("onnxruntime"):
                raise DeployResError(f"reference {path.name} cannot run inputs of shape {_shape(batch.shape)}: "
                                     f"{' '.join(str(exc).split())[:200]}; pass a reference with the artifact's input") from None
            raise

    return Reference("onnx", str(path), run, input_shape=tuple(d if isinstance(d, int) else None for d in declared.shape))


def _shape(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def resolve_reference(manifest: dict[str, Any], reference: Optional[str], reference_weights: Optional[str]) -> Reference:
    """``reference`` (zoo name, ``module:factory`` or ``.onnx`` file), else the PyTorch model the manifest names."""
    if reference and reference.endswith(".onnx"):
        path = Path(reference)
        if not path.is_file():
            raise DeployResError(f"reference ONNX {path} not found")
        return _onnx_reference(path)
    if reference:
        return _torch_reference({"source": reference}, reference_weights)
    model = manifest.get("model") if manifest else None
    if not model:
        raise DeployResError("the artifact has no manifest naming its PyTorch model; pass --reference MODEL|FILE.onnx")
    record = model.get("weights") or {}
    weights = record.get("path")
    if weights and not Path(weights).is_file():
        raise DeployResError(f"the manifest's weights {weights} are gone; pass --reference MODEL --reference-weights PATH, or --reference FILE.onnx")
    if weights:  # the reference is only as good as the checkpoint it is rebuilt from
        verify_record(weights, record, "checkpoint", "the reference would not be the exported model; re-export from it, "
                      "or pass --reference MODEL --reference-weights PATH, or --reference FILE.onnx")
    try:
        return _torch_reference(model, weights)
    except DeployResError as exc:
        raise DeployResError(f"cannot rebuild the manifest's model {model['source']!r} ({exc}); pass --reference MODEL|FILE.onnx") from None
