"""The build stage: an ONNX file becomes an engine at the precision asked for.

Precision lives in the ONNX (TensorRT 11 has no FP16/INT8 flags):

1. the graph passes prepare the float graph for the backend
   (:mod:`~deploy_res.build.prepare`): ``onnxruntime`` target for an FP32 ONNX
   Runtime engine, ``portable`` (standard ops, BN folded) for ONNX Runtime
   FP16/INT8 and for OpenVINO, ``tensorrt`` for TensorRT;
2. FP16 converts that graph to FP16 types; INT8 calibrates activation ranges
   on real data (cached) and emits Q/DQ for the backend;
3. the backend builds its engine from that ONNX (skipped with ``onnx_only``);
   BF16 has no ONNX of its own: OpenVINO compiles the float graph to BF16.
   ``auto`` on a CPU builds with both CPU backends and keeps the faster
   (:mod:`~deploy_res.build.auto`).

What a build is told is one :class:`BuildSettings` (:mod:`~deploy_res.build.settings`);
the files it writes are named by :mod:`deploy_res.core.names`. For ``out/resnet50.onnx``
and INT8: ``resnet50.portable.opt.onnx`` (float, passes applied),
``resnet50.calib-percentile.json`` (the ranges cache),
``resnet50.int8.onnxruntime.onnx`` (the Q/DQ ONNX) and
``resnet50.int8.cpu.ort.onnx`` (the engine), each with its manifest. An
OpenVINO engine is ``resnet50.int8.cpu.ov.xml`` + ``.ov.bin`` + the compiled
model cache ``resnet50.int8.cpu.ov.cache/``, built from the same Q/DQ ONNX.
"""

from deploy_res.build.engine import BuildEngineResult, build_engine
from deploy_res.build.settings import BuildSettings

__all__ = ["BuildEngineResult", "BuildSettings", "build_engine"]
