"""Model registry: register constructors with their configs, create and list them by name.

A model is registered with :func:`register` (a builder, the defaults that make this model,
and its :class:`ModelConfig` fields) or with the :func:`register_model` decorator. Either
way the registered constructor has the signature
``fn(num_classes: int, in_chans: int, img_size: tuple[int, int], drop_path_rate: float,
**kwargs) -> nn.Module``; :func:`create_model` fills the four common arguments from the
config. The :class:`ModelConfig` records the task, the input size, normalisation, whether
the input size is fixed, and what the paper reports.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ._contract import to_2tuple

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

TASKS: tuple[str, ...] = (
    "image_classification",
    "semantic_segmentation",
    "pointcloud_classification",
    "pointcloud_part_segmentation",
)
"""What a model does; it decides the input layout (images (B, C, H, W) or points (B, 3, N))."""
RECIPE_KEYS: tuple[str, ...] = ("lr", "weight_decay", "warmup", "drop_path",
                                 "label_smoothing", "batch_size", "crop_padding", "hflip",
                                 "channels_last", "amp")
"""The training settings a model's ``recipe`` may set (``create_model`` ignores the recipe;
``train`` uses it where no flag is given): numbers, except the switches of
:data:`RECIPE_SWITCHES` and ``amp``, one of :data:`AMP_MODES`."""
RECIPE_SWITCHES: frozenset[str] = frozenset({"channels_last"})
"""The recipe keys whose value is a bool."""
AMP_MODES: tuple[str, ...] = ("off", "auto", "native", "bf16", "fp16")
"""The mixed-precision modes of ``train --amp`` (and of a recipe's ``amp``)."""
POINTCLOUD_TASKS = frozenset(t for t in TASKS if t.startswith("pointcloud"))


@dataclass(frozen=True)
class ModelConfig:
    """What a model expects and what its paper reports.

    ``reported_gmacs`` follows the papers' convention of calling multiply-accumulates
    "FLOPs"; :func:`beyond_attention.flops.count` reports both. ``task`` is one of
    :data:`TASKS`; point-cloud models have ``input_size=(3, N)``.

    The config registered for a name holds the defaults; the one a built model carries as
    ``model.config`` says what that model is (``fixed_input_size`` read from the model).
    """

    name: str
    task: str = "image_classification"
    input_size: tuple[int, ...] = (3, 224, 224)
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
    recipe: dict[str, float | int | bool | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(set(self.recipe) - set(RECIPE_KEYS))
        counts = [(self.recipe.get("batch_size", 1), 1), (self.recipe.get("crop_padding", 0), 0)]
        if bad or not all(isinstance(v, bool) if k in RECIPE_SWITCHES
                          else v in AMP_MODES if k == "amp"
                          else isinstance(v, int | float) and not isinstance(v, bool)
                          for k, v in self.recipe.items()) \
                or not all(isinstance(v, int) and v >= low for v, low in counts):
            raise ValueError(f"recipe of {self.name!r} must map some of "
                             f"{', '.join(RECIPE_KEYS)} to numbers (batch_size an integer "
                             f">= 1, crop_padding >= 0; bools for "
                             f"{', '.join(sorted(RECIPE_SWITCHES))}; amp one of "
                             f"{', '.join(AMP_MODES)}), got {self.recipe}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        expected = 2 if self.task in POINTCLOUD_TASKS else 3
        if len(self.input_size) != expected:
            layout = "(3, N)" if expected == 2 else "(C, H, W)"
            raise ValueError(
                f"input_size of a {self.task} model must be {layout}, got {self.input_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, tuple[ModelFn, ModelConfig]] = {}
_BUILDS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}
_COMMON_ARGS = frozenset({"num_classes", "in_chans", "img_size", "drop_path_rate"})


def register_model(**config: Any) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register ``fn`` under its own name with a :class:`ModelConfig`."""

    def decorate(fn: ModelFn) -> ModelFn:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = (fn, ModelConfig(name=name, **config))
        _BUILDS[name] = (fn, {})
        return fn

    return decorate


def register(
    name: str,
    builder: Callable[..., nn.Module],
    defaults: Mapping[str, Any] | None = None,
    **config: Any,
) -> None:
    """Register ``name``: ``create_model(name, **kw)`` calls
    ``builder(num_classes=, in_chans=, img_size=, drop_path_rate=, **{**defaults, **kw})``
    (without ``img_size`` for a point-cloud ``task``, whose ``input_size`` is ``(3, N)``).

    ``defaults`` are the arguments that make this model (depths, widths, ...); ``config``
    the :class:`ModelConfig` fields (input size, paper, reported figures, notes).
    """
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    fixed = dict(defaults or {})
    model_config = ModelConfig(name=name, **config)
    points = model_config.task in POINTCLOUD_TASKS

    def fn(
        num_classes: int, in_chans: int, img_size: tuple[int, int] | None = None,
        drop_path_rate: float = 0.0, **kwargs: Any,
    ) -> nn.Module:
        sized = {} if points else {"img_size": img_size}
        return builder(
            num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate,
            **sized, **{**fixed, **kwargs},
        )

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name}: {getattr(builder, '__name__', builder)} with {fixed}"
    _MODELS[name] = (fn, model_config)
    _BUILDS[name] = (builder, fixed)


def _lookup(name: str) -> tuple[ModelFn, ModelConfig]:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}{hint} (list_models() gives all {len(_MODELS)})"
        )
    return _MODELS[name]


def model_arguments(name: str, **kwargs: Any) -> dict[str, Any]:
    """The family keywords ``create_model(name, **kwargs)`` builds model ``name`` with.

    The builder's (or the :func:`register_model` function's) named parameters at their own
    defaults, then the registered defaults, then ``kwargs``; without the four common
    arguments (``num_classes``, ``in_chans``, ``img_size``, ``drop_path_rate``) and without
    values JSON cannot hold (callables).
    Checkpoints record them, so that ``create_model(name, **recorded)`` rebuilds the model
    a checkpoint was trained as even after a registration or a default changes.
    """
    _lookup(name)
    builder, fixed = _BUILDS.get(name, (None, {}))
    args: dict[str, Any] = {}
    if builder is not None:
        try:
            params = inspect.signature(builder).parameters.values()
        except (TypeError, ValueError):  # a builder without a readable signature
            params = ()
        args = {p.name: p.default for p in params if p.default is not p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    args.update(fixed)
    args.update(kwargs)
    return {k: v for k, v in args.items() if k not in _COMMON_ARGS and _json_value(v)}


def _json_value(value: Any) -> bool:
    """Whether JSON holds ``value`` (tuples come back as lists)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def get_model_config(name_or_model: str | nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` registered for a name, or the one a built model carries.

    For a built model (``get_model_config(model)``) the config says what that model is:
    ``fixed_input_size`` is read from the model.
    """
    if isinstance(name_or_model, nn.Module):
        config = getattr(name_or_model, "config", None)
        if not isinstance(config, ModelConfig):
            raise ValueError("the model has no .config: build it with create_model(name)")
        return config
    return _lookup(name_or_model)[1]


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

    The returned module carries its config as ``model.config``: the registered one, with
    ``fixed_input_size`` as the built model reports it (``r=None`` makes a LambdaResNet
    fixed-size, for example).
    """
    fn, config = _lookup(name)
    if num_classes is None:
        num_classes = config.num_classes
    if in_chans is None:
        in_chans = config.input_size[0]
    if config.task in POINTCLOUD_TASKS:
        if img_size is not None:
            raise ValueError(f"img_size is for image models; {name} is a {config.task} model")
        model = _build(fn, name, num_classes=num_classes, in_chans=in_chans,
                       drop_path_rate=drop_path_rate, **kwargs)
    else:
        if img_size is None:
            img_size = config.input_size[1:]
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        try:
            img_size = to_2tuple(tuple(int(s) for s in img_size), "img_size")
        except (TypeError, ValueError):
            raise ValueError(f"img_size must be a positive int or (H, W), got {img_size}") from None
        model = _build(fn, name, num_classes=num_classes, in_chans=in_chans,
                       img_size=img_size, drop_path_rate=drop_path_rate, **kwargs)
    fixed = getattr(model, "fixed_input_size", config.fixed_input_size)
    if fixed != config.fixed_input_size:
        config = dataclasses.replace(config, fixed_input_size=bool(fixed))
    model.config = config
    return model


def _build(fn: Callable[..., nn.Module], name: str, **kwargs: Any) -> nn.Module:
    """``fn(**kwargs)``, with an argument the family does not take named in a ValueError
    (a command line's ``--model-arg``), not a TypeError from deep inside a constructor."""
    try:
        return fn(**kwargs)
    except TypeError as e:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if match is None:
            raise
        raise ValueError(f"model {name} takes no argument {match.group(1)!r} (given as "
                         f"{match.group(1)}={kwargs.get(match.group(1))!r})") from None


def example_input(
    config_or_name: ModelConfig | str,
    batch: int = 2,
    *,
    img_size: int | tuple[int, int] | None = None,
    num_points: int | None = None,
    in_chans: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A standard-normal random input of the shape a registered model takes.

    Images (``task`` ``image_classification`` / ``semantic_segmentation``):
    (batch, C, H, W) from ``input_size`` (``img_size`` / ``in_chans`` override it). Point
    clouds: (batch, 3, N) from ``input_size=(3, N)`` (``num_points`` overrides N).
    """
    config = get_model_config(config_or_name) if isinstance(config_or_name, str) else (
        config_or_name
    )
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    c = config.input_size[0] if in_chans is None else in_chans
    if config.task in POINTCLOUD_TASKS:
        if img_size is not None:
            raise ValueError(f"img_size is for image models; {config.name} takes points")
        n = config.input_size[1] if num_points is None else num_points
        shape: tuple[int, ...] = (batch, c, n)
    else:
        if num_points is not None:
            raise ValueError(f"num_points is for point-cloud models; {config.name} takes images")
        h, w = config.input_size[1:] if img_size is None else to_2tuple(img_size, "img_size")
        shape = (batch, c, h, w)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
