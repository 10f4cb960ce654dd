"""ONNX export with onnxruntime parity for every registered model; failures write nothing."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from deploy_helpers import MODEL, SIZE, write_checkpoint, write_image

import beyond_attention.export.onnx as onnx_export
from beyond_attention import create_model, get_model_config, list_models
from beyond_attention.cli import main
from beyond_attention.export import ExportError, export_onnx
from beyond_attention.layers.external_attention import double_normalize
from beyond_attention.layers.points import farthest_point_sample, knn
from beyond_attention.models._registry import example_input
from beyond_attention.train.checkpoint import CheckpointError

# The default sweep: every small variant. Point models at a small point count; the
# neighbour embedding (pct, pct_ea) samples fewer centres there (the parameters do not
# depend on them), so that the eager reference forward stays quick.
SMALL_POINTS = {"pct": 128, "pct_ea": 128, "spct": 64, "npct": 64, "pct_partseg": 64,
                "pct_ea_partseg": 64}
SMALL_KWARGS = {"pct": {"samples": (64, 32), "k": 16}, "pct_ea": {"samples": (64, 32), "k": 16}}
SMALL = list_models("*_cifar*") + list_models("eanet_resnet26_small*") + sorted(SMALL_POINTS)
# Point models at their config's point count and default centres too (512 + 256 for pct).
FULL = [n for n in list_models() if n not in SMALL] + [f"{n}@full" for n in sorted(SMALL_POINTS)]


def _inputs(name: str, batch: int, num_points: int | None, gen: torch.Generator):
    """What the model takes: images or clouds, plus categories for part segmentation."""
    config = get_model_config(name)
    x = example_input(config, batch, num_points=num_points, generator=gen)
    if config.task == "pointcloud_part_segmentation":
        return x, torch.randint(0, config.extra["num_categories"], (batch,), generator=gen)
    return x


def _export_and_compare(name: str, tmp_path, num_points: int | None = None,
                        **kwargs) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    gen = torch.Generator().manual_seed(0)
    out = tmp_path / f"{name}.onnx"
    result = export_onnx(model, out, _inputs(name, 3, num_points, gen))
    assert result.parity.ok and result.parity.batch == 3
    # the written file, run independently at a fourth batch size (dynamic axis) and, for
    # point clouds, another point count (dynamic point axis)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    other = _inputs(name, 1, None if num_points is None else num_points + 29, gen)
    feeds = (other,) if isinstance(other, torch.Tensor) else other
    names = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, feeds, strict=True)})
    with torch.no_grad():
        ref = model(*feeds).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4 + 1e-4 * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize("name", SMALL)
def test_small_models_export_with_parity(name, tmp_path):
    _export_and_compare(name, tmp_path, SMALL_POINTS.get(name), **SMALL_KWARGS.get(name, {}))


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_models_export_with_parity(name, tmp_path):
    name = name.removesuffix("@full")
    config = get_model_config(name)
    points = config.input_size[1] if config.task.startswith("pointcloud") else None
    _export_and_compare(name, tmp_path, points)


def test_point_and_part_segmentation_graphs_name_their_inputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("pct_ea_partseg").eval()
    gen = torch.Generator().manual_seed(1)
    export_onnx(model, tmp_path / "seg.onnx", _inputs("pct_ea_partseg", 2, 40, gen))
    session = ort.InferenceSession(str(tmp_path / "seg.onnx"))
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["points", "category"]
    assert inputs["category"].type == "tensor(int64)"
    assert inputs["points"].shape[1] == 3 and not isinstance(inputs["points"].shape[2], int)
    # the category changes the output, so it is wired into the graph
    x = torch.randn(1, 3, 50, generator=gen).numpy()
    a, b = (session.run(None, {"points": x, "category": np.array([c])})[0] for c in (0, 7))
    assert np.abs(a - b).max() > 1e-6


def test_bad_export_inputs_name_what_was_expected():
    torch.manual_seed(0)
    seg, cls = create_model("pct_ea_partseg").eval(), create_model("spct").eval()
    points = torch.randn(2, 3, 32)
    with pytest.raises(ValueError, match=r"inputs must be points \(B, C, N\), category"):
        export_onnx(seg, None, points)  # the category is missing
    with pytest.raises(ValueError, match="category must be int64"):
        export_onnx(seg, None, (points, torch.zeros(2)))
    with pytest.raises(ValueError, match=r"must share the batch size"):
        export_onnx(seg, None, (points, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"inputs must be points \(B, C, N\) with B >= 1"):
        export_onnx(cls, None, torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"inputs must be images \(B, C, H, W\)"):
        export_onnx(create_model("resnet26_cifar"), None, points)


def test_export_command_on_point_models(tmp_path, capsys):
    out = tmp_path / "npct.onnx"
    assert main(["export", "npct", "--num-points", "40", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == "3 seeded random clouds" and report["parity"]["ok"]
    session = ort.InferenceSession(str(out))
    (got,) = session.run(None, {"points": np.zeros((2, 3, 70), np.float32)})
    assert got.shape == (2, 40)
    for argv, message in [(["pct", "--num-points", "100"], "--num-points must be >= 512"),
                          (["pct", "--img-size", "32"], "--img-size is for image models"),
                          (["resnet26_cifar", "--num-points", "64"],
                           "--num-points is for point-cloud models")]:
        assert main(["export", *argv, "--out", str(tmp_path / "x.onnx")]) != 0
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npct.onnx"]


def test_export_branch_of_knn_finds_the_same_neighbours(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2, 90, 3, generator=gen)
    query = points[:, ::3]
    eager = knn(query, points, 8, chunk_size=7)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(knn(query, points, 8, chunk_size=7), eager, rtol=0, atol=0)
    # an independent reference: sort the full distance table
    dist = ((query[:, :, None] - points[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(eager, dist.argsort(-1)[..., :8], rtol=0, atol=0)


def test_exported_farthest_point_sampling_is_one_scan_with_the_eager_picks(tmp_path):
    class Sample(torch.nn.Module):
        def __init__(self, m: int) -> None:
            super().__init__()
            self.m = m

        def forward(self, xyz: torch.Tensor) -> torch.Tensor:
            return farthest_point_sample(xyz, self.m, start=xyz.new_ones(xyz.shape[0]).long())

    gen = torch.Generator().manual_seed(0)
    xyz = torch.randn(2, 300, 3, generator=gen)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("points", min=200)},)
    graphs = {m: torch.export.export(Sample(m), (xyz,), dynamic_shapes=dims) for m in (8, 200)}
    # the sampling step is traced once, whatever the number of centres
    sizes = {m: len(ep.graph.nodes) for m, ep in graphs.items()}
    assert sizes[8] == sizes[200]
    other = torch.randn(3, 411, 3, generator=gen)  # another batch and point count
    for m, ep in graphs.items():
        torch.testing.assert_close(ep.module()(other), farthest_point_sample(
            other, m, start=torch.ones(3, dtype=torch.long)), rtol=0, atol=0)
    onnx_program = torch.onnx.export(Sample(200), (xyz,), dynamic_shapes=dims, dynamo=True,
                                     verbose=False)
    onnx_program.save(str(tmp_path / "fps.onnx"))
    session = ort.InferenceSession(str(tmp_path / "fps.onnx"))
    assert [n.op_type for n in onnx_program.model_proto.graph.node].count("Scan") == 1
    (got,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    np.testing.assert_array_equal(got, farthest_point_sample(
        other, 200, start=torch.ones(3, dtype=torch.long)).numpy())


def test_export_branch_of_double_normalisation_is_the_same_formula(monkeypatch):
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    trained = double_normalize(logits, 1, 2, 1e-9)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    exported = double_normalize(logits, 1, 2, 1e-9)
    p = torch.exp(logits - logits.amax(1, keepdim=True))
    p = p / p.sum(1, keepdim=True)
    torch.testing.assert_close(exported, p / (1e-9 + p.sum(2, keepdim=True)))
    torch.testing.assert_close(exported, trained)


def test_export_command_on_a_checkpoint_with_real_images(tmp_path, capsys):
    ckpt = tmp_path / "best.safetensors"
    net = write_checkpoint(ckpt)
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", (SIZE, SIZE), i)
    assert main(["export", str(ckpt), "--images", str(tmp_path / "img"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MODEL and report["inputs"] == "3 images given"
    assert report["parity"]["ok"] and report["opset"] == onnx_export.DEFAULT_OPSET
    out = tmp_path / "best.onnx"
    assert report["path"] == str(out) and out.stat().st_size == report["size_bytes"]
    x = torch.randn(2, 3, SIZE, SIZE)
    (got,) = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-4)


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    real = onnx_export.run_onnxruntime
    monkeypatch.setattr(onnx_export, "run_onnxruntime", lambda b, x: real(b, x) + 1e-2)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="max abs difference .* nothing written"):
        main(["--debug", "export", MODEL, "--img-size", "16", "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_get_a_clear_error_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        main(["--debug", "export", str(bad)])
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--debug", "export", str(tmp_path / "missing.safetensors")])
    with pytest.raises(ValueError, match="unknown model name 'nosuchmodel'"):
        main(["--debug", "export", "nosuchmodel", "--out", str(tmp_path / "x.onnx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_export_command_on_a_part_segmentation_checkpoint(tmp_path, capsys):
    from beyond_attention.train.checkpoint import model_metadata, save_safetensors

    torch.manual_seed(0)
    model = create_model("pct_ea_partseg", num_classes=5, num_categories=2)
    meta = model_metadata("pct_ea_partseg", 5, 3, (3, 48), [0.0], [1.0],
                          [f"part{i}" for i in range(5)], task="pointcloud_part_segmentation",
                          model_kwargs={"num_categories": 2})
    meta.update(categories=["a", "b"], category_parts=[[0, 1], [2, 3, 4]], num_points=48)
    ckpt = tmp_path / "best.safetensors"
    save_safetensors(ckpt, model.state_dict(), meta)
    assert main(["export", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == "3 seeded random clouds and categories" and report["parity"]["ok"]
    session = ort.InferenceSession(str(tmp_path / "best.onnx"))
    points = np.random.default_rng(0).standard_normal((2, 3, 60)).astype(np.float32)
    category = np.array([0, 1], np.int64)
    (got,) = session.run(None, {"points": points, "category": category})
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(points), torch.from_numpy(category))
    assert got.shape == (2, 5, 60)
    assert np.abs(got - want.numpy()).max() < 1e-4
