"""``beyond-attention viz``: PNGs of the expected size, an index page that shows them,
saturation numbers, and clear errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beyond_attention.cli import main
from beyond_attention.models import create_model
from beyond_attention.train.checkpoint import CheckpointError, model_metadata, save_safetensors
from beyond_attention.viz.load import load_model
from beyond_attention.viz.plots import DPI
from beyond_attention.viz.saturation import head_cosine, saturation


def _images(tmp_path: Path, n: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _checkpoint(tmp_path: Path, name: str, **kwargs) -> Path:
    torch.manual_seed(0)
    net = create_model(name, **kwargs)
    path = tmp_path / f"{name}.safetensors"
    classes = [str(i) for i in range(10)]
    meta = model_metadata(name, 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3, classes)
    save_safetensors(path, net.state_dict(), meta)
    return path


def _check_page(out: Path, min_figures: int) -> list[Path]:
    page = (out / "index.html").read_text()
    refs = re.findall(r'<img src="([^"]+)"', page)
    assert len(refs) >= min_figures
    pngs = []
    for ref in refs:
        png = out / ref
        with Image.open(png) as im:
            assert im.format == "PNG"
            w, h = im.size
        assert w >= 300 and h >= 150 and png.stat().st_size > 5000
        pngs.append(png)
    assert "<figcaption>" in page
    return pngs


def test_maps_from_checkpoint_of_a_vit(tmp_path):
    ckpt = _checkpoint(tmp_path, "vit_tiny_cifar", depth=2)
    out = tmp_path / "maps"
    rc = main(["viz", "maps", "--checkpoint", str(ckpt), "--model-arg", "depth=2",
               "--images", *_images(tmp_path), "--out", str(out), "--query", "5,30"])
    assert rc == 0
    pngs = _check_page(out, 4)
    # one row per layer (2), one column per head (3) plus the image: the figure's size
    with Image.open(out / "attn_query_img0.png") as im:
        assert im.size == (round((1.9 * 4 + 0.8) * DPI), round((1.9 * 2 + 0.6) * DPI))
    assert {p.name for p in pngs} >= {"attn_query_img0.png", "attn_cls_img0.png"}


@pytest.mark.parametrize("name,expected", [
    ("eamlp_cifar", {"slots_layer0.png"}),
    ("lavit_tiny_cifar", {"va_vs_la.png", "attn_query_img0.png"}),
])
def test_maps_with_random_weights(tmp_path, name, expected):
    out = tmp_path / "maps"
    assert main(["viz", "maps", "--model", name, "--images", *_images(tmp_path),
                 "--out", str(out)]) == 0
    pngs = _check_page(out, len(expected))
    assert expected <= {p.name for p in pngs}


def test_maps_of_lambda_layers(tmp_path):
    out = tmp_path / "maps"
    assert main(["viz", "maps", "--model", "lambda_resnet26_cifar", "--layers", "0",
                 "--images", *_images(tmp_path, 1), "--out", str(out)]) == 0
    names = {p.name for p in _check_page(out, 2)}
    assert names == {"keys_layer0.png", "position_kernel_layer0.png"}


def _fails(capsys, argv: list[str], pattern: str) -> None:
    assert main(argv) != 0
    assert re.search(pattern, capsys.readouterr().err)


def test_bad_input_gets_clear_errors(tmp_path, capsys):
    imgs = _images(tmp_path, 1)
    ckpt = _checkpoint(tmp_path, "lavit_tiny_cifar")
    out = ["--out", str(tmp_path / "o")]
    _fails(capsys, ["viz", "maps", "--checkpoint", str(ckpt), "--model", "vit_tiny_cifar",
                    "--images", *imgs, *out], "holds weights of model 'lavit_tiny_cifar'")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    _fails(capsys, ["viz", "maps", "--model", "vit_tiny_cifar", "--images", str(text), *out],
           "notes.png is not an image file")
    _fails(capsys, ["viz", "maps", "--model", "vit_tiny_cifar", "--layers", "6",
                    "--images", *imgs, *out], "--layers: index 6 is out of range .* 6 mixer layers")
    _fails(capsys, ["viz", "maps", "--model", "vit_tiny_cifar", "--query", "40,0",
                    "--images", *imgs, *out], "outside the")
    with pytest.raises(CheckpointError, match="does not fit model"):
        load_model(ckpt, "lavit_tiny_cifar", {"depths": [1, 1, 1, 1]})


def test_head_cosine_against_formula():
    a, b = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    va, vb = a.reshape(2, 3, -1).double(), b.reshape(2, 3, -1).double()
    expected = (va * vb).sum(-1) / (va.norm(dim=-1) * vb.norm(dim=-1))
    torch.testing.assert_close(head_cosine(a, b), expected)


def test_saturation_of_vit_and_lavit():
    torch.manual_seed(0)
    vit = create_model("vit_tiny_cifar", depth=3).eval()
    stats = saturation(vit, torch.randn(6, 3, 32, 32).split(4))
    assert [s.prev_sim_mean is None for s in stats] == [True, False, False]
    assert all(0 < s.prev_sim_mean <= 1 + 1e-9 for s in stats[1:])
    assert len(stats[1].prev_sim_heads) == 3
    lavit = create_model("lavit_tiny_cifar").eval()
    stats = saturation(lavit, [torch.randn(3, 3, 32, 32)])
    less = [s for s in stats if s.family == "less"]
    assert len(less) == 4
    # fresh LA layers start at the identity transforms: the attention they produce is
    # the one they inherit, similarity exactly 1
    assert all(abs(s.prev_sim_mean - 1) < 1e-6 for s in less)
    assert all(s.vanilla_sim_mean is not None and s.diag_loss >= 0 for s in less)


def test_saturation_command_writes_json_and_plot(tmp_path, monkeypatch):
    from beyond_attention.commands import viz as viz_cmd

    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    monkeypatch.setattr(viz_cmd, "load_split", lambda *a, **k: (images, ["x"] * 8))
    out = tmp_path / "sat"
    assert main(["viz", "saturation", "--model", "vit_tiny_cifar", "--model-arg", "depth=3",
                 "--num-images", "8", "--batch-size", "4", "--out", str(out)]) == 0
    rec = json.loads((out / "saturation.json").read_text())
    assert rec["images"] == 8 and len(rec["layers"]) == 3
    with Image.open(out / "similarity_vs_depth.png") as im:
        assert im.size == (640, 380)
