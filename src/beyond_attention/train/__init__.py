"""Training and evaluation: the engine, its optimiser and schedule, checkpoints, DDP.

:func:`train` runs a :class:`TrainConfig` (``config.py``: every setting once, with the
``train`` command's flag in its metadata) on one CPU, one GPU or many under ``torchrun``;
:func:`evaluate_checkpoint` scores a saved model.
"""

from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import DEFAULT_MODEL, TrainConfig
from .engine import evaluate, soft_cross_entropy, step_seed, train
from .evaluate import evaluate_checkpoint
from .optim import ModelEma, build_optimizer, lr_at, param_groups

__all__ = [
    "CheckpointError",
    "DEFAULT_MODEL",
    "ModelEma",
    "TrainConfig",
    "build_optimizer",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_weights",
    "lr_at",
    "param_groups",
    "save_checkpoint",
    "soft_cross_entropy",
    "step_seed",
    "train",
]
