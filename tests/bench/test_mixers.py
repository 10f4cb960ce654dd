"""The sweep machinery: baselines against references, failure recording, extrapolation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from beyond_attention.bench.baselines import BareGemms, NaiveSelfAttention
from beyond_attention.bench.compile_study import compile_speedups
from beyond_attention.bench.contenders import MixerEntry
from beyond_attention.bench.counting import forward_flops
from beyond_attention.bench.point import PointResult, measure_point, predict
from beyond_attention.bench.settings import MixerSettings
from beyond_attention.layers.self_attention import SelfAttention


def test_naive_attention_equals_sdpa_attention():
    torch.manual_seed(0)
    sdpa = SelfAttention(16, num_heads=4).double()
    naive = NaiveSelfAttention(16, num_heads=4).double()
    naive.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    # reference from the equation, einsum in float64
    qkv = x @ sdpa.qkv.weight.t() + sdpa.qkv.bias
    q, k, v = qkv.view(2, 10, 3, 4, 4).permute(2, 0, 3, 1, 4)
    a = torch.einsum("bhnd,bhmd->bhnm", q, k).div(2.0).softmax(-1)
    ref = torch.einsum("bhnm,bhmd->bnhd", a, v).reshape(2, 10, 16) @ sdpa.proj.weight.t()
    ref = ref + sdpa.proj.bias
    torch.testing.assert_close(naive(x), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sdpa(x), ref, rtol=1e-6, atol=1e-6)


def test_bare_gemms_are_the_two_products():
    torch.manual_seed(0)
    floor = BareGemms(8, 5).double()
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    ref = torch.einsum("bnd,sd->bns", x, floor.mk.weight)
    ref = torch.einsum("bns,ds->bnd", ref, floor.mv.weight)
    torch.testing.assert_close(floor(x), ref, rtol=1e-6, atol=1e-6)


def test_sdpa_flops_counted_like_the_explicit_products():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    sdpa, naive = SelfAttention(32, num_heads=4), NaiveSelfAttention(32, num_heads=4)
    n, d, b = 16, 32, 2
    expected = 2 * b * n * d * (3 * d) + 2 * b * n * d * d + 2 * 2 * b * n * n * d
    assert forward_flops(sdpa, (x.requires_grad_(),))["flops"] == expected
    assert forward_flops(naive, (x,))["flops"] == expected


class _FftConv(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.fft.rfft2(x)  # real (3, 8, 16) -> complex (3, 8, 9)
        return torch.fft.irfft2(f * f, s=x.shape[-2:]) * 2.0


def test_fft_flops_follow_the_radix2_estimate():
    x = torch.randn(3, 8, 16)
    counted = forward_flops(_FftConv(), (x,))
    r2c = 2.5 * x.numel() * math.log2(8 * 16)  # real transform over 128 points
    mul = 6 * 3 * 8 * 9  # complex products; the real scaling is free
    assert counted["fft_flops"] == counted["flops"] == int(r2c) + mul + int(r2c)


class _Exploding(nn.Module):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.message = message

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(self.message)


def _entry(message: str) -> MixerEntry:
    return MixerEntry("boom", "boom", "mixer", "raises", lambda s, g: _Exploding(message))


def test_failures_are_recorded_not_raised():
    settings = MixerSettings(dim=4, warmup=0, repeats=1)
    p = measure_point(_entry("CUDA out of memory. Tried to allocate"), (2, 2), 1, settings)
    assert p.status == "oom" and "out of memory" in p.reason
    p = measure_point(_entry("something else"), (2, 2), 1, settings)
    assert p.status == "error" and "something else" in p.reason


def test_bigger_points_skipped_after_a_failure():
    settings = MixerSettings(dim=4)
    history = [PointResult("boom", 1, [4, 4], 16, status="too_slow")]
    p = measure_point(_entry("never built"), (8, 8), 1, settings, history=history)
    assert p.status == "skipped" and "too_slow at 16" in p.reason


def test_predict_extrapolates_with_the_observed_growth():
    hist = [
        PointResult(
            "m", 1, [10, 10], 100, activation_bytes=1000, param_bytes=10, train_median_ms=1.0
        ),
        PointResult(
            "m", 1, [20, 20], 400, activation_bytes=4000, param_bytes=10, train_median_ms=16.0
        ),
    ]
    pred = predict(hist, 1600, 1)
    # activations linear (x4), time quadratic (x16), parameters constant (x2 for grads)
    assert pred["memory_bytes"] == pytest.approx(16000 + 20)
    assert pred["train_ms"] == pytest.approx(256.0)
    # one point only: the conservative quadratic exponent
    pred = predict(hist[:1], 400, 1)
    assert pred["memory_bytes"] == pytest.approx(16000 + 2 * 10 * 16)
    assert predict(hist, 400, batch=2) is None


@pytest.mark.slow
def test_compile_speedup_runs():
    settings = MixerSettings(
        dim=16, heads=2, memory_size=8, warmup=0, pairs=2, batches=[1], compile_grid=(4, 4)
    )
    (row,) = compile_speedups(settings, ["external"], log=lambda s: None)
    assert row.status == "ok", row
    assert row.forward["ratio"]["median"] > 0 and row.train["ratio"]["median"] > 0
