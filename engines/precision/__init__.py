"""Precision in the ONNX itself: INT8 calibration and Q/DQ emitters, FP16 conversion.

TensorRT 11 has no FP16/INT8 builder flags and no calibrators, so the
precision an engine runs at is written into the ONNX it is built from:

* :mod:`deploy_res.engines.precision.calibration` -- activation ranges over real data
  (ONNX Runtime's calibrators) with a cache keyed on model, method, data and
  versions: :func:`calibrate`; the ranges and their cache
  (:mod:`deploy_res.engines.precision.calibration_cache`) and the vectorised
  entropy threshold search (:mod:`deploy_res.engines.precision.entropy`) are
  modules of their own;
* :mod:`deploy_res.engines.precision.qdq` -- one set of ranges, two Q/DQ emitters
  (``tensorrt``: symmetric int8, Q/DQ on Conv/Gemm inputs and residual skips;
  ``onnxruntime``: uint8 activations, int8 per-channel weights):
  :func:`emit_qdq`;
* :mod:`deploy_res.engines.precision.qdq_check` -- TensorRT's Q/DQ placement rules:
  :func:`check_tensorrt_qdq_placement`;
* :mod:`deploy_res.engines.precision.fp16` -- FP16-typed ONNX: :func:`convert_fp16`.
"""
