"""LaViT's layers against float64 references written from the paper (LaViT, Zhang et al.,
CVPR 2024, arXiv:2406.00427) and the documented choices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from beyond_attention.layers.less_attention import (
    AttentionDownsample,
    LessAttention,
    VanillaAttention,
    diagonality_loss,
    key_cell_index,
)
from beyond_attention.layers.self_attention import SelfAttention

D64 = torch.float64


# ----------------------------------------------------------------------------- references
def ref_reduce(x: torch.Tensor, hw: tuple[int, int], layer) -> torch.Tensor:
    """Spatial reduction by explicit patch sums: Conv(r x r, stride r) then LayerNorm."""
    red = layer.reduce
    r = red.sr_ratio
    if r == 1:
        return x
    b, _, c = x.shape
    h, w = hw
    hk, wk = h // r, w // r
    g = x.reshape(b, h, w, c)[:, : hk * r, : wk * r].reshape(b, hk, r, wk, r, c)
    y = torch.einsum("bpuqvc,ocuv->bpqo", g, red.sr.weight) + red.sr.bias
    y = y.reshape(b, hk * wk, c)
    mu = y.mean(-1, keepdim=True)
    var = ((y - mu) ** 2).mean(-1, keepdim=True)
    return (y - mu) / torch.sqrt(var + red.norm.eps) * red.norm.weight + red.norm.bias


def ref_softmax(s: torch.Tensor) -> torch.Tensor:
    e = torch.exp(s - s.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def split_heads(t: torch.Tensor, h: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.reshape(b, n, h, c // h).permute(0, 2, 1, 3)


def ref_less_attention(layer: LessAttention, x, prev, hw):
    """S = W_psi^T S_prev W_theta per head; softmax; @ V (fresh); proj."""
    h = layer.num_heads
    theta = torch.eye(layer.num_keys, dtype=D64) + layer.theta_delta  # (t, M, M)
    theta = theta.expand(h, -1, -1)
    s = torch.einsum("bhnk,hkm->bhnm", prev, theta)
    if layer.psi_delta is not None:
        psi = (torch.eye(layer.num_queries, dtype=D64) + layer.psi_delta).expand(h, -1, -1)
        s = torch.einsum("hki,bhkm->bhim", psi, s)  # (W_psi^T S)_im = sum_k W_psi[k, i] S[k, m]
    xr = ref_reduce(x, hw, layer)
    v = split_heads(xr @ layer.v.weight.T + layer.v.bias, h)
    out = torch.einsum("bhnm,bhmd->bhnd", ref_softmax(s), v)
    out = out.permute(0, 2, 1, 3).reshape(x.shape)
    return out @ layer.proj.weight.T + layer.proj.bias, s


def ref_vanilla(layer: VanillaAttention, x, hw, bias=None):
    h = layer.num_heads
    q = split_heads(x @ layer.q.weight.T + layer.q.bias, h)
    xr = ref_reduce(x, hw, layer)
    kv = xr @ layer.kv.weight.T + layer.kv.bias
    k, v = split_heads(kv[..., : layer.dim], h), split_heads(kv[..., layer.dim :], h)
    s = torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(layer.head_dim)
    if bias is not None:
        s = s + bias
    out = torch.einsum("bhnm,bhmd->bhnd", ref_softmax(s), v)
    out = out.permute(0, 2, 1, 3).reshape(x.shape)
    return out @ layer.proj.weight.T + layer.proj.bias, s


def randomise(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


# ----------------------------------------------------------------------------- LessAttention
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("sr_ratio,use_psi", [(2, True), (1, False), (2, False)])
def test_less_attention_matches_reference(per_head, sr_ratio, use_psi):
    torch.manual_seed(0)
    b, dim, heads, hw = 2, 8, 2, (4, 6)
    n = hw[0] * hw[1]
    m = (hw[0] // sr_ratio) * (hw[1] // sr_ratio)
    layer = LessAttention(
        dim, heads, num_keys=m, num_queries=n if use_psi else None, sr_ratio=sr_ratio,
        per_head=per_head,
    ).to(D64)
    randomise(layer)
    x = torch.randn(b, n, dim, dtype=D64)
    prev = torch.randn(b, heads, n, m, dtype=D64)
    out, scores = layer(x, prev, hw)
    ref_out, ref_scores = ref_less_attention(layer, x, prev, hw)
    assert out.shape == (b, n, dim) and scores.shape == (b, heads, n, m)
    torch.testing.assert_close(scores, ref_scores, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out, ref_out, atol=1e-9, rtol=1e-9)


def test_fresh_less_attention_reproduces_previous_distribution():
    torch.manual_seed(1)
    dim, heads, hw, sr = 16, 2, (8, 8), 2
    va = VanillaAttention(dim, heads, sr_ratio=sr).eval()
    la1 = LessAttention(dim, heads, num_keys=16, num_queries=64, sr_ratio=sr).eval()
    la2 = LessAttention(dim, heads, num_keys=16, sr_ratio=sr, per_head=True).eval()
    x = torch.randn(3, 64, dim)
    _, s0 = va(x, hw)
    _, s1 = la1(x, s0, hw)
    _, s2 = la2(x, s1, hw)
    # identity transforms: the same scores, hence the same attention distribution
    torch.testing.assert_close(s1, s0, atol=0, rtol=0)
    torch.testing.assert_close(s2.softmax(-1), s0.softmax(-1), atol=1e-7, rtol=0)
    # and the output is that distribution applied to the LA layer's own values
    out, _ = la1(x, s0, hw)
    ref, _ = ref_less_attention(la1.to(D64), x.to(D64), s0.to(D64), hw)
    torch.testing.assert_close(out.to(D64), ref, atol=1e-5, rtol=1e-5)


def test_less_attention_gradcheck():
    torch.manual_seed(2)
    hw = (2, 4)
    layer = LessAttention(4, 2, num_keys=2, num_queries=8, sr_ratio=2, per_head=True).to(D64)
    randomise(layer, 0.5)
    x = torch.randn(1, 8, 4, dtype=D64, requires_grad=True)
    prev = torch.randn(1, 2, 8, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: layer(a, s, hw)[0], (x, prev))
    assert torch.autograd.gradcheck(lambda a, s: layer(a, s, hw)[1], (x, prev))
    # and with respect to the transforms themselves
    theta = layer.theta_delta.detach().clone().requires_grad_(True)
    psi = layer.psi_delta.detach().clone().requires_grad_(True)

    def f(t, p):
        return torch.func.functional_call(
            layer, {"theta_delta": t, "psi_delta": p}, (x.detach(), prev.detach(), hw)
        )[0]

    assert torch.autograd.gradcheck(f, (theta, psi))


def test_less_attention_bad_input():
    layer = LessAttention(8, 2, num_keys=4, num_queries=16, sr_ratio=2)
    x = torch.randn(1, 16, 8)
    prev = torch.randn(1, 2, 16, 4)
    with pytest.raises(ValueError, match="x"):
        layer(torch.randn(16, 8), prev, (4, 4))
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(1, 16, 6), prev, (4, 4))
    with pytest.raises(ValueError, match="prev_scores"):
        layer(x, torch.randn(1, 2, 16, 5), (4, 4))
    with pytest.raises(ValueError, match="hw"):
        layer(x, prev, (2, 4))
    with pytest.raises(ValueError, match="num_queries"):
        layer(torch.randn(1, 32, 8), torch.randn(1, 2, 32, 4), (4, 8))
    free = LessAttention(8, 2, num_keys=4, sr_ratio=2)  # no Psi: any N, but M is fixed
    with pytest.raises(ValueError, match="num_keys"):
        free(torch.randn(1, 32, 8), torch.randn(1, 2, 32, 4), (4, 8))
    with pytest.raises(ValueError, match="num_heads"):
        LessAttention(6, 4)


def test_less_attention_float32_under_autocast():
    layer = LessAttention(8, 2, num_keys=16)
    x = torch.randn(2, 16, 8)
    prev = torch.randn(2, 2, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, scores = layer(x, prev)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, prev, atol=0, rtol=0)
    assert torch.isfinite(out.float()).all()


# ----------------------------------------------------------------------------- VanillaAttention
@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_vanilla_attention_matches_reference(sr_ratio):
    torch.manual_seed(3)
    dim, heads, hw = 8, 2, (4, 6)
    n = 24
    m = (4 // sr_ratio) * (6 // sr_ratio)
    layer = VanillaAttention(dim, heads, sr_ratio=sr_ratio).to(D64)
    randomise(layer)
    x = torch.randn(2, n, dim, dtype=D64)
    bias = torch.randn(2, heads, n, m, dtype=D64)
    for b in (None, bias):
        out, s = layer(x, hw, attn_bias=b)
        ref_out, ref_s = ref_vanilla(layer, x, hw, b)
        torch.testing.assert_close(s, ref_s, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out, ref_out, atol=1e-9, rtol=1e-9)
        fused = layer(x, hw, attn_bias=b, return_scores=False)
        torch.testing.assert_close(fused, ref_out, atol=1e-9, rtol=1e-9)


def test_vanilla_attention_without_reduction_is_self_attention():
    torch.manual_seed(4)
    va = VanillaAttention(8, 2, sr_ratio=1).to(D64)
    sa = SelfAttention(8, 2).to(D64)
    with torch.no_grad():
        sa.qkv.weight.copy_(torch.cat([va.q.weight, va.kv.weight]))
        sa.qkv.bias.copy_(torch.cat([va.q.bias, va.kv.bias]))
        sa.proj.load_state_dict(va.proj.state_dict())
    x = torch.randn(2, 10, 8, dtype=D64)
    out, s = va(x)
    ref, attn = sa(x, return_attn=True)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s.softmax(-1), attn, atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------- downsampling
def ref_adaptive_avg(grid: torch.Tensor, out_hw) -> torch.Tensor:
    """Adaptive average pooling of the last two axes by its definition (loops)."""
    hi, wi = grid.shape[-2:]
    ho, wo = out_hw
    out = grid.new_zeros(*grid.shape[:-2], ho, wo)
    for i in range(ho):
        y0, y1 = (i * hi) // ho, -((-(i + 1) * hi) // ho)
        for j in range(wo):
            x0, x1 = (j * wi) // wo, -((-(j + 1) * wi) // wo)
            out[..., i, j] = grid[..., y0:y1, x0:x1].mean(dim=(-2, -1))
    return out


def ref_downsample(mod: AttentionDownsample, scores, prev, pq, q, pk, k):
    b, hi = prev.shape[:2]
    g = prev.reshape(b, hi, pq[0], pq[1], pk[0], pk[1])
    g = ref_adaptive_avg(g.permute(0, 1, 4, 5, 2, 3), q)  # pool the query grid
    g = ref_adaptive_avg(g.permute(0, 1, 4, 5, 2, 3), k)  # then the key grid
    p = g.reshape(b, hi, q[0] * q[1], k[0] * k[1])
    d = torch.zeros_like(scores)
    for o in range(mod.out_heads):
        for i in range(hi):
            d[:, o] += mod.head_mix[o, i] * p[:, i]
        d[:, o] *= mod.alpha[o]
    return scores + d


@pytest.mark.parametrize(
    "pq,q,pk,k", [((4, 4), (2, 2), (2, 2), (2, 2)), ((5, 6), (3, 3), (4, 4), (2, 2))]
)
def test_attention_downsample_matches_reference(pq, q, pk, k):
    torch.manual_seed(5)
    mod = AttentionDownsample(2, 3).to(D64)
    randomise(mod, 1.0)
    prev = torch.randn(2, 2, pq[0] * pq[1], pk[0] * pk[1], dtype=D64)
    scores = torch.randn(2, 3, q[0] * q[1], k[0] * k[1], dtype=D64)
    out = mod(scores, prev, pq, q, pk, k)
    torch.testing.assert_close(out, ref_downsample(mod, scores, prev, pq, q, pk, k))


def test_attention_downsample_init_and_gradcheck():
    mod = AttentionDownsample(2, 4, alpha_init=0.1).to(D64)
    prev = torch.randn(1, 2, 16, 4, dtype=D64, requires_grad=True)
    scores = torch.randn(1, 4, 4, 4, dtype=D64, requires_grad=True)
    # at init every new head receives 0.1 x the mean over the previous heads
    pooled = F.avg_pool2d(prev.detach().mean(1).reshape(1, 4, 4, 4).permute(0, 3, 1, 2), 2)
    expected = scores.detach() + 0.1 * pooled.permute(0, 2, 3, 1).reshape(1, 1, 4, 4)
    torch.testing.assert_close(mod(scores, prev, (4, 4), (2, 2), (2, 2), (2, 2)), expected)
    assert torch.autograd.gradcheck(
        lambda s, p: mod(s, p, (4, 4), (2, 2), (2, 2), (2, 2)), (scores, prev)
    )
    with pytest.raises(ValueError, match="prev_scores"):
        mod(scores, torch.randn(1, 3, 16, 4), (4, 4), (2, 2), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="prev_query_hw"):
        mod(scores, prev, (4, 5), (2, 2), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="scores"):
        mod(scores, prev, (4, 4), (3, 2), (2, 2), (2, 2))


# ----------------------------------------------------------------------------- diagonality loss
def ref_diagonality(a: torch.Tensor, qhw, khw) -> torch.Tensor:
    """The documented formula by loops: pooled symmetry + row-wise dominance hinge."""
    b, h, n, m = a.shape
    own = [(y * khw[0] // qhw[0]) * khw[1] + x * khw[1] // qhw[1]
           for y in range(qhw[0]) for x in range(qhw[1])]
    sym = dom = 0.0
    for bi in range(b):
        for hi in range(h):
            p = torch.zeros(m, m, dtype=a.dtype)
            cnt = [0] * m
            for i in range(n):
                p[own[i]] += a[bi, hi, i]
                cnt[own[i]] += 1
            for k in range(m):
                p[k] /= cnt[k]
            sym = sym + ((p - p.T) ** 2).sum() / m
            for i in range(n):
                for j in range(m):
                    if j != own[i]:
                        dom = dom + torch.clamp(a[bi, hi, i, j] - a[bi, hi, i, own[i]], min=0)
    return sym / (b * h) + dom / (b * h * n)


@pytest.mark.parametrize("qhw,khw", [((3, 3), (3, 3)), ((4, 6), (2, 3)), ((5, 4), (2, 2))])
def test_diagonality_loss_matches_reference(qhw, khw):
    torch.manual_seed(6)
    a = torch.randn(2, 3, qhw[0] * qhw[1], khw[0] * khw[1], dtype=D64).softmax(-1)
    torch.testing.assert_close(diagonality_loss(a, qhw, khw), ref_diagonality(a, qhw, khw))


def test_diagonality_loss_properties():
    n = 9
    eye = torch.eye(n, dtype=D64).expand(2, 2, n, n)
    assert diagonality_loss(eye).item() == 0.0
    # a symmetric, diagonally dominant attention: zero as well
    g = torch.randn(n, n, dtype=D64)
    sym = (g + g.T) + 10 * torch.eye(n, dtype=D64)
    a_sym = sym.softmax(-1)
    a_sym = (a_sym + a_sym.T) / 2  # exactly symmetric; rows still sum to ~1
    assert diagonality_loss(a_sym[None, None]).item() < 1e-12
    # attending to another token is penalised, more than a random attention
    shift = torch.roll(torch.eye(n, dtype=D64), 1, dims=1)[None, None]
    rand = torch.randn(1, 1, n, n, dtype=D64).softmax(-1)
    assert diagonality_loss(shift) > diagonality_loss(rand) > 0.0
    # non-square: each query attends to its own reduced cell -> zero; elsewhere -> positive
    own = key_cell_index((4, 4), (2, 2))
    a = F.one_hot(own, 4).to(D64)[None, None]
    assert diagonality_loss(a, (4, 4), (2, 2)).item() == 0.0
    wrong = F.one_hot((own + 1) % 4, 4).to(D64)[None, None]
    assert diagonality_loss(wrong, (4, 4), (2, 2)).item() > 0.5
    # square grids are inferred; otherwise the grids are required
    torch.testing.assert_close(diagonality_loss(wrong), diagonality_loss(wrong, (4, 4), (2, 2)))
    with pytest.raises(ValueError, match="query_hw"):
        diagonality_loss(torch.rand(1, 1, 6, 4))
    with pytest.raises(ValueError, match="finer"):
        diagonality_loss(torch.rand(1, 1, 4, 16), (2, 2), (4, 4))


def test_diagonality_loss_is_differentiable():
    torch.manual_seed(7)
    logits = torch.randn(1, 2, 16, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: diagonality_loss(s.softmax(-1), (4, 4), (2, 2)), (logits,)
    )
    # descending it makes the attention more diagonal
    logits = torch.randn(1, 1, 9, 9, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=5.0)
    first = None
    for _ in range(50):
        loss = diagonality_loss(logits.softmax(-1))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
