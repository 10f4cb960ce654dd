"""Offset-attention, EA for points and PCT's naive self-attention against their equations."""

from __future__ import annotations

import pytest
import torch
from mixer_checks import assert_round_trips

from beyond_attention.layers.offset_attention import (
    ExternalAttentionPoints,
    OffsetAttention,
    PointSelfAttention,
)


def _lbr_residual(layer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + relu(BN(W_t y + b_t)) in eval mode, written out."""
    t = torch.einsum("oc,bcn->bon", layer.offset.trans.weight[..., 0], y)
    t = t + layer.offset.trans.bias[:, None]
    bn = layer.offset.norm
    t = (t - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    t = t * bn.weight[:, None] + bn.bias[:, None]
    return x + t.clamp_min(0)


def _randomise_bn(layer: torch.nn.Module) -> None:
    with torch.no_grad():
        bn = layer.offset.norm
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()


def _offset_reference(layer: OffsetAttention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    wq = layer.q.weight[..., 0]
    wk = wq if layer.k is None else layer.k.weight[..., 0]
    q = torch.einsum("dc,bcn->bdn", wq, x)
    k = torch.einsum("dc,bcn->bdn", wk, x)
    v = torch.einsum("oc,bcn->bon", layer.v.weight[..., 0], x) + layer.v.bias[:, None]
    energy = torch.einsum("bdi,bdj->bij", q, k)
    a = torch.exp(energy - energy.amax(dim=2, keepdim=True))
    a = a / a.sum(dim=2, keepdim=True)  # softmax over j
    a = a / (layer.eps + a.sum(dim=1, keepdim=True))  # L1 over i
    f_sa = torch.einsum("bci,bij->bcj", v, a)
    return _lbr_residual(layer, x, x - f_sa), a


@pytest.mark.parametrize("share_qk", [True, False])
def test_offset_attention_matches_the_equations(share_qk: bool) -> None:
    torch.manual_seed(0)
    layer = OffsetAttention(16, share_qk=share_qk).double().eval()
    _randomise_bn(layer)
    x = torch.randn(2, 16, 23, dtype=torch.float64)
    out, attn = layer(x, return_attn=True)
    ref, ref_attn = _offset_reference(layer, x)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(2, 23, dtype=torch.float64))
    if share_qk:
        assert layer.k is None
        assert sum(p.numel() for p in layer.parameters()) == 16 * 4 + 2 * (16 * 16 + 16) + 32


def _ea_reference(layer: ExternalAttentionPoints, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    logits = torch.einsum("sc,bcn->bsn", layer.mk.weight[..., 0], x)
    a = torch.softmax(logits, dim=2)  # over the points
    a = a / (layer.eps + a.sum(dim=1, keepdim=True))  # over the slots
    f_ea = torch.einsum("cs,bsn->bcn", layer.mv.weight[..., 0], a)
    y = x - f_ea if layer.use_offset else f_ea
    return _lbr_residual(layer, x, y), a


@pytest.mark.parametrize("offset", [True, False])
def test_external_attention_points_matches_the_equations(offset: bool) -> None:
    torch.manual_seed(1)
    layer = ExternalAttentionPoints(12, memory_size=7, offset=offset).double().eval()
    _randomise_bn(layer)
    x = torch.randn(3, 12, 31, dtype=torch.float64)
    out, attn = layer(x, return_attn=True)
    ref, ref_attn = _ea_reference(layer, x)
    assert attn.shape == (3, 7, 31)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(3, 31, dtype=torch.float64))


def test_point_self_attention_matches_the_equations() -> None:
    torch.manual_seed(2)
    layer = PointSelfAttention(16).double().eval()
    _randomise_bn(layer)
    x = torch.randn(2, 16, 19, dtype=torch.float64)
    wq = layer.q.weight[..., 0]
    q = torch.einsum("dc,bcn->bnd", wq, x)
    v = torch.einsum("oc,bcn->bno", layer.v.weight[..., 0], x) + layer.v.bias
    a = torch.softmax(torch.einsum("bid,bjd->bij", q, q) / 2.0, dim=-1)  # sqrt(d_a), d_a = 16 / 4
    f_sa = torch.einsum("bij,bjc->bci", a, v)
    torch.testing.assert_close(layer(x), _lbr_residual(layer, x, f_sa), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "make", [lambda: OffsetAttention(8), lambda: ExternalAttentionPoints(8, 5),
             lambda: PointSelfAttention(8)],
)
def test_gradients_match_finite_differences(make) -> None:
    torch.manual_seed(3)
    layer = make().double().eval()  # eval: BatchNorm uses running statistics
    x = torch.randn(2, 8, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6)


def test_training_mode_backward_reaches_every_parameter() -> None:
    for layer in (OffsetAttention(8), ExternalAttentionPoints(8, 5), PointSelfAttention(8)):
        layer.train()(torch.randn(3, 8, 20)).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in layer.parameters()), type(layer).__name__


def test_external_attention_is_permutation_equivariant_over_points() -> None:
    torch.manual_seed(4)
    layer = ExternalAttentionPoints(8, 6).eval()
    x = torch.randn(2, 8, 25)
    perm = torch.randperm(25)
    torch.testing.assert_close(layer(x[:, :, perm]), layer(x)[:, :, perm])
    oa = OffsetAttention(8).eval()
    torch.testing.assert_close(oa(x[:, :, perm]), oa(x)[:, :, perm], rtol=1e-5, atol=1e-6)


def test_round_trips() -> None:
    x = torch.randn(2, 8, 13)
    for layer in (OffsetAttention(8), ExternalAttentionPoints(8, 5), PointSelfAttention(8)):
        assert_round_trips(layer, x)


def test_half_precision_normalisation_runs_in_float32() -> None:
    layer = ExternalAttentionPoints(8, 5).eval().to(torch.bfloat16)
    x = torch.randn(1, 8, 40).to(torch.bfloat16)
    out, attn = layer(x, return_attn=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    ref = ExternalAttentionPoints(8, 5).eval()
    ref.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
    torch.testing.assert_close(out.float(), ref(x.float()), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (OffsetAttention(8), (2, 8), r"\(B, C=8, N\) with 3 dimensions"),
        (OffsetAttention(8), (2, 6, 10), "must have 8 channels"),
        (ExternalAttentionPoints(8), (2, 10, 8), "must have 8 channels"),
        (PointSelfAttention(8), (1, 2, 8, 3), "3 dimensions"),
    ],
)
def test_bad_input_is_named(layer, shape, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        layer(torch.randn(shape))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="qk_ratio"):
        OffsetAttention(10, qk_ratio=4)
    with pytest.raises(ValueError, match="memory_size"):
        ExternalAttentionPoints(8, memory_size=0)
