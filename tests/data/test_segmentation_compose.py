"""The segmentation set composed from the real Fashion-MNIST images, read back as VOC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beyond_attention.data.find import repo_data_dir
from beyond_attention.data.seg_compose import compose_fashion_segmentation, main
from beyond_attention.data.segmentation import load_voc

FASHION = repo_data_dir() / "fashion-mnist"


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared Fashion-MNIST not found at {FASHION}")
    out = tmp_path_factory.mktemp("composed")
    assert main([str(out), "--fashion", str(FASHION), "--train", "4", "--val", "3",
                 "--size", "64", "--seed", "3"]) == 0
    return out


def test_written_in_voc_layout_and_read_by_the_loader(composed: Path) -> None:
    train, val = load_voc(composed, "train"), load_voc(composed, "val")
    assert len(train) == 4 and len(val) == 3
    assert train.classes[0] == "background" and train.classes[10] == "Ankle boot"
    for image, mask in zip(train.images + val.images, train.masks + val.masks, strict=True):
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        labels = set(np.unique(mask).tolist())
        assert 0 in labels and len(labels) >= 2 and max(labels) <= 10
        # item pixels are brighter than the background (JPEG keeps that, roughly)
        assert image[0][mask > 0].mean() > image[0][mask == 0].mean() + 40


def test_deterministic_by_seed(composed: Path, tmp_path: Path) -> None:
    again = compose_fashion_segmentation(tmp_path, FASHION, 4, 3, size=64, seed=3)
    for a, b in zip(load_voc(composed, "val").masks, load_voc(again, "val").masks,
                    strict=True):
        np.testing.assert_array_equal(a, b)
    other = compose_fashion_segmentation(tmp_path / "o", FASHION, 0, 3, size=64, seed=4)
    assert any(not np.array_equal(a, b) for a, b in
               zip(load_voc(composed, "val").masks, load_voc(other, "val").masks, strict=True))
