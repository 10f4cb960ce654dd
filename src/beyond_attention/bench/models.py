"""``beyond-attention bench models``: throughput and utilisation of the registered models.

For each registered model, image or point cloud (its input is made from the model's config
by :func:`~beyond_attention.models.example_input`): parameters, GMACs per image
(:func:`.counting.forward_flops`: the library's counter plus the FFT-based convolutions of
the lambda layers), the inference latency of one batch and images/s (eval mode, no
autograd), training images/s (one step: forward, cross-entropy, backward, SGD update; the
cross-entropy is per pixel or per point for segmentation models, whose logits are dense),
and the model FLOP utilisation (MFU): the FLOP rate the model achieves divided by the rate
of a large square matrix product measured in the same run on the same device and
precision. Training FLOPs are taken as 3x the forward FLOPs (the backward computes two
products per forward product), the usual convention.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..tables import fmt_bytes, fmt_num, format_table
from . import timing
from .counting import forward_flops
from .memory import activation_bytes_per_image
from .records import Record
from .report import load_note, machine_markdown
from .settings import ModelSettings
from .timing import BudgetExceeded


@dataclass
class ModelRow(Record):
    """One model's measurements; the fields are the keys of a recorded row.

    Attributes:
        model: registered name; status (``ok``, ``too_slow``, ``oom``, ``error``), reason.
        input_size: (C, H, W); params; gmacs and fft_gmacs per image (forward).
        reported_params_m, reported_gmacs: what the paper reports (None where it does not).
        activation_bytes_per_image: bytes one image's training forward saves for backward.
        predicted_train_bytes: activations of the batch plus parameters, grads and momentum.
        infer_ms, infer_img_s, infer_mfu: inference timing summary, throughput and MFU.
        train_status: why training was not measured; train_ms, train_img_s, train_mfu.
    """

    model: str
    status: str = "ok"
    reason: str = ""
    input_size: list[int] | None = None
    params: int | None = None
    gmacs: float | None = None
    fft_gmacs: float | None = None
    reported_params_m: float | None = None
    reported_gmacs: float | None = None
    activation_bytes_per_image: int | None = None
    predicted_train_bytes: int | None = None
    infer_ms: dict[str, Any] | None = None
    infer_img_s: float | None = None
    infer_mfu: float | None = None
    train_status: str | None = None
    train_ms: dict[str, Any] | None = None
    train_img_s: float | None = None
    train_mfu: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ModelsResult(Record):
    """The results of ``bench models``, in the layout of ``benchmarks/models.json``.

    Attributes:
        kind: ``"models"``; settings: the run's :class:`.settings.ModelSettings`.
        gemm: the reference GEMM rate (:func:`gemm_rate`), the better of ``gemm_runs``.
        models: one :class:`ModelRow` per model.
        machine: :func:`.report.machine_info`; command: the command that made the run.
    """

    kind: str = "models"
    settings: ModelSettings = field(default_factory=ModelSettings)
    settings_type: ClassVar[Any] = ModelSettings
    gemm: dict[str, Any] = field(default_factory=dict)
    gemm_runs: list[dict[str, Any]] = field(default_factory=list)
    models: list[ModelRow] = field(default_factory=list)
    machine: dict[str, Any] | None = None
    command: str | None = None

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "models":
            return [ModelRow.from_json(v) for v in value]
        return super()._decode(name, value)


def as_models_result(result: ModelsResult | dict[str, Any]) -> ModelsResult:
    """``result`` as a :class:`ModelsResult` (a JSON dict is read)."""
    return result if isinstance(result, ModelsResult) else ModelsResult.from_json(result)


@contextlib.contextmanager
def _autocast(device: str, enabled: bool) -> Iterator[None]:
    if enabled:
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield


def gemm_rate(settings: ModelSettings) -> dict[str, Any]:
    """Best achieved FLOP/s of an n x n by n x n matrix product (float32; bfloat16 with amp).

    The reference for the model FLOP utilisation: what this device reaches on the
    friendliest possible workload. The fastest of the timed products is used (on a shared
    machine the median would fold other jobs' load into the reference and inflate MFU).
    """
    n = settings.gemm_size
    dtype = torch.bfloat16 if settings.amp else torch.float32
    g = torch.Generator().manual_seed(settings.seed)
    a = torch.randn(n, n, generator=g).to(settings.device, dtype)
    b = torch.randn(n, n, generator=g).to(settings.device, dtype)
    t = timing.time_callable(
        lambda: torch.mm(a, b), warmup=2, repeats=max(10, settings.repeats), device=settings.device
    )
    flops = 2 * n**3
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "ms": t.to_dict(),
        "flops_per_s": flops / (t.min / 1e3),
    }


def _logits(out: Any) -> torch.Tensor:
    """The logits of a model's output (the first item of a tuple or list)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def random_targets(
    logits_shape: torch.Size | tuple[int, ...], num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Class labels for a cross-entropy over logits of ``logits_shape``.

    ``(B, K)`` logits (classification) take ``(B,)`` labels; dense logits ``(B, K, *S)``
    (per pixel ``S = (H, W)``, per point ``S = (N,)``) take ``(B, *S)`` labels.
    """
    if len(logits_shape) < 2:
        raise ValueError(f"logits must be (B, K) or (B, K, ...), got shape {tuple(logits_shape)}")
    shape = (logits_shape[0], *logits_shape[2:])
    return torch.randint(0, max(1, num_classes), shape, generator=generator)


def bench_model(name: str, settings: ModelSettings, reference_flops_per_s: float) -> ModelRow:
    """Measure one registered model; failures are recorded in ``status``/``reason``."""
    from ..models._registry import create_model, example_input

    row = ModelRow(model=name)
    dev = settings.device
    try:
        torch.manual_seed(settings.seed)
        model = create_model(name, img_size=settings.img_size)
        cfg = model.config
        g = torch.Generator().manual_seed(settings.seed)
        # (1, C, H, W) for image models, (1, 3, N) for point clouds
        img_size = settings.img_size
        x1 = example_input(cfg, 1, img_size=img_size, generator=g).to(dev)
        row.input_size = list(x1.shape[1:])
        row.params = sum(p.numel() for p in model.parameters())
        model.to(dev)
        fc = forward_flops(model, (x1,))
        row.gmacs = fc["flops"] / 2e9
        row.fft_gmacs = fc["fft_flops"] / 2e9
        row.reported_params_m = cfg.reported_params_m
        row.reported_gmacs = cfg.reported_gmacs
        row.keep_null("reported_params_m", "reported_gmacs")  # recorded even when unknown
        model.train()
        row.activation_bytes_per_image = activation_bytes_per_image(
            model, x1, lambda: example_input(cfg, 2, img_size=img_size, generator=g).to(dev)
        )
        del x1
        fwd_flops = fc["flops"]
        # lower bounds of one call's time (the model cannot beat the GEMM rate) and the
        # training memory (activations + parameters, gradients and momentum)
        infer_s = fwd_flops * settings.batch / reference_flops_per_s
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        train_bytes = row.activation_bytes_per_image * settings.batch + 3 * param_bytes
        row.predicted_train_bytes = train_bytes
        if infer_s > settings.max_seconds:
            raise BudgetExceeded(infer_s, settings.max_seconds)
        x = example_input(cfg, settings.batch, img_size=img_size, generator=g).to(dev)
        if settings.channels_last and x.dim() == 4:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        num_classes = getattr(model, "num_classes", cfg.num_classes) or cfg.num_classes
        run_model: Callable[..., Any] = torch.compile(model) if settings.compile else model
        logits_shape: list[torch.Size] = []

        def infer() -> Any:
            with torch.no_grad(), _autocast(dev, settings.amp):
                out = run_model(x)
            if not logits_shape:
                logits_shape.append(_logits(out).shape)
            return out

        model.eval()
        t = timing.time_callable(
            infer,
            warmup=settings.warmup + (1 if settings.compile else 0),
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
            device=dev,
        )
        row.infer_ms = t.to_dict()
        row.infer_img_s = settings.batch / (t.median / 1e3)
        row.infer_mfu = fwd_flops * row.infer_img_s / reference_flops_per_s
        if settings.train and train_bytes > settings.max_memory_gb * 2**30:
            row.train_status = (
                f"skipped: needs about {train_bytes / 2**30:.1f} GiB > "
                f"--max-memory-gb {settings.max_memory_gb:g}"
            )
        elif settings.train and 3 * infer_s > settings.max_seconds:
            row.train_status = (
                f"too slow: at least {3 * infer_s:.0f} s per step > "
                f"--max-seconds {settings.max_seconds:g}"
            )
        elif settings.train:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            y = random_targets(logits_shape[0], num_classes, g).to(dev)

            def step() -> Any:
                opt.zero_grad(set_to_none=True)
                with _autocast(dev, settings.amp):
                    loss = F.cross_entropy(_logits(run_model(x)).float(), y)
                loss.backward()
                opt.step()
                return loss

            t = timing.time_callable(
                step,
                warmup=settings.warmup + (1 if settings.compile else 0),
                repeats=settings.repeats,
                max_seconds=settings.max_seconds,
                device=dev,
            )
            row.train_ms = t.to_dict()
            row.train_img_s = settings.batch / (t.median / 1e3)
            row.train_mfu = 3 * fwd_flops * row.train_img_s / reference_flops_per_s
    except BudgetExceeded as e:
        row.status = "too_slow"
        row.reason = f"one call needs at least {e.seconds:.0f} s > --max-seconds {e.budget:g}"
    except (RuntimeError, MemoryError, ValueError, TypeError, NotImplementedError) as e:
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        oom = "out of memory" in msg.lower() or "can't allocate" in msg.lower()
        row.status = "oom" if oom else "error"
        row.reason = f"{type(e).__name__}: {msg}"
    finally:
        if not row.ok:
            gc.collect()
        if torch.device(dev).type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_models(settings: ModelSettings, log: Callable[[str], None] = print) -> ModelsResult:
    """Benchmark every registered model matching ``settings.pattern``."""
    from ..models._registry import list_models

    names = list_models(settings.pattern)
    if not names:
        raise ValueError(f"no registered model matches pattern {settings.pattern!r}")
    ref = gemm_rate(settings)
    log(f"GEMM {ref['n']}x{ref['n']} {ref['dtype']}: {ref['flops_per_s'] / 1e9:.1f} GFLOP/s")
    rows = []
    for name in names:
        row = bench_model(name, settings, ref["flops_per_s"])
        rows.append(row)
        log(_model_line(row))
    # measured again at the end: the reference is the better of the two, and every MFU is
    # expressed against it
    end = gemm_rate(settings)
    log(f"GEMM again: {end['flops_per_s'] / 1e9:.1f} GFLOP/s")
    best = max(ref, end, key=lambda r: r["flops_per_s"])
    scale = ref["flops_per_s"] / best["flops_per_s"]
    for row in rows:
        if row.infer_mfu is not None:
            row.infer_mfu *= scale
        if row.train_mfu is not None:
            row.train_mfu *= scale
    return ModelsResult(settings=settings, gemm=best, gemm_runs=[ref, end], models=rows)


def _model_line(r: ModelRow) -> str:
    if not r.ok:
        return f"  {r.model:>24s}  {r.status}: {r.reason}"
    s = (
        f"  {r.model:>24s}  {r.params / 1e6:7.2f}M  {r.gmacs:7.3f} GMACs  "
        f"infer {r.infer_img_s:8.1f} img/s (MFU {100 * r.infer_mfu:.1f}%)"
    )
    if r.train_img_s is not None:
        s += f"  train {r.train_img_s:8.1f} img/s (MFU {100 * r.train_mfu:.1f}%)"
    return s


def _input_text(input_size: list[int] | None) -> str:
    """``[3, 224, 224]`` -> ``224x224``; ``[3, 1024]`` (a point cloud) -> ``1024 pts``."""
    if input_size is None:
        return "-"
    if len(input_size) == 2:
        return f"{input_size[1]} pts"
    return "x".join(map(str, input_size[1:]))


def _rows(result: ModelsResult) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "model",
        "input",
        "params (M)",
        "paper",
        "GMACs",
        "paper",
        "act./image",
        "infer ms",
        "infer img/s",
        "infer MFU",
        "train img/s",
        "train MFU",
        "status",
    ]
    rows = []
    for r in result.models:
        ok = r.ok
        rows.append(
            [
                r.model,
                _input_text(r.input_size),
                fmt_num(r.params / 1e6) if r.params is not None else "-",
                fmt_num(r.reported_params_m),
                fmt_num(r.gmacs) if r.gmacs is not None else "-",
                fmt_num(r.reported_gmacs),
                fmt_bytes(r.activation_bytes_per_image),
                fmt_num(r.infer_ms["median"]) if ok and r.infer_ms else "-",
                fmt_num(r.infer_img_s) if ok else "-",
                f"{100 * r.infer_mfu:.1f}%" if ok else "-",
                fmt_num(r.train_img_s) if ok and r.train_img_s is not None else "-",
                f"{100 * r.train_mfu:.1f}%" if ok and r.train_mfu is not None else "-",
                (r.train_status or "ok") if ok else f"{r.status}: {r.reason}",
            ]
        )
    return headers, rows


def console_table(result: ModelsResult | dict[str, Any]) -> str:
    """The results as an aligned text table."""
    return format_table(*_rows(as_models_result(result)))


def markdown_report(result: ModelsResult | dict[str, Any]) -> str:
    """The results as a markdown document."""
    result = as_models_result(result)
    s = result.settings
    machine = result.machine or {}
    g = result.gemm
    lines = ["# Models: throughput and FLOP utilisation", ""]
    if result.command:
        lines += ["Made by:", "", "```", result.command, "```", ""]
    size = s.img_size or "each model's own"
    lines += [
        f"Batch {s.batch}, image size {size}, device "
        f"{s.device}, amp (bfloat16) {'on' if s.amp else 'off'}, torch.compile "
        f"{'on' if s.compile else 'off'}, channels-last "
        f"{'on' if s.channels_last else 'off'}; {s.warmup} warm-up step(s) and "
        f"{s.repeats} timed steps, median reported.",
        "",
        f"Reference GEMM rate: {g['n']}x{g['n']} {g['dtype']} matrix product, "
        f"{g['flops_per_s'] / 1e9:.1f} GFLOP/s (the fastest of {g['ms']['n']} products, the "
        "better of two measurements at the start and the end of this run).",
        "MFU = achieved model FLOP/s / this rate; training counts 3x the forward FLOPs "
        "(a step is forward, cross-entropy, backward and an SGD update).",
        "",
        "GMACs: multiply-accumulates of one image's forward pass (matrix products, "
        "convolutions, SDPA, and the FFT-based position lambdas of lambda layers at "
        "radix-2 estimates; softmax, normalisation and elementwise operations are not "
        "counted). The `paper` columns give what the papers report, where they do. "
        "`act./image`: bytes one image's training forward saves for backward. `infer ms`: "
        "median latency of one inference call on the whole batch. For point-cloud models "
        "an image is one cloud of the `input` points.",
        "",
        "## Machine",
        "",
        machine_markdown(machine),
        "",
    ]
    if not str(machine.get("device", "cpu")).startswith("cuda"):
        lines += ["CUDA figures are missing: this run had no GPU.", ""]
    note = load_note(machine, interleaved=False)
    if note:
        lines += [note, ""]
    lines += ["## Results", "", format_table(*_rows(result), markdown=True), ""]
    return "\n".join(lines)
