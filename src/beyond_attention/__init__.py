"""beyond-attention: attention alternatives for vision, faithful to their papers.

External attention (Guo et al. 2021), LambdaNetworks (Bello 2021) and the Less-Attention
Vision Transformer (Zhang et al. 2024), each beside an honest self-attention baseline.
"""

__version__ = "0.1.0"

_MODEL_API = ("create_model", "get_model_config", "list_models")
__all__ = ["__version__", *_MODEL_API]


def __getattr__(name: str) -> object:  # lazy, so `import beyond_attention` stays light
    """``create_model``, ``get_model_config`` and ``list_models`` from the model registry."""
    if name in _MODEL_API:
        from .models import _registry

        return getattr(_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
