"""``beyond-attention bench train-step``: where a training step of each model spends its time.

For every model matching the pattern (``*_cifar`` by default) the step of the training
engine (:mod:`beyond_attention.train.engine`) is run from its own pieces, phase by phase,
with a wall clock read between phases (and the device synchronised on CUDA):

1. ``gather``: the next batch from the engine's :class:`~beyond_attention.data.loader.
   BatchLoader` over an in-memory uint8 dataset, moved to the device;
2. ``augment``: the per-step seed and the engine's :class:`~beyond_attention.data.augment.
   TrainAugment` (random crop with padding 4 and horizontal flip, as a CIFAR run);
3. ``forward``: the model and the label-smoothed cross-entropy (under bf16 autocast with
   ``--amp``);
4. ``backward``;
5. ``optimizer``: ``zero_grad``, gradient-norm clipping at 1 and the engine's fused AdamW.

Reported per model: images/s of the whole step, the share of each phase, and the training
MFU: ``3 x forward FLOPs x images/s`` over the rate of a square matrix product measured in
the same run (the better of one measurement at the start and one at the end).

With the peer comparison on, every model's step (forward, loss, backward, optimizer on one
augmented batch) is timed interleaved with the same step of the peer plain ViT
(:mod:`.peer_vit`), pair after pair (:func:`.timing.interleaved_ratio`), so that the
images/s ratio holds on a machine shared with other jobs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..tables import fmt_num, format_table
from . import timing
from .counting import forward_flops
from .records import Record
from .settings import FLOAT, NO_SWITCH, POSITIONAL, STR, SWITCH, ModelSettings, setting

PHASES = ("gather", "augment", "forward", "backward", "optimizer")
PEER = "peer_vit_cifar"


@dataclass
class TrainStepSettings:
    """What ``beyond-attention bench train-step`` measures.

    Attributes:
        pattern: shell pattern of model names (``list_models``).
        batch: images per step.
        warmup, steps: untimed and timed steps per model.
        amp: autocast to bfloat16.
        channels_last: channels-last memory format for the model and the augmented batch.
        peer: also time every model interleaved with the peer ViT (``--no-peer``: off).
        pairs: interleaved step pairs per model (and per variant).
        variants: time the same model's step with channels-last and with bf16 autocast
            switched (each flipped from this run's setting), interleaved with this run's.
        max_seconds: time budget per model (each measurement keeps at least 3 samples).
        gemm_size: side of the square matrix product that sets the reference FLOP rate.
        images: images in the synthetic in-memory dataset the loader draws from.
        device: where to run.
        seed: seed of the weights, the data and the augmentation.
    """

    pattern: str = setting("*_cifar", "model name pattern", kind=POSITIONAL)
    batch: int = setting(128, "images per step", quick=4)
    warmup: int = setting(1, "untimed steps per model", quick=1)
    steps: int = setting(5, "timed steps per model", quick=2)
    amp: bool = setting(False, "autocast to bfloat16", kind=SWITCH)
    channels_last: bool = setting(False, "channels-last memory format", kind=SWITCH)
    peer: bool = setting(True, "no interleaved peer-ViT comparison", kind=NO_SWITCH,
                         flag="--no-peer")
    pairs: int = setting(5, "interleaved step pairs per model", quick=2)
    variants: bool = setting(False, "also time channels-last and bf16-autocast steps "
                             "interleaved with this run's step", kind=SWITCH)
    max_seconds: float = setting(120.0, "time budget per model", kind=FLOAT, quick=30.0)
    gemm_size: int = setting(1024, "side of the reference GEMM", quick=128)
    images: int = setting(1024, "images of the synthetic in-memory dataset", quick=16)
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", kind=STR)
    seed: int = setting(0, "seed of weights, data and augmentation")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainStepSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        for name in ("batch", "steps", "pairs", "gemm_size", "images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, "
                                 f"got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.images < self.batch:
            raise ValueError(f"--images must be at least --batch ({self.batch}), "
                             f"got {self.images}")


@dataclass
class StepRow(Record):
    """One model's training step.

    Attributes:
        model: registered name (or ``peer_vit_cifar``); status ``ok`` or ``error``, reason.
        params, gmacs: parameters and forward GMACs per image.
        step_ms: summary of the whole step's milliseconds (:class:`.timing.Summary`).
        phase_ms: median milliseconds of each phase; phase_share: each median over their sum.
        img_s: images/s from the median step; mfu: training MFU against the run's GEMM rate.
        mfu_local: the median over the timed steps of each step's MFU against the GEMM rate
            measured right after it (the fastest of a few products); on a machine shared
            with other jobs it follows the load the step saw. gemm_local: those rates.
        peer_ratio: images/s of this model over the peer ViT's, interleaved (median of the
            pairs); peer_pairs: the interleaved comparison (:class:`.timing.Ratio`).
        variant_speedup: with ``--variants``, ``{"channels_last": s, "amp": s}``: this
            run's step time over the step with that setting flipped (> 1: the variant is
            faster), interleaved; variant_pairs: those comparisons.
    """

    model: str
    status: str = "ok"
    reason: str = ""
    params: int | None = None
    gmacs: float | None = None
    step_ms: dict[str, Any] | None = None
    phase_ms: dict[str, float] | None = None
    phase_share: dict[str, float] | None = None
    img_s: float | None = None
    mfu: float | None = None
    mfu_local: float | None = None
    gemm_local: dict[str, Any] | None = None
    peer_ratio: float | None = None
    peer_pairs: dict[str, Any] | None = None
    variant_speedup: dict[str, float] | None = None
    variant_pairs: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class TrainStepResult(Record):
    """The results of ``bench train-step``.

    Attributes:
        kind: ``"train_step"``; settings: the run's :class:`TrainStepSettings`.
        gemm: the reference GEMM rate, the better of ``gemm_runs``.
        models: one :class:`StepRow` per model; peer: the peer ViT's row (when measured).
        machine: :func:`.report.machine_info`; command: the command that made the run.
    """

    kind: str = "train_step"
    settings: TrainStepSettings = field(default_factory=TrainStepSettings)
    settings_type: ClassVar[Any] = TrainStepSettings
    gemm: dict[str, Any] = field(default_factory=dict)
    gemm_runs: list[dict[str, Any]] = field(default_factory=list)
    models: list[StepRow] = field(default_factory=list)
    peer: StepRow | None = None
    machine: dict[str, Any] | None = None
    command: str | None = None

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "models":
            return [StepRow.from_json(v) for v in value]
        if name == "peer":
            return StepRow.from_json(value)
        return super()._decode(name, value)


def _sync(device: torch.device) -> None:
    timing.synchronize(device)


@contextlib.contextmanager
def _autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


class _Step:
    """The engine's training step for one model, run phase by phase."""

    def __init__(self, model: nn.Module, settings: TrainStepSettings, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int],
                 label_smoothing: float) -> None:
        from ..data.augment import TrainAugment
        from ..data.base import ImageDataset
        from ..data.loader import BatchLoader
        from ..train.optim import build_optimizer

        s = settings
        self.device = torch.device(s.device)
        self.settings = s
        self.model = model.to(self.device)
        if s.channels_last:  # the 2-D convolutions' weights (module.to would also try 5-D)
            nn.utils.convert_conv2d_weight_memory_format(self.model, torch.channels_last)
        self.model.train()
        self.label_smoothing = label_smoothing
        rng = np.random.default_rng(s.seed)
        channels = 3
        data = ImageDataset(
            images=rng.integers(0, 256, (s.images, channels, *size), dtype=np.uint8),
            labels=rng.integers(0, num_classes, s.images).astype(np.int64),
            classes=[str(i) for i in range(num_classes)], name="synthetic")
        self.loader = BatchLoader(data, s.batch, shuffle=True, seed=s.seed, drop_last=True,
                                  pin_memory=self.device.type == "cuda")
        self.batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
        self.epoch = 0
        self.augment = TrainAugment(mean, std, num_classes, size, crop_padding=4,
                                    hflip=0.5).to(self.device)
        self.optimizer = build_optimizer(self.model, 2e-3, 0.05)
        self.step_index = 0

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.batches)
        except StopIteration:
            self.loader.set_epoch(self.epoch)
            self.epoch += 1
            self.batches = iter(self.loader)
            return next(self.batches)

    def augmented(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One gathered and augmented batch, as the forward receives it."""
        from ..train.engine import step_seed

        images, labels = self._next_batch()
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        torch.manual_seed(step_seed(self.settings.seed, 0, self.step_index))
        self.step_index += 1
        x, targets = self.augment(images, labels)
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, targets

    def update(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Forward, loss, backward and optimizer on one augmented batch (no phase clocks)."""
        loss = self._loss(x, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimize()

    def _loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from ..train.engine import soft_cross_entropy

        with _autocast(self.device, self.settings.amp):
            out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return soft_cross_entropy(out, targets, self.label_smoothing)

    def _optimize(self) -> None:
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def timed(self) -> dict[str, float]:
        """One full step; seconds of each phase."""
        from ..train.engine import step_seed

        dev = self.device
        clock = time.perf_counter
        t0 = clock()
        images, labels = self._next_batch()
        images = images.to(dev, non_blocking=True)
        labels = labels.to(dev, non_blocking=True)
        _sync(dev)
        t1 = clock()
        torch.manual_seed(step_seed(self.settings.seed, 0, self.step_index))
        self.step_index += 1
        x, targets = self.augment(images, labels)
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _sync(dev)
        t2 = clock()
        loss = self._loss(x, targets)
        _sync(dev)
        t3 = clock()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(dev)
        t4 = clock()
        self._optimize()
        _sync(dev)
        t5 = clock()
        return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True))


def _build(name: str, settings: TrainStepSettings) -> tuple[nn.Module, _Step]:
    """The model (registered or the peer) and its engine step."""
    from ..models._registry import CIFAR10_MEAN, CIFAR10_STD, create_model
    from ..train.recipe import FALLBACK, model_recipe
    from .peer_vit import peer_vit_cifar

    torch.manual_seed(settings.seed)
    if name == PEER:
        model: nn.Module = peer_vit_cifar()
        mean, std, size, classes = CIFAR10_MEAN, CIFAR10_STD, (32, 32), 10
        smoothing = FALLBACK["label_smoothing"]
    else:
        recipe = model_recipe(name)
        model = create_model(name, drop_path_rate=recipe.get("drop_path", FALLBACK["drop_path"]))
        cfg = model.config
        mean, std, size = cfg.mean, cfg.std, tuple(cfg.input_size[1:])
        classes = getattr(model, "num_classes", cfg.num_classes) or cfg.num_classes
        smoothing = recipe.get("label_smoothing", FALLBACK["label_smoothing"])
        if cfg.input_size[0] != 3:
            raise ValueError(f"{name}: bench train-step runs RGB models, got input "
                             f"{cfg.input_size}")
    return model, _Step(model, settings, classes, mean, std, size, smoothing)  # type: ignore[arg-type]


def measure_step(name: str, settings: TrainStepSettings, reference_flops_per_s: float,
                 peer: _Step | None = None) -> StepRow:
    """Phase timings, images/s, MFU (and the interleaved peer ratio) of one model."""
    row = StepRow(model=name)
    try:
        model, step = _build(name, settings)
        row.params = sum(p.numel() for p in model.parameters())
        x1 = step.augmented()[0][:1]
        fwd = forward_flops(model, (x1,))["flops"]
        model.train()
        row.gmacs = fwd / 2e9
        start = time.perf_counter()
        for _ in range(settings.warmup):
            step.timed()
        samples: list[dict[str, float]] = []
        rates: list[float] = []
        gemm = _local_gemm(settings)
        for i in range(settings.steps):
            if i >= 3 and time.perf_counter() - start > settings.max_seconds:
                break
            samples.append(step.timed())
            rates.append(gemm())
        totals = [1e3 * sum(s.values()) for s in samples]
        train_flops = 3 * fwd * settings.batch
        row.mfu_local = float(np.median([train_flops / (t / 1e3) / r
                                         for t, r in zip(totals, rates, strict=True)]))
        row.gemm_local = timing.Summary.of(rates).to_dict()
        row.step_ms = timing.Summary.of(totals).to_dict()
        medians = {p: 1e3 * float(np.median([s[p] for s in samples])) for p in PHASES}
        row.phase_ms = medians
        total = sum(medians.values())
        row.phase_share = {p: v / total for p, v in medians.items()}
        row.img_s = settings.batch / (row.step_ms["median"] / 1e3)
        row.mfu = 3 * fwd * row.img_s / reference_flops_per_s
        if peer is not None and name != PEER:
            xa, ta = step.augmented()
            xb, tb = peer.augmented()
            r = timing.interleaved_ratio(
                lambda: step.update(xa, ta), lambda: peer.update(xb, tb),
                warmup=1, pairs=settings.pairs, max_seconds=settings.max_seconds,
                device=settings.device)
            row.peer_pairs = r.to_dict()
            row.peer_ratio = 1.0 / r.ratio.median  # images/s: t_peer / t_model
        if settings.variants:
            row.variant_speedup, row.variant_pairs = _variants(name, settings, model, step)
    except (RuntimeError, MemoryError, ValueError, TypeError, NotImplementedError) as e:
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        row.status, row.reason = "error", f"{type(e).__name__}: {msg}"
    return row


def _local_gemm(settings: TrainStepSettings, products: int = 5) -> Callable[[], float]:
    """A callable returning the FLOP/s of the fastest of ``products`` square matrix products
    (float32; bfloat16 with amp) of the run's GEMM size, timed when it is called."""
    n = settings.gemm_size
    dtype = torch.bfloat16 if settings.amp else torch.float32
    g = torch.Generator().manual_seed(settings.seed)
    a = torch.randn(n, n, generator=g).to(settings.device, dtype)
    b = torch.randn(n, n, generator=g).to(settings.device, dtype)

    def rate() -> float:
        t = timing.time_callable(lambda: torch.mm(a, b), warmup=1, repeats=products,
                                 device=settings.device)
        return 2 * n**3 / (t.min / 1e3)

    return rate


def _variants(name: str, settings: TrainStepSettings, model: nn.Module, step: _Step
              ) -> tuple[dict[str, float], dict[str, Any]]:
    """This run's step against the same step with channels-last, then bf16 autocast,
    flipped: same weights, same batch, interleaved pairs."""
    from dataclasses import replace

    speedup, pairs = {}, {}
    for key in ("channels_last", "amp"):
        other_settings = replace(settings, **{key: not getattr(settings, key)})
        other_model, other = _build(name, other_settings)
        other_model.load_state_dict(model.state_dict())
        x, t = step.augmented()
        x_other = x.contiguous(memory_format=torch.channels_last) if (
            other_settings.channels_last) else x.contiguous()
        r = timing.interleaved_ratio(
            lambda: step.update(x, t), lambda o=other, xo=x_other: o.update(xo, t),  # noqa: B023
            warmup=1, pairs=settings.pairs, max_seconds=settings.max_seconds,
            device=settings.device)
        speedup[key] = r.ratio.median  # t_this / t_variant
        pairs[key] = r.to_dict()
    return speedup, pairs


def gemm_reference(settings: TrainStepSettings) -> dict[str, Any]:
    """:func:`.models.gemm_rate` at this run's size, precision and device."""
    from .models import gemm_rate

    return gemm_rate(ModelSettings(gemm_size=settings.gemm_size, amp=settings.amp,
                                   device=settings.device, seed=settings.seed, repeats=10))


def run_train_step(settings: TrainStepSettings,
                   log: Callable[[str], None] = print) -> TrainStepResult:
    """Measure every registered model matching ``settings.pattern`` (and the peer ViT)."""
    from ..models._registry import list_models

    settings.check()
    names = list_models(settings.pattern)
    if not names:
        raise ValueError(f"no registered model matches pattern {settings.pattern!r}")
    ref = gemm_reference(settings)
    log(f"GEMM {ref['n']}x{ref['n']} {ref['dtype']}: {ref['flops_per_s'] / 1e9:.1f} GFLOP/s")
    peer_step = None
    peer_row = None
    if settings.peer:
        peer_row = measure_step(PEER, settings, ref["flops_per_s"])
        log(_line(peer_row))
        if peer_row.ok:
            peer_step = _build(PEER, settings)[1]
    rows = []
    for name in names:
        row = measure_step(name, settings, ref["flops_per_s"], peer_step)
        rows.append(row)
        log(_line(row))
    end = gemm_reference(settings)
    log(f"GEMM again: {end['flops_per_s'] / 1e9:.1f} GFLOP/s")
    best = max(ref, end, key=lambda r: r["flops_per_s"])
    scale = ref["flops_per_s"] / best["flops_per_s"]
    for row in [*rows, *([peer_row] if peer_row is not None else [])]:
        if row.mfu is not None:
            row.mfu *= scale
    return TrainStepResult(settings=settings, gemm=best, gemm_runs=[ref, end], models=rows,
                           peer=peer_row)


def _line(r: StepRow) -> str:
    if not r.ok:
        return f"  {r.model:>24s}  {r.status}: {r.reason}"
    shares = " ".join(f"{p} {100 * r.phase_share[p]:.0f}%" for p in PHASES)
    s = (f"  {r.model:>24s}  {r.img_s:8.1f} img/s  MFU {100 * r.mfu:5.1f}% "
         f"(local {100 * (r.mfu_local or 0):5.1f}%)  {shares}")
    if r.peer_ratio is not None:
        s += f"  x{r.peer_ratio:.2f} the peer ViT"
    if r.variant_speedup:
        s += "".join(f"  {k} x{v:.2f}" for k, v in r.variant_speedup.items())
    return s


def _rows(result: TrainStepResult) -> tuple[list[str], list[list[Any]]]:
    variants = result.settings.variants
    headers = ["model", "params (M)", "GMACs", "step ms", "img/s", "MFU", "MFU (local)",
               *(f"{p} %" for p in PHASES), "vs peer ViT",
               *(["channels-last flipped", "amp flipped"] if variants else []), "status"]
    rows = []
    for r in [*([result.peer] if result.peer is not None else []), *result.models]:
        if not r.ok:
            rows.append([r.model, *["-"] * (len(headers) - 2), f"{r.status}: {r.reason}"])
            continue
        flipped = []
        if variants:
            v = r.variant_speedup or {}
            flipped = [f"{v[k]:.2f}x" if k in v else "-" for k in ("channels_last", "amp")]
        rows.append([
            r.model, fmt_num(r.params / 1e6), fmt_num(r.gmacs),
            f"{r.step_ms['median']:.0f}", fmt_num(r.img_s), f"{100 * r.mfu:.1f}%",
            f"{100 * r.mfu_local:.1f}%" if r.mfu_local is not None else "-",
            *(f"{100 * r.phase_share[p]:.1f}" for p in PHASES),
            "(peer)" if r.model == PEER else
            (f"{r.peer_ratio:.2f}x" if r.peer_ratio is not None else "-"),
            *flipped,
            "ok",
        ])
    return headers, rows


def as_result(result: TrainStepResult | dict[str, Any]) -> TrainStepResult:
    """``result`` as a :class:`TrainStepResult` (a JSON dict is read)."""
    if isinstance(result, TrainStepResult):
        return result
    return TrainStepResult.from_json(result)


def console_table(result: TrainStepResult | dict[str, Any]) -> str:
    """The results as an aligned text table."""
    return format_table(*_rows(as_result(result)))


def markdown_table(result: TrainStepResult | dict[str, Any]) -> str:
    """The results as a markdown section: settings, reference rate, command, table."""
    result = as_result(result)
    s, g = result.settings, result.gemm
    lines = []
    if result.command:
        lines += ["```", result.command, "```", ""]
    lines += [
        f"Batch {s.batch}, device {s.device}, amp (bfloat16) {'on' if s.amp else 'off'}, "
        f"channels-last {'on' if s.channels_last else 'off'}; {s.warmup} warm-up and up to "
        f"{s.steps} timed steps per model (median); peer ratios from {s.pairs} interleaved "
        "pairs (median). Reference GEMM "
        f"{g['n']}x{g['n']} {g['dtype']}: {g['flops_per_s'] / 1e9:.1f} GFLOP/s. "
        "MFU = 3 x forward FLOPs x images/s / that rate; MFU (local): the median over "
        "the steps of each step's MFU against the GEMM rate measured right after it."
        + (" Flipped: this run's step time over the step with that setting flipped, "
           "interleaved (> 1: flipping it is faster)." if s.variants else ""),
        "",
        format_table(*_rows(result), markdown=True),
    ]
    return "\n".join(lines)
