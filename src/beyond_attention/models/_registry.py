"""Model registry: register constructors with their configs, create and list them by name.

Every registered constructor has the signature
``fn(num_classes: int, in_chans: int, img_size: int | tuple[int, int], drop_path_rate: float,
**kwargs) -> nn.Module`` and is registered together with a :class:`ModelConfig` that records
the input size, normalisation, whether the input size is fixed, and what the paper reports.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class Paper:
    """The publication a model comes from."""

    title: str
    arxiv: str


EXTERNAL_ATTENTION = Paper(
    "Beyond Self-attention: External Attention using Two Linear Layers for Visual Tasks",
    "2105.02358",
)
LAMBDA_NETWORKS = Paper(
    "LambdaNetworks: Modeling Long-Range Interactions Without Attention", "2102.08602"
)
LAVIT = Paper("You Only Need Less Attention at Each Stage in Vision Transformers", "2406.00427")
DEIT = Paper("Training data-efficient image transformers & distillation through attention",
             "2012.12877")
RESNET = Paper("Deep Residual Learning for Image Recognition", "1512.03385")


@dataclass(frozen=True)
class ModelConfig:
    """What a model expects and what its paper reports.

    ``reported_gmacs`` follows the papers' convention of calling multiply-accumulates
    "FLOPs"; :func:`beyond_attention.flops.count` reports both.
    """

    name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    fixed_input_size: bool = False
    paper: Paper | None = None
    dataset: str = "imagenet-1k"
    reported_params_m: float | None = None
    reported_gmacs: float | None = None
    reported_top1: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, tuple[ModelFn, ModelConfig]] = {}


def register_model(**config: Any) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register ``fn`` under its own name with a :class:`ModelConfig`."""

    def decorate(fn: ModelFn) -> ModelFn:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = (fn, ModelConfig(name=name, **config))
        return fn

    return decorate


def _lookup(name: str) -> tuple[ModelFn, ModelConfig]:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}{hint} (list_models() gives all {len(_MODELS)})"
        )
    return _MODELS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def get_model_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` registered for ``name``."""
    return _lookup(name)[1]


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs; ``None`` takes the config's (1000 for ImageNet
            models, 10 for the CIFAR-10 variants). ``0`` gives a model without a head.
        in_chans: input channels; ``None`` takes the config's.
        img_size: input size (int or (H, W)); ``None`` takes the config's. Models whose
            parameters depend on the resolution are built for this size.
        drop_path_rate: stochastic-depth rate of the last block (linear schedule).
        **kwargs: family-specific options (``mixer=`` for the ViT baselines, ...).

    The returned module carries its config as ``model.config``.
    """
    fn, config = _lookup(name)
    if num_classes is None:
        num_classes = config.num_classes
    if in_chans is None:
        in_chans = config.input_size[0]
    if img_size is None:
        img_size = config.input_size[1:]
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    img_size = tuple(int(s) for s in img_size)
    if len(img_size) != 2 or min(img_size) <= 0:
        raise ValueError(f"img_size must be a positive int or (H, W), got {img_size}")
    model = fn(
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
    model.config = config
    return model
