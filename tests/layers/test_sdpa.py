"""The attention helper against softmax(Q K^T / sqrt(c) + mask) V written out with einsum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from beyond_attention.layers import SelfAttention
from beyond_attention.layers.sdpa import scaled_dot_product_attention


def attention_reference(q, k, v, mask=None):
    scores = torch.einsum("bhnc,bhmc->bhnm", q, k) / math.sqrt(q.shape[-1])
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    a = torch.exp(scores - scores.amax(-1, keepdim=True))
    return torch.einsum("bhnm,bhmc->bhnc", a / a.sum(-1, keepdim=True), v)


def _qkv(dtype, n=9, m=11):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, length, 8, generator=g, dtype=dtype) for length in (n, m, m)]


@pytest.mark.parametrize("mask_kind", [None, "float", "bool"])
def test_matches_the_equation_in_float64(mask_kind):
    q, k, v = _qkv(torch.float64)
    mask = None
    if mask_kind == "float":
        mask = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    elif mask_kind == "bool":
        mask = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True  # every query keeps a key
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, attn_mask=mask), attention_reference(q, k, v, mask),
        rtol=1e-10, atol=1e-10,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_cpu_is_attended_in_float32_and_cast_back(dtype):
    q, k, v = (t.to(dtype) for t in _qkv(torch.float32))
    mask = torch.randn(2, 3, 9, 11).to(dtype)
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert out.dtype == dtype
    qf, kf, vf = q.float(), k.float(), v.float()
    expected = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask.float())
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)
    exact = attention_reference(*(t.double() for t in (q, k, v)), mask.double())
    # One rounding of the float32 result: within bfloat16/float16's half-ulp of the truth.
    tol = {torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol)


def test_float32_calls_the_kernel_unchanged():
    q, k, v = _qkv(torch.float32)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
        rtol=0, atol=0,
    )


def test_gradients_flow_back_in_the_inputs_dtype_under_autocast():
    q, k, v = (t.to(torch.bfloat16).requires_grad_() for t in _qkv(torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = scaled_dot_product_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attention_reference(q64, k64, v64).square().sum().backward()
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.double(), want, rtol=3e-2, atol=3e-2)


def test_self_attention_under_cpu_autocast_is_close_to_float32():
    torch.manual_seed(0)
    layer = SelfAttention(48, num_heads=3)
    x = torch.randn(2, 17, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer(x), rtol=3e-2, atol=3e-2)
