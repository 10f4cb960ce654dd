"""The small EANet family: the SDPA head against its formula, and the three heads differing
in the mixer alone."""

from __future__ import annotations

import pytest
import torch

from beyond_attention import create_model, get_model_config
from beyond_attention.models.eanet import SelfAttentionBlock2d, make_head_mixer

SMALL = ["eanet_resnet26_small", "eanet_resnet26_small_sdpa", "eanet_resnet26_small_noattn"]


def test_self_attention_block_matches_the_formula() -> None:
    torch.manual_seed(0)
    c, heads, h, w = 16, 8, 3, 4
    block = SelfAttentionBlock2d(c, num_heads=heads).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    # y = conv1(x) as tokens; q, k, v per head; softmax(q k^T / sqrt(d)) v; proj; conv2; BN
    w1, b1 = block.conv1.weight[:, :, 0, 0], block.conv1.bias
    y = torch.einsum("oc,bchw->bhwo", w1, x).reshape(2, h * w, c) + b1
    qkv = torch.einsum("bnc,oc->bno", y, block.attn.qkv.weight) + block.attn.qkv.bias
    q, k, v = qkv.reshape(2, h * w, 3, heads, c // heads).unbind(2)
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / (c // heads) ** 0.5
    z = torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v).reshape(2, h * w, c)
    z = torch.einsum("bnc,oc->bno", z, block.attn.proj.weight) + block.attn.proj.bias
    z = torch.einsum("oc,bnc->bon", block.conv2.weight[:, :, 0, 0], z).reshape(2, c, h, w)
    bn = block.norm
    z = (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    z = z * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(block(x), torch.relu(x + z), rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(block, (x[:1, :, :2, :2].detach().requires_grad_(),))


def test_the_three_heads_differ_in_the_mixer_only() -> None:
    with torch.device("meta"):
        models = {n: create_model(n) for n in SMALL}
    keys = {n: {k for k in m.state_dict() if not k.startswith("ea.")} for n, m in models.items()}
    assert keys[SMALL[0]] == keys[SMALL[1]] == keys[SMALL[2]]
    assert not any(k.startswith("ea.") for k in models[SMALL[2]].state_dict())
    for name in SMALL:
        config = get_model_config(name)
        assert config.task == "semantic_segmentation" and config.input_size == (3, 128, 128)


@pytest.mark.parametrize("size", [64, 96])
def test_small_eanet_gives_logits_at_the_input_size(size: int) -> None:
    torch.manual_seed(0)
    model = create_model("eanet_resnet26_small_sdpa").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 11, size, size)


def test_unknown_head_mixer_is_named() -> None:
    with pytest.raises(ValueError, match="head_mixer must be"):
        make_head_mixer("lambda", 8, 4)  # type: ignore[arg-type]
