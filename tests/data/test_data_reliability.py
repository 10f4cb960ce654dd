"""Image folders are never silently wrong: a stale cache, mixed channels, degenerate class
folders, dropped samples and decode errors, checked with real CIFAR-10 JPEGs and real
Fashion-MNIST images from the shared data."""

from __future__ import annotations

import io
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_attention.data import (
    BatchLoader,
    DatasetError,
    ImageDataset,
    load_dataset,
    load_idx,
    load_image_folder,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_TAR = SHARED / "cifar10-jpg.tar.gz"
FASHION = SHARED / "fashion-mnist"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


def cifar_jpegs(per_class: int = 2, classes: int = 3) -> dict[tuple[str, str], list[bytes]]:
    """The first JPEGs of the first classes of each split of the shared CIFAR-10 tar."""
    out: dict[tuple[str, str], list[bytes]] = {}
    seen: set[str] = set()
    with tarfile.open(need(CIFAR_TAR), "r|gz") as src:
        for m in src:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3:
                continue
            if parts[1] not in seen and len(seen) >= classes:
                continue
            seen.add(parts[1])
            got = out.setdefault((parts[0], parts[1]), [])
            if len(got) < per_class:
                got.append(src.extractfile(m).read())
            if len(out) == 2 * classes and all(len(v) == per_class for v in out.values()):
                break
    return out


def write_cifar_folder(root: Path, **kw) -> dict[tuple[str, str], list[bytes]]:
    jpegs = cifar_jpegs(**kw)
    for (split, cls), blobs in jpegs.items():
        (root / split / cls).mkdir(parents=True)
        for i, b in enumerate(blobs):
            (root / split / cls / f"{i:04d}.jpg").write_bytes(b)
    return jpegs


def fashion_images(n: int) -> np.ndarray:
    """(n, 28, 28) real grey images from the shared Fashion-MNIST IDX files."""
    return load_idx(need(FASHION), "test").images[:n, 0]


# ------------------------------------------------------------------ stale decode cache


def test_moving_an_image_between_classes_invalidates_cache(tmp_path):
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    write_cifar_folder(root)
    first = load_image_folder(root, "train", cache_dir=cache)
    names = first.classes
    a, b = names[0], names[1]
    assert first.extra["cache"] == "written"
    assert load_image_folder(root, "train", cache_dir=cache).extra["cache"] == "hit"
    moved = root / "train" / b / "0000-moved.jpg"
    shutil.move(root / "train" / a / "0000.jpg", moved)  # same size, same mtime
    second = load_image_folder(root, "train", cache_dir=cache)
    assert second.extra["cache"] == "written"
    assert np.bincount(second.labels).tolist() == [1, 3, 2]
    fresh = load_image_folder(root, "train", cache=False)
    assert fresh.extra["cache"] == "off"
    assert np.array_equal(second.labels, fresh.labels)
    assert np.array_equal(second.images, fresh.images)


def test_renaming_a_class_folder_invalidates_cache(tmp_path):
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    write_cifar_folder(root)
    old = load_image_folder(root, "train", cache_dir=cache).classes
    for split in ("train", "test"):
        (root / split / old[0]).rename(root / split / "zzz-renamed")
    new = load_image_folder(root, "train", cache_dir=cache)
    assert new.extra["cache"] == "written"
    assert new.classes == [*old[1:], "zzz-renamed"]


def test_cache_false_reads_and_writes_nothing(tmp_path):
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    write_cifar_folder(root)
    ds = load_dataset(root, "train", dataset="imagefolder", cache_dir=cache, cache=False)
    assert ds.extra["cache"] == "off" and not cache.exists()
    assert load_dataset(root, "train", cache_dir=cache).extra["cache"] == "written"


# --------------------------------------------------------------------- mixed channels


def test_grey_first_then_colour_gives_colour_dataset(tmp_path):
    root = tmp_path / "mixed"
    jpegs = cifar_jpegs(per_class=1, classes=2)
    grey = fashion_images(1)[0]
    for (split, cls), blobs in jpegs.items():
        (root / split / cls).mkdir(parents=True)
        (root / split / cls / "b.jpg").write_bytes(blobs[0])
    # sorts first of the whole folder: a real Fashion-MNIST grey image (28x28, resized)
    split, first_cls = sorted(jpegs)[0]
    Image.fromarray(grey, "L").save(root / split / first_cls / "a.png")
    ds = load_image_folder(root, split, img_size=32, cache=False)
    assert ds.channels == 3 and ds.images.shape == (3, 3, 32, 32)
    g = ds.images[0]
    assert np.array_equal(g[0], g[1]) and np.array_equal(g[1], g[2])  # grey replicated
    ref = np.asarray(Image.fromarray(grey, "L").resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(g[0], ref)
    colour = np.asarray(Image.open(io.BytesIO(jpegs[(split, first_cls)][0])).convert("RGB"))
    assert np.array_equal(ds.images[1], colour.transpose(2, 0, 1))


def test_mixed_channels_in_a_tar(tmp_path):
    grey = fashion_images(4)
    tar_path = tmp_path / "mixed.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i, (cls, mode) in enumerate([("a", "L"), ("a", "RGB"), ("b", "L"), ("b", "L")]):
            arr = grey[i] if mode == "L" else np.stack([grey[i], grey[i] // 2, 255 - grey[i]], -1)
            buf = io.BytesIO()
            Image.fromarray(arr, mode).save(buf, format="PNG")
            info = tarfile.TarInfo(f"top/train/{cls}/{i}.png")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    ds = load_image_folder(tar_path, "train", cache=False)
    assert ds.channels == 3
    assert np.array_equal(ds.images[0], np.repeat(grey[0][None], 3, 0))
    assert np.array_equal(ds.images[1, 2], 255 - grey[1])


def test_all_grey_stays_grey_and_other_modes_are_sensible(tmp_path):
    grey = fashion_images(6)
    root = tmp_path / "modes"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
    Image.fromarray(grey[0], "L").save(root / "train" / "a" / "0-l.png")
    Image.fromarray(grey[1].astype(np.uint16) * 257).save(root / "train" / "a" / "1-i16.png")
    Image.fromarray(grey[2], "L").convert("1").save(root / "train" / "b" / "2-bw.png")
    Image.fromarray(grey[3], "L").convert("LA").save(root / "train" / "b" / "3-la.png")
    ds = load_image_folder(root, "train", cache=False)
    assert ds.channels == 1
    assert np.array_equal(ds.images[0, 0], grey[0])
    assert np.array_equal(ds.images[1, 0], grey[1])  # 16-bit scaled back, not clipped
    assert set(np.unique(ds.images[2])) <= {0, 255}
    assert np.array_equal(ds.images[3, 0], grey[3])
    # palette, RGBA and CMYK make it colour; alpha is dropped, palette keeps its colours
    rgb = np.stack([grey[4], grey[5], grey[4] // 3], -1)
    Image.fromarray(rgb).convert("RGBA").save(root / "train" / "a" / "4-rgba.png")
    Image.fromarray(rgb).quantize(16).save(root / "train" / "b" / "5-p.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "train" / "b" / "6-cmyk.jpg", quality=100)
    ds = load_image_folder(root, "train", cache=False)
    assert ds.channels == 3 and len(ds) == 7
    assert np.array_equal(ds.images[2], rgb.transpose(2, 0, 1))  # the RGBA image, sorted 3rd
    pal = np.asarray(Image.open(root / "train" / "b" / "5-p.png").convert("RGB"))
    assert np.array_equal(ds.images[5], pal.transpose(2, 0, 1))


# ------------------------------------------------------------------- degenerate data


def test_single_class_is_refused(tmp_path):
    root = tmp_path / "one"
    (root / "train" / "only").mkdir(parents=True)
    for i, g in enumerate(fashion_images(3)):
        Image.fromarray(g).save(root / "train" / "only" / f"{i}.png")
    with pytest.raises(DatasetError, match=r"1 class \(only\).*at least two class"):
        load_image_folder(root, "train", cache=False)


def test_empty_class_folders_are_named_in_a_warning(tmp_path):
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    write_cifar_folder(root)
    (root / "train" / "yak").mkdir()
    (root / "test" / "zebra").mkdir()
    for attempt in ("written", "hit"):
        with pytest.warns(UserWarning, match=r"2 class folder.*train/yak, test/zebra|"
                                             r"2 class folder.*test/zebra, train/yak"):
            ds = load_image_folder(root, "train", cache_dir=cache)
        assert ds.extra["cache"] == attempt and "yak" not in ds.classes


def test_no_warning_for_a_clean_folder(tmp_path):
    root = tmp_path / "cifar"
    write_cifar_folder(root)
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_image_folder(root, "train", cache=False)
    assert len(ds.classes) == 3


def _dataset(n: int) -> ImageDataset:
    return ImageDataset(np.zeros((n, 1, 2, 2), np.uint8), np.arange(n) % 2, ["a", "b"])


@pytest.mark.parametrize(("n", "batch", "world", "dropped"),
                         [(10, 4, 1, 2), (12, 4, 1, 0), (3, 4, 1, 0), (11, 3, 2, 0), (13, 2, 2, 1)])
def test_loader_reports_dropped_samples(n, batch, world, dropped):
    for rank in range(world):
        loader = BatchLoader(_dataset(n), batch, shuffle=True, drop_last=True, rank=rank,
                             world_size=world)
        seen = sum(len(y) for _, y in loader)
        assert loader.dropped_per_epoch == dropped
        assert seen + loader.dropped_per_epoch == loader.shard_size
    assert BatchLoader(_dataset(n), batch).dropped_per_epoch == 0


# ------------------------------------------------------------- decode errors name files


def test_corrupt_first_image_names_the_file(tmp_path):
    root = tmp_path / "cifar"
    write_cifar_folder(root)
    first = sorted((root / "test").iterdir())[0] / "0000.jpg"
    first.write_bytes(b"\x00garbage")
    with pytest.raises(DatasetError, match=rf"cannot decode image .*{first.parent.name}/0000.jpg"):
        load_image_folder(root, "train", cache=False)


def test_truncated_first_jpeg_names_the_file(tmp_path):
    root = tmp_path / "cifar"
    write_cifar_folder(root)
    first = sorted((root / "test").iterdir())[0] / "0000.jpg"
    first.write_bytes(first.read_bytes()[:200])
    with pytest.raises(DatasetError, match=rf"cannot decode image .*{first.parent.name}/0000.jpg"):
        load_image_folder(root, "train", cache=False)


def test_corrupt_tar_member_names_archive_and_member(tmp_path):
    jpegs = cifar_jpegs(per_class=1, classes=2)
    tar_path = tmp_path / "bad.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for (split, cls), blobs in sorted(jpegs.items()):
            data = blobs[0][:150] if (split, cls) == sorted(jpegs)[0] else blobs[0]
            info = tarfile.TarInfo(f"cifar10/{split}/{cls}/0.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    split, cls = sorted(jpegs)[0]
    with pytest.raises(DatasetError, match=rf"bad\.tar\.gz \(archive member cifar10/{split}/"
                                           rf"{cls}/0\.jpg\)"):
        load_image_folder(tar_path, "train", cache=False)


def test_one_fingerprint_per_load(tmp_path, monkeypatch):
    """Hashing a large folder's paths costs a stat per image: done once per load."""
    from beyond_attention.data import folder

    root, cache = tmp_path / "cifar", tmp_path / "cache"
    write_cifar_folder(root)
    calls = []
    real = folder.fingerprint
    monkeypatch.setattr(folder, "fingerprint", lambda p: calls.append(p) or real(p))
    assert load_image_folder(root, "train", cache_dir=cache).extra["cache"] == "written"
    assert load_image_folder(root, "train", cache_dir=cache).extra["cache"] == "hit"
    assert len(calls) == 2
    load_image_folder(root, "train", cache=False)
    assert len(calls) == 2
