"""Segmentation data: VOC and folder-pair loaders, joint augmentation, inference helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beyond_attention.data.base import DatasetError
from beyond_attention.data.seg_augment import SegmentationAugment, collate_segmentation
from beyond_attention.data.seg_inference import sliding_window_inference, whole_image_inference
from beyond_attention.data.segmentation import (
    VOC_CLASSES,
    load_mask_folder,
    load_voc,
    voc_palette,
)


def _palette_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def _jpeg(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)
    return rgb


def _voc(root: Path) -> dict[str, np.ndarray]:
    masks = {
        "2007_000032": np.array([[0, 0, 1, 1], [0, 255, 1, 15], [20, 20, 255, 0]]),
        "2007_000039": np.array([[3, 3, 3, 0], [0, 0, 0, 0], [255, 255, 255, 255]]),
    }
    for i, (k, m) in enumerate(masks.items()):
        _jpeg(root / "JPEGImages" / f"{k}.jpg", 3, 4, seed=i)
        _palette_png(root / "SegmentationClass" / f"{k}.png", m)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n")
    (sets / "val.txt").write_text("2007_000039\n")
    return masks


def test_voc_reads_palette_masks_with_the_ignore_label(tmp_path: Path) -> None:
    masks = _voc(tmp_path)
    train = load_voc(tmp_path, "train")
    assert train.classes == VOC_CLASSES and train.num_classes == 21 and train.ids == [
        "2007_000032"]
    image, mask = train[0]
    assert image.shape == (3, 3, 4) and image.dtype == np.uint8
    np.testing.assert_array_equal(mask, masks["2007_000032"])
    assert train.ignore_index == 255
    assert load_voc(tmp_path, "val").masks[0][2].tolist() == [255] * 4


def test_voc_palette_is_vocs() -> None:
    pal = voc_palette()
    assert pal[:6] == [0, 0, 0, 128, 0, 0] and pal[15 * 3:15 * 3 + 3] == [192, 128, 128]


def test_voc_errors_name_the_file(tmp_path: Path) -> None:
    _voc(tmp_path)
    bad = tmp_path / "SegmentationClass" / "2007_000032.png"
    _palette_png(bad, np.array([[0, 20], [1, 1]]))
    with pytest.raises(DatasetError, match=r"2007_000032.png: mask is 2x2 but its image"):
        load_voc(tmp_path, "train")
    _palette_png(bad, np.full((3, 4), 30))
    with pytest.raises(DatasetError, match=r"labels must lie in \[0, 21\) or equal ignore_index"):
        load_voc(tmp_path, "train")
    Image.new("RGB", (4, 3)).save(bad)
    with pytest.raises(DatasetError, match="palette \\(P\\) or grey \\(L\\) PNG"):
        load_voc(tmp_path, "train")
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode the mask"):
        load_voc(tmp_path, "train")
    bad.unlink()
    with pytest.raises(DatasetError, match="lists '2007_000032' but"):
        load_voc(tmp_path, "train")
    with pytest.raises(DatasetError, match="split list not found"):
        load_voc(tmp_path, "test")


def test_classes_file_overrides_voc(tmp_path: Path) -> None:
    _voc(tmp_path)
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    with pytest.raises(DatasetError, match=r"\[0, 2\)"):
        load_voc(tmp_path, "train")


def test_mask_folder_pairs_by_name(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("bg\na\nb\n")
    for i, name in enumerate(["x", "y"]):
        _jpeg(tmp_path / "train" / "images" / f"{name}.jpg", 5, 6, seed=i)
        grey = np.full((5, 6), i + 1, dtype=np.uint8)
        (tmp_path / "train" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey, mode="L").save(tmp_path / "train" / "masks" / f"{name}.png")
    ds = load_mask_folder(tmp_path, "train")
    assert ds.ids == ["x", "y"] and ds.classes == ["bg", "a", "b"]
    assert [int(m[0, 0]) for m in ds.masks] == [1, 2]
    (tmp_path / "train" / "masks" / "y.png").unlink()
    with pytest.raises(DatasetError, match=r"do not pair up; unmatched: \['y'\]"):
        load_mask_folder(tmp_path, "train")


def _sample(h: int = 20, w: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    mask = torch.randint(0, 5, (h, w), generator=g)
    return image, mask


def test_augment_is_joint_and_never_blends_labels() -> None:
    image, mask = _sample()
    aug = SegmentationAugment((16, 16), scale=(0.5, 2.0))
    for seed in range(5):
        img, m = aug(image, mask, torch.Generator().manual_seed(seed))
        assert img.shape == (3, 16, 16) and img.dtype == torch.uint8 and m.shape == (16, 16)
        assert set(m.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    a = aug(image, mask, torch.Generator().manual_seed(7))
    b = aug(image, mask, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_augment_crop_and_flip_move_image_and_mask_together() -> None:
    # the mask is a function of the image: it must stay so through crop and flip
    image, _ = _sample()
    mask = image[0].long() % 7
    aug = SegmentationAugment((12, 12), scale=(1.0, 1.0))
    for seed in range(6):
        img, m = aug(image, mask, torch.Generator().manual_seed(seed))
        assert torch.equal(m, img[0].long() % 7)


def test_augment_pads_the_mask_with_ignore() -> None:
    image, mask = _sample(10, 10)
    img, m = SegmentationAugment((16, 16), scale=(1.0, 1.0), flip=False)(image, mask)
    assert torch.equal(m[:10, :10], mask) and (m[10:] == 255).all() and (m[:, 10:] == 255).all()
    assert (img[:, 10:] == 0).all()
    batch = collate_segmentation([(img, m), (img, m)])
    assert batch[0].shape == (2, 3, 16, 16) and batch[1].shape == (2, 16, 16)
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\)=\(10, 10\)"):
        SegmentationAugment()(image, mask[:5])


class _PerPixel(torch.nn.Module):
    """A 1x1 convolution: its whole-image and windowed outputs must agree exactly."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[..., :: self.stride, :: self.stride]


def test_sliding_window_equals_the_whole_image_for_a_per_pixel_model() -> None:
    model = _PerPixel()
    x = torch.randn(2, 3, 37, 53)
    expected = model(x)
    out = sliding_window_inference(model, x, window=(16, 20), stride=(10, 7))
    torch.testing.assert_close(out, expected)
    small = sliding_window_inference(model, x[..., :8, :9], window=(16, 20))
    torch.testing.assert_close(small, expected[..., :8, :9])
    torch.testing.assert_close(whole_image_inference(model, x, size_divisor=8), expected)


def test_inference_upsamples_lower_resolution_logits() -> None:
    out = whole_image_inference(_PerPixel(stride=4), torch.randn(1, 3, 30, 30), size_divisor=4)
    assert out.shape == (1, 4, 30, 30)
    with pytest.raises(ValueError, match=r"images must be a \(B, C, H, W\)"):
        whole_image_inference(_PerPixel(), torch.randn(3, 8, 8))
