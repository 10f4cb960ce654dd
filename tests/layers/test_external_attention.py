"""External attention, multi-head EA and the EANet block against the paper's equations."""

from __future__ import annotations

import pytest
import torch
from mixer_checks import assert_compiles, assert_round_trips

from beyond_attention.layers import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    MultiHeadExternalAttention,
)

torch.manual_seed(0)


def softmax_written_out(a: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(a - a.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def ea_reference(x, m_k, m_v, eps, norm="double"):
    """arXiv:2105.02358 Algorithm 1: A = x M_k^T; softmax over N; L1 over S; out = A M_v.

    M_k, M_v: (S, d)."""
    a = torch.einsum("bnd,sd->bns", x, m_k)
    if norm == "double":
        a = softmax_written_out(a, dim=1)
        a = a / (eps + a.sum(dim=2, keepdim=True))
    else:
        a = softmax_written_out(a, dim=2)
    return torch.einsum("bns,sd->bnd", a, m_v), a


@pytest.mark.parametrize("norm", ["double", "softmax"])
def test_external_attention_matches_paper_equation(norm):
    layer = ExternalAttention(24, memory_size=10, norm=norm, eps=1e-6).double()
    x = torch.randn(3, 17, 24, dtype=torch.float64)
    out, attn = layer(x, return_attn=True)
    ref_out, ref_attn = ea_reference(x, layer.mk.weight, layer.mv.weight.T, 1e-6, norm)
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer(x), out, rtol=0, atol=0)


def test_external_attention_memories_are_bias_free_linear_maps():
    layer = ExternalAttention(32, memory_size=16)
    assert layer.mk.weight.shape == (16, 32) and layer.mk.bias is None
    assert layer.mv.weight.shape == (32, 16) and layer.mv.bias is None
    assert sum(p.numel() for p in layer.parameters()) == 2 * 16 * 32


def test_double_norm_attention_sums_to_one_over_slots():
    layer = ExternalAttention(16, memory_size=8, eps=1e-9).double()
    _, attn = layer(torch.randn(2, 50, 16, dtype=torch.float64) * 3, return_attn=True)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 50, dtype=torch.float64))
    assert (attn >= 0).all()


def test_external_attention_is_permutation_equivariant_over_tokens_not_tokenwise():
    layer = ExternalAttention(16, memory_size=8).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    perm = torch.randperm(20)
    torch.testing.assert_close(layer(x[:, perm]), layer(x)[:, perm], rtol=1e-10, atol=1e-12)
    # The softmax over tokens couples them: changing one token changes the others' outputs.
    y = x.clone()
    y[:, 0] += 1.0
    assert not torch.allclose(layer(y)[:, 1:], layer(x)[:, 1:])


def test_external_attention_normalises_in_float32_under_autocast():
    layer = ExternalAttention(32, memory_size=16)
    x = torch.randn(2, 64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, attn = layer(x, return_attn=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(attn.float().sum(-1), torch.ones(2, 64), atol=1e-2, rtol=0)
    torch.testing.assert_close(out.float(), layer(x), atol=5e-2, rtol=5e-2)


def mhea_reference(x, layer):
    """Multi-head EA of EAMLP (arXiv:2105.02358, the authors' code), explicit loops over heads.

    One memory pair shared by all heads."""
    b, n, d = x.shape
    heads, hd = layer.num_heads, layer.head_dim
    q = torch.einsum("bnd,ed->bne", x, layer.query.weight) + layer.query.bias
    outs = []
    for h in range(heads):
        qh = q[:, :, h * hd : (h + 1) * hd]
        a = torch.einsum("bnc,sc->bns", qh, layer.mk.weight) + layer.mk.bias
        a = softmax_written_out(a, dim=1)
        a = a / (layer.eps + a.sum(dim=2, keepdim=True))
        outs.append(torch.einsum("bns,cs->bnc", a, layer.mv.weight) + layer.mv.bias)
    merged = torch.cat(outs, dim=-1)
    return torch.einsum("bne,de->bnd", merged, layer.proj.weight) + layer.proj.bias


def test_multi_head_external_attention_matches_authors_equation():
    layer = MultiHeadExternalAttention(24, num_heads=3, memory_size=12, expansion=4).double()
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    torch.testing.assert_close(layer(x), mhea_reference(x, layer), rtol=1e-6, atol=1e-6)
    out, attn = layer(x, return_attn=True)
    assert attn.shape == (2, 12, 11, 12)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 12, 11, dtype=torch.float64))


def test_multi_head_external_attention_parameter_count():
    d, h, s, e = 384, 6, 64, 4
    layer = MultiHeadExternalAttention(d, num_heads=h, memory_size=s, expansion=e)
    hd = d // h
    expected = (d * e * d + e * d) + (hd * s + s) + (s * hd + hd) + (e * d * d + d)
    assert sum(p.numel() for p in layer.parameters()) == expected


def ea_block_reference(x, block):
    """The EA block (arXiv:2105.02358, the authors' code) written out.

    conv1x1, M_k, softmax over N, L1 over S, M_v, conv1x1+BN, add, ReLU."""
    b, c, h, w = x.shape
    y = torch.einsum("bchw,oc->bohw", x, block.conv1.weight[:, :, 0, 0])
    y = (y + block.conv1.bias[None, :, None, None]).reshape(b, c, h * w)
    a = torch.einsum("bcn,sc->bsn", y, block.mk.weight[:, :, 0])
    a = softmax_written_out(a, dim=2)
    a = a / (block.eps + a.sum(dim=1, keepdim=True))
    z = torch.einsum("bsn,cs->bcn", a, block.mv.weight[:, :, 0]).reshape(b, c, h, w)
    z = torch.einsum("bchw,oc->bohw", z, block.conv2.weight[:, :, 0, 0])
    bn = block.norm
    z = (z - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps
    )
    z = z * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    return torch.relu(x + z)


def test_ea_block_matches_authors_equation():
    block = ExternalAttentionBlock2d(16, memory_size=8).double().eval()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(block(x), ea_block_reference(x, block), rtol=1e-6, atol=1e-6)


def test_ea_block_memories_start_transposed_and_stay_independent():
    block = ExternalAttentionBlock2d(12, memory_size=6)
    torch.testing.assert_close(block.mv.weight, block.mk.weight.permute(1, 0, 2))
    assert block.mv.weight.data_ptr() != block.mk.weight.data_ptr()
    with torch.no_grad():
        block.mk.weight.add_(1.0)
    assert not torch.allclose(block.mv.weight, block.mk.weight.permute(1, 0, 2))
    names = [name for name, _ in block.named_parameters()]
    assert "mk.weight" in names and "mv.weight" in names


@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda: ExternalAttention(6, memory_size=4), (2, 5, 6)),
        (lambda: ExternalAttention(6, memory_size=4, norm="softmax"), (2, 5, 6)),
        (lambda: MultiHeadExternalAttention(6, num_heads=2, memory_size=4, expansion=2), (2, 5, 6)),
        (lambda: ExternalAttentionBlock2d(4, memory_size=3).eval(), (2, 4, 3, 2)),
    ],
    ids=["ea", "ea_softmax", "mhea", "ea_block"],
)
def test_gradcheck(layer, shape):
    module = layer().double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)
    names, params = zip(*module.named_parameters(), strict=True)
    assert torch.autograd.gradcheck(
        lambda *p: torch.func.functional_call(module, dict(zip(names, p, strict=True)), (x,)),
        params,
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda: ExternalAttention(16, memory_size=8), (2, 9, 16)),
        (lambda: MultiHeadExternalAttention(16, num_heads=2, memory_size=8), (2, 9, 16)),
        (lambda: ExternalAttentionBlock2d(8, memory_size=4), (2, 8, 3, 5)),
    ],
    ids=["ea", "mhea", "ea_block"],
)
def test_round_trips_and_compile(layer, shape):
    module = layer()
    x = torch.randn(*shape)
    assert_round_trips(module, x)
    assert_compiles(module, x, backend="aot_eager")


def test_external_attention_compiles_with_inductor():
    assert_compiles(ExternalAttention(32, memory_size=16), torch.randn(2, 10, 32))


@pytest.mark.parametrize(
    "make, bad, match",
    [
        (lambda: ExternalAttention(8), torch.randn(2, 8), "x must have shape"),
        (lambda: ExternalAttention(8), torch.randn(2, 3, 7), "8 channels"),
        (lambda: MultiHeadExternalAttention(8, num_heads=2), torch.randn(2, 3, 4, 8), "x must"),
        (lambda: MultiHeadExternalAttention(8, num_heads=2), torch.randn(2, 3, 6), "8 channels"),
        (lambda: ExternalAttentionBlock2d(8), torch.randn(2, 8, 4), "x must have shape"),
        (lambda: ExternalAttentionBlock2d(8), torch.randn(2, 6, 4, 4), "8 channels"),
    ],
)
def test_bad_input_is_a_clear_error(make, bad, match):
    with pytest.raises(ValueError, match=match):
        make()(bad)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="norm"):
        ExternalAttention(8, norm="l2")
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=3"):
        MultiHeadExternalAttention(10, num_heads=3)
