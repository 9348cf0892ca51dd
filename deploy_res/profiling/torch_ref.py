"""The ``torch`` pseudo-artifact: the PyTorch original an artifact came from, as a runner.

The model is rebuilt from the artifact's manifest (``model.source``, a zoo
name or ``package.module:factory``, with ``model.weights.path`` when it was
exported with weights; random initial weights otherwise, which time the same).
Two modes: ``eager`` (``torch.inference_mode``) and ``compile``
(``torch.compile`` with the default inductor backend, one graph per batch
size). Compilation happens on the first run of each batch size, which the
profiler makes before warming up; when it fails (no C++ compiler, an
unsupported op) the entry is reported as not measured with the reason, and
eager is still measured.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.engines.base import RunnerBase, TensorInfo

TORCH_MODES = ("eager", "compile")


class TorchRunner(RunnerBase):
    """A PyTorch module behind the engine runner interface (CPU, float32)."""

    backend = "torch"
    device = "cpu"

    def __init__(self, module, input_name: str, input_shape: tuple, mode: str = "eager") -> None:
        import torch

        if mode not in TORCH_MODES:
            raise DeployResError(f"unknown torch mode {mode!r}; choose one of {', '.join(TORCH_MODES)}")
        super().__init__()
        self._torch = torch
        self.mode = mode
        self.module = module  # in eval mode from load_model (a torch.export program's module refuses .eval())
        self.forward = torch.compile(self.module, dynamic=False) if mode == "compile" else self.module
        self.inputs = [TensorInfo(input_name, tuple(input_shape), "float32")]
        self.outputs = [TensorInfo("output", ("batch", None), "float32")]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            output = self.forward(torch.from_numpy(np.ascontiguousarray(feeds[self.inputs[0].name])))
        return {"output": output.numpy()}

    def close(self) -> None:
        self.module = self.forward = None


def torch_source(manifest: Optional[Mapping[str, Any]]) -> tuple[str, Optional[str]]:
    """``(source, weights path or None)`` of the PyTorch original a manifest names."""
    model = (manifest or {}).get("model") or {}
    source = model.get("source")
    if not source:
        raise DeployResError("the first artifact's manifest names no PyTorch model (model.source); the torch reference needs one")
    weights = model.get("weights")
    path = weights.get("path") if isinstance(weights, Mapping) else weights
    if isinstance(weights, Mapping) and path:  # rebuilt only from the very checkpoint the artifact was exported from
        from deploy_res.core.records import verify_record

        verify_record(path, dict(weights), "checkpoint", "re-export from it, or profile without --torch")
    return source, path


def load_torch_runner(manifest: Mapping[str, Any], mode: str = "eager", threads: Optional[int] = None) -> TorchRunner:
    """The PyTorch original of ``manifest`` as a :class:`TorchRunner` in ``mode``."""
    import torch

    from deploy_res.loading import load_manifest_model

    if threads:
        torch.set_num_threads(threads)
    _, weights = torch_source(manifest)
    loaded = load_manifest_model(manifest["model"], weights)
    info = manifest.get("input") or {}
    shape = tuple(info.get("shape") or ("batch", *loaded.preprocessing.input_size))
    return TorchRunner(loaded.module, info.get("name", "input"), shape, mode)
