"""The saved-tensor counter against hand-computed cases."""

from __future__ import annotations

import torch
from torch import nn

from beyond_attention.bench.memory import (
    activation_bytes,
    activation_bytes_per_image,
    saved_tensor_bytes,
)


def test_linear_relu_saves_input_and_output_not_weight():
    # Linear(4 -> 3) on x (2, 4): addmm saves x (for dW) and W^T (a view of the
    # parameter, excluded); ReLU saves its output (2, 3). float32: 2*4*4 + 2*3*4 bytes.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    x = torch.randn(2, 4, requires_grad=True)
    report = activation_bytes(model, (x,))
    assert report.bytes == 2 * 4 * 4 + 2 * 3 * 4
    assert report.storages == 2
    assert report.saved == 3  # x, W^T and relu's output were all saved


def test_input_without_grad_still_counted_for_weight_gradient():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    x = torch.randn(5, 4)
    assert activation_bytes(model, (x,)).bytes == 5 * 4 * 4 + 5 * 3 * 4


def test_float64_doubles_the_bytes():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).double()
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert activation_bytes(model, (x,)).bytes == 2 * (2 * 4 * 4 + 2 * 3 * 4)


def test_shared_storage_counts_once():
    # x * x saves x twice; x[:, :2] * x[:, 2:] saves two views of x's storage.
    x = torch.randn(3, 4, requires_grad=True)
    report, _ = saved_tensor_bytes(lambda: x * x)
    assert report.saved == 2
    assert report.storages == 1
    assert report.bytes == x.numel() * 4
    report, _ = saved_tensor_bytes(lambda: x[:, :2] * x[:, 2:])
    assert report.storages == 1
    assert report.bytes == x.numel() * 4  # a view keeps its whole storage alive


def test_transposed_view_of_output_counts_once():
    # y = relu(x) saves y; y.t() @ y saves y.t() and y (both views of one storage).
    x = torch.randn(6, 3, requires_grad=True)

    def fn():
        y = torch.relu(x)
        return y.t() @ y

    report, _ = saved_tensor_bytes(fn)
    assert report.storages == 1
    assert report.bytes == 6 * 3 * 4


def test_exclude_removes_storages():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4, 2, requires_grad=True)
    report, _ = saved_tensor_bytes(lambda: x @ w)
    assert report.bytes == (3 * 4 + 4 * 2) * 4
    report, _ = saved_tensor_bytes(lambda: x @ w, exclude=[w])
    assert report.bytes == 3 * 4 * 4


def test_nothing_saved_without_grad_requirement():
    x = torch.randn(3, 4)
    report, out = saved_tensor_bytes(lambda: torch.exp(x))
    assert report.bytes == 0 and report.saved == 0
    assert torch.equal(out, torch.exp(x))


def test_exp_saves_its_result():
    # exp's backward uses its output: one (3, 4) float32 tensor, not the input.
    x = torch.randn(3, 4, requires_grad=True)
    report, out = saved_tensor_bytes(lambda: torch.exp(x))
    assert report.bytes == 3 * 4 * 4
    assert report.storages == 1


def test_per_image_bytes_are_measured_on_one_image():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    x1 = torch.randn(1, 8)
    # input 8 + relu output 16 floats
    assert activation_bytes_per_image(model, x1, lambda: torch.randn(2, 8)) == (8 + 16) * 4


def test_a_model_that_cannot_train_on_one_image_is_measured_on_two_and_halved():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16)).train()
    two = torch.randn(2, 8)
    expected = activation_bytes(model, (two,)).bytes // 2
    assert activation_bytes_per_image(model, torch.randn(1, 8), lambda: two) == expected
    assert expected > 0
