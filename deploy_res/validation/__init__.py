"""Validation: every artifact compared with its PyTorch original (or an FP32 ONNX reference).

See :func:`validate`; the metrics are defined in :mod:`.metrics`, the default
limits per precision in :mod:`.thresholds`.
"""

from deploy_res.validation.settings import ValidateSettings
from deploy_res.validation.validate import RESULT_SCHEMA_VERSION, validate

__all__ = ["RESULT_SCHEMA_VERSION", "ValidateSettings", "validate"]
