"""ONNX graph passes over onnx-graphsurgeon graphs; each returns a :class:`PassResult`.

See :mod:`deploy_res.exporters.pass_runner` for the runner that checks every pass numerically (with :mod:`deploy_res.exporters.checks`).
"""

from deploy_res.exporters.passes._common import PassResult
from deploy_res.exporters.passes.cleanup import cleanup
from deploy_res.exporters.passes.fold_batchnorm import fold_batchnorm
from deploy_res.exporters.passes.fold_into_conv import fold_into_conv
from deploy_res.exporters.passes.residual import find_residual_adds, fold_residual_scale, fuse_residual_ort, prepare_residual_tensorrt

__all__ = [
    "PassResult",
    "cleanup",
    "find_residual_adds",
    "fold_batchnorm",
    "fold_into_conv",
    "fold_residual_scale",
    "fuse_residual_ort",
    "prepare_residual_tensorrt",
]
