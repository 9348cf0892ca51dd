"""TensorRT backend, imported lazily: the package installs and runs without TensorRT."""

from deploy_res.engines.tensorrt.backend import TensorRTBackend, TensorRTRunner

__all__ = ["TensorRTBackend", "TensorRTRunner"]
