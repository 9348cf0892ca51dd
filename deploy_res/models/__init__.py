"""The reference model zoo. Importing this package registers every model."""

from deploy_res.models import resnet  # noqa: F401  (registers its models)
from deploy_res.models.registry import ModelSpec, Preprocessing, create_model, get_spec, list_models, register_model

try:  # registered by its own module; see inception_resnet_v2.py
    from deploy_res.models import inception_resnet_v2  # noqa: F401
except ImportError:  # pragma: no cover - only while the module is being written
    pass

__all__ = ["ModelSpec", "Preprocessing", "create_model", "get_spec", "list_models", "register_model"]
