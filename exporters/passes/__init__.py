"""ONNX graph passes over onnx-graphsurgeon graphs; each returns a :class:`PassResult`.

See :mod:`exporters.optimize` for the runner that checks every pass numerically.
"""

from exporters.passes._common import PassResult
from exporters.passes.cleanup import cleanup
from exporters.passes.fold_batchnorm import fold_batchnorm
from exporters.passes.residual import find_residual_adds, fold_residual_scale, fuse_residual_ort, prepare_residual_tensorrt

__all__ = [
    "PassResult",
    "cleanup",
    "find_residual_adds",
    "fold_batchnorm",
    "fold_residual_scale",
    "fuse_residual_ort",
    "prepare_residual_tensorrt",
]
