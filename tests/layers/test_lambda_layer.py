"""LambdaLayer (Bello, ICLR 2021, arXiv:2102.08602, Sec. 3) proven against an independent
float64 reference of the paper.

The reference builds the position embeddings E[n, m] of every (query n, context m) pair with
explicit index arithmetic (E[n, m] = R[m - n], the offset of the context position from the
query, zero outside the local r x r window), then evaluates the paper's equations with einsum:

    lambda_c = sum_m softmax_m(K) V^T,  lambda_p[n] = sum_m E[n, m] V^T,
    y[n, h] = (lambda_c + lambda_p[n])^T q[n, h].
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from beyond_attention.layers import lambda_layer as lambda_module
from beyond_attention.layers.lambda_layer import LambdaLayer, relative_position_lambdas

TOL = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny float64 ops: intra-op threads only add synchronisation (10x slower on busy CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- reference
def relative_embeddings(layer: LambdaLayer, hh: int, ww: int) -> torch.Tensor | None:
    """E[n, m, k, u] for every query n and context m of an hh x ww map, by explicit loops."""
    if layer.r is None and layer.feat_size is None:
        return None
    n_pos = hh * ww
    emb = torch.zeros(n_pos, n_pos, layer.dim_k, layer.dim_u, dtype=torch.float64)
    for n in range(n_pos):
        ni, nj = divmod(n, ww)
        for m in range(n_pos):
            mi, mj = divmod(m, ww)
            di, dj = mi - ni, mj - nj  # offset of the context position from the query
            if layer.r is not None:
                c = layer.r // 2
                if abs(di) <= c and abs(dj) <= c:  # inside the local window, else zero
                    emb[n, m] = layer.pos_conv.weight[:, :, 0, di + c, dj + c].double()
            else:
                emb[n, m] = layer.rel_pos_emb[di + hh - 1, dj + ww - 1].double()
    return emb


def batch_norm(z: torch.Tensor, norm: torch.nn.BatchNorm2d, train: bool) -> torch.Tensor:
    """BN over (b, C, n): batch statistics (biased variance) in train mode, running ones in eval."""
    if train:
        mean, var = z.mean(dim=(0, 2)), z.var(dim=(0, 2), unbiased=False)
    else:
        mean, var = norm.running_mean.double(), norm.running_var.double()
    scale = norm.weight.double() / torch.sqrt(var + norm.eps)
    return (z - mean[:, None]) * scale[:, None] + norm.bias.double()[:, None]


def reference_lambda(
    layer: LambdaLayer, x: torch.Tensor, train: bool, emb: torch.Tensor | None = None
) -> torch.Tensor:
    """The paper's equations in float64 with the layer's weights. ``emb`` overrides E."""
    x = x.double()
    b, _, hh, ww = x.shape
    h, k, u, v = layer.heads, layer.dim_k, layer.dim_u, layer.dim_v
    xf = x.flatten(2)  # (b, d, n)

    def proj(conv: torch.nn.Conv2d) -> torch.Tensor:
        return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0].double(), xf)

    q = batch_norm(proj(layer.to_q), layer.norm_q, train).reshape(b, h, k, -1)  # (h k) channels
    keys = proj(layer.to_k).reshape(b, u, k, -1)  # (u k) channels, no norm on keys
    vals = batch_norm(proj(layer.to_v), layer.norm_v, train).reshape(b, u, v, -1)  # (u v)
    keys = keys.softmax(dim=-1)  # over context positions m

    lam_c = torch.einsum("bukm,buvm->bkv", keys, vals)
    y = torch.einsum("bhkn,bkv->bnhv", q, lam_c)
    emb = relative_embeddings(layer, hh, ww) if emb is None else emb
    if emb is not None:
        lam_p = torch.einsum("nmku,buvm->bnkv", emb, vals)
        y = y + torch.einsum("bhkn,bnkv->bnhv", q, lam_p)
    return y.reshape(b, hh, ww, h * v).permute(0, 3, 1, 2)  # heads concatenated


def make_layer(seed: int = 0, dtype: torch.dtype = torch.float64, **kwargs) -> LambdaLayer:
    """A layer with random weights, BN affine parameters and running statistics."""
    torch.manual_seed(seed)
    layer = LambdaLayer(**kwargs).to(dtype)
    with torch.no_grad():
        for norm in (layer.norm_q, layer.norm_v):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)
            norm.running_mean.normal_(0.0, 0.3)
            norm.running_var.uniform_(0.5, 2.0)
        # Larger than the default init so that the position term weighs in the comparison.
        if layer.pos_conv is not None:
            layer.pos_conv.weight.normal_(0.0, 0.3)
        if layer.rel_pos_emb is not None:
            layer.rel_pos_emb.normal_(0.0, 0.3)
    return layer


CASES = {
    "content": (dict(dim=8, dim_k=4, heads=2), (5, 6)),
    "local_r3": (dict(dim=8, dim_k=4, heads=2, r=3), (7, 6)),
    "local_r5": (dict(dim=8, dim_k=4, heads=2, r=5), (7, 6)),
    "local_r11_over_map": (dict(dim=8, dim_k=3, heads=2, r=11), (4, 5)),
    "global": (dict(dim=8, dim_k=4, heads=2, feat_size=(5, 6)), (5, 6)),
    "global_square_int": (dict(dim=8, dim_k=4, heads=4, feat_size=5), (5, 5)),
    "local_u3": (dict(dim=8, dim_k=4, heads=2, dim_u=3, r=3), (5, 6)),
    "global_u2": (dict(dim=8, dim_k=4, heads=2, dim_u=2, feat_size=(6, 5)), (6, 5)),
    "content_dim_out": (dict(dim=6, dim_out=12, dim_k=4, heads=3, dim_u=2), (4, 7)),
    "local_dim_out": (dict(dim=6, dim_out=12, dim_k=4, heads=4, r=5), (7, 4)),
    "global_dim_out": (dict(dim=10, dim_out=4, dim_k=3, heads=2, feat_size=(3, 7)), (3, 7)),
}


# --------------------------------------------------------------------------- equations
@pytest.mark.parametrize("impl", ["conv", "fft"])
@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_paper_reference(case: str, train: bool, impl: str) -> None:
    kwargs, (hh, ww) = CASES[case]
    layer = make_layer(position_impl=impl, **kwargs).train(train)
    x = torch.randn(3, kwargs["dim"], hh, ww, dtype=torch.float64)
    out = layer(x)
    dim_out = kwargs.get("dim_out", kwargs["dim"])
    assert out.shape == (3, dim_out, hh, ww)
    torch.testing.assert_close(out, reference_lambda(layer, x, train), **TOL)


def test_position_term_is_not_negligible() -> None:
    """Guard for the reference test: dropping E changes the output by far more than TOL."""
    kwargs, (hh, ww) = CASES["global"]
    layer = make_layer(**kwargs).eval()
    x = torch.randn(2, 8, hh, ww, dtype=torch.float64)
    no_pos = reference_lambda(layer, x, False, emb=torch.zeros(hh * ww, hh * ww, 4, 1).double())
    assert (layer(x) - no_pos).abs().max() > 1e-2


@pytest.mark.parametrize("impl", ["conv", "fft"])
@pytest.mark.parametrize(("hh", "ww", "kh", "kw"), [(5, 6, 3, 3), (5, 6, 9, 11), (4, 7, 5, 3),
                                                    (3, 3, 9, 7), (6, 5, 1, 1)])
def test_relative_position_lambdas_loops(impl: str, hh: int, ww: int, kh: int, kw: int) -> None:
    """The correlation helper against a direct loop over offsets with zero padding."""
    torch.manual_seed(1)
    v = torch.randn(2, 2, 3, hh, ww, dtype=torch.float64)
    kern = torch.randn(4, 2, kh, kw, dtype=torch.float64)
    expected = torch.zeros(2, 4, 3, hh, ww, dtype=torch.float64)
    for i in range(hh):
        for j in range(ww):
            for ti in range(kh):
                for tj in range(kw):
                    mi, mj = i + ti - kh // 2, j + tj - kw // 2
                    if 0 <= mi < hh and 0 <= mj < ww:
                        expected[..., i, j] += torch.einsum(
                            "ku,buv->bkv", kern[:, :, ti, tj], v[..., mi, mj]
                        )
    torch.testing.assert_close(relative_position_lambdas(v, kern, impl), expected, **TOL)


# --------------------------------------------------------------------------- small-map path
# Maps of at least lambda_module._APPLY_LOOP_MIN_POSITIONS positions apply the lambdas with
# the elementwise path (_ApplyLambdas) instead of einsums; these run it at the CIFAR sizes.
LOOP_SIZES = {"8x8": (8, 8), "16x16": (16, 16), "9x12": (9, 12)}


@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
@pytest.mark.parametrize("pos", [dict(r=5), dict(r=7, dim_u=2), "global"],
                         ids=["local_r5", "local_r7_u2", "global"])
@pytest.mark.parametrize("size", list(LOOP_SIZES))
def test_small_map_path_matches_paper_reference(size: str, pos, train: bool) -> None:
    hh, ww = LOOP_SIZES[size]
    assert hh * ww >= lambda_module._APPLY_LOOP_MIN_POSITIONS  # the path under test
    pos = dict(feat_size=(hh, ww)) if pos == "global" else pos
    layer = make_layer(dim=8, dim_out=12, dim_k=4, heads=3, **pos).train(train)
    x = torch.randn(2, 8, hh, ww, dtype=torch.float64)
    out = layer(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference_lambda(layer, x, train), **TOL)


@pytest.mark.parametrize("case", ["local_r3", "global", "local_u3", "local_dim_out"])
def test_forced_small_map_path_matches_paper_reference(case: str, monkeypatch) -> None:
    """The elementwise path on the reference cases' small maps too (threshold lowered)."""
    monkeypatch.setattr(lambda_module, "_APPLY_LOOP_MIN_POSITIONS", 1)
    kwargs, (hh, ww) = CASES[case]
    layer = make_layer(**kwargs).train(True)
    x = torch.randn(3, kwargs["dim"], hh, ww, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_lambda(layer, x, True), **TOL)


@pytest.mark.parametrize("size", ["8x8", "9x12"])
def test_small_map_path_gradients_match_reference(size: str) -> None:
    """Input and parameter gradients of the layer against autograd through the reference."""
    hh, ww = LOOP_SIZES[size]
    layer = make_layer(dim=6, dim_out=8, dim_k=4, heads=2, r=5)
    x = torch.randn(2, 6, hh, ww, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 8, hh, ww, dtype=torch.float64)
    names = ["to_q.weight", "to_k.weight", "to_v.weight", "pos_conv.weight", "norm_q.weight"]
    params = [dict(layer.named_parameters())[n] for n in names]
    got = torch.autograd.grad(layer(x), [x, *params], g)
    want = torch.autograd.grad(reference_lambda(layer, x, True), [x, *params], g)
    for name, a, b in zip(["x", *names], got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-7, msg=name)


def test_apply_lambdas_gradgradcheck(monkeypatch) -> None:
    """The elementwise path's own backward, to second order, against finite differences."""
    monkeypatch.setattr(lambda_module, "_APPLY_LOOP_MIN_POSITIONS", 1)
    q = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    lam_c = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    # the correlation hands over a (b, v, k, n)-memory view: test that layout
    lam_p = torch.randn(2, 2, 4, 5, dtype=torch.float64).transpose(1, 2).requires_grad_()
    expected = torch.einsum("bhkn,bkvn->bhvn", q, lam_c[..., None] + lam_p)
    out = lambda_module.apply_lambdas(q, lam_c, lam_p)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOL)
    assert torch.autograd.gradcheck(lambda_module.apply_lambdas, (q, lam_c, lam_p))
    assert torch.autograd.gradgradcheck(lambda_module.apply_lambdas, (q, lam_c, lam_p))


@pytest.mark.parametrize("pos", [dict(r=3), dict(feat_size=(9, 8)), {}])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(9, 8), (4, 5)], ids=["loop_path", "einsum_path"])
def test_output_is_contiguous(pos: dict, stride: int, size: tuple) -> None:
    """A strided output would hand the next BatchNorm a strided input (its batch-1 CPU
    backward trap) and leave channels-last convolutions a layout to convert."""
    if "feat_size" in pos:
        pos = dict(feat_size=size)
    layer = make_layer(dim=8, dim_k=4, heads=2, stride=stride, **pos)
    assert layer(torch.randn(2, 8, *size, dtype=torch.float64)).is_contiguous()


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("impl", ["conv", "fft"])
@pytest.mark.parametrize("pos", [dict(r=3), dict(r=7), dict(feat_size=(3, 4))],
                         ids=["local_r3", "local_r7", "global"])
def test_gradcheck(pos: dict, impl: str) -> None:
    layer = make_layer(dim=4, dim_out=4, dim_k=2, heads=2, dim_u=2, position_impl=impl, **pos)
    params = dict(layer.named_parameters())
    names = ["to_k.weight", "to_v.weight", "pos_conv.weight" if "r" in pos else "rel_pos_emb"]
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        overrides = dict(zip(names, tensors, strict=True))
        return torch.func.functional_call(layer, {**params, **overrides}, (x,))

    inputs = (x, *(params[n].detach().clone().requires_grad_() for n in names))
    assert torch.autograd.gradcheck(fn, inputs)  # train-mode BN: batch statistics


@pytest.mark.parametrize(("kh", "kw"), [(3, 3), (9, 7)])
def test_correlation_gradgradcheck(kh: int, kw: int) -> None:
    """Both backward branches of the conv correlation, to second order."""
    v = torch.randn(1, 2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    kern = torch.randn(2, 2, kh, kw, dtype=torch.float64, requires_grad=True)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return relative_position_lambdas(a, b, "conv")

    assert torch.autograd.gradcheck(fn, (v, kern))
    assert torch.autograd.gradgradcheck(fn, (v, kern))


def test_every_parameter_gets_a_gradient() -> None:
    for pos in (dict(r=3), dict(feat_size=(5, 6)), {}):
        layer = make_layer(dim=8, dim_k=4, heads=2, **pos)
        layer(torch.randn(2, 8, 5, 6, dtype=torch.float64)).square().sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- properties
def zero_preserving(layer: LambdaLayer) -> LambdaLayer:
    """Eval-mode BN with zero running mean and zero bias: zero input -> zero q and v."""
    with torch.no_grad():
        for norm in (layer.norm_q, layer.norm_v):
            norm.running_mean.zero_()
            norm.bias.zero_()
    return layer.eval()


@pytest.mark.parametrize("pos", [dict(feat_size=(10, 11)), dict(r=5), {}],
                         ids=["global", "local", "content"])
def test_translation_equivariance(pos: dict) -> None:
    """Shift a pattern inside a zero map: the output shifts the same way, exactly.

    Why it holds: with zero-preserving BN, q and V vanish off the pattern, so every query off
    the pattern outputs 0; the keys off the pattern are 0, and the softmax over m sees the
    same multiset of keys after the shift (the pattern stays inside the map), so lambda_c is
    unchanged; lambda_p[n] = sum_m R[m - n] V[m] only uses offsets between positions inside
    the map, so it shifts with V. Hence y(shift x) = roll(y(x)), the rolled-in part being 0.
    """
    layer = zero_preserving(make_layer(dim=6, dim_out=8, dim_k=3, heads=2, dim_u=2, **pos))
    pattern = torch.randn(1, 6, 4, 3, dtype=torch.float64)
    x = torch.zeros(1, 6, 10, 11, dtype=torch.float64)
    x_shift = torch.zeros_like(x)
    x[..., 1:5, 2:5] = pattern
    x_shift[..., 5:9, 7:10] = pattern  # shifted by (4, 5), still inside the map
    y, y_shift = layer(x), layer(x_shift)
    assert y.abs().max() > 1e-3
    assert (y_shift - y).abs().max() > 1e-3  # the shift is visible in the output
    torch.testing.assert_close(y_shift, torch.roll(y, (4, 5), dims=(-2, -1)), atol=1e-10,
                               rtol=1e-10)


def test_translation_test_detects_absolute_positions() -> None:
    """Control: the same construction fails for position embeddings that are not relative."""
    layer = zero_preserving(make_layer(dim=6, dim_out=8, dim_k=3, heads=2, dim_u=2,
                                       feat_size=(10, 11)))
    emb = torch.randn(110, 110, 3, 2, dtype=torch.float64)  # E[n, m] not a function of m - n
    pattern = torch.randn(1, 6, 4, 3, dtype=torch.float64)
    x = torch.zeros(1, 6, 10, 11, dtype=torch.float64)
    x_shift = torch.zeros_like(x)
    x[..., 1:5, 2:5] = pattern
    x_shift[..., 5:9, 7:10] = pattern
    relative = (reference_lambda(layer, x_shift, False)
                - torch.roll(reference_lambda(layer, x, False), (4, 5), dims=(-2, -1)))
    absolute = (reference_lambda(layer, x_shift, False, emb)
                - torch.roll(reference_lambda(layer, x, False, emb), (4, 5), dims=(-2, -1)))
    assert relative.abs().max() < 1e-10
    assert absolute.abs().max() > 1e-2


def spatial_permutation(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return x.flatten(2)[..., perm].reshape(x.shape)


@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
def test_content_only_is_permutation_equivariant(train: bool) -> None:
    layer = make_layer(dim=8, dim_out=12, dim_k=4, heads=3, dim_u=2).train(train)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(layer(spatial_permutation(x, perm)),
                               spatial_permutation(layer(x), perm), **TOL)


@pytest.mark.parametrize("pos", [dict(feat_size=(5, 6)), dict(r=3)], ids=["global", "local"])
def test_positions_break_permutation_equivariance(pos: dict) -> None:
    layer = make_layer(dim=8, dim_k=4, heads=2, **pos).eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    diff = layer(spatial_permutation(x, perm)) - spatial_permutation(layer(x), perm)
    assert diff.abs().max() > 1e-2


@pytest.mark.parametrize("pos", [dict(r=3), {}, dict(feat_size=(7, 6))])
def test_stride_two_is_avgpool_of_stride_one(pos: dict) -> None:
    layer = make_layer(dim=8, dim_out=16, dim_k=4, heads=4, **pos).eval()
    strided = LambdaLayer(8, 16, dim_k=4, heads=4, stride=2, **pos).double().eval()
    strided.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    out = strided(x)
    assert out.shape == (2, 16, 4, 3)
    torch.testing.assert_close(out, F.avg_pool2d(layer(x), 3, 2, padding=1), **TOL)


def test_auto_impl_matches_both() -> None:
    """'auto' picks conv or FFT by map size, kernel size and whether gradients flow."""
    assert lambda_module._auto_impl(28, 28, 11, 11, needs_grad=True) == "fft"
    assert lambda_module._auto_impl(28, 28, 11, 11, needs_grad=False) == "conv"
    assert lambda_module._auto_impl(56, 56, 11, 11, needs_grad=False) == "fft"
    assert lambda_module._auto_impl(14, 14, 13, 13, needs_grad=True) == "conv"
    x = torch.randn(2, 8, 20, 21)
    for pos in (dict(r=3), dict(r=7), dict(feat_size=(20, 21))):
        outs = []
        for impl in ("auto", "conv", "fft"):
            torch.manual_seed(0)
            outs.append(LambdaLayer(8, dim_k=4, heads=2, position_impl=impl, **pos).eval()(x))
        torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outs[0], outs[2], atol=1e-5, rtol=1e-4)


def test_position_lambdas_are_the_papers_conv3d() -> None:
    """Local: ``pos_conv`` applied to V laid out (b, u, v, H, W) gives the position lambdas.
    Global: the same Conv3d with the (2H-1, 2W-1) table as kernel and padding (H-1, W-1)."""
    v = torch.randn(2, 2, 4, 7, 6, dtype=torch.float64)
    local = make_layer(dim=8, dim_k=4, heads=2, dim_u=2, r=5)
    expected = local.pos_conv(v)
    glob = make_layer(dim=8, dim_k=4, heads=2, dim_u=2, feat_size=(7, 6))
    table = glob.rel_pos_emb.permute(2, 3, 0, 1).unsqueeze(2)  # (k, u, 1, 2H-1, 2W-1)
    expected_global = F.conv3d(v, table, padding=(0, 6, 5))
    for impl in ("conv", "fft"):
        got = relative_position_lambdas(v, local.position_kernel(), impl)
        torch.testing.assert_close(got, expected, **TOL)
        got = relative_position_lambdas(v, glob.position_kernel(), impl)
        torch.testing.assert_close(got, expected_global, **TOL)


def test_fft_chunks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FFT path processes the (b v) maps in chunks; one map per chunk gives the same."""
    v = torch.randn(3, 2, 4, 5, 6, dtype=torch.float64)
    kern = torch.randn(3, 2, 5, 7, dtype=torch.float64)
    whole = relative_position_lambdas(v, kern, "fft")
    monkeypatch.setattr(lambda_module, "_FFT_CHUNK_ELEMENTS", 1)
    torch.testing.assert_close(relative_position_lambdas(v, kern, "fft"), whole, **TOL)


def test_default_init_scales() -> None:
    """Documented init: projections N(0, 1/d), positions N(0, 1/(k u m))."""
    torch.manual_seed(0)
    local = LambdaLayer(64, dim_k=16, heads=4, dim_u=2, r=7)
    glob = LambdaLayer(64, dim_k=16, heads=4, dim_u=1, feat_size=(8, 6))
    for std, p in [(64**-0.5, local.to_q.weight), (64**-0.5, local.to_v.weight),
                   ((16 * 2 * 49) ** -0.5, local.pos_conv.weight),
                   ((16 * 48) ** -0.5, glob.rel_pos_emb)]:
        assert abs(p.std().item() / std - 1) < 0.1
    assert local.pos_conv.bias is None
    assert glob.rel_pos_emb.shape == (15, 11, 16, 1)
    assert local.pos_conv.weight.shape == (16, 2, 1, 7, 7)
    assert local.to_q.weight.shape == (64, 64, 1, 1) and local.to_q.bias is None
    assert local.to_k.weight.shape == (32, 64, 1, 1) and local.to_v.weight.shape == (32, 64, 1, 1)


@pytest.mark.parametrize("impl", ["conv", "fft"])
def test_autocast_bfloat16_close_to_float32(impl: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 8)
    for pos in (dict(r=5), dict(feat_size=(9, 8))):
        layer = LambdaLayer(16, dim_k=8, heads=4, position_impl=impl, **pos).eval()
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert torch.isfinite(out).all()
        assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
        out.float().square().sum().backward()  # the backward runs with consistent dtypes
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.dtype == p.dtype, name
            assert torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("pos", [dict(r=3), dict(feat_size=(5, 6)), {}],
                         ids=["local", "global", "content"])
def test_round_trips_keep_outputs(pos: dict, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    layer = make_layer(dtype=torch.float32, dim=8, dim_out=12, dim_k=4, heads=2, **pos).eval()
    x = torch.randn(2, 8, 5, 6)
    ref = layer(x)

    fresh = make_layer(seed=1, dtype=torch.float32, dim=8, dim_out=12, dim_k=4, heads=2, **pos)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh.eval()(x), ref, atol=0, rtol=0)

    save_file(layer.state_dict(), tmp_path / "lambda.safetensors")
    loaded = make_layer(seed=2, dtype=torch.float32, dim=8, dim_out=12, dim_k=4, heads=2, **pos)
    loaded.load_state_dict(load_file(tmp_path / "lambda.safetensors"))
    torch.testing.assert_close(loaded.eval()(x), ref, atol=0, rtol=0)

    torch.testing.assert_close(copy.deepcopy(layer)(x), ref, atol=0, rtol=0)
    doubled = copy.deepcopy(layer).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in doubled.parameters())
    torch.testing.assert_close(doubled(x.double()).float(), ref, atol=1e-5, rtol=1e-5)
    assert not any(name.startswith("pool") for name in layer.state_dict())


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_fullgraph_matches_eager() -> None:
    layer = LambdaLayer(8, dim_k=4, heads=2, r=3).eval()
    x = torch.randn(2, 8, 6, 5)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex")
@pytest.mark.parametrize("pos", [dict(feat_size=(6, 5), position_impl="fft"),
                                 dict(feat_size=(6, 5), position_impl="conv"), {}])
def test_compile_fullgraph_train_backward(pos: dict) -> None:
    torch.manual_seed(0)
    layer = LambdaLayer(8, dim_k=4, heads=2, stride=2, **pos)
    twin = copy.deepcopy(layer)
    x = torch.randn(2, 8, 6, 5)
    compiled = torch.compile(twin, fullgraph=True)
    out, out_c = layer(x), compiled(x)
    torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    out_c.square().sum().backward()
    for (name, p), q in zip(layer.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-4, msg=name)


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises_value_error_naming_argument() -> None:
    layer = LambdaLayer(8, dim_k=4, heads=2, feat_size=(5, 6))
    with pytest.raises(ValueError, match=r"x must have shape \(B, C=8, H, W\)"):
        layer(torch.randn(2, 8, 30))
    with pytest.raises(ValueError, match="x must have 8 channels"):
        layer(torch.randn(2, 7, 5, 6))
    with pytest.raises(ValueError, match=r"x must have spatial size .*feat_size=\(5, 6\)"):
        layer(torch.randn(2, 8, 6, 5))
    with pytest.raises(ValueError, match="x must have 8 channels"):
        LambdaLayer(8, r=3)(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(r=4), "r must be a positive odd integer"),
        (dict(r=0), "r must be a positive odd integer"),
        (dict(r=3, feat_size=5), "at most one of r .* and feat_size"),
        (dict(dim_out=10, heads=4), "dim_out=10 must be divisible by heads=4"),
        (dict(feat_size=(5, 0)), "feat_size must be a positive int or a pair"),
        (dict(feat_size=(5, 6, 7)), "feat_size must be a positive int or a pair"),
        (dict(stride=3), "stride must be 1 or 2"),
        (dict(dim_k=0), "dim_k must be a positive integer"),
        (dict(dim_u=0), "dim_u must be a positive integer"),
        (dict(position_impl="gather"), "position_impl must be"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LambdaLayer(8, **kwargs)


# --------------------------------------------------------------------------- peer
def peer_layer(ours: LambdaLayer, **peer_kwargs) -> torch.nn.Module:
    """lambda_networks.LambdaLayer with our weights (same channel layouts and table convention;
    its lambda convolution has a bias, set to zero; the paper's has none)."""
    lambda_networks = pytest.importorskip("lambda_networks")
    peer = lambda_networks.LambdaLayer(
        ours.dim, dim_k=ours.dim_k, heads=ours.heads, dim_out=ours.dim_out, dim_u=ours.dim_u,
        **peer_kwargs,
    ).double()
    state = dict(ours.state_dict())
    if "r" in peer_kwargs:
        state["pos_conv.bias"] = torch.zeros(ours.dim_k, dtype=torch.float64)
        if ours.pos_conv is None:  # content-only comparison: a zero lambda convolution
            state["pos_conv.weight"] = torch.zeros_like(peer.pos_conv.weight)
    peer.load_state_dict(state)
    return peer.train(ours.training)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
@pytest.mark.parametrize(
    ("ours_kwargs", "peer_kwargs", "size"),
    [
        (dict(r=5), dict(r=5), (7, 6)),
        (dict(r=3, dim_u=2, dim_out=12), dict(r=3), (5, 8)),
        ({}, dict(r=3), (5, 6)),
        (dict(dim_u=3), dict(r=1), (4, 4)),
        (dict(feat_size=6, dim_u=2), dict(n=6), (6, 6)),
    ],
    ids=["local", "local_u2_dim_out", "content", "content_u3", "global_square"],
)
def test_matches_lambda_networks(ours_kwargs: dict, peer_kwargs: dict, size: tuple,
                                 train: bool) -> None:
    """Same outputs as the lambda-networks package with weights copied across. Its global
    form takes one side n (square maps only); it gathers the full (N, N, k, u) table."""
    ours = make_layer(dim=8, dim_k=4, heads=2, **ours_kwargs).train(train)
    peer = peer_layer(ours, **peer_kwargs)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(ours(x), peer(x), **TOL)
