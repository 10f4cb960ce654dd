"""The model contract, checked for every registered model (whoever registered it).

Each model runs with a batch of 2 at a small size. Point-cloud models take (2, 3, 48)
clouds, the neighbour-embedding ones built with a small sampler (``POINT_SMALL``). Image
models take their own input size when that is at most 32 px; otherwise 32 px, built for
that size when the model is fixed-size (its constructor takes ``img_size``) and fed at that
size as built at its default size when it is not. Models above 40M parameters run only with
``-m slow`` (their families have smaller members in the default sweep), which also runs
every model at its full default size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyond_attention import create_model, get_model_config, list_models
from beyond_attention.models import example_input

IMAGE_TASKS = ("image_classification", "semantic_segmentation")
POINT_TASKS = ("pointcloud_classification", "pointcloud_part_segmentation")
SMALL_POINTS = 48
# Point models whose neighbour embedding samples 512 centres by default: a small sampler.
POINT_SMALL = {"pct": {"samples": (32, 16), "k": 8}, "pct_ea": {"samples": (32, 16), "k": 8}}

SMALL = 32
BATCH = 2
NUM_CLASSES = 7
BIG = 40e6  # parameters above which a model's default-sweep parametrisations are slow


def _num_params(name: str) -> float:
    """Parameter count of ``name`` built on the meta device (0 if it cannot be)."""
    try:
        with torch.device("meta"):
            return float(sum(p.numel() for p in create_model(name).parameters()))
    except Exception:
        return 0.0


def _sweep_params() -> list:
    """Every registered model; the big ones marked slow (their family has a smaller member)."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if _num_params(name) > BIG else name
        for name in list_models()
    ]


def _sweep_setup(name: str, full: bool = False) -> tuple[dict, dict]:
    """(create_model kwargs, example_input kwargs) for the sweep of ``name``."""
    config = get_model_config(name)
    kwargs: dict = {"num_classes": NUM_CLASSES}
    if config.task in POINT_TASKS:
        if full:
            return kwargs, {}
        return {**kwargs, **POINT_SMALL.get(name, {})}, {"num_points": SMALL_POINTS}
    assert config.task in IMAGE_TASKS, f"{name}: task {config.task} not covered by the sweep"
    if full or config.task not in IMAGE_TASKS or max(config.input_size[1:]) <= SMALL:
        return kwargs, {}
    if config.fixed_input_size:
        kwargs["img_size"] = SMALL
    return kwargs, {"img_size": SMALL}


def _build(name: str, kwargs: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


def _logits(out: object) -> torch.Tensor:
    """The main output tensor of a forward (first element if a tuple or list)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    assert isinstance(out, torch.Tensor), f"forward returned {type(out).__name__}"
    return out


def _nonfinite_grads(model: nn.Module) -> list[str]:
    return [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]


class Case:
    """One model built for the sweep, with its input and its eval-mode output."""

    def __init__(self, name: str, full: bool = False) -> None:
        self.name = name
        self.kwargs, input_kwargs = _sweep_setup(name, full)
        self.model = _build(name, self.kwargs, seed=0)
        torch.manual_seed(1)
        self.x = example_input(name, BATCH, **input_kwargs)
        self._eval_out: torch.Tensor | None = None

    @property
    def eval_out(self) -> torch.Tensor:
        """The model's eval-mode output on ``x`` (computed once, before any training step)."""
        if self._eval_out is None:
            with torch.no_grad():
                self._eval_out = _logits(self.model.eval()(self.x))
        return self._eval_out


@pytest.fixture(scope="module", params=_sweep_params())
def case(request: pytest.FixtureRequest) -> Case:
    return Case(request.param)


def test_eval_forward_is_finite_with_num_classes_outputs(case: Case) -> None:
    out = case.eval_out
    assert out.shape[:2] == (BATCH, NUM_CLASSES), f"{case.name}: output {tuple(out.shape)}"
    assert get_model_config(case.name).num_classes != NUM_CLASSES
    assert torch.isfinite(out).all(), f"{case.name}: non-finite output"


def test_state_dict_round_trip_reproduces_the_output(case: Case) -> None:
    other = _build(case.name, case.kwargs, seed=123).eval()
    other.load_state_dict(case.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(_logits(other(case.x)), case.eval_out)


def test_gradient_checkpointing_leaves_the_output_unchanged(case: Case) -> None:
    model = case.model.eval()
    model.set_grad_checkpointing(True)
    try:
        out = _logits(model(case.x))
        out.float().square().mean().backward()  # the recomputing backward runs
    finally:
        model.set_grad_checkpointing(False)
    torch.testing.assert_close(out.detach(), case.eval_out, rtol=1e-5, atol=1e-6)
    bad = _nonfinite_grads(model)
    assert not bad, f"{case.name}: non-finite gradient for {bad}"
    model.zero_grad(set_to_none=True)


def test_train_forward_backward_gives_every_parameter_a_gradient(case: Case) -> None:
    model = case.model.train()
    out = _logits(model(case.x))
    assert torch.isfinite(out).all(), f"{case.name}: non-finite output in train mode"
    out.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{case.name}: no gradient for {missing}"
    bad = _nonfinite_grads(model)
    assert not bad, f"{case.name}: non-finite gradient for {bad}"
    model.zero_grad(set_to_none=True)


def test_contract_methods(case: Case) -> None:
    model = case.model
    assert model.config == get_model_config(case.name)  # built at the defaults
    assert get_model_config(model) is model.config
    assert model.config.fixed_input_size == bool(getattr(model, "fixed_input_size", False))
    assert isinstance(model.num_features, int) and model.num_features > 0
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    no_wd = set(model.no_weight_decay())
    assert no_wd <= names, f"{case.name}: no_weight_decay names unknown tensors {no_wd - names}"


def test_fixed_size_model_rejects_another_size_before_computing(case: Case) -> None:
    if not case.model.config.fixed_input_size:
        pytest.skip("accepts other input sizes")
    if case.x.ndim != 4:
        pytest.skip("not an image model")
    calls = []
    handles = [
        m.register_forward_pre_hook(lambda *_: calls.append(1))
        for m in case.model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Unfold))
    ]
    b, c, h, w = case.x.shape
    try:
        with pytest.raises(ValueError, match=rf"{h}"):
            case.model(torch.randn(b, c, h + 16, w + 16))
    finally:
        for handle in handles:
            handle.remove()
    assert not calls, "computation ran before the size check"


def test_reset_classifier_changes_the_head(case: Case) -> None:
    """Runs last for each model: it replaces the head of the shared model."""
    model = case.model.eval()
    model.reset_classifier(3)
    with torch.no_grad():
        assert _logits(model(case.x)).shape[:2] == (BATCH, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_full_size_forward_backward(name: str) -> None:
    case = Case(name, full=True)
    out = _logits(case.model.train()(case.x))
    assert out.shape[:2] == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    missing = [n for n, p in case.model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


# Parameter counts against the papers (building on the meta device: no memory, no init).
PAPER_PARAMS = {
    "eamlp_14": 29.88,  # counted from the authors' code (fixed position table included)
    "eamlp_19": 54.56,
    "vit_tiny": 5.7,  # DeiT-Ti
    "vit_small": 22.1,  # DeiT-S
}
# The fixed sinusoidal table of EAMLP is a buffer here, a frozen parameter in the authors'
# code (which their count includes): (N + 1) * D = 197 * D at 224 px.
FIXED_TABLE = {"eamlp_14": 197 * 384, "eamlp_19": 197 * 448}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_within_one_percent_of_the_paper(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    reported = PAPER_PARAMS[name] * 1e6
    assert abs(params - reported) / reported < 0.01, (name, params)
    if name in FIXED_TABLE:
        counted = params + FIXED_TABLE[name]
        assert abs(counted - reported) < 5e3, (name, counted)
