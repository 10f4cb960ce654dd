"""Models by name: importing this package registers every family with the registry."""

from . import eamlp, eanet, lambda_resnet, lavit, pct, resnet, vit  # noqa: F401
from ._registry import (
    TASKS,
    ModelConfig,
    create_model,
    example_input,
    get_model_config,
    list_models,
    register,
    register_model,
)

__all__ = [
    "TASKS",
    "ModelConfig",
    "create_model",
    "example_input",
    "get_model_config",
    "list_models",
    "register",
    "register_model",
]
