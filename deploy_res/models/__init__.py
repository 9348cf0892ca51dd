"""The reference model zoo. Importing this package registers every model."""

from deploy_res.models import inception_resnet_v2, resnet  # noqa: F401  (each registers its models)
from deploy_res.models.registry import ModelSpec, Preprocessing, create_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "Preprocessing", "create_model", "get_spec", "list_models", "register_model"]
