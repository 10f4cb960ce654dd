"""``beyond-attention bench mixers``: what each token mixer costs, swept over resolution.

Every mixer is built at the same width and measured at every (batch, token grid) point:

- parameters, forward FLOPs (:func:`beyond_attention.flops.count`: matrix products and
  convolutions, 2 FLOPs per multiply-accumulate; softmax, normalisations and FFTs are not
  counted),
- forward latency (eval mode, no autograd) and forward+backward latency (train mode,
  gradients of the parameters and of the input), as the median and inter-quartile range
  of repeated runs after a warm-up,
- training activation memory: the bytes the forward saves for backward
  (:mod:`beyond_attention.bench.memory`), and on CUDA the allocator's peak,
- for the mixers that claim to be cheaper than attention, their cost relative to SDPA
  self-attention at the same point, timed interleaved (:func:`interleaved_ratio`).

From these, the crossover token counts where those mixers become cheaper than SDPA
self-attention (in FLOPs, forward and forward+backward latency) and the targets of the
benchmark (EA against its two bare GEMMs, our lambda layer against lambda-networks, the
global lambda layer at 56^2) are computed. Points over the memory or time budget, either
measured or predicted from the previous point, are recorded as such and the sweep goes on.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..layers.factory import create_mixer
from . import timing
from .baselines import BareGemms, NaiveSelfAttention, PeerLambdaTokens, peer_lambda_available
from .counting import forward_flops
from .crossover import crossover_from_costs, crossover_from_ratios
from .memory import activation_bytes, cuda_peak_bytes
from .timing import BudgetExceeded, forward_backward_callable, forward_callable

Grid = tuple[int, int]

OK = "ok"
OOM = "oom"
TOO_SLOW = "too_slow"
SKIPPED = "skipped"
ERROR = "error"


@dataclass
class MixerSettings:
    """Everything that defines a mixer sweep.

    Attributes:
        dim: token width d of every mixer.
        heads: heads of self-attention, multi-head EA and the less-attention layer.
        memory_size: EA memory slots S.
        lambda_k, lambda_heads, lambda_u, lambda_r: lambda layer k, h, u and local context r.
        grids: token grids (H, W) swept, N = H * W.
        batches: batch sizes swept.
        mixers: names of the mixers to run (see :func:`mixer_entries`); None for all, an
            empty list for none (targets only).
        warmup, repeats: untimed and timed calls per latency.
        pairs: interleaved pairs per ratio.
        max_seconds: time budget of one measurement (a latency or a ratio); a single call
            over it marks the point ``too_slow``.
        max_memory_gb: points predicted to need more memory than this (activations plus
            parameters and their gradients) are skipped.
        device, dtype: where and in what precision the mixers run.
        compile: also measure the ``torch.compile`` speed-up of every mixer.
        compile_grid: the grid of the compile comparison.
        targets: measure the benchmark's target ratios.
        ea_target: (batch, grid) of the EA-versus-bare-GEMMs target.
        lambda_target_grids, lambda_target_batch: points of the lambda-versus-peer target.
        lambda_global_grid: grid at which the global lambda layer must run.
        seed: seed of the weights and inputs.
    """

    dim: int = 256
    heads: int = 8
    memory_size: int = 64
    lambda_k: int = 16
    lambda_heads: int = 4
    lambda_u: int = 1
    lambda_r: int = 23
    grids: list[Grid] = field(default_factory=lambda: [(14, 14), (28, 28), (56, 56), (112, 112)])
    batches: list[int] = field(default_factory=lambda: [1])
    mixers: list[str] | None = None
    warmup: int = 1
    repeats: int = 5
    pairs: int = 7
    max_seconds: float = 60.0
    max_memory_gb: float = 4.0
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    compile_grid: Grid = (28, 28)
    targets: bool = True
    ea_target: tuple[int, Grid] = (8, (56, 56))
    lambda_target_grids: list[Grid] = field(default_factory=lambda: [(28, 28), (56, 56)])
    lambda_target_batch: int = 1
    lambda_global_grid: Grid = (56, 56)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        dt = getattr(torch, self.dtype, None)
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise ValueError(f"dtype must name a floating torch dtype, got {self.dtype!r}")
        return dt


@dataclass(frozen=True)
class MixerEntry:
    """One contender of the sweep.

    Attributes:
        name: key in the results.
        label: legend label.
        role: ``"mixer"`` (the library's), ``"baseline"`` (a reference) or ``"peer"``.
        description: what exactly is measured.
        build: ``(settings, grid) -> module`` mapping (B, N, d) -> (B, N, d).
        vs_self: time it interleaved against SDPA self-attention (a crossover candidate).
        available: whether it can run here (peers are optional).
    """

    name: str
    label: str
    role: str
    description: str
    build: Callable[[MixerSettings, Grid], nn.Module]
    vs_self: bool = False
    available: Callable[[], bool] = lambda: True


def _lambda_kwargs(s: MixerSettings) -> dict[str, Any]:
    return {"dim_k": s.lambda_k, "heads": s.lambda_heads, "dim_u": s.lambda_u}


def mixer_entries() -> dict[str, MixerEntry]:
    """Every contender the sweep knows, by name, in report order."""
    entries = [
        MixerEntry(
            "self",
            "SDPA self-attention",
            "baseline",
            "SelfAttention on F.scaled_dot_product_attention (fused kernel)",
            lambda s, g: create_mixer("self", s.dim, num_heads=s.heads),
        ),
        MixerEntry(
            "naive",
            "naive self-attention",
            "baseline",
            "softmax(QK^T/sqrt(d/h))V with the (B, h, N, N) matrix materialised",
            lambda s, g: NaiveSelfAttention(s.dim, num_heads=s.heads),
        ),
        MixerEntry(
            "ea_gemms",
            "EA bare GEMMs (floor)",
            "baseline",
            "x @ M_k^T @ M_v^T: the two products of EA without normalisation",
            lambda s, g: BareGemms(s.dim, s.memory_size),
        ),
        MixerEntry(
            "external",
            "external attention",
            "mixer",
            "ExternalAttention, double normalisation",
            lambda s, g: create_mixer("external", s.dim, memory_size=s.memory_size),
            vs_self=True,
        ),
        MixerEntry(
            "external_mh",
            "multi-head EA",
            "mixer",
            "MultiHeadExternalAttention, 4x expansion, shared memories",
            lambda s, g: create_mixer(
                "external_mh", s.dim, num_heads=s.heads, memory_size=s.memory_size
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda",
            "lambda (local r)",
            "mixer",
            "LambdaLayer with the lambda convolution (local context r x r)",
            lambda s, g: create_mixer(
                "lambda", s.dim, grid_size=g, r=s.lambda_r, **_lambda_kwargs(s)
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda_global",
            "lambda (global)",
            "mixer",
            "LambdaLayer with global relative positions over the whole map",
            lambda s, g: create_mixer(
                "lambda", s.dim, grid_size=g, feat_size=g, **_lambda_kwargs(s)
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda_peer",
            "lambda-networks (local r)",
            "peer",
            "lambda_networks.LambdaLayer(r=r), the open-source peer",
            lambda s, g: PeerLambdaTokens(s.dim, g, r=s.lambda_r, **_lambda_kwargs(s)),
            available=peer_lambda_available,
        ),
        MixerEntry(
            "lambda_global_peer",
            "lambda-networks (global)",
            "peer",
            "lambda_networks.LambdaLayer(n=H): gathers an (N, N, k, u) table",
            lambda s, g: PeerLambdaTokens(s.dim, g, r=None, **_lambda_kwargs(s)),
            available=peer_lambda_available,
        ),
        MixerEntry(
            "less",
            "less-attention (LA, N keys)",
            "mixer",
            "LaViT LA layer on all N keys (create_mixer('less', layer_index=1)): "
            "W_theta (N x N) transforms the previous scores, Psi only for N <= 256",
            lambda s, g: create_mixer(
                "less", s.dim, num_heads=s.heads, num_tokens=g[0] * g[1], layer_index=1
            ),
            vs_self=True,
        ),
        MixerEntry(
            "vanilla_sr",
            "vanilla SR attention (7x7 keys)",
            "baseline",
            "LaViT/PVTv2 vanilla layer: keys and values reduced to a 7x7 grid",
            lambda s, g: ReducedVanillaAttention(s.dim, s.heads, g),
        ),
        MixerEntry(
            "less_sr",
            "less-attention (LA, 7x7 keys)",
            "mixer",
            "LaViT LA layer as in the LaViT models: keys/values reduced to a 7x7 grid",
            lambda s, g: ReducedLessAttention(s.dim, s.heads, g),
            vs_self=True,
        ),
        MixerEntry(
            "mlp_mixer",
            "MLP-Mixer token MLP",
            "baseline",
            "TokenMixingMLP, hidden d/2 (weights tied to N)",
            lambda s, g: create_mixer("mlp_mixer", s.dim, num_tokens=g[0] * g[1]),
        ),
        MixerEntry(
            "feedforward",
            "feed-forward over tokens",
            "baseline",
            "FeedForwardMixer, hidden 4N (weights tied to N)",
            lambda s, g: create_mixer("feedforward", s.dim, num_tokens=g[0] * g[1]),
        ),
    ]
    return {e.name: e for e in entries}


DEFAULT_MIXERS: tuple[str, ...] = tuple(mixer_entries())


# ---------------------------------------------------------------------------------------------
# inputs, including the attention state of the less-attention layer


def reduced_key_grid(grid: Grid, keys_side: int = 7) -> tuple[int, Grid]:
    """Spatial-reduction ratio giving about ``keys_side`` keys per side, and the key grid.

    LaViT's models (like PVTv2) reduce keys and values to a 7 x 7 grid at every stage at
    224 px: the ratio is ``max(1, min(H, W) // 7)``.
    """
    sr = max(1, min(grid) // keys_side)
    return sr, (grid[0] // sr, grid[1] // sr)


class ReducedVanillaAttention(nn.Module):
    """LaViT's vanilla layer with keys and values reduced to a 7 x 7 grid (PVTv2-style).

    :class:`~beyond_attention.layers.less_attention.VanillaAttention` with
    ``sr_ratio`` from :func:`reduced_key_grid`. Shapes: (B, H*W, d) -> (B, H*W, d).
    """

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        from ..layers.less_attention import VanillaAttention

        self.grid = tuple(grid)
        sr, _ = reduced_key_grid(self.grid)
        self.attn = VanillaAttention(dim, num_heads=num_heads, sr_ratio=sr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, hw=self.grid, return_scores=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-softmax scores (B, h, N, M) a following LA layer inherits."""
        return self.attn(x, hw=self.grid, return_scores=True)[1]


class ReducedLessAttention(nn.Module):
    """LaViT's less-attention layer on a 7 x 7 key grid, as in the LaViT models.

    :class:`~beyond_attention.layers.less_attention.LessAttention` with ``num_keys`` the
    reduced key count and values reduced the same way; no query transform Psi (N is large).
    ``forward(x, prev_scores) -> (out, scores)``; shapes (B, H*W, d) and (B, h, N, M).
    """

    carries_attention = True

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        from ..layers.less_attention import LessAttention

        self.dim = dim
        self.num_heads = num_heads
        self.grid = tuple(grid)
        sr, kg = reduced_key_grid(self.grid)
        self.attn = LessAttention(dim, num_heads=num_heads, num_keys=kg[0] * kg[1], sr_ratio=sr)

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn(x, prev_scores, hw=self.grid)

    def previous_layer(self) -> nn.Module:
        """The vanilla layer that precedes this one in a LaViT stage."""
        return ReducedVanillaAttention(self.dim, self.num_heads, self.grid)


def previous_attention(module: nn.Module, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """A realistic incoming attention state for a mixer that carries attention.

    A less-attention layer transforms the previous layer's attention instead of computing
    its own; in a network that state comes from a vanilla attention layer. The benchmark
    makes it the same way, untimed: one vanilla layer of the same configuration (fresh
    weights) runs on the same input and its pre-softmax scores are handed to the mixer.
    """
    if hasattr(module, "previous_layer"):
        vanilla = module.previous_layer()
        run = vanilla.scores
    else:  # the factory's LessAttentionMixer: its vanilla form is layer_index=0
        vanilla = create_mixer(
            "less",
            module.dim,
            num_heads=module.attn.num_heads,
            num_tokens=grid[0] * grid[1],
            layer_index=0,
        )

        def run(t: torch.Tensor) -> torch.Tensor:
            return vanilla(t)[1]

    vanilla.to(x.device, x.dtype)
    with torch.no_grad():
        return run(x).detach()


def make_inputs(
    module: nn.Module, batch: int, grid: Grid, settings: MixerSettings, generator: torch.Generator
) -> tuple[Any, ...]:
    """The positional inputs of one call: ``(x,)`` or ``(x, attention_state)``.

    ``x`` is (B, H*W, d), standard normal, requiring grad (a mixer inside a network
    back-propagates to its input).
    """
    n = grid[0] * grid[1]
    x = torch.randn(batch, n, settings.dim, generator=generator)
    x = x.to(settings.device, settings.torch_dtype).requires_grad_(True)
    if getattr(module, "carries_attention", False):
        return (x, previous_attention(module, x.detach(), grid))
    return (x,)


def _build(entry: MixerEntry, settings: MixerSettings, grid: Grid) -> nn.Module:
    torch.manual_seed(settings.seed)
    module = entry.build(settings, grid)
    return module.to(settings.device, settings.torch_dtype)


def _is_oom(err: BaseException) -> bool:
    msg = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in msg or "can't allocate" in msg


def _release(device: str, collect: bool = False) -> None:
    """Give memory back after a point (a full garbage collection only after a failure)."""
    if collect:
        gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# one point


def _growth(history: list[dict[str, Any]], key: str, tokens: int) -> float:
    """Growth exponent of ``key`` over tokens from the last two points, in [1, 2.5].

    With a single point the conservative exponent 2 (attention-like) is assumed.
    """
    pts = [(p["tokens"], p[key]) for p in history if p.get(key)]
    if len(pts) < 2 or pts[-1][0] == pts[-2][0]:
        return 2.0
    (n1, v1), (n2, v2) = pts[-2], pts[-1]
    e = math.log(v2 / v1) / math.log(n2 / n1)
    return min(2.5, max(1.0, e))


def predict(history: list[dict[str, Any]], tokens: int, batch: int) -> dict[str, float] | None:
    """Predicted memory (bytes) and one-call training time (ms) at a new point.

    Extrapolated from the mixer's previous successful points at the same batch with the
    growth exponent of :func:`_growth`; ``None`` without history.
    """
    ok = [p for p in history if p["status"] == OK and p["batch"] == batch]
    if not ok:
        return None
    last = ok[-1]
    f = tokens / last["tokens"]
    mem_e = _growth(ok, "activation_bytes", tokens)
    par_e = _growth(ok, "param_bytes", tokens) if last.get("param_bytes") else 1.0
    t_e = _growth(ok, "train_median_ms", tokens)
    act = (last.get("activation_bytes") or 0) * f**mem_e
    params = 2 * (last.get("param_bytes") or 0) * (f**par_e if par_e > 1.0 else 1.0)
    t = (last.get("train_median_ms") or 0.0) * f**t_e
    return {"memory_bytes": act + params, "train_ms": t}


def measure_point(
    entry: MixerEntry,
    grid: Grid,
    batch: int,
    settings: MixerSettings,
    *,
    history: list[dict[str, Any]] | None = None,
    self_available: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Measure one mixer at one (batch, grid) point; never raises for OOM or slowness.

    Returns a dict with ``status`` (``ok``, ``oom``, ``too_slow``, ``skipped``, ``error``),
    ``reason`` and, for ``ok``, ``params``, ``param_bytes``, ``flops``, ``forward_ms`` and
    ``train_ms`` (timing summaries), ``activation_bytes``, ``peak_bytes`` (CUDA) and
    ``vs_self`` (interleaved ratios against SDPA self-attention).
    """
    tokens = grid[0] * grid[1]
    point: dict[str, Any] = {
        "mixer": entry.name,
        "batch": batch,
        "grid": list(grid),
        "tokens": tokens,
        "status": OK,
        "reason": "",
    }
    failed = [
        p
        for p in history or []
        if p["batch"] == batch and p["tokens"] < tokens and p["status"] in (OOM, TOO_SLOW, SKIPPED)
    ]
    if failed:
        point.update(
            status=SKIPPED,
            reason=f"already {failed[-1]['status']} at {failed[-1]['tokens']:,} tokens",
        )
        log(_point_line(point))
        return point
    pred = predict(history or [], tokens, batch)
    if pred is not None:
        point["predicted"] = pred
        if pred["memory_bytes"] > settings.max_memory_gb * 2**30:
            point.update(
                status=SKIPPED,
                reason=(
                    f"predicted {pred['memory_bytes'] / 2**30:.1f} GiB > "
                    f"--max-memory-gb {settings.max_memory_gb:g}"
                ),
            )
            log(_point_line(point))
            return point
        if pred["train_ms"] / 1e3 > settings.max_seconds:
            point.update(
                status=TOO_SLOW,
                reason=(
                    f"predicted {pred['train_ms'] / 1e3:.0f} s per forward+backward > "
                    f"--max-seconds {settings.max_seconds:g}"
                ),
            )
            log(_point_line(point))
            return point
    dev = settings.device
    gen = torch.Generator().manual_seed(settings.seed)
    module: nn.Module | None = None
    try:
        module = _build(entry, settings, grid)
        inputs = make_inputs(module, batch, grid, settings, gen)
        params = [p for p in module.parameters() if p.requires_grad]
        point["params"] = sum(p.numel() for p in module.parameters())
        point["param_bytes"] = sum(p.numel() * p.element_size() for p in module.parameters())
        point.update(forward_flops(module, inputs))
        module.train()
        point["activation_bytes"] = activation_bytes(module, inputs).bytes
        train_fn = forward_backward_callable(module, inputs, params)
        if torch.device(dev).type == "cuda":
            point["peak_bytes"] = cuda_peak_bytes(train_fn, dev)
        module.eval()
        fwd = timing.time_callable(
            forward_callable(module, inputs),
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
            device=dev,
        )
        point["forward_ms"] = fwd.to_dict()
        module.train()
        trn = timing.time_callable(
            train_fn,
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
            device=dev,
        )
        point["train_ms"] = trn.to_dict()
        point["train_median_ms"] = trn.median
        if entry.vs_self and self_available:
            point["vs_self"] = _ratios_vs_self(module, inputs, grid, batch, settings, gen)
    except BudgetExceeded as e:
        point.update(status=TOO_SLOW, reason=str(e), train_median_ms=e.seconds * 1e3)
    except (RuntimeError, MemoryError) as e:
        if _is_oom(e):
            point.update(status=OOM, reason=str(e).splitlines()[0][:200])
        else:
            point.update(status=ERROR, reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    except (ValueError, TypeError, ImportError, NotImplementedError, AssertionError) as e:
        point.update(status=ERROR, reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    finally:
        del module
        _release(dev, collect=point["status"] != OK)
    log(_point_line(point))
    return point


def _ratios_vs_self(
    module: nn.Module,
    inputs: tuple[Any, ...],
    grid: Grid,
    batch: int,
    settings: MixerSettings,
    gen: torch.Generator,
) -> dict[str, Any]:
    """Interleaved forward and forward+backward ratios of ``module`` over SDPA attention."""
    ref = _build(mixer_entries()["self"], settings, grid)
    x = inputs[0]
    out: dict[str, Any] = {}
    try:
        module.eval()
        ref.eval()
        r = timing.interleaved_ratio(
            forward_callable(module, inputs),
            forward_callable(ref, (x,)),
            warmup=settings.warmup,
            pairs=settings.pairs,
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out["forward"] = r.to_dict()
        module.train()
        ref.train()
        r = timing.interleaved_ratio(
            forward_backward_callable(module, inputs, list(module.parameters())),
            forward_backward_callable(ref, (x,), list(ref.parameters())),
            warmup=settings.warmup,
            pairs=settings.pairs,
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out["train"] = r.to_dict()
    except BudgetExceeded as e:
        out["error"] = f"too slow: {e}"
    return out


def _point_line(p: dict[str, Any]) -> str:
    g = "x".join(map(str, p["grid"]))
    if p["status"] != OK:
        return f"  {p['mixer']:>20s}  B={p['batch']:<3d} {g:>8s}  {p['status']}: {p['reason']}"
    f, t = p["forward_ms"]["median"], p["train_ms"]["median"]
    extra = ""
    vs = p.get("vs_self") or {}
    if "forward" in vs:
        extra = (
            f"  vs SDPA fwd {vs['forward']['ratio']['median']:.2f}x"
            f" train {vs['train']['ratio']['median']:.2f}x"
        )
    return (
        f"  {p['mixer']:>20s}  B={p['batch']:<3d} {g:>8s}  fwd {f:9.2f} ms  "
        f"fwd+bwd {t:9.2f} ms  act {p['activation_bytes'] / 2**20:8.1f} MiB{extra}"
    )


# ---------------------------------------------------------------------------------------------
# targets


def _ratio_target(
    name: str, description: str, ratio: timing.Ratio, target: float, op: str, **extra: Any
) -> dict[str, Any]:
    value = ratio.ratio.median
    passed = value <= target if op == "<=" else value >= target
    return {
        "name": name,
        "description": description,
        "value": value,
        "target": target,
        "op": op,
        "passed": passed,
        "ratio": ratio.to_dict(),
        **extra,
    }


def ea_targets(settings: MixerSettings, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """EA against its two bare GEMMs (forward <= 1.10x, forward+backward <= 1.15x).

    Same weights (the GEMM floor uses EA's own ``mk`` and ``mv``), same input, timed
    interleaved.
    """
    batch, grid = settings.ea_target
    n = grid[0] * grid[1]
    torch.manual_seed(settings.seed)
    ea = create_mixer("external", settings.dim, memory_size=settings.memory_size)
    floor = BareGemms(settings.dim, settings.memory_size)
    floor.mk, floor.mv = ea.mk, ea.mv
    ea.to(settings.device, settings.torch_dtype)
    floor.to(settings.device, settings.torch_dtype)
    gen = torch.Generator().manual_seed(settings.seed)
    x = torch.randn(batch, n, settings.dim, generator=gen)
    x = x.to(settings.device, settings.torch_dtype).requires_grad_(True)
    where = f"B={batch}, N={n}, d={settings.dim}, S={settings.memory_size}"
    out = []
    fwd = timing.interleaved_ratio(
        forward_callable(ea, (x,)),
        forward_callable(floor, (x,)),
        warmup=max(2, settings.warmup),
        pairs=max(15, settings.pairs),
        device=settings.device,
        max_seconds=settings.max_seconds,
    )
    out.append(
        _ratio_target(
            "ea_forward_vs_gemms", f"EA forward / its two bare GEMMs ({where})", fwd, 1.10, "<="
        )
    )
    log(_target_line(out[-1]))
    params = list(ea.parameters())
    trn = timing.interleaved_ratio(
        forward_backward_callable(ea, (x,), params),
        forward_backward_callable(floor, (x,), params),
        warmup=max(2, settings.warmup),
        pairs=max(15, settings.pairs),
        device=settings.device,
        max_seconds=settings.max_seconds,
    )
    out.append(
        _ratio_target(
            "ea_train_vs_gemms",
            f"EA forward+backward / the two bare linear layers ({where})",
            trn,
            1.15,
            "<=",
        )
    )
    log(_target_line(out[-1]))
    return out


def lambda_targets(
    settings: MixerSettings, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Our lambda layer against lambda-networks (>= 2x forward+backward, no more memory),
    and the global lambda layer at 56^2 (runs, memory below the gathered table).

    Both layers run on (B, C, H, W) directly, at k, h, u, r of the settings, in train mode.
    """
    from ..layers.lambda_layer import LambdaLayer

    out: list[dict[str, Any]] = []
    b = settings.lambda_target_batch
    kw = _lambda_kwargs(settings)
    gen = torch.Generator().manual_seed(settings.seed)
    if peer_lambda_available():
        from lambda_networks import LambdaLayer as PeerLambdaLayer

        for grid in settings.lambda_target_grids:
            where = (
                f"B={b}, {grid[0]}x{grid[1]}, d={settings.dim}, k={settings.lambda_k}, "
                f"h={settings.lambda_heads}, u={settings.lambda_u}, r={settings.lambda_r}"
            )
            try:
                torch.manual_seed(settings.seed)
                ours = LambdaLayer(settings.dim, r=settings.lambda_r, **kw)
                peer = PeerLambdaLayer(settings.dim, r=settings.lambda_r, **kw)
                ours.to(settings.device, settings.torch_dtype).train()
                peer.to(settings.device, settings.torch_dtype).train()
                x = torch.randn(b, settings.dim, *grid, generator=gen)
                x = x.to(settings.device, settings.torch_dtype).requires_grad_(True)
                mem_ours = activation_bytes(ours, (x,)).bytes
                mem_peer = activation_bytes(peer, (x,)).bytes
                r = timing.interleaved_ratio(
                    forward_backward_callable(peer, (x,), list(peer.parameters())),
                    forward_backward_callable(ours, (x,), list(ours.parameters())),
                    warmup=settings.warmup,
                    pairs=settings.pairs,
                    device=settings.device,
                    max_seconds=settings.max_seconds,
                )
                t = _ratio_target(
                    f"lambda_speedup_vs_peer_{grid[0]}x{grid[1]}",
                    f"lambda-networks / ours, forward+backward ({where})",
                    r,
                    2.0,
                    ">=",
                    activation_bytes_ours=mem_ours,
                    activation_bytes_peer=mem_peer,
                    memory_passed=mem_ours <= mem_peer,
                )
                t["passed"] = t["passed"] and t["memory_passed"]
                out.append(t)
                log(_target_line(out[-1]))
            except BudgetExceeded as e:
                out.append(
                    {
                        "name": f"lambda_speedup_vs_peer_{grid[0]}x{grid[1]}",
                        "description": where,
                        "error": f"too slow: {e}",
                        "passed": None,
                    }
                )
                log(f"  target lambda vs peer {grid}: too slow ({e})")
            finally:
                _release(settings.device)
    # the global form at 56^2: runs, with less memory than the (N, N, k, u) table
    grid = tuple(settings.lambda_global_grid)
    n = grid[0] * grid[1]
    table = (
        n * n * settings.lambda_k * settings.lambda_u * torch.finfo(settings.torch_dtype).bits // 8
    )
    name = f"lambda_global_{grid[0]}x{grid[1]}_runs"
    try:
        torch.manual_seed(settings.seed)
        layer = LambdaLayer(settings.dim, feat_size=grid, **kw)
        layer.to(settings.device, settings.torch_dtype).train()
        x = torch.randn(b, settings.dim, *grid, generator=gen)
        x = x.to(settings.device, settings.torch_dtype).requires_grad_(True)
        mem = activation_bytes(layer, (x,)).bytes
        t = timing.time_callable(
            forward_backward_callable(layer, (x,), list(layer.parameters())),
            warmup=settings.warmup,
            repeats=max(3, settings.repeats // 2),
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out.append(
            {
                "name": name,
                "description": (
                    f"global lambda at {grid[0]}x{grid[1]} (B={b}): forward+backward runs; "
                    "activation memory vs the gathered (N, N, k, u) table"
                ),
                "value": mem,
                "target": table,
                "op": "<",
                "passed": mem < table,
                "activation_bytes": mem,
                "gathered_table_bytes": table,
                "train_ms": t.to_dict(),
            }
        )
        log(
            f"  target global lambda {grid[0]}x{grid[1]}: fwd+bwd {t.median:.0f} ms, activations "
            f"{mem / 2**20:.1f} MiB vs gathered table {table / 2**20:.1f} MiB"
        )
    except (RuntimeError, MemoryError, BudgetExceeded) as e:
        out.append(
            {
                "name": name,
                "description": f"global lambda at {grid}",
                "passed": False,
                "error": str(e).splitlines()[0][:300],
            }
        )
        log(f"  target global lambda {grid}: FAILED ({e})")
    finally:
        _release(settings.device)
    return out


def _target_line(t: dict[str, Any]) -> str:
    ok = {True: "PASS", False: "MISS", None: "n/a"}[t.get("passed")]
    if "memory_passed" in t:
        speed = t["value"] >= t["target"] if t["op"] == ">=" else t["value"] <= t["target"]
        mem = "PASS" if t["memory_passed"] else "MISS"
        ok = f"speed {'PASS' if speed else 'MISS'}, memory {mem}"
    if "value" not in t:
        return f"  target {t['name']}: {t.get('error', '')}"
    r = t.get("ratio", {}).get("ratio")
    spread = f" [IQR {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} pairs]" if r else ""
    return f"  target {t['name']}: {t['value']:.3f}x{spread} (target {t['op']} {t['target']}) {ok}"


# ---------------------------------------------------------------------------------------------
# torch.compile


def compile_speedups(
    settings: MixerSettings, names: Sequence[str], log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """``torch.compile`` speed-up (eager time / compiled time, interleaved) of each mixer.

    Measured at ``settings.compile_grid`` and the first batch, forward (eval, no grad) and
    forward+backward; the first compiled call (compilation) is timed separately.
    """
    grid = settings.compile_grid
    batch = settings.batches[0]
    entries = mixer_entries()
    results = []
    for name in names:
        entry = entries[name]
        row: dict[str, Any] = {"mixer": name, "grid": list(grid), "batch": batch}
        if not entry.available():
            continue
        try:
            gen = torch.Generator().manual_seed(settings.seed)
            module = _build(entry, settings, grid)
            inputs = make_inputs(module, batch, grid, settings, gen)
            compiled = torch.compile(module)
            module.eval()
            t0 = time.perf_counter()
            forward_callable(compiled, inputs)()
            row["compile_forward_s"] = time.perf_counter() - t0
            row["forward"] = timing.interleaved_ratio(
                forward_callable(module, inputs),
                forward_callable(compiled, inputs),
                warmup=settings.warmup,
                pairs=settings.pairs,
                device=settings.device,
                max_seconds=settings.max_seconds,
            ).to_dict()
            module.train()
            params = list(module.parameters())
            t0 = time.perf_counter()
            forward_backward_callable(compiled, inputs, params)()
            row["compile_train_s"] = time.perf_counter() - t0
            row["train"] = timing.interleaved_ratio(
                forward_backward_callable(module, inputs, params),
                forward_backward_callable(compiled, inputs, params),
                warmup=settings.warmup,
                pairs=settings.pairs,
                device=settings.device,
                max_seconds=settings.max_seconds,
            ).to_dict()
            row["status"] = OK
            log(
                f"  compile {name:>20s}: forward {row['forward']['ratio']['median']:.2f}x, "
                f"fwd+bwd {row['train']['ratio']['median']:.2f}x "
                f"(compiled in {row['compile_forward_s'] + row['compile_train_s']:.0f} s)"
            )
        except Exception as e:  # noqa: BLE001 - any compiler failure is a result to record
            row["status"] = ERROR
            row["reason"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log(f"  compile {name:>20s}: FAILED {row['reason']}")
        finally:
            _release(settings.device)
        results.append(row)
    return results


# ---------------------------------------------------------------------------------------------
# the sweep


CROSSOVER_METRICS = ("flops", "forward", "train")


def crossovers(points: list[dict[str, Any]], batches: Sequence[int]) -> list[dict[str, Any]]:
    """Crossover token counts versus SDPA self-attention for every ``vs_self`` mixer.

    FLOPs are compared directly; latencies through the interleaved ratios of each point.
    """
    entries = mixer_entries()
    out = []
    for batch in batches:
        ref = {
            p["tokens"]: p
            for p in points
            if p["mixer"] == "self" and p["batch"] == batch and p["status"] == OK
        }
        for name, entry in entries.items():
            if not entry.vs_self:
                continue
            mine = [
                p
                for p in points
                if p["mixer"] == name and p["batch"] == batch and p["status"] == OK
            ]
            if not mine:
                continue
            tokens = [p["tokens"] for p in mine]
            for metric in CROSSOVER_METRICS:
                if metric == "flops":
                    c = crossover_from_costs(
                        tokens,
                        [p.get("flops") for p in mine],
                        [ref[n].get("flops") if n in ref else None for n in tokens],
                    )
                else:
                    ratios = []
                    for p in mine:
                        r = (p.get("vs_self") or {}).get(metric)
                        ratios.append(r["ratio"]["median"] if r else None)
                    c = crossover_from_ratios(tokens, ratios)
                out.append(
                    {
                        "mixer": name,
                        "batch": batch,
                        "metric": metric,
                        **c.to_dict(),
                        "text": c.describe(),
                    }
                )
    return out


def run_sweep(settings: MixerSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the mixer benchmark and return its results (rendered by :mod:`.mixers_report`).

    ``settings.mixers`` ``None`` runs every mixer; an empty list runs no sweep (targets and
    compile comparisons only).
    """
    entries = mixer_entries()
    names = list(DEFAULT_MIXERS if settings.mixers is None else settings.mixers)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ValueError(f"unknown mixers {unknown}; expected names from {', '.join(entries)}")
    if "self" not in names and any(entries[n].vs_self for n in names):
        names.insert(0, "self")
    unavailable = [n for n in names if not entries[n].available()]
    names = [n for n in names if n not in unavailable]
    for n in unavailable:
        log(f"  {n}: not installed (pip install 'beyond-attention[peers]'), skipped")
    grids = sorted(settings.grids, key=lambda g: g[0] * g[1])
    points: list[dict[str, Any]] = []
    history: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for batch in settings.batches:
        for grid in grids:
            log(f"B={batch}, grid {grid[0]}x{grid[1]} ({grid[0] * grid[1]} tokens)")
            self_ok = False
            for name in names:
                p = measure_point(
                    entries[name],
                    grid,
                    batch,
                    settings,
                    history=history[name],
                    self_available=self_ok,
                    log=log,
                )
                if name == "self":
                    self_ok = p["status"] == OK
                history[name].append(p)
                points.append(p)
    result: dict[str, Any] = {
        "kind": "mixers",
        "settings": settings.to_dict(),
        "mixers": {
            n: {
                "label": entries[n].label,
                "role": entries[n].role,
                "description": entries[n].description,
                "vs_self": entries[n].vs_self,
            }
            for n in names
        },
        "unavailable": unavailable,
        "points": points,
        "crossovers": crossovers(points, settings.batches),
        "targets": [],
        "compile": [],
    }
    if settings.targets:
        log("targets (interleaved ratios)")
        result["targets"] += ea_targets(settings, log)
        result["targets"] += lambda_targets(settings, log)
    if settings.compile:
        log(f"torch.compile at {settings.compile_grid[0]}x{settings.compile_grid[1]}")
        result["compile"] = compile_speedups(settings, names, log)
    return result
