"""``beyond-attention train``: train a model on real images.

With no arguments it runs a short real training (one epoch on a 10,000-image subset of the
default dataset, validated on 2,000 held-out images) that finishes in minutes on a laptop
CPU; ``--limit-train 0 --limit-val 0 --epochs N`` trains on everything. Under
``torchrun --nproc-per-node K -m beyond_attention train ...`` it runs DDP.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..data.find import DATASET_NAMES
from ..train.engine import DEFAULT_MODEL, TrainConfig, train

_D = TrainConfig()


def _limit(text: str) -> int | None:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 (0: no limit), got {text}")
    return n or None


def _pair(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,M (e.g. 2,9), got {text!r}") from None
    return n, m


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` command's flags (defaults from :class:`TrainConfig`)."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registered model name (default {DEFAULT_MODEL}; see "
                        f"'beyond-attention models')")
    g.add_argument("--model-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="extra keyword for create_model (JSON value), repeatable")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="dataset path (CIFAR python dir/tar.gz, IDX folder, image folder or "
                        "tar); default: $BEYOND_ATTENTION_DATA, then standard places")
    g.add_argument("--dataset", default="auto", choices=DATASET_NAMES,
                   help="dataset kind/name (default: recognised from the files)")
    g.add_argument("--train-split", default=_D.train_split)
    g.add_argument("--val-split", default=None,
                   help="validation split (default: 'val' if present, else 'test'; "
                        "'none' to skip)")
    g.add_argument("--limit-train", type=_limit, default=_D.limit_train, metavar="N",
                   help=f"train on a fixed random subset of N images (default {_D.limit_train}; "
                        f"0: all)")
    g.add_argument("--limit-val", type=_limit, default=_D.limit_val, metavar="N",
                   help=f"validate on N images (default {_D.limit_val}; 0: all)")
    g.add_argument("--img-size", type=int, default=None,
                   help="model input size (default: the data's); batches are resized")
    g.add_argument("--download", action="store_true",
                   help="download the dataset from its official address if not found")
    g.add_argument("--cache-dir", default=None,
                   help="cache for decoded image folders and downloads "
                        "(default ~/.cache/beyond-attention)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=_D.epochs)
    g.add_argument("--batch-size", type=int, default=_D.batch_size,
                   help="global batch size (split across processes under torchrun)")
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=_D.lr, help="peak AdamW learning rate")
    g.add_argument("--min-lr", type=float, default=_D.min_lr, help="final cosine learning rate")
    g.add_argument("--weight-decay", type=float, default=_D.weight_decay)
    g.add_argument("--warmup", type=float, default=_D.warmup, help="warm-up epochs (float)")
    g.add_argument("--clip-grad", type=float, default=_D.clip_grad,
                   help="gradient-norm clip (0: off)")
    g.add_argument("--label-smoothing", type=float, default=_D.label_smoothing)
    g.add_argument("--drop-path", type=float, default=_D.drop_path, help="stochastic depth rate")
    g.add_argument("--ema", type=float, nargs="?", const=0.999, default=_D.ema, metavar="DECAY",
                   help="keep an EMA of the weights (decay 0.999 if no value); validation "
                        "and best.safetensors use it")
    g.add_argument("--aux-weight", type=float, default=_D.aux_weight,
                   help="weight of the model's auxiliary loss (LaViT's diagonality loss)")
    g.add_argument("--amp", nargs="?", const="auto", default=_D.amp,
                   choices=["off", "auto", "bf16", "fp16"],
                   help="mixed precision: bfloat16 on CPU, bf16/fp16 on GPU ('--amp' = auto)")
    g.add_argument("--seed", type=int, default=_D.seed)

    g = p.add_argument_group("augmentation")
    g.add_argument("--crop-padding", type=int, default=_D.crop_padding,
                   help="random crop with this zero padding (0: off)")
    g.add_argument("--hflip", type=float, default=_D.hflip, help="horizontal flip probability")
    aug = g.add_mutually_exclusive_group()
    aug.add_argument("--randaugment", type=_pair, nargs="?", const=(2, 9), default=None,
                     metavar="N,M", help="RandAugment with N ops of magnitude M (default 2,9)")
    aug.add_argument("--trivialaugment", action="store_true")
    g.add_argument("--mixup", type=float, default=_D.mixup, help="MixUp Beta alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=_D.cutmix, help="CutMix Beta alpha (0: off)")

    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default runs/MODEL-DATASET-TIME)")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue the run in --out (or from PATH, a last.json); starts afresh "
                        "if there is no checkpoint yet")
    g.add_argument("--save-every", type=int, default=_D.save_every, metavar="STEPS",
                   help="also checkpoint every STEPS steps within an epoch (0: epoch ends only)")
    g.add_argument("--max-steps-per-epoch", type=int, default=None)
    g.add_argument("--workers", type=int, default=_D.workers,
                   help="background threads gathering batches")
    g.add_argument("--device", default=_D.device, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest "
                        "on a machine shared with other jobs)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    g.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed flags."""
    return TrainConfig(
        model=args.model, data=args.data, dataset=args.dataset, train_split=args.train_split,
        val_split=args.val_split, epochs=args.epochs, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, warmup=args.warmup, label_smoothing=args.label_smoothing,
        mixup=args.mixup, cutmix=args.cutmix, randaugment=args.randaugment,
        trivialaugment=args.trivialaugment, crop_padding=args.crop_padding, hflip=args.hflip,
        drop_path=args.drop_path, ema=args.ema, amp=args.amp, clip_grad=args.clip_grad,
        aux_weight=args.aux_weight, seed=args.seed, out=args.out, resume=args.resume,
        save_every=args.save_every, workers=args.workers,
        max_steps_per_epoch=args.max_steps_per_epoch, limit_train=args.limit_train,
        limit_val=args.limit_val, download=args.download, cache_dir=args.cache_dir,
        img_size=args.img_size, device=args.device, threads=args.threads, quiet=args.quiet,
        stop_after_steps=args.stop_after_steps, model_kwargs=dict(args.model_arg),
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command."""
    train(config_from_args(args))
    return 0
