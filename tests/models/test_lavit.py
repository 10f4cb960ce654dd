"""LaViT models: sizes against the paper, the model contract, the auxiliary loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from beyond_attention.layers.less_attention import LessAttention, VanillaAttention
from beyond_attention.models._registry import create_model, get_model_config, list_models
from beyond_attention.models.lavit import DWConvMlp, LaViT

PAPER = {"lavit_tiny": (10.9, 1.6), "lavit_small": (22.4, 3.3), "lavit_base": (39.6, 6.1)}


def gmacs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one forward (FLOPs / 2), attention matmuls included."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2e9


def test_registered_with_configs():
    assert set(PAPER) | {"lavit_tiny_cifar"} <= set(list_models("lavit*"))
    for name, (params, macs) in PAPER.items():
        cfg = get_model_config(name)
        assert cfg.fixed_input_size and cfg.input_size == (3, 224, 224)
        assert (cfg.reported_params_m, cfg.reported_gmacs) == (params, macs)
        assert cfg.paper is not None and cfg.paper.arxiv == "2406.00427"
        assert cfg.reported_top1 is not None
    cifar = get_model_config("lavit_tiny_cifar")
    assert cifar.input_size == (3, 32, 32) and cifar.num_classes == 10


@pytest.mark.parametrize("name", list(PAPER))
def test_params_and_macs_match_paper(name):
    """Counted on the meta device: the shapes, hence the counts, of the real model."""
    with torch.device("meta"):
        model = create_model(name)
        x = torch.empty(1, 3, 224, 224)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    ref_params, ref_macs = PAPER[name]
    assert abs(params / ref_params - 1) < 0.05, params
    assert abs(gmacs(model, x) / ref_macs - 1) < 0.10


@pytest.mark.parametrize(
    "name", ["lavit_tiny", pytest.param("lavit_small", marks=pytest.mark.slow),
             pytest.param("lavit_base", marks=pytest.mark.slow)]
)
def test_macs_real_forward_at_224(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    macs = gmacs(model, torch.randn(1, 3, 224, 224))
    assert abs(macs / PAPER[name][1] - 1) < 0.10
    loss = model.auxiliary_loss()
    assert torch.isfinite(loss) and loss.item() > 0


def test_stage_layout_va_then_la():
    model = create_model("lavit_tiny", num_vanilla=1)
    for stage in model.stages:
        kinds = [type(b.attn) for b in stage.blocks]
        assert kinds[0] is VanillaAttention
        assert all(k is LessAttention for k in kinds[1:]) and len(kinds) >= 2
    # Psi (query axis) only where the stage has at most 196 tokens: stages 3 and 4 at 224
    has_psi = [stage.blocks[-1].attn.psi_delta is not None for stage in model.stages]
    assert has_psi == [False, False, True, True]
    assert [s.key_grid for s in model.stages] == [(7, 7)] * 4
    assert model.stages[0].downsample is None
    assert all(s.downsample is not None for s in model.stages[1:])


@pytest.fixture(scope="module")
def cifar_model() -> LaViT:
    torch.manual_seed(0)
    return create_model("lavit_tiny_cifar")


def test_cifar_forward_backward_every_parameter(cifar_model):
    model = cifar_model
    model.train()
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    aux = model.auxiliary_loss()
    assert aux.ndim == 0 and aux.requires_grad and aux.item() > 0
    model.zero_grad(set_to_none=True)
    (torch.nn.functional.cross_entropy(out, torch.arange(4)) + 0.1 * aux).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_auxiliary_loss_collects_every_la_block():
    torch.manual_seed(1)
    model = create_model("lavit_tiny_cifar").eval()
    assert model.auxiliary_loss().item() == 0.0  # nothing run yet
    x = torch.randn(2, 3, 32, 32)
    model(x)
    aux = model.auxiliary_loss()
    la_blocks = [b for s in model.stages for b in s.blocks if b.less]
    assert len(model._aux_losses) == len(la_blocks) == 4
    # the same figure, recomputed from each LA block's attention through hooks
    from beyond_attention.layers.less_attention import diagonality_loss

    grabbed = []
    hooks = [
        b.attn.register_forward_hook(lambda m, i, o: grabbed.append(o[1].softmax(-1)))
        for b in la_blocks
    ]
    model(x)
    for h in hooks:
        h.remove()
    grids = [(s.grid, s.key_grid) for s in model.stages]
    ref = torch.stack([diagonality_loss(a, *g) for a, g in zip(grabbed, grids, strict=True)]).mean()
    torch.testing.assert_close(aux, ref)
    # its gradient reaches the transforms
    model(x)
    model.zero_grad(set_to_none=True)
    model.auxiliary_loss().backward()
    assert la_blocks[0].attn.theta_delta.grad.abs().sum() > 0


def test_wrong_input_size_raises_before_computation(cifar_model):
    calls = []
    hook = cifar_model.stages[0].patch_embed.register_forward_pre_hook(
        lambda m, i: calls.append(1)
    )
    try:
        for bad in (torch.randn(1, 3, 64, 64), torch.randn(1, 1, 32, 32), torch.randn(3, 32, 32)):
            with pytest.raises(ValueError, match="img_size"):
                cifar_model(bad)
    finally:
        hook.remove()
    assert not calls
    # a model built for another size accepts it
    other = create_model("lavit_tiny_cifar", img_size=48).eval()
    assert other(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_num_classes_and_reset_classifier():
    model = create_model("lavit_tiny_cifar", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features) == (2, 256)
    feats = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)))


def test_grad_checkpointing_same_output_and_grads():
    torch.manual_seed(2)
    model = create_model("lavit_tiny_cifar").train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    aux = model.auxiliary_loss()
    (out.sum() + aux).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    out2 = model(x)
    aux2 = model.auxiliary_loss()
    (out2.sum() + aux2).backward()
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    torch.testing.assert_close(aux2, aux, atol=0, rtol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5, msg=n)


def test_state_dict_round_trip():
    torch.manual_seed(3)
    a = create_model("lavit_tiny_cifar").eval()
    with torch.no_grad():
        for p in a.parameters():  # move the transforms and gates off their initial values
            p.add_(0.01 * torch.randn_like(p))
    torch.manual_seed(4)
    b = create_model("lavit_tiny_cifar").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(b(x), a(x), atol=0, rtol=0)


def test_forward_intermediates():
    model = create_model("lavit_tiny_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    final, feats = model.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)
    ]
    torch.testing.assert_close(final, model.forward_features(x))
    only = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True, stop_early=True)
    assert len(only) == 2
    torch.testing.assert_close(only[1], feats[1])
    assert len(model.forward_intermediates(x, indices=1, intermediates_only=True)) == 1


def test_drop_path_schedule_and_no_weight_decay():
    model = create_model("lavit_tiny_cifar", drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks]
    expected = torch.linspace(0, 0.3, len(rates)).tolist()
    assert rates == pytest.approx(expected)
    names = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert nwd and all(n in names and n.endswith("alpha") for n in nwd)


def test_invalid_layouts():
    with pytest.raises(ValueError, match="num_vanilla"):
        create_model("lavit_tiny_cifar", num_vanilla=3)
    with pytest.raises(ValueError, match="embed_dims"):
        create_model("lavit_tiny_cifar", embed_dims=(32, 64, 128))
    with pytest.raises(ValueError, match="img_size"):
        create_model("lavit_tiny", img_size=16)


def _dwconv_mlp_reference(mlp, x, hw):
    """Linear -> 3x3 depthwise conv (written as 9 shifted products) -> GELU -> Linear."""
    h = torch.einsum("bnc,dc->bnd", x, mlp.fc1.weight) + mlp.fc1.bias
    b, _, c = h.shape
    grid = torch.nn.functional.pad(h.reshape(b, hw[0], hw[1], c), (0, 0, 1, 1, 1, 1))
    w = mlp.dwconv.weight.reshape(c, 3, 3)
    conv = mlp.dwconv.bias + sum(grid[:, i:i + hw[0], j:j + hw[1], :] * w[:, i, j]
                                 for i in range(3) for j in range(3))
    act = torch.nn.functional.gelu(conv.reshape(b, -1, c))
    return torch.einsum("bnd,cd->bnc", act, mlp.fc2.weight) + mlp.fc2.bias


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", [(2, 2), (4, 3)])
def test_dwconv_mlp_matches_the_formula_in_either_memory_format(channels_last, hw):
    torch.manual_seed(0)
    mlp = DWConvMlp(6, 12).double()
    if channels_last:
        torch.nn.utils.convert_conv2d_weight_memory_format(mlp, torch.channels_last)
    x = torch.randn(3, hw[0] * hw[1], 6, dtype=torch.float64, requires_grad=True)
    out = mlp(x, hw)
    torch.testing.assert_close(out, _dwconv_mlp_reference(mlp, x, hw), rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    assert mlp.dwconv.weight.grad.stride() == mlp.dwconv.weight.stride()


@pytest.mark.parametrize("hw, float32_conv", [((2, 2), True), ((4, 4), False)])
def test_dwconv_mlp_convolves_small_low_precision_maps_in_float32(hw, float32_conv):
    torch.manual_seed(0)
    mlp = DWConvMlp(8, 16)
    torch.nn.utils.convert_conv2d_weight_memory_format(mlp, torch.channels_last)
    seen = []
    mlp.dwconv.register_forward_hook(lambda mod, args, out: seen.append(args[0].dtype))
    x = torch.randn(2, hw[0] * hw[1], 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(x, hw)
    assert seen == [torch.float32 if float32_conv else torch.bfloat16]
    torch.testing.assert_close(out.float(), _dwconv_mlp_reference(mlp, x, hw),
                               rtol=5e-2, atol=5e-2)
