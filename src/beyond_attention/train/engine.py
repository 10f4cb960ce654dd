"""The training loop: :func:`train`, a recipe of small steps that reads top to bottom.

Per step: reseed the random generators from ``(seed, rank, step)``; set the learning rate
(warm-up + cosine, :func:`~beyond_attention.train.optim.lr_at`); move the uint8 batch to
the device and augment it there (handed on channels-last with ``channels_last``); forward
under autocast; cross-entropy with label
smoothing (soft targets under MixUp/CutMix) plus ``aux_weight * model.auxiliary_loss()``
when the model has one (LaViT's diagonality loss); backward (scaled under fp16); clip the
gradient norm; AdamW step; EMA update. Every ``save_every`` steps and at the end of each
epoch, rank 0 writes ``last.*``; at the end of each epoch it evaluates, appends a line to
``metrics.jsonl`` and keeps ``best.safetensors``; at the end, ``final.json``.

Tasks other than image classification (:mod:`~beyond_attention.train.tasks`, chosen by the
model's ``config.task``) swap in their data, batches, loss, running metric and evaluation
(:mod:`~beyond_attention.train.task_data`); the loop, schedule, checkpoints and resuming
are shared.

Resuming restores the weights, AdamW moments, EMA, scaler, counters and the running sums
of the epoch in progress, then continues the same epoch's permutation at the saved batch;
because the generators are reseeded from the step, the continued run draws the same
augmentations and reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import BatchLoader, ImageDataset, Normalize, TrainAugment, find_dataset
from ..data.augment import default_hflip
from ..io import atomic_write_json
from ..models._registry import AMP_MODES, model_arguments
from . import budget as budget_mod
from . import distributed as D
from . import recipe as recipe_mod
from . import task_data as TD
from .checkpoint import (
    CheckpointError,
    check_model_name,
    load_checkpoint,
    load_optimizer_state,
    model_metadata,
    optimizer_state,
    save_checkpoint,
    save_safetensors,
)
from .config import DEFAULT_MODEL, TrainConfig, UsageError
from .guards import LossWatch, NonFiniteLossError, weights_finite
from .interrupt import StopOnSigint, TrainingInterrupted
from .optim import ModelEma, build_optimizer, lr_at
from .resume_check import changed_model_arguments, changed_settings, validate_record
from .run_dir import clear_run, fresh_dir, refuse_existing, run_files
from .tasks import ImageClassification, Task, model_task, task_for

__all__ = ["DEFAULT_MODEL", "TrainConfig", "amp_dtype", "build_model", "evaluate",
           "norm_stats", "soft_cross_entropy", "step_seed", "train"]

#: Called on every process after each optimisation step (and the checkpoint it may
#: trigger) with the number of steps done so far in the run.
StepHook = Callable[[int], None]


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for (run seed, rank, global step): distinct streams for every pair."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def computes_bf16_natively(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic in hardware: a GPU that supports it, or a
    CPU with AVX-512 BF16 or AMX (elsewhere bfloat16 autocast is emulated, and slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None: full precision)."""
    if amp == "off":
        return None
    if amp == "native":
        return torch.bfloat16 if computes_bf16_natively(device) else None
    if amp == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        if device.type != "cuda":
            raise ValueError("amp 'fp16' needs a GPU; use 'bf16' on CPU")
        return torch.float16
    raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``(B, K)`` logits against ``(B,)`` labels (with label
    smoothing) or ``(B, K)`` soft targets (smoothing already folded in), in float32."""
    logits = logits.float()
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def build_model(name: str, num_classes: int, in_chans: int, img_size: tuple[int, int],
                drop_path: float = 0.0, **kwargs: Any) -> nn.Module:
    """``create_model`` for a dataset's classes, channels and image size."""
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import create_model

    return create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                        drop_path_rate=drop_path, **kwargs)


def norm_stats(model: nn.Module, data: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's mean/std when they have one value per data channel, else the training
    data's own per-channel statistics."""
    config = getattr(model, "config", None)
    mean, std = getattr(config, "mean", None), getattr(config, "std", None)
    if mean is not None and std is not None and len(mean) == len(std) == data.channels:
        return tuple(mean), tuple(std)
    return data.channel_stats()


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, normalize: nn.Module, device: torch.device,
             num_classes: int, dtype: torch.dtype | None = None,
             info: D.DistInfo | None = None) -> dict[str, Any]:
    """Top-1, top-5, mean loss and per-class accuracy of ``model`` over ``loader``.

    Under DDP each process evaluates its shard (no padding) and the sums are added up, so
    every sample counts exactly once. Returns ``{"loss", "top1", "top5", "top5_k", "count",
    "per_class": [accuracy of class k or None if absent], "class_count": [...]}`` with
    accuracies in percent; ``top5`` is top-k accuracy with ``k = top5_k = min(5,
    num_classes)`` (top-3 on three classes, where a top-5 would be 100 % by definition).
    """
    model.eval()
    k5 = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    per_class = torch.zeros(2, num_classes, dtype=torch.float64, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(normalize(images))
        logits = logits.float()
        top = logits.topk(k5, dim=-1).indices
        hit1 = top[:, 0] == labels
        hit5 = (top == labels[:, None]).any(-1)
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                             hit1.sum(), hit5.sum(), torch.full((), len(labels), device=device)]
                            ).double()
        per_class[0].index_add_(0, labels, hit1.double())
        per_class[1].index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
    if info is not None:
        D.all_reduce_sum(sums, info)
        D.all_reduce_sum(per_class, info)
    loss, c1, c5, n = sums.tolist()
    correct, count = per_class.tolist()
    n = max(n, 1.0)
    return {
        "loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "top5_k": k5,
        "count": int(n),
        "per_class": [100.0 * c / k if k else None for c, k in zip(correct, count, strict=True)],
        "class_count": [int(k) for k in count],
    }


def _log(msg: str, info: D.DistInfo, quiet: bool) -> None:
    if info.is_main and not quiet:
        print(msg, flush=True)


def _cache_kwargs(load: Callable[..., ImageDataset], use_cache: bool) -> dict[str, bool]:
    """The keyword that turns the decode cache off, as ``load`` names it (``cache`` or
    ``use_cache``); none when the cache is on."""
    if use_cache:
        return {}
    params = inspect.signature(load).parameters
    return {"cache": False} if "cache" in params else {"use_cache": False}


def _archive_splits(path: Path) -> list[str]:
    """The split folders of a tar of an image folder (``SPLIT/CLASS/IMAGE``, perhaps under
    one top directory), from its member names alone: nothing is decoded or cached."""
    with tarfile.open(path, "r|*") as tar:
        parts = [PurePosixPath(m.name).parts for m in tar if m.isfile()]
    parts = [p for p in parts if not p[-1].startswith(".")]
    if parts and {len(p) for p in parts} == {4} and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    return sorted({p[0] for p in parts if len(p) == 3})


def _val_split_name(cfg: TrainConfig, source: Any) -> str | None:
    """``--val-split``, else ``val`` if the source has it, else ``test``; None for none.

    The split list of an image folder comes from its cache when current; with
    ``no_cache`` it comes from the folder's listing (or the archive's member names)."""
    if cfg.val_split is not None:
        return None if cfg.val_split == "none" else cfg.val_split
    path = Path(source.path)
    if cfg.no_cache and source.kind == "folder":
        splits = (sorted(d.name for d in path.iterdir() if d.is_dir()
                         and not d.name.startswith(".")) if path.is_dir()
                  else _archive_splits(path))
    else:
        splits = source.splits(cfg.cache_dir, cfg.img_size) or []
    return "val" if "val" in splits else "test" if "test" in splits else None


def _load_data(cfg: TrainConfig) -> tuple[ImageDataset, ImageDataset | None]:
    """The training split and the validation split (``val`` if present, else ``test``).

    With ``no_cache`` an image folder is decoded without reading or writing the decode
    cache."""
    source = find_dataset(cfg.data, cfg.dataset, cfg.download, cfg.cache_dir)
    TD.check_task_data(ImageClassification.name, source, cfg.model)
    opts = dict(img_size=cfg.img_size, cache_dir=cfg.cache_dir,
                **_cache_kwargs(source.load, not cfg.no_cache))
    train_set = source.load(cfg.train_split, **opts)
    val_name = _val_split_name(cfg, source)
    val_set = None
    if val_name is not None:
        val_set = source.load(val_name, **opts).subset(cfg.limit_val)
    return train_set.subset(cfg.limit_train), val_set


def _load_task_data(cfg: TrainConfig, task: str, num_points: int | None
                    ) -> tuple[Any, TD.TaskDataset, TD.TaskDataset | None]:
    """``(source, train split, validation split)`` of a segmentation or point-cloud run."""
    source = find_dataset(cfg.data, cfg.dataset, cfg.download, cfg.cache_dir)
    TD.check_task_data(task, source, cfg.model)
    train_set = TD.load_split(source, cfg.train_split, num_points)
    val_name = cfg.val_split
    if val_name is None:
        splits = source.splits()
        val_name = "val" if "val" in splits else "test" if "test" in splits else None
    val_set = None
    if val_name not in (None, "none"):
        val_set = TD.subset(TD.load_split(source, val_name, num_points), cfg.limit_val)
    return source, TD.subset(train_set, cfg.limit_train), val_set


@dataclass
class Run:
    """What :func:`_setup` builds: data, model, optimiser, schedule, and where it writes."""

    cfg: TrainConfig
    info: D.DistInfo
    device: torch.device
    train_set: Any  # ImageDataset, or a task's SegmentationDataset / PointCloudDataset
    val_set: Any
    model: nn.Module
    meta: dict[str, Any]
    n_params: int
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    has_aux: bool
    loader: BatchLoader
    val_loader: BatchLoader | None
    augment: TrainAugment | None
    normalize: Normalize
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    task: Task = dataclasses.field(default_factory=ImageClassification)
    batches: Any = None  # task_data.ImageBatches or TaskBatches
    eval_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: Path | None = None
    ddp_model: nn.Module | None = None
    watch: LossWatch | None = None
    stop: StopOnSigint | None = None
    last_saved: Path | None = None
    clock: budget_mod.TrainingClock | None = None

    def eval_model(self) -> nn.Module:
        """The weights validation and ``best.safetensors`` use: the EMA when kept."""
        return self.ema.module if self.ema is not None else self.model


def _check(cfg: TrainConfig, info: D.DistInfo) -> None:
    if cfg.budget_minutes is not None and not cfg.budget_minutes > 0:
        raise ValueError(f"budget_minutes must be positive, got {cfg.budget_minutes}")
    if cfg.epochs <= 0 or cfg.batch_size <= 0:
        raise UsageError(f"--epochs and --batch-size must be positive, got {cfg.epochs}, "
                         f"{cfg.batch_size}")
    if cfg.batch_size % info.world_size:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the number of "
                         f"processes {info.world_size}")
    if cfg.resume in ("", "auto") and cfg.out is None:
        raise UsageError("--resume needs the run's directory: pass --out DIR (or --resume "
                         "DIR/last.json)")
    if cfg.resume is not None and cfg.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: "
                         "pass one of them")
    if cfg.log_every < 0 or cfg.save_every < 0:
        raise UsageError(f"--log-every and --save-every must be >= 0, got {cfg.log_every}, "
                         f"{cfg.save_every}")


def _setup(cfg: TrainConfig, info: D.DistInfo) -> Run:
    """Data (rank 0 first: it may decode and cache an image folder), model, optimiser,
    EMA, scaler, loaders, augmentation and the step schedule."""
    task_name = _model_config(cfg.model).task
    if task_name != ImageClassification.name:
        return _setup_task(cfg, info, task_name)
    device = info.device
    t_data = time.perf_counter()
    if info.is_main:
        train_set, val_set = _load_data(cfg)
    D.barrier(info)
    if not info.is_main:
        train_set, val_set = _load_data(cfg)
    img_size = (cfg.img_size, cfg.img_size) if cfg.img_size else train_set.image_size
    cfg = _with_hflip(cfg, train_set)
    cache = train_set.extra.get("cache")
    _log(f"data: {train_set!r}" + (f", val {val_set!r}" if val_set is not None else "")
         + f"; loaded in {time.perf_counter() - t_data:.1f} s"
         + (f" (decode cache: {cache})" if cache else ""), info, cfg.quiet)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, train_set.num_classes, train_set.channels, img_size,
                        cfg.drop_path, **cfg.model_kwargs).to(device)
    _memory_format(model, cfg.channels_last)
    mean, std = norm_stats(model, train_set)
    meta = model_metadata(
        cfg.model, train_set.num_classes, train_set.channels, img_size, mean, std,
        train_set.classes, model_kwargs=cfg.model_kwargs,
        model_arguments=model_arguments(cfg.model, **cfg.model_kwargs),
        data=str(Path(train_set.source).resolve()) if train_set.source else cfg.data,
        dataset=cfg.dataset, val_split=val_set.split if val_set is not None else None,
        decode_size=cfg.img_size, task=model_task(model))
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    dtype = amp_dtype(cfg.amp, device)

    per_rank = cfg.batch_size // info.world_size
    loader = BatchLoader(train_set, per_rank, shuffle=True, seed=cfg.seed, drop_last=True,
                         rank=info.rank, world_size=info.world_size, workers=cfg.workers,
                         pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    _log_dropped(loader, cfg, info)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    val_loader = None
    if val_set is not None:
        val_loader = BatchLoader(val_set, cfg.eval_batch_size or 2 * per_rank, rank=info.rank,
                                 world_size=info.world_size, pad=False)
    augment = TrainAugment(mean, std, train_set.num_classes, img_size, cfg.crop_padding,
                           cfg.hflip, cfg.randaugment, cfg.trivialaugment, cfg.mixup,
                           cfg.cutmix, label_smoothing=cfg.label_smoothing).to(device)
    label_smoothing = cfg.label_smoothing
    return Run(
        cfg=cfg, info=info, device=device, train_set=train_set, val_set=val_set, model=model,
        meta=meta, n_params=sum(p.numel() for p in model.parameters()), optimizer=optimizer,
        ema=ModelEma(model, cfg.ema) if cfg.ema > 0 else None, dtype=dtype,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        has_aux=cfg.aux_weight > 0 and callable(getattr(model, "auxiliary_loss", None)),
        loader=loader, val_loader=val_loader, augment=augment,
        normalize=Normalize(mean, std, img_size).to(device),
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        warmup_steps=min(total_steps, round(cfg.warmup * steps_per_epoch)),
        batches=TD.ImageBatches(augment, lambda logits, targets: soft_cross_entropy(
            logits, targets, label_smoothing), channels_last=bool(cfg.channels_last)),
    )


def _memory_format(model: nn.Module, channels_last: bool | None) -> None:
    """With ``channels_last``, store the weights of ``model``'s 2-D convolutions in the
    channels-last memory format (before the optimiser and the EMA copy see them: their
    state follows the parameters' layout). Only the 2-D convolutions: ``nn.Module.to``
    would also try 5-D weights (the lambda layers' position convolution) and fail.
    Checkpoints are unaffected: tensors are saved contiguous."""
    if channels_last:
        nn.utils.convert_conv2d_weight_memory_format(model, torch.channels_last)


def _model_config(name: str) -> Any:
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import get_model_config

    return get_model_config(name)


def _setup_task(cfg: TrainConfig, info: D.DistInfo, task_name: str) -> Run:
    """:func:`_setup` for segmentation and point clouds (:mod:`.task_data`)."""
    device = info.device
    config = _model_config(cfg.model)
    points = task_name.startswith("pointcloud")
    t_data = time.perf_counter()
    source, train_set, val_set = _load_task_data(cfg, task_name, cfg.num_points)
    num_points = (TD.num_points_for(cfg.num_points, config.input_size[-1], train_set)
                  if points else None)
    crop = cfg.crop_size or (None if points else config.input_size[-1])
    _log(f"data: {TD.describe(train_set)}" + (f", val {TD.describe(val_set)}" if val_set
                                              is not None else "")
         + f"; loaded in {time.perf_counter() - t_data:.1f} s", info, cfg.quiet)
    num_outputs = TD.model_outputs(task_name, train_set)
    kwargs = dict(cfg.model_kwargs)
    task_kwargs: dict[str, Any] = {"label_smoothing": cfg.label_smoothing}
    if task_name == "pointcloud_part_segmentation":
        kwargs.setdefault("num_categories", len(train_set.classes))
        task_kwargs["category_parts"] = train_set.category_parts
    task = task_for(cfg.model, **task_kwargs)
    torch.manual_seed(cfg.seed)
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import create_model

    model = create_model(cfg.model, num_classes=num_outputs, in_chans=3,
                         img_size=None if points else (crop, crop),
                         drop_path_rate=cfg.drop_path, **kwargs).to(device)
    _memory_format(model, cfg.channels_last and not points)
    mean, std = (tuple(config.mean), tuple(config.std))
    classes = list(train_set.classes)
    if task_name == "pointcloud_part_segmentation":
        classes = list(train_set.extra.get("part_names") or
                       [f"part{i}" for i in range(num_outputs)])
    img_size = (3, num_points) if points else (crop, crop)
    meta = model_metadata(
        cfg.model, num_outputs, 3, img_size, mean, std, classes, model_kwargs=kwargs,
        model_arguments=model_arguments(cfg.model, **kwargs),
        data=str(source.path.resolve()) if source.kind != "procedural" else None,
        dataset=cfg.dataset, val_split=val_set.split if val_set is not None else None,
        task=task_name)
    meta.update(categories=list(train_set.classes) if points else None,
                category_parts=getattr(train_set, "category_parts", None),
                num_points=num_points, crop_size=crop, eval_mode=cfg.eval_mode,
                data_kind=source.kind)
    per_rank = cfg.batch_size // info.world_size
    normalize = None if points else TD.seg_normalize(mean, std).to(device)
    hflip = 0.5 if cfg.hflip is None else cfg.hflip
    loaders = TD.task_loaders(task, train_set, per_rank, seed=cfg.seed, rank=info.rank,
                              world_size=info.world_size, workers=cfg.workers,
                              crop_size=(crop, crop) if crop else (0, 0),
                              scale=tuple(cfg.seg_scale), flip=hflip > 0,
                              num_points=num_points or 0, normalize=normalize,
                              channels_last=bool(cfg.channels_last) and not points)
    loader = loaders.loader
    _log_dropped(loader, cfg, info)
    steps_per_epoch = min(len(loader), cfg.max_steps_per_epoch or len(loader))
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    dtype = amp_dtype(cfg.amp, device)
    cfg = dataclasses.replace(cfg, hflip=hflip)
    return Run(
        cfg=cfg, info=info, device=device, train_set=train_set, val_set=val_set, model=model,
        meta=meta, n_params=sum(p.numel() for p in model.parameters()), optimizer=optimizer,
        ema=ModelEma(model, cfg.ema) if cfg.ema > 0 else None, dtype=dtype,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        has_aux=cfg.aux_weight > 0 and callable(getattr(model, "auxiliary_loss", None)),
        loader=loader, val_loader=None, augment=None, normalize=normalize,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        warmup_steps=min(total_steps, round(cfg.warmup * steps_per_epoch)),
        task=task, batches=loaders.batches,
        eval_kwargs=dict(batch_size=cfg.eval_batch_size or 2 * per_rank,
                         num_classes=num_outputs, normalize=normalize, mode=cfg.eval_mode,
                         window=(crop, crop) if crop else None, num_points=num_points),
    )


def _validate(run: Run) -> dict[str, Any]:
    """The validation metrics of the epoch's weights ({} without a validation split)."""
    if run.task.name == ImageClassification.name:
        return {} if run.val_loader is None else evaluate(
            run.eval_model(), run.val_loader, run.normalize, run.device,
            run.train_set.num_classes, run.dtype, run.info)
    if run.val_set is None:
        return {}
    return TD.evaluate_task(run.eval_model(), run.task, run.val_set, run.device,
                            dtype=run.dtype, info=run.info, **run.eval_kwargs)


def dropped_per_epoch(loader: BatchLoader) -> int:
    """Training images per epoch, over all processes, in the last partial batch that
    ``drop_last`` leaves out: the loader's ``dropped_per_epoch`` (this rank's count) when
    it has one, else computed from its shard and batch sizes; times the process count."""
    known = getattr(loader, "dropped_per_epoch", None)
    if known is not None:
        per_rank = int(known() if callable(known) else known)
    else:
        per_rank = loader.shard_size % loader.batch_size if loader.drop_last else 0
    return per_rank * loader.world_size


def _log_dropped(loader: BatchLoader, cfg: TrainConfig, info: D.DistInfo) -> None:
    """Say once how many images the last partial batch of an epoch leaves out."""
    n = dropped_per_epoch(loader)
    if n:
        _log(f"note: the last partial batch drops {n} of the {len(loader.dataset)} training "
             f"images each epoch (batch {cfg.batch_size}); the epoch's permutation changes, so "
             f"other images are left out each time", info, cfg.quiet)
def _with_hflip(cfg: TrainConfig, data: ImageDataset) -> TrainConfig:
    """``cfg`` with the flip probability decided (see :func:`default_hflip`)."""
    if cfg.hflip is not None:
        return cfg
    hflip = default_hflip(data.channels, data.source, data.extra,
                          recipe_mod.model_recipe(cfg.model).get("hflip"))
    return dataclasses.replace(cfg, hflip=hflip)


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_top1": None,
            "train_seconds": 0.0, "sums": [0.0, 0.0, 0.0], "training_seconds": 0.0}


def _lr(run: Run, step: int) -> float:
    """The learning rate of ``step``: over time in a budget run, else over steps."""
    cfg = run.cfg
    if cfg.budget_minutes is not None:
        return run.clock.lr(cfg.lr, cfg.min_lr)
    return lr_at(step, run.total_steps, run.warmup_steps, cfg.lr, cfg.min_lr)


def _budget_spent(run: Run, state: dict[str, Any]) -> bool:
    """Record the training time so far; True once a budget run's time is up."""
    state["training_seconds"] = run.clock.elapsed()
    return run.clock.expired()


def _epochs(run: Run, state: dict[str, Any]):
    """The epochs still to train: up to ``epochs``, or until a budget is spent."""
    epoch = state["epoch"]
    while epoch < run.cfg.epochs or run.cfg.budget_minutes is not None:
        if run.cfg.budget_minutes is not None and run.clock.expired():
            return
        yield epoch
        epoch += 1


def _epoch_name(run: Run, epoch: int) -> str:
    """``"epoch N/E"`` for ``epoch`` (0-based), or ``"epoch N (budget)"`` in a budget run,
    whose epochs run until the time is spent rather than up to ``epochs``."""
    if run.cfg.budget_minutes is not None:
        return f"epoch {epoch + 1} (budget)"
    return f"epoch {epoch + 1}/{run.cfg.epochs}"


def _throughput(run: Run, state: dict[str, Any], steps_done: int) -> dict[str, Any]:
    """``final.json``'s budget and throughput fields."""
    images = steps_done * run.cfg.batch_size
    seconds = state["training_seconds"]
    return {"budget_minutes": run.cfg.budget_minutes, "images_seen": images,
            "epochs_done": steps_done / max(run.steps_per_epoch, 1),
            "training_seconds": seconds, "images_per_s": images / max(seconds, 1e-9),
            "hflip": run.cfg.hflip}


def _named_record(cfg: TrainConfig) -> Path | None:
    """The ``last.json`` that ``--resume PATH`` names (a folder stands for its
    ``last.json``); None for ``--resume`` without a path (auto) or no resume."""
    if cfg.resume in (None, "", "auto"):
        return None
    path = Path(cfg.resume)
    return path / "last.json" if path.is_dir() else path


def _saved_config(cfg: TrainConfig) -> dict[str, Any]:
    """The configuration recorded by the checkpoint a ``--resume`` run would continue
    (``{}`` when there is none or it cannot be read: :func:`_locate` and :func:`_resume`
    then report it). It fills the recipe settings no flag gives, before the recipe."""
    if cfg.resume is None:
        return {}
    path = _named_record(cfg)
    if path is None and cfg.out:  # auto: the record in --out
        path = Path(cfg.out) / "last.json"
    try:
        saved = json.loads(path.read_text())["config"] if path is not None else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _locate(cfg: TrainConfig, run: Run) -> Path | None:
    """Set ``run.out``; return the checkpoint to resume from (None: start afresh).

    A new run never writes into a directory holding another run unless ``--overwrite``
    (:mod:`~beyond_attention.train.run_dir`); without ``--out`` rank 0 picks a fresh
    ``runs/MODEL-DATASET[-N]`` and tells the other processes."""
    resume_path = _named_record(cfg)
    if cfg.out:
        run.out = Path(cfg.out)
    elif resume_path is not None:
        run.out = resume_path.parent
    else:
        picked = fresh_dir(Path("runs"), f"{cfg.model}-{run.train_set.name}")
        run.out = Path(str(D.broadcast_object(str(picked), run.info)))
    if resume_path is not None and not resume_path.is_file():
        raise CheckpointError(f"checkpoint {resume_path} (--resume) does not exist")
    if cfg.resume in ("", "auto"):
        resume_path = run.out / "last.json"
        if not resume_path.is_file():  # a first start and a restart share one command
            _log(f"no checkpoint at {resume_path}: starting afresh", run.info, cfg.quiet)
            resume_path = None
    if resume_path is None and not cfg.overwrite:
        refuse_existing(run.out)
    return resume_path


def _resume(run: Run, path: Path, state: dict[str, Any]) -> None:
    """Restore weights, AdamW moments, EMA, scaler and counters from ``path``."""
    cfg, info = run.cfg, run.info
    ckpt = load_checkpoint(path)
    check_model_name(cfg.model, ckpt.info.get("config", {}).get("model"), path)
    _check_resume(run, ckpt, path)
    run.model.load_state_dict(ckpt.model_state)
    load_optimizer_state(run.optimizer, ckpt.state_tensors, ckpt.info["optimizer"])
    if run.ema is not None:
        ema_sd = {k[4:]: v for k, v in ckpt.state_tensors.items() if k.startswith("ema.")}
        if not ema_sd:
            raise CheckpointError(f"{path} has no EMA weights, but --ema is on")
        run.ema.load_state_dict(ema_sd)
    if ckpt.info.get("scaler"):
        run.scaler.load_state_dict(ckpt.info["scaler"])
    state.update(ckpt.info["state"])
    _log(f"resumed from {path}: epoch {state['epoch'] + 1}, after step "
         f"{state['step_in_epoch']} of the epoch (global step {state['global_step']})",
         info, cfg.quiet)


def _check_resume(run: Run, ckpt: Any, path: Path) -> None:
    """Refuse a resume whose settings, process count or data differ from the saved run's,
    or whose record is not self-consistent (:mod:`~beyond_attention.train.resume_check`)."""
    cfg, info = run.cfg, run.info
    refused, allowed = changed_settings(ckpt.info.get("config", {}), cfg.to_dict())
    saved_ws = ckpt.info.get("world_size", info.world_size)
    if saved_ws != info.world_size:
        refused.append(f"world size (processes): {saved_ws!r} -> {info.world_size}")
    for key, now in (("dataset", run.train_set.name), ("train_images", len(run.train_set))):
        if key in ckpt.info and ckpt.info[key] != now:
            refused.append(f"{key}: {ckpt.info[key]!r} -> {now!r}")
    if refused:
        raise CheckpointError(
            f"cannot resume {path}: the run was saved with other settings ("
            + "; ".join(refused) + "); resuming must continue the same optimisation: pass "
            "the saved values, or start a new run with another --out")
    changed = changed_model_arguments(ckpt.model_meta.get("model_arguments"),
                                      run.meta.get("model_arguments"))
    if changed:
        raise CheckpointError(
            f"cannot resume {path}: model {cfg.model} of this version "
            f"({run.meta.get('version')}) is not the one the run was saved with (version "
            f"{ckpt.model_meta.get('version')}): " + "; ".join(changed) + "; finish the run "
            "with the version that started it, or start a new run with another --out")
    if allowed:
        _log(f"resuming with changed settings that do not alter the optimisation: "
             f"{'; '.join(allowed)}", info, cfg.quiet)
    validate_record(ckpt, path, steps_per_epoch=run.steps_per_epoch, epochs=cfg.epochs,
                    batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr,
                    warmup_steps=run.warmup_steps, scaler_enabled=run.scaler.is_enabled(),
                    budget=cfg.budget_minutes is not None,
                    per_sample=run.task.name in (ImageClassification.name,
                                                 "pointcloud_classification"))


def _open_out(run: Run, resumed: bool, state: dict[str, Any]) -> None:
    """Create the output directory; keep only the finished epochs' metrics lines."""
    if not run.info.is_main:
        return
    if run.cfg.overwrite and not resumed and run_files(run.out):
        _log(f"--overwrite: deleting {', '.join(clear_run(run.out))} in {run.out}", run.info,
             run.cfg.quiet)
    run.out.mkdir(parents=True, exist_ok=True)
    metrics_file = run.out / "metrics.jsonl"
    lines = metrics_file.read_text().splitlines() if metrics_file.exists() else []
    keep = [ln for ln in lines if resumed and json.loads(ln)["epoch"] < state["epoch"]]
    metrics_file.write_text("".join(ln + "\n" for ln in keep))


def _save_last(run: Run, state: dict[str, Any], epoch: int, step_in_epoch: int,
               global_step: int, sums: torch.Tensor) -> None:
    """Write ``last.*``: weights, optimiser, EMA, scaler and where the run stands."""
    tensors, opt_info = optimizer_state(run.optimizer)
    if run.ema is not None:
        tensors.update({f"ema.{k}": v for k, v in run.ema.state_dict().items()})
    record = {
        "config": run.cfg.to_dict(), "world_size": run.info.world_size,
        "params": run.n_params, "dataset": run.train_set.name,
        "train_images": len(run.train_set),
        "state": {**state, "epoch": epoch, "step_in_epoch": step_in_epoch,
                  "global_step": global_step, "sums": sums.tolist()},
        "optimizer": opt_info,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
    }
    run.last_saved = save_checkpoint(run.out, "last", model_state=run.model.state_dict(),
                                     model_meta=run.meta, state_tensors=tensors, info=record)


def _guard_weights(run: Run, step: int) -> None:
    """Before a checkpoint (on every process, so all stop together): refuse to go on with
    weights that are no longer finite, so none are ever written."""
    modules = [run.model] + ([run.ema.module] if run.ema is not None else [])
    if not all(weights_finite(m) for m in modules):
        kept = f"; the last checkpoint, {run.last_saved}, is kept" if run.last_saved else ""
        raise NonFiniteLossError(
            f"training diverged: the weights are no longer finite after step {step} (the "
            f"gradients overflowed){kept}; lower --lr or keep --clip-grad on")


def _train_step(run: Run, step: int, batch: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimisation step on a batch already on the device; returns the loss, the
    logits and the learning rate."""
    cfg, optimizer = run.cfg, run.optimizer
    torch.manual_seed(step_seed(cfg.seed, run.info.rank, step))
    lr = _lr(run, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = run.batches.train_inputs(batch)
    with torch.autocast(run.device.type, dtype=run.dtype or torch.float32,
                        enabled=run.dtype is not None):
        logits = run.ddp_model(*inputs)
        loss = run.batches.loss(logits, targets)
        if run.has_aux:
            loss = loss + cfg.aux_weight * run.model.auxiliary_loss()
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.clip_grad > 0:
        run.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.scaler.step(optimizer)
    run.scaler.update()
    if run.watch is not None:
        run.watch.observe(loss, step)
        if run.scaler.is_enabled():
            run.watch.count_skip(optimizer, step)
    if run.ema is not None:
        run.ema.update(run.model, step)
    return loss, logits, lr


def _progress_mode(run: Run) -> str:
    """``"bar"`` (a tqdm bar, when both outputs are terminals), ``"lines"`` (a line every
    ``log_every`` steps, e.g. into a log file) or ``"none"``; only rank 0 shows progress."""
    if not run.info.is_main or run.cfg.quiet:
        return "none"
    if sys.stdout.isatty() and sys.stderr.isatty():
        return "bar"
    return "lines" if run.cfg.log_every > 0 else "none"


def _sync(run: Run, sums: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The running sums over all processes and whether any process was asked to stop,
    in one reduction (for checkpoints: every process must stop at the same step)."""
    stop = float(run.stop is not None and run.stop.requested)
    packed = torch.cat([sums, torch.tensor([stop], dtype=sums.dtype, device=sums.device)])
    packed = D.all_reduce_sum(packed, run.info)
    return packed[:3], bool(packed[3] > 0)


def _check_finite(run: Run, loss_sum: float, where: str) -> None:
    """Stop with :class:`NonFiniteLossError` if the summed loss is not finite; the same
    value on every process, so all stop together (the first bad step is their minimum)."""
    if run.watch is None or math.isfinite(loss_sum):
        return
    if run.info.enabled:
        none = torch.iinfo(torch.int64).max
        first = run.watch.first_bad
        first = torch.where(first < 0, none, first)
        D.all_reduce_min(first, run.info)
        run.watch.first_bad = torch.where(first == none, -1, first)
    run.watch.check(loss_sum, where, str(run.last_saved) if run.last_saved else None)


def _interrupt(run: Run, state: dict[str, Any], epoch: int, step_in_epoch: int,
               steps_done: int, reduced: torch.Tensor) -> TrainingInterrupted:
    """Save ``last.*`` at the current step (rank 0) and return the exception to raise."""
    _guard_weights(run, steps_done)
    if run.info.is_main:
        _save_last(run, state, epoch, step_in_epoch, steps_done, reduced)
    return TrainingInterrupted(run.out / "last.json", steps_done)


def train_one_epoch(run: Run, state: dict[str, Any], epoch: int,
                    on_step: StepHook | None = None) -> dict[str, Any]:
    """Train ``epoch`` from where ``state`` stands (mid-epoch after a resume).

    Returns ``{"sums": tensor [loss * n, correct, n] over all ranks (n: samples; counted
    pixels or points for segmentation), "seen": samples,
    "seconds": training time, "step": the last step's index}``. Raises
    :class:`NonFiniteLossError` when the loss stops being finite (checked where the loop
    synchronises anyway) and :class:`TrainingInterrupted` after SIGINT, once the step's
    checkpoint is written.
    """
    cfg, info, device, spe = run.cfg, run.info, run.device, run.steps_per_epoch
    run.loader.set_epoch(epoch)
    start = state["step_in_epoch"] if epoch == state["epoch"] else 0
    # loss * n, correct, n of this rank; rank 0 carries the reduced sums of a resumed epoch
    sums = torch.tensor(state["sums"] if start else [0.0, 0.0, 0.0], dtype=torch.float64,
                        device=device)
    if start and not info.is_main:
        sums.zero_()
    run.ddp_model.train()
    t_epoch, seen = time.perf_counter(), 0
    mode = _progress_mode(run)
    bar = tqdm(total=spe, initial=start, desc=_epoch_name(run, epoch),
               disable=mode != "bar", dynamic_ncols=True, leave=False)
    step = epoch * spe + start
    run.clock.start()
    for i, batch in enumerate(run.loader.iter_from(start), start):
        if i >= spe:
            break
        step = epoch * spe + i
        batch = run.batches.to_device(batch, device)
        loss, logits, lr = _train_step(run, step, batch)
        with torch.no_grad():  # count: samples (classification), pixels or points counted
            correct, count = run.batches.hits(logits, batch)
            if not isinstance(count, torch.Tensor):  # a fill, not a host-to-device copy
                count = torch.full((), float(count), dtype=torch.float64, device=device)
            sums += torch.stack([loss.detach().double() * count, correct.double(),
                                 count.double()])
        seen += run.batches.samples(batch) * info.world_size
        spent = _budget_spent(run, state)
        shown = (mode == "bar" and (i % 10 == 0 or i + 1 == spe)) or (
            mode == "lines" and (i + 1) % cfg.log_every == 0 and i + 1 < spe)
        if mode == "bar":
            bar.update(1)
        if shown:
            s = sums.tolist()
            if not info.enabled:  # the local sums are the run's: check them for free
                _check_finite(run, s[0], f"at step {step + 1}")
            rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
            loss_s, acc_s = f"{s[0] / s[2]:.4f}", f"{100 * s[1] / s[2]:.2f}"
            acc_name = "top-1" if run.task.name == ImageClassification.name else "acc"
            if mode == "bar":
                bar.set_postfix(loss=loss_s, acc=acc_s, img_s=f"{rate:.0f}", lr=f"{lr:.2e}")
            else:
                _log(f"{_epoch_name(run, epoch)} step {i + 1}/{spe}: loss {loss_s} "
                     f"{acc_name} {acc_s}, {rate:.0f} img/s, lr {lr:.2e}", info, cfg.quiet)
        stop_here = run.stop is not None and run.stop.requested and not info.enabled
        if (cfg.save_every and (step + 1) % cfg.save_every == 0 and i + 1 < spe) or stop_here:
            reduced, stop = _sync(run, sums.clone())
            _check_finite(run, float(reduced[0]), f"at the checkpoint of step {step + 1}")
            if stop and i + 1 < spe:
                bar.close()
                raise _interrupt(run, state, epoch, i + 1, step + 1, reduced)
            _guard_weights(run, step + 1)
            if info.is_main and not stop:
                _save_last(run, state, epoch, i + 1, step + 1, reduced)
        if on_step is not None:
            on_step(step + 1)
        if spent or run.clock.expired():
            break
    run.clock.pause()
    _budget_spent(run, state)
    bar.close()
    seconds = time.perf_counter() - t_epoch
    reduced = D.all_reduce_sum(sums, info)
    _check_finite(run, float(reduced[0]), f"at the end of epoch {epoch + 1}")
    return {"sums": reduced, "seen": seen, "seconds": seconds, "step": step}


def _end_epoch(run: Run, state: dict[str, Any], epoch: int, stats: dict[str, Any],
               val: dict[str, Any], t_epoch: float) -> None:
    """Record the epoch: ``metrics.jsonl``, ``best.safetensors``, ``last.*``, a log line."""
    cfg, spe = run.cfg, run.steps_per_epoch
    _guard_weights(run, (epoch + 1) * spe)
    loss_sum, correct, n = stats["sums"].tolist()
    seconds = time.perf_counter() - t_epoch
    state["train_seconds"] += seconds
    image = run.task.name == ImageClassification.name
    if image:
        val_fields = {"val_top1": val.get("top1"), "val_top5": val.get("top5"),
                      "val_top5_k": val.get("top5_k")}
    else:  # the task's metrics; train accuracy over counted pixels / points / clouds
        val_fields = {f"val_{k}": val.get(k) for k in run.task.keys}
    record = {
        "epoch": epoch, "train_loss": loss_sum / max(n, 1),
        "train_top1" if image else "train_accuracy": 100 * correct / max(n, 1),
        "val_loss": val.get("loss"), **val_fields, "val_count": val.get("count"),
        "lr": _lr(run, stats["step"]),
        "images_per_s": stats["seen"] / max(stats["seconds"], 1e-9), "seconds": seconds,
        "steps": (epoch + 1) * spe,
    }
    # state["best_top1"] holds the best value of the task's score (top-1, mIoU, OA, ...)
    score = val.get(run.task.score, -1.0)
    if score != score:  # NaN (nothing counted) never ranks best
        score = -1.0
    is_best = state["best_top1"] is None or score > state["best_top1"]
    if is_best:
        state["best_top1"] = score
    if run.info.is_main:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if is_best:
            save_safetensors(run.out / "best.safetensors", run.eval_model().state_dict(),
                             {**run.meta, "epoch": epoch, f"val_{run.task.score}": score})
        _save_last(run, state, epoch + 1, 0, (epoch + 1) * spe, torch.zeros(3))
    state["epoch"], state["step_in_epoch"] = epoch + 1, 0
    if not val:
        val_msg = "no validation split"
    elif image:
        val_msg = f"val top-1 {val['top1']:.2f} top-{val['top5_k']} {val['top5']:.2f}"
    else:
        val_msg = "val " + " ".join(f"{k} {val[k]:.2f}" for k in run.task.keys)
    train_acc = record["train_top1" if image else "train_accuracy"]
    _log(f"{_epoch_name(run, epoch)}: train loss {record['train_loss']:.4f} "
         f"{'top-1' if image else 'acc'} {train_acc:.2f}, {val_msg}, "
         f"{record['images_per_s']:.0f} img/s, {seconds:.1f} s", run.info, cfg.quiet)


def _final(run: Run, state: dict[str, Any], val: dict[str, Any], t_start: float) -> dict:
    """The contents of ``final.json``."""
    cfg, train_set, val_set = run.cfg, run.train_set, run.val_set
    if run.task.name != ImageClassification.name:
        return _final_task(run, state, val, t_start)
    return {
        "model": cfg.model, "dataset": train_set.name, "epochs": cfg.epochs,
        "top1": val.get("top1"), "top5": val.get("top5"), "top5_k": val.get("top5_k"),
        "best_top1": state["best_top1"] if val else None,
        "params": run.n_params, "train_seconds": state["train_seconds"],
        "wall_seconds": time.perf_counter() - t_start,
        "train_images": len(train_set), "val_images": len(val_set) if val_set else 0,
        "train_images_dropped_per_epoch": dropped_per_epoch(run.loader),
        "val_split": val_set.split if val_set is not None else None,
        "steps": run.total_steps, "world_size": run.info.world_size, "device": str(run.device),
        "amp": str(run.dtype).replace("torch.", "") if run.dtype else "off",
        "per_class_top1": dict(zip(train_set.classes, val.get("per_class", []), strict=False)),
        "out": str(run.out), "config": cfg.to_dict(),
    }


def _final_task(run: Run, state: dict[str, Any], val: dict[str, Any], t_start: float) -> dict:
    """``final.json`` of a segmentation or point-cloud run: the task's metrics by name."""
    cfg, val_set, task = run.cfg, run.val_set, run.task
    names = run.meta["classes"] if task.name != "pointcloud_part_segmentation" \
        else run.meta["categories"]
    per_class_key = {"semantic_segmentation": "per_class_iou",
                     "pointcloud_part_segmentation": "per_category_miou"}.get(
        task.name, "per_class_accuracy")
    return {
        "model": cfg.model, "task": task.name, "dataset": run.train_set.name,
        "epochs": cfg.epochs, **{k: val.get(k) for k in task.keys},
        "val_loss": val.get("loss"), "score": task.score,
        f"best_{task.score}": state["best_top1"] if val else None,
        "params": run.n_params, "train_seconds": state["train_seconds"],
        "wall_seconds": time.perf_counter() - t_start,
        "train_samples": len(run.train_set), "val_samples": len(val_set) if val_set else 0,
        "train_samples_dropped_per_epoch": dropped_per_epoch(run.loader),
        "val_split": val_set.split if val_set is not None else None,
        "num_points": run.meta.get("num_points"), "crop_size": run.meta.get("crop_size"),
        "eval_mode": cfg.eval_mode if task.name == "semantic_segmentation" else None,
        "steps": run.total_steps, "world_size": run.info.world_size, "device": str(run.device),
        "amp": str(run.dtype).replace("torch.", "") if run.dtype else "off",
        per_class_key: dict(zip(names, val.get("per_class", []), strict=False)),
        "out": str(run.out), "config": cfg.to_dict(),
    }


def train(cfg: TrainConfig, on_step: StepHook | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg``'s data; return the contents of ``final.json``.

    ``on_step(steps_done)`` runs on every process after each optimisation step (and the
    checkpoint it may trigger). Launch under ``torchrun`` for DDP. Only rank 0 writes
    files and prints.
    """
    info = D.setup(cfg.device)
    threads = torch.get_num_threads()
    try:
        return _train(cfg, info, on_step)
    finally:
        torch.set_num_threads(threads)
        D.teardown(info)


def _train(cfg: TrainConfig, info: D.DistInfo, on_step: StepHook | None) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg = recipe_mod.resolve(cfg, _saved_config(cfg))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _check(cfg, info)
    run = _setup(cfg, info)
    resume_path = _locate(cfg, run)
    D.barrier(info)  # every process has looked at --out before rank 0 writes into it
    state = _fresh_state()
    if resume_path is not None:
        _resume(run, resume_path, state)
        run.last_saved = resume_path
    run.clock = budget_mod.TrainingClock(cfg.budget_minutes, state["training_seconds"])
    if resume_path is not None and not any(True for _ in _epochs(run, state)):
        _log(f"the run in {run.out} is already complete ({state['epoch']} epochs)", info,
             cfg.quiet)
        final_path = run.out / "final.json"
        return json.loads(final_path.read_text()) if final_path.is_file() else {}
    _open_out(run, resume_path is not None, state)
    _log(f"model {cfg.model}: {run.n_params / 1e6:.3f}M parameters; {run.steps_per_epoch} "
         f"steps/epoch x {cfg.epochs} epochs, batch {cfg.batch_size} on {info.world_size} x "
         f"{run.device}; out {run.out}", info, cfg.quiet)
    run.ddp_model = run.model
    if info.enabled:
        run.ddp_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)

    run.watch = LossWatch(run.device)
    val: dict[str, Any] = {}
    steps_done = state["global_step"]
    with StopOnSigint(announce=info.is_main) as run.stop:
        for epoch in _epochs(run, state):
            t_epoch = time.perf_counter()
            stats = train_one_epoch(run, state, epoch, on_step)
            steps_done = stats["step"] + 1
            val = _validate(run)
            _end_epoch(run, state, epoch, stats, val, t_epoch)
            if epoch + 1 < cfg.epochs and _sync(run, torch.zeros(3, dtype=torch.float64,
                                                                 device=run.device))[1]:
                raise TrainingInterrupted(run.out / "last.json",
                                          (epoch + 1) * run.steps_per_epoch)

    final = {**_final(run, state, val, t_start), **_throughput(run, state, steps_done)}
    if info.is_main:
        atomic_write_json(run.out / "final.json", final)
        _log(f"done: {run.out / 'final.json'}", info, cfg.quiet)
    return final
