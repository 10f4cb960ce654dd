"""The settings of a training run, written once: :class:`TrainConfig`.

Each field carries its command-line flag in its metadata (:func:`setting`): the help text,
the argparse group, and where needed the flag name, type, choices, ``nargs``/``const``
(flags whose value is optional) and a function turning the parsed value into the field's.
``beyond_attention.commands.train`` builds the ``train`` command's flags from these fields
and converts parsed flags back generically, so a new setting is one new field.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.find import DATASET_NAMES
from ..models._registry import AMP_MODES


class UsageError(ValueError):
    """Settings that cannot run together (the command line exits with status 2)."""


# The main job's default: the smallest less-attention ViT, one of the fastest small-image
# models to train on a CPU (490 images/s at batch 128 on two idle cores).
DEFAULT_MODEL = "lavit_tiny_cifar"


def count_or_all(text: str) -> int | None:
    """A count flag where 0 means no limit: ``"0"`` -> None, ``"N"`` -> N."""
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 (0: no limit), got {text}")
    return n or None


def int_pair(text: str) -> tuple[int, int]:
    """``"N,M"`` -> ``(N, M)``."""
    try:
        n, m = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,M (e.g. 2,9), got {text!r}") from None
    return n, m


def key_value(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)``, the value read as JSON when it parses."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def setting(default: Any = None, *, help: str, group: str, flag: str | None = None,
            type: Callable[[str], Any] | None = None, choices: tuple[str, ...] | None = None,
            nargs: str | None = None, const: Any = None, metavar: str | None = None,
            action: str | None = None, exclusive: str | None = None,
            shown_default: str | None = None, convert: Callable[[Any], Any] | None = None,
            default_factory: Callable[[], Any] | None = None) -> Any:
    """A :class:`TrainConfig` field with its flag described in the metadata.

    Args:
        default: the field's default (and the flag's, unless ``convert`` maps it).
        help: the flag's help, without the default: the parser appends it.
        group: the help section the flag is listed under.
        flag: the option string (default ``--`` + the field name with dashes).
        type: the argparse converter (default: ``int``/``float`` as the default is one).
        choices, nargs, const, metavar, action: passed to ``add_argument`` as given.
        exclusive: flags sharing this key are mutually exclusive.
        shown_default: the default as the help shows it (default: the value itself).
        convert: maps the parsed flag value to the field value (e.g. a list of pairs to
            a dict).
        default_factory: for mutable defaults, as :func:`dataclasses.field`.
    """
    if type is None and action is None and isinstance(default, int | float) \
            and not isinstance(default, bool):
        type = int if isinstance(default, int) else float
    meta = {"help": help, "group": group, "flag": flag, "type": type, "choices": choices,
            "nargs": nargs, "const": const, "metavar": metavar, "action": action,
            "exclusive": exclusive, "shown_default": shown_default, "convert": convert}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


_DATA, _OPT, _AUG, _RUN = "model and data", "optimisation", "augmentation", "run"
# Settings left unset take the model's recipe (ModelConfig.recipe), else this value.
_RECIPE = "the model's recipe, else "


@dataclass
class TrainConfig:
    """Everything that defines a training run (the ``train`` command's flags).

    ``batch_size`` is the global batch: under DDP each of K processes takes
    ``batch_size / K`` samples per step, so the optimisation does not depend on K.
    ``warmup`` is in epochs (fractions allowed). ``ema`` is the EMA decay (0: off).
    ``amp`` is ``off``, ``auto`` (bfloat16 on CPU; bfloat16 on GPUs that support it, else
    float16), ``native`` (bfloat16 where the device computes it natively, else off), ``bf16``
    or ``fp16``; None takes the model's recipe.

    The defaults make a short real run: one epoch of ``DEFAULT_MODEL`` on a fixed
    10,000-image subset of the training split, validated on 2,000 images of the ``val`` (or
    ``test``) split; ``limit_train=None, limit_val=None`` and more ``epochs`` train in full.
    """

    # -- model and data
    model: str = setting(DEFAULT_MODEL, group=_DATA,
                         help="registered model name (see 'beyond-attention models')")
    model_kwargs: dict[str, Any] = setting(
        group=_DATA, flag="--model-arg", action="append", type=key_value, metavar="KEY=VALUE",
        default_factory=dict, convert=dict, shown_default="none",
        help="extra keyword for create_model (JSON value), repeatable")
    data: str | None = setting(
        None, group=_DATA, metavar="PATH",
        shown_default="$BEYOND_ATTENTION_DATA, then standard places",
        help="dataset path (CIFAR python dir/tar.gz, IDX folder, image folder or tar)")
    dataset: str = setting("auto", group=_DATA, choices=DATASET_NAMES,
                           help="dataset kind/name ('auto': recognised from the files)")
    train_split: str = setting("train", group=_DATA, help="training split")
    val_split: str | None = setting(None, group=_DATA,
                                    shown_default="'val' if present, else 'test'",
                                    help="validation split ('none' to skip)")
    limit_train: int | None = setting(10000, group=_DATA, type=count_or_all, metavar="N",
                                      help="train on a fixed random subset of N images (0: all)")
    limit_val: int | None = setting(2000, group=_DATA, type=count_or_all, metavar="N",
                                    help="validate on N images (0: all)")
    img_size: int | None = setting(None, group=_DATA, type=int, shown_default="the data's",
                                   help="model input size; batches are resized")
    download: bool = setting(False, group=_DATA, action="store_true",
                             help="download the dataset from its official address if not found")
    cache_dir: str | None = setting(None, group=_DATA, shown_default="~/.cache/beyond-attention",
                                    help="cache for decoded image folders and downloads")
    no_cache: bool = setting(False, group=_DATA, action="store_true",
                             help="decode an image folder afresh, without reading or writing "
                                  "the decode cache")
    num_points: int | None = setting(None, group=_DATA, type=int, metavar="N",
                                     shown_default="the model's (1024; 2048 for part "
                                                   "segmentation), at most the data's",
                                     help="point clouds: points per cloud (the first N)")
    crop_size: int | None = setting(None, group=_DATA, type=int, metavar="PX",
                                    shown_default="the model's input size",
                                    help="segmentation: training crop side (and the sliding "
                                         "window of --eval-mode slide)")
    eval_mode: str = setting("whole", group=_DATA, choices=("whole", "slide"),
                             help="segmentation: validate on whole images (any size) or by "
                                  "sliding crop-size windows")

    # -- optimisation
    epochs: int = setting(1, group=_OPT, help="training epochs")
    budget_minutes: float | None = setting(
        None, group=_OPT, type=float, metavar="M", shown_default="off: train by epochs",
        help="train for M minutes of training time instead of --epochs (data loading and "
             "evaluation excluded): warm-up (the first 5%) and cosine are laid over M "
             "minutes, training stops at M, then the model is evaluated. Gives up bitwise "
             "reproducibility: the steps that fit depend on the machine's speed, and a "
             "resumed budget run continues the schedule from its recorded training time")
    batch_size: int | None = setting(None, group=_OPT, type=int,
                                     shown_default=_RECIPE + "128",
                                     help="global batch size (split across processes under "
                                          "torchrun)")
    eval_batch_size: int | None = setting(None, group=_OPT, type=int,
                                          shown_default="twice the per-process batch",
                                          help="validation batch size per process")
    lr: float | None = setting(None, group=_OPT, type=float, shown_default=_RECIPE + "2e-3",
                               help="peak AdamW learning rate")
    min_lr: float = setting(1e-5, group=_OPT, help="final cosine learning rate")
    weight_decay: float | None = setting(None, group=_OPT, type=float,
                                         shown_default=_RECIPE + "0.05",
                                         help="AdamW weight decay")
    warmup: float | None = setting(None, group=_OPT, type=float, shown_default=_RECIPE + "0.2",
                                   help="warm-up epochs (float)")
    clip_grad: float = setting(1.0, group=_OPT, help="gradient-norm clip (0: off)")
    label_smoothing: float | None = setting(None, group=_OPT, type=float,
                                            shown_default=_RECIPE + "0.1",
                                            help="label smoothing of the targets")
    drop_path: float | None = setting(None, group=_OPT, type=float,
                                      shown_default=_RECIPE + "0.0",
                                      help="stochastic depth rate")
    ema: float = setting(0.0, group=_OPT, nargs="?", const=0.999, metavar="DECAY",
                         help="keep an EMA of the weights (decay 0.999 if no value; 0: off); "
                              "validation and best.safetensors use it")
    aux_weight: float = setting(1.0, group=_OPT,
                                help="weight of the model's auxiliary loss (LaViT's "
                                     "diagonality loss)")
    amp: str | None = setting(None, group=_OPT, nargs="?", const="auto",
                              choices=AMP_MODES,
                              shown_default=_RECIPE + "off",
                              help="mixed precision: bfloat16 on CPU, bf16/fp16 on GPU ('--amp' "
                                   "= auto); 'native': bfloat16 only where the hardware "
                                   "computes it natively (a CPU with AVX-512 BF16 or AMX, a "
                                   "GPU with bfloat16), else off")
    seed: int = setting(0, group=_OPT, help="seed of every random draw")

    # -- augmentation
    crop_padding: int | None = setting(None, group=_AUG, type=int,
                                       shown_default=_RECIPE + "4",
                                       help="random crop with this zero padding (0: off)")
    hflip: float | None = setting(
        None, group=_AUG, type=float, metavar="P",
        shown_default="the model's recipe, else 0.5; 0 for grayscale data (digits, "
                      "Fashion-MNIST) and folders marked no-flip",
        help="horizontal flip probability (0: off)")
    randaugment: tuple[int, int] | None = setting(
        None, group=_AUG, type=int_pair, nargs="?", const=(2, 9), metavar="N,M",
        exclusive="policy", shown_default="off",
        help="RandAugment with N ops of magnitude M (2,9 if no value)")
    trivialaugment: bool = setting(False, group=_AUG, action="store_true", exclusive="policy",
                                   help="TrivialAugment")
    seg_scale: tuple[float, float] = setting(
        (0.5, 2.0), group=_AUG, type=float, nargs=2, metavar=("LOW", "HIGH"),
        convert=tuple, help="segmentation: random rescaling range before the crop")
    mixup: float = setting(0.0, group=_AUG, help="MixUp Beta alpha (0: off)")
    cutmix: float = setting(0.0, group=_AUG, help="CutMix Beta alpha (0: off)")

    # -- run
    out: str | None = setting(None, group=_RUN, metavar="DIR",
                              shown_default="a new runs/MODEL-DATASET, -2, -3, ...",
                              help="output directory; one holding a run is refused unless "
                                   "--resume or --overwrite")
    overwrite: bool = setting(False, group=_RUN, action="store_true",
                              help="replace the run already in --out (its checkpoints, "
                                   "metrics and final.json are deleted)")
    resume: str | None = setting(None, group=_RUN, nargs="?", const="auto", metavar="PATH",
                                 shown_default="off",
                                 help="continue the run in --out (or from PATH, a last.json); "
                                      "starts afresh if there is no checkpoint yet")
    save_every: int = setting(200, group=_RUN, metavar="STEPS",
                              help="also checkpoint every STEPS steps within an epoch "
                                   "(0: epoch ends only)")
    max_steps_per_epoch: int | None = setting(None, group=_RUN, type=int,
                                              shown_default="the whole epoch",
                                              help="cut every epoch after this many steps")
    workers: int = setting(1, group=_RUN, help="background threads gathering batches")
    device: str = setting("auto", group=_RUN, help="auto, cpu, cuda or cuda:N")
    threads: int | None = setting(None, group=_RUN, type=int, shown_default="torch's choice",
                                  help="CPU threads for torch (1 is often fastest on a machine "
                                       "shared with other jobs)")
    channels_last: bool | None = setting(
        None, group=_RUN, action=argparse.BooleanOptionalAction,
        shown_default=_RECIPE + "off",
        help="train image models (classification, segmentation) in the channels-last memory "
             "format: the 2-D convolutions' weights and the augmented batches (faster for "
             "convolutional models on CPU; ignored for point clouds); --no-channels-last "
             "keeps the default layout")
    log_every: int = setting(50, group=_RUN, metavar="STEPS",
                             help="when the output is not a terminal, print a progress line "
                                  "every STEPS steps (0: none); a terminal gets a progress bar")
    quiet: bool = setting(False, group=_RUN, action="store_true",
                          help="no progress bar or log lines")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (``randaugment`` as a list)."""
        d = asdict(self)
        d["randaugment"] = list(self.randaugment) if self.randaugment else None
        d["seg_scale"] = list(self.seg_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; keys that are not settings are ignored."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if d.get("randaugment") is not None:
            d["randaugment"] = tuple(d["randaugment"])
        if d.get("seg_scale") is not None:
            d["seg_scale"] = tuple(d["seg_scale"])
        return cls(**d)
