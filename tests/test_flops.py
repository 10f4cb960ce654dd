"""The FLOP counter against hand-computed counts: Linear, convolution, and scaled dot-product
attention (the fused CPU kernel, which FlopCounterMode alone counts as zero)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import beyond_attention.flops as flops
from beyond_attention.flops import count
from beyond_attention.layers import SelfAttention


def test_linear():
    # (5, 16) @ (16, 32): 5 * 16 * 32 multiply-accumulates
    result = count(nn.Linear(16, 32), inputs=torch.randn(5, 16))
    assert result.macs == 5 * 16 * 32 and result.flops == 2 * 5 * 16 * 32
    assert result.by_op == {"aten.addmm": 2 * 5 * 16 * 32}


def test_conv():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    result = count(conv, (3, 16, 16), batch_size=2)
    # every one of 2 * 8 * 8 * 8 outputs is a 3 * 3 * 3 dot product
    assert result.macs == 2 * 8 * 8 * 8 * 3 * 3 * 3
    assert result.input_shape == (2, 3, 16, 16)


class Attend(nn.Module):
    """softmax(Q K^T / sqrt(d)) V through SDPA, or written out with matmuls."""

    def __init__(self, explicit: bool) -> None:
        super().__init__()
        self.explicit = explicit

    def forward(self, q, k, v):
        if self.explicit:
            a = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
            return a @ v
        return F.scaled_dot_product_attention(q, k, v)


def test_fused_cpu_sdpa_is_counted_like_the_explicit_products():
    b, h, n, m, d = 2, 3, 10, 7, 8
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, h, m, d), torch.randn(b, h, m, d)
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0  # why count() registers a formula
    fused = count(Attend(False), inputs=(q, k, v))
    explicit = count(Attend(True), inputs=(q, k, v))
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in fused.by_op
    # Q K^T: b h n m d MACs; A V: b h n m d MACs
    assert fused.macs == explicit.macs == 2 * b * h * n * m * d
    with sdpa_kernel(SDPBackend.MATH):
        assert count(Attend(False), inputs=(q, k, v)).macs == fused.macs


def test_self_attention_fast_path_counts_like_its_explicit_path():
    layer = SelfAttention(24, num_heads=4)
    x = torch.randn(2, 9, 24)
    fast = count(layer, inputs=x)

    class Explicit(nn.Module):
        def forward(self, x):
            return layer(x, return_attn=True)[0]

    assert fast.macs == count(Explicit(), inputs=x).macs
    n, d = 9, 24
    assert fast.macs == 2 * (n * d * 3 * d + 2 * n * n * d + n * d * d)


def test_fused_sdpa_backward_counts_five_products():
    q, k, v = (torch.randn(1, 2, 6, 4, requires_grad=True) for _ in range(3))
    result = count(Attend(False), inputs=(q, k, v), backward=True)
    fwd = result.by_op["aten._scaled_dot_product_flash_attention_for_cpu"]
    bwd = result.by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"]
    # the backward recomputes Q K^T, then dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q
    assert fwd == 2 * (2 * 2 * 6 * 6 * 4) and bwd == 5 * fwd // 2


def test_per_module_breakdown_and_state_restored():
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 2)))
    model.train()
    grad = torch.ones(8, 4)
    model[0].weight.grad = grad
    result = count(model, inputs=torch.randn(3, 4), backward=True)
    assert result.by_module["0"] == 2 * 3 * 4 * 8 * 2  # forward + weight gradient
    assert result.by_module["2.0"] == result.by_module["2"]
    assert result.by_module[""] == result.flops
    assert model.training and model[0].weight.grad is grad


def test_fake_and_meta_counts_equal_the_real_count():
    from beyond_attention import create_model

    torch.manual_seed(0)
    model = create_model("vit_tiny_cifar", depth=2)
    real = count(model)
    assert count(model, fake=True).flops == real.flops
    with torch.device("meta"):
        meta_model = create_model("vit_tiny_cifar", depth=2)
    assert count(meta_model).flops == real.flops
    assert real.input_shape == (1, 3, 32, 32)  # from model.config


def test_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        count(nn.Linear(2, 2), (3, 4))
    with pytest.raises(ValueError, match="input_size"):
        count(nn.Linear(2, 2))


def test_docstrings_state_what_is_not_counted():
    for doc in (flops.__doc__, count.__doc__):
        assert "not counted" in doc.lower()


def test_lambda_position_lambdas_are_counted_as_the_direct_correlation():
    from beyond_attention.layers import LambdaLayer

    b, d, h, w, k, u, heads, r = 1, 32, 9, 9, 4, 1, 4, 5
    x = torch.randn(b, d, h, w)
    counts = {}
    for impl in ("conv", "fft"):
        layer = LambdaLayer(d, dim_k=k, heads=heads, dim_u=u, r=r, position_impl=impl)
        counts[impl] = count(layer, inputs=x).macs
        assert layer.position_impl == impl  # restored after counting
    v, n = d // heads, h * w
    projections = n * d * (k * heads + k * u + v * u)
    content = k * v * u * n  # lambda_c = sum_m K V^T
    position = n * r * r * k * v * u  # lambda_p: the r x r correlation of V
    output = heads * k * v * n  # y_n = (lambda_c + lambda_p[n])^T q_n
    assert counts["fft"] == counts["conv"]
    assert counts["conv"] == projections + content + position + output
