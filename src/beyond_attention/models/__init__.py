"""Models by name: importing this package registers every family with the registry."""

from . import eamlp, eanet, lambda_resnet, lavit, resnet, vit  # noqa: F401
from ._registry import ModelConfig, create_model, get_model_config, list_models, register_model

__all__ = ["ModelConfig", "create_model", "get_model_config", "list_models", "register_model"]
