"""OpenVINO backend: CPU engines at FP32, BF16 and INT8 (from the pipeline's Q/DQ ONNX)."""

from deploy_res.engines.openvino.backend import OpenVINOBackend, OpenVINORunner, missing_bf16_isa

__all__ = ["OpenVINOBackend", "OpenVINORunner", "missing_bf16_isa"]
