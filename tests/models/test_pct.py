"""PCT, PCT with external attention, SPCT/NPCT and the part-segmentation networks.

The registry-wide sweep (test_registry_sweep.py) covers them too, on small clouds.
"""

from __future__ import annotations

import pytest
import torch

from beyond_attention import create_model, get_model_config

CLS = ["pct", "pct_ea", "spct", "npct"]
SEG = ["pct_partseg", "pct_ea_partseg"]
SMALL = {"samples": (32, 16), "k": 8}  # a small neighbour embedding for fast checks
N_SMALL = 48


def _small_kwargs(name: str) -> dict:
    return dict(SMALL) if name in ("pct", "pct_ea") else {}


def _build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=7, **_small_kwargs(name), **kwargs)


def _cloud(b: int = 2, n: int = N_SMALL, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, n, generator=g)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "reported"), [("pct", 2.88e6), ("spct", 1.36e6), ("npct", 1.36e6)]
)
def test_parameter_count_matches_the_paper_with_max_pooling(name: str, reported: float) -> None:
    with torch.device("meta"):
        model = create_model(name, pooling="max")
        default = create_model(name)
    assert abs(_params(model) - reported) / reported < 0.005, _params(model)
    assert get_model_config(name).reported_params_m == reported / 1e6
    # max and mean pooled (the paper's text) widen the first head layer by 1024 x 512
    assert _params(default) - _params(model) == 1024 * 512


def test_separate_query_and_key_projections_add_their_weights() -> None:
    with torch.device("meta"):
        shared, separate = create_model("pct", pooling="max"), create_model(
            "pct", pooling="max", share_qk=False)
    assert _params(separate) - _params(shared) == 4 * 256 * 64


@pytest.mark.parametrize("name", CLS + SEG)
def test_config_names_the_task(name: str) -> None:
    config = get_model_config(name)
    task = "pointcloud_part_segmentation" if name in SEG else "pointcloud_classification"
    assert config.task == task
    assert config.input_size == (3, 2048 if name in SEG else 1024)
    assert config.num_classes == (50 if name in SEG else 40)


@pytest.mark.parametrize("name", CLS + SEG)
def test_contract(name: str) -> None:
    model = _build(name).eval()
    x = _cloud()
    with torch.no_grad():
        out = model(x)
    expected = (2, 7, N_SMALL) if name in SEG else (2, 7)
    assert out.shape == expected and torch.isfinite(out).all()

    other = _build(name, seed=5).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x), out)

    model.set_grad_checkpointing(True)
    ckpt = model(x)
    ckpt.square().mean().backward()
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(ckpt.detach(), out, rtol=1e-5, atol=1e-6)
    model.zero_grad(set_to_none=True)

    model.train()
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    names = {n for n, _ in model.named_parameters()}
    assert set(model.no_weight_decay()) <= names and model.no_weight_decay()
    assert model.num_features == 256
    with torch.no_grad():
        feats = model.eval().forward_features(x)
        assert feats.shape[1] == 1024
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape[1] == 256


@pytest.mark.parametrize("name", ["pct_ea", "pct_partseg"])
def test_reset_classifier_keeps_dtype_and_allows_zero(name: str) -> None:
    model = _build(name).double().eval()
    model.reset_classifier(3)
    assert model.get_classifier().weight.dtype == torch.float64
    with torch.no_grad():
        assert model(_cloud().double()).shape[1] == 3
        model.reset_classifier(0)
        assert model(_cloud().double()).shape[1] == 256
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        model.reset_classifier(-1)


def test_default_pct_runs_on_1024_points() -> None:
    model = create_model("pct", num_classes=5).eval()
    with torch.no_grad():
        feats = model.forward_features(_cloud(1, 1024))
    assert feats.shape == (1, 1024, 256)  # 256 centres after the second grouping


@pytest.mark.parametrize("name", ["spct", "npct", "pct_partseg"])
def test_point_embedding_models_are_permutation_invariant(name: str) -> None:
    model = _build(name).eval()
    x = _cloud(n=40)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, out_perm = model(x), model(x[:, :, perm])
    if name in SEG:
        out = out[:, :, perm]  # per-point outputs permute with the points
    torch.testing.assert_close(out_perm, out, rtol=1e-4, atol=1e-5)


def test_segmentation_uses_the_category() -> None:
    model = _build("pct_ea_partseg").eval()
    x = _cloud()
    with torch.no_grad():
        a = model(x, torch.tensor([0, 1]))
        b = model(x, torch.tensor([2, 1]))
        none = model(x)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert none.shape == a.shape
    for bad, match in [(torch.tensor([0, 16]), r"\[0, 16\)"), (torch.tensor([0.0, 1.0]),
                       "integer tensor"), (torch.tensor([1]), r"shape \(2,\)")]:
        with pytest.raises(ValueError, match=match):
            model(x, bad)
    plain = create_model("pct_partseg", num_categories=0)
    with pytest.raises(ValueError, match="num_categories=0"):
        plain(x, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.randn(2, 1024, 3), r"3 channels in dimension 1 \(B, C=3, N\)"),
        (torch.randn(3, 1024), "3 dimensions"),
        (torch.randn(1, 3, 300), "300 points, fewer than the 512"),
        (torch.full((1, 3, 600), float("nan")), "NaN"),
    ],
)
def test_bad_input_is_named(x: torch.Tensor, match: str) -> None:
    model = create_model("pct").eval()
    with pytest.raises(ValueError, match=match):
        model(x)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="drop_path_rate"):
        create_model("pct", drop_path_rate=0.1)
    from beyond_attention.models.pct import PointCloudTransformer

    with pytest.raises(ValueError, match="mixer must be"):
        PointCloudTransformer(embedding="point", mixer="lambda")
    with pytest.raises(ValueError, match="pooling must be"):
        create_model("spct", pooling="sum")
    with pytest.raises(ValueError, match="k must be in"):
        create_model("pct", samples=(32, 16), k=17)


@pytest.mark.parametrize("name", ["pct_ea", "pct_ea_partseg"])
def test_extra_channels_and_bfloat16_autocast(name: str) -> None:
    model = _build(name, in_chans=6).eval()
    x = torch.cat([_cloud(), torch.randn(2, 3, N_SMALL)], dim=1)  # coordinates + normals
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    scale = full.abs().max()
    torch.testing.assert_close(half.float() / scale, full / scale, rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="must have 6 channels"):
        model(_cloud())
