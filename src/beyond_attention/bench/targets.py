"""The benchmark's acceptance targets, each a named, documented threshold.

- External attention (Guo et al., arXiv:2105.02358, Sec. 3.1-3.2) is two linear layers and
  a double normalisation: its forward must cost at most :data:`EA_FORWARD_MAX_RATIO` times
  its two bare GEMMs, forward+backward at most :data:`EA_TRAIN_MAX_RATIO` times.
- Our lambda layer (Bello, arXiv:2102.08602, Sec. 3-4) must train at least
  :data:`LAMBDA_MIN_SPEEDUP_VS_PEER` times faster than lambda-networks with no more
  activation memory, and the global lambda layer must run at 56 x 56 with less memory than
  the gathered (N, N, k, u) position-embedding table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..layers.factory import create_mixer
from . import timing
from .baselines import BareGemms, peer_lambda_available
from .contenders import lambda_kwargs
from .memory import activation_bytes
from .point import release
from .records import Record, kept
from .settings import MixerSettings
from .timing import BudgetExceeded, forward_backward_callable, forward_callable

#: EA forward / its two bare GEMMs (same weights, same input, interleaved) must not exceed this.
EA_FORWARD_MAX_RATIO = 1.10
#: EA forward+backward / the two bare linear layers must not exceed this.
EA_TRAIN_MAX_RATIO = 1.15
#: lambda-networks / ours, forward+backward time, must reach at least this.
LAMBDA_MIN_SPEEDUP_VS_PEER = 2.0
#: the EA ratios are close to 1 and noisy: at least this many warm-up calls and pairs.
EA_MIN_WARMUP = 2
EA_MIN_PAIRS = 15
#: timed calls of the global-lambda run: at least this many (or half the settings' repeats).
LAMBDA_GLOBAL_MIN_REPEATS = 3


@dataclass
class TargetResult(Record):
    """One acceptance target; the fields are the keys of a recorded target.

    Attributes:
        name, description: key and what exactly is compared.
        value, target, op: measured value, threshold and comparison (``<=``, ``>=``, ``<``).
        passed: the verdict (``None`` when it could not be measured).
        ratio: the interleaved ratio (:meth:`.timing.Ratio.to_dict`) of a ratio target.
        activation_bytes_ours, activation_bytes_peer, memory_passed: the memory half of the
            lambda-versus-peer target.
        activation_bytes, gathered_table_bytes, train_ms: the global-lambda target.
        error: why it could not be measured.
    """

    name: str
    description: str = ""
    value: float | None = None
    target: float | None = None
    op: str | None = None
    passed: bool | None = kept()
    ratio: dict[str, Any] | None = None
    activation_bytes_ours: int | None = None
    activation_bytes_peer: int | None = None
    memory_passed: bool | None = None
    activation_bytes: int | None = None
    gathered_table_bytes: int | None = None
    train_ms: dict[str, Any] | None = None
    error: str | None = None

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def speed_passed(self) -> bool | None:
        """The comparison of value and target alone (without the memory half)."""
        if self.value is None or self.target is None:
            return None
        return compare(self.value, self.op or "<=", self.target)


def compare(value: float, op: str, target: float) -> bool:
    """``value op target`` for ``op`` in ``<=``, ``>=``, ``<``."""
    if op == "<=":
        return value <= target
    if op == ">=":
        return value >= target
    if op == "<":
        return value < target
    raise ValueError(f"op must be '<=', '>=' or '<', got {op!r}")


def _ratio_target(
    name: str, description: str, ratio: timing.Ratio, target: float, op: str, **extra: Any
) -> TargetResult:
    value = ratio.ratio.median
    return TargetResult(
        name=name,
        description=description,
        value=value,
        target=target,
        op=op,
        passed=compare(value, op, target),
        ratio=ratio.to_dict(),
        **extra,
    )


def ea_targets(settings: MixerSettings, log: Callable[[str], None] = print) -> list[TargetResult]:
    """EA against its two bare GEMMs (forward <= :data:`EA_FORWARD_MAX_RATIO`,
    forward+backward <= :data:`EA_TRAIN_MAX_RATIO`).

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
        warmup=max(EA_MIN_WARMUP, settings.warmup),
        pairs=max(EA_MIN_PAIRS, settings.pairs),
        device=settings.device,
        max_seconds=settings.max_seconds,
    )
    out.append(
        _ratio_target(
            "ea_forward_vs_gemms",
            f"EA forward / its two bare GEMMs ({where})",
            fwd,
            EA_FORWARD_MAX_RATIO,
            "<=",
        )
    )
    log(_target_line(out[-1]))
    params = list(ea.parameters())
    trn = timing.interleaved_ratio(
        forward_backward_callable(ea, (x,), params),
        forward_backward_callable(floor, (x,), params),
        warmup=max(EA_MIN_WARMUP, settings.warmup),
        pairs=max(EA_MIN_PAIRS, settings.pairs),
        device=settings.device,
        max_seconds=settings.max_seconds,
    )
    out.append(
        _ratio_target(
            "ea_train_vs_gemms",
            f"EA forward+backward / the two bare linear layers ({where})",
            trn,
            EA_TRAIN_MAX_RATIO,
            "<=",
        )
    )
    log(_target_line(out[-1]))
    return out


def lambda_targets(
    settings: MixerSettings, log: Callable[[str], None] = print
) -> list[TargetResult]:
    """Our lambda layer against lambda-networks (>= :data:`LAMBDA_MIN_SPEEDUP_VS_PEER` times
    faster forward+backward, no more memory),
    and the global lambda layer at 56^2 (runs, memory below the gathered table).

    Both layers run on (B, C, H, W) directly, at k, h, u, r of the settings, in train mode.
    """
    from ..layers.lambda_layer import LambdaLayer

    out: list[TargetResult] = []
    b = settings.lambda_target_batch
    kw = lambda_kwargs(settings)
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
                    LAMBDA_MIN_SPEEDUP_VS_PEER,
                    ">=",
                    activation_bytes_ours=mem_ours,
                    activation_bytes_peer=mem_peer,
                    memory_passed=mem_ours <= mem_peer,
                )
                t.passed = bool(t.passed and t.memory_passed)
                out.append(t)
                log(_target_line(out[-1]))
            except BudgetExceeded as e:
                out.append(
                    TargetResult(
                        name=f"lambda_speedup_vs_peer_{grid[0]}x{grid[1]}",
                        description=where,
                        error=f"too slow: {e}",
                        passed=None,
                    )
                )
                log(f"  target lambda vs peer {grid}: too slow ({e})")
            finally:
                release(settings.device)
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
            repeats=max(LAMBDA_GLOBAL_MIN_REPEATS, settings.repeats // 2),
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out.append(
            TargetResult(
                name=name,
                description=(
                    f"global lambda at {grid[0]}x{grid[1]} (B={b}): forward+backward runs; "
                    "activation memory vs the gathered (N, N, k, u) table"
                ),
                value=mem,
                target=table,
                op="<",
                passed=mem < table,
                activation_bytes=mem,
                gathered_table_bytes=table,
                train_ms=t.to_dict(),
            )
        )
        log(
            f"  target global lambda {grid[0]}x{grid[1]}: fwd+bwd {t.median:.0f} ms, activations "
            f"{mem / 2**20:.1f} MiB vs gathered table {table / 2**20:.1f} MiB"
        )
    except (RuntimeError, MemoryError, BudgetExceeded) as e:
        out.append(
            TargetResult(
                name=name,
                description=f"global lambda at {grid}",
                passed=False,
                error=str(e).splitlines()[0][:300],
            )
        )
        log(f"  target global lambda {grid}: FAILED ({e})")
    finally:
        release(settings.device)
    return out


def _target_line(t: TargetResult) -> str:
    if not t.measured:
        return f"  target {t.name}: {t.error or ''}"
    ok = {True: "PASS", False: "MISS", None: "n/a"}[t.passed]
    if t.memory_passed is not None:
        mem = "PASS" if t.memory_passed else "MISS"
        ok = f"speed {'PASS' if t.speed_passed else 'MISS'}, memory {mem}"
    r = (t.ratio or {}).get("ratio")
    spread = f" [IQR {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} pairs]" if r else ""
    return f"  target {t.name}: {t.value:.3f}x{spread} (target {t.op} {t.target}) {ok}"
