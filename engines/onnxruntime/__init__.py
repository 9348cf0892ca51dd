"""ONNX Runtime backend: the CPU provider, or CUDA where onnxruntime-gpu works."""

from deploy_res.engines.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeRunner, cpu_fingerprint

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner", "cpu_fingerprint"]
