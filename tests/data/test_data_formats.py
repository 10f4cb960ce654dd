"""Dataset readers: IDX, CIFAR python format, image folders and tars, the decode cache."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_attention.data import (
    DatasetError,
    detect,
    load_cifar,
    load_dataset,
    load_idx,
    load_image_folder,
    read_idx,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FASHION = SHARED / "fashion-mnist"
CIFAR_TAR = SHARED / "cifar10-jpg.tar.gz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written from scratch: magic 0x0000 08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(root: Path, n_train=20, n_test=10, gz=True, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labs)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        arrays[prefix] = (imgs, labs)
    return arrays


# --------------------------------------------------------------------------------- IDX

def test_shared_fashion_mnist_idx():
    d = need(FASHION)
    train = load_idx(d, "train")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.shape == (60000,)
    assert sorted(np.unique(train.labels).tolist()) == list(range(10))
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert train.name == "fashion-mnist" and train.classes[0] == "T-shirt/top"
    test = load_dataset(d, "test")
    assert test.images.shape == (10000, 1, 28, 28)
    # the first training image, parsed independently from the gzip stream
    raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 0x803
    first = np.frombuffer(raw[16 : 16 + 784], np.uint8).reshape(28, 28)
    assert np.array_equal(train.images[0, 0], first)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_idx_dir(tmp_path / "mnist", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_idx(tmp_path / "mnist", split)
        imgs, labs = arrays[prefix]
        assert np.array_equal(ds.images[:, 0], imgs) and np.array_equal(ds.labels, labs)
    assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)]
    src = detect(tmp_path / "mnist")
    assert src.kind == "idx" and src.splits() == ["test", "train"]


def test_idx_truncated_gz_names_file(tmp_path):
    write_idx_dir(tmp_path / "m")
    f = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        load_idx(tmp_path / "m", "train")


def test_idx_truncated_raw_and_wrong_magic(tmp_path):
    write_idx_dir(tmp_path / "m", gz=False)
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte holds .* but its header"):
        load_idx(tmp_path / "m", "train")
    f.write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(DatasetError, match="magic number 0x12340803"):
        read_idx(f)
    # a labels file where images belong: right format, wrong number of dimensions
    labels = (tmp_path / "m" / "train-labels-idx1-ubyte").read_bytes()
    f.write_bytes(labels)
    with pytest.raises(DatasetError, match="expected 0x00000803"):
        load_idx(tmp_path / "m", "train")


def test_idx_missing_split_and_labels(tmp_path):
    write_idx_dir(tmp_path / "m")
    with pytest.raises(DatasetError, match="no IDX files for split 'val'"):
        load_idx(tmp_path / "m", "val")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="labels for split 'test' are missing"):
        load_idx(tmp_path / "m", "test")


# ------------------------------------------------------------------------------- CIFAR

def write_cifar_dir(root: Path, per_batch=6, seed=0) -> dict[str, tuple[np.ndarray, list]]:
    """A fabricated cifar-10-batches-py: two training batches, a test batch and the meta
    file, pickled as the official ones are (dicts of bytes keys, lists and a uint8 array)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    batches = {}
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        obj = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
               b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(obj, protocol=2))
        batches[name] = (data, labels)
    meta = {b"num_cases_per_batch": per_batch,
            b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar_python_dir_and_tar(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    batches = write_cifar_dir(root)
    ds = load_cifar(tmp_path, "train")  # the parent directory works too
    data = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]])
    labels = batches["data_batch_1"][1] + batches["data_batch_2"][1]
    assert ds.images.shape == (12, 3, 32, 32) and ds.labels.tolist() == labels
    assert ds.classes == CIFAR10_CLASSES and ds.name == "cifar10"
    # row layout of the official format: 1024 red, then green, then blue values, row-major
    i, c, y, x = 7, 2, 5, 30
    assert ds.images[i, c, y, x] == data[i, c * 1024 + y * 32 + x]
    test = load_cifar(root, "test")
    assert np.array_equal(test.images.reshape(6, -1), batches["test_batch"][0])

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    src = detect(archive)
    assert (src.kind, src.name) == ("cifar", "cifar10")
    from_tar = src.load("train")
    assert np.array_equal(from_tar.images, ds.images)
    assert np.array_equal(from_tar.labels, ds.labels)
    with pytest.raises(DatasetError, match="not 'val'"):
        load_cifar(root, "val")


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    fine = [3, 99, 0, 42, 7]
    for split in ("train", "test"):
        obj = {b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * 5}
        (root / split).write_bytes(pickle.dumps(obj, protocol=2))
    names = [f"class{i}".encode() for i in range(100)]
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}, protocol=2))
    src = detect(tmp_path)
    assert (src.kind, src.name) == ("cifar", "cifar100")
    ds = src.load("train")
    assert ds.labels.tolist() == fine and len(ds.classes) == 100 and ds.classes[99] == "class99"
    assert np.array_equal(ds.images.reshape(5, -1), data)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_refuses_arbitrary_globals(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(root)
    target = tmp_path / "created-by-pickle"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(str(target))]}
    (root / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetError, match=r"posix\.mkdir is not allowed|os\.mkdir is not allowed"):
        load_cifar(root, "train")
    assert not target.exists()


def test_cifar_truncated_batch(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(root)
    f = root / "test_batch"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(DatasetError, match="test_batch is truncated or corrupt"):
        load_cifar(root, "test")


# ------------------------------------------------------------------------ image folders

def write_png_folder(root: Path, sizes=None, seed=0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """SPLIT/CLASS/x.png with random RGB pixels (PNG is lossless: exact comparisons)."""
    rng = np.random.default_rng(seed)
    made: dict[str, list[tuple[str, np.ndarray]]] = {}
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog", "emu"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                h, w = (sizes or {}).get((split, cls, i), (8, 6))
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
                made.setdefault(split, []).append((cls, arr))
    return made


def test_image_folder_directory_exact_pixels(tmp_path):
    made = write_png_folder(tmp_path / "pets")
    ds = load_image_folder(tmp_path / "pets", "train", cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog", "emu"] and ds.images.shape == (9, 3, 8, 6)
    for k, (cls, arr) in enumerate(made["train"]):  # written in sorted order
        assert ds.labels[k] == ds.classes.index(cls)
        assert np.array_equal(ds.images[k], arr.transpose(2, 0, 1))
    val = load_image_folder(tmp_path / "pets", "val", cache_dir=tmp_path / "cache")
    assert len(val) == 6 and val.extra["cache"] == "hit"
    with pytest.raises(DatasetError, match="split 'test' not found"):
        load_image_folder(tmp_path / "pets", "test", cache_dir=tmp_path / "cache")


def test_image_folder_mixed_sizes_need_img_size(tmp_path):
    write_png_folder(tmp_path / "p", sizes={("train", "dog", 1): (10, 12)})
    with pytest.raises(DatasetError, match="different sizes.*--img-size"):
        load_image_folder(tmp_path / "p", "train", cache=False)
    ds = load_image_folder(tmp_path / "p", "train", img_size=5, cache=False)
    assert ds.images.shape == (9, 3, 5, 5)


def test_image_folder_bad_layout_and_corrupt_image(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="SPLIT/CLASS/IMAGE"):
        load_image_folder(tmp_path / "flat", "train", cache=False)
    write_png_folder(tmp_path / "p")
    (tmp_path / "p" / "train" / "cat" / "001.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode image .*001.png"):
        load_image_folder(tmp_path / "p", "train", cache=False)


def shared_cifar_subset(dest: Path, per_class: int = 3) -> tuple[Path, dict[tuple[str, str], int]]:
    """A small tar.gz of real JPEGs: the first ``per_class`` images of each split/class of
    the shared CIFAR-10 tar, under one top-level directory."""
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(need(CIFAR_TAR), "r|gz") as src, tarfile.open(dest, "w:gz") as out:
        for m in src:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3:
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) >= per_class:
                continue
            taken[key] = taken.get(key, 0) + 1
            data = src.extractfile(m).read()
            info = tarfile.TarInfo("cifar10/" + m.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest, taken


def test_shared_cifar_jpeg_tar_subset_and_cache(tmp_path):
    tar, taken = shared_cifar_subset(tmp_path / "subset.tar.gz")
    assert {k[0] for k in taken} == {"train", "test"}
    cache = tmp_path / "cache"
    src = detect(tar)
    assert src.kind == "folder"
    first = src.load("train", cache_dir=cache)
    assert first.extra["cache"] == "written"
    assert first.classes == CIFAR10_CLASSES
    assert first.images.shape == (30, 3, 32, 32) and np.bincount(first.labels).tolist() == [3] * 10
    # the decoded pixels are what Pillow gives for the same JPEG
    with tarfile.open(tar) as t:
        jpeg = t.extractfile("cifar10/train/airplane/" + sorted(
            n.split("/")[-1] for n in t.getnames() if n.startswith("cifar10/train/airplane/"))[0])
        ref = np.asarray(Image.open(io.BytesIO(jpeg.read())).convert("RGB"))
    assert np.array_equal(first.images[0], ref.transpose(2, 0, 1))
    second = src.load("train", cache_dir=cache)
    assert second.extra["cache"] == "hit"
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert src.splits(cache) == ["test", "train"]
    meta = next(cache.glob("folders/subset-*/meta.json"))
    assert '"classes"' in meta.read_text() and '"fingerprint"' in meta.read_text()
    # a changed source (new mtime) invalidates the cache
    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert src.load("test", cache_dir=cache).extra["cache"] == "written"


def test_process_pool_decode_equals_serial(tmp_path, monkeypatch):
    from beyond_attention.data import folder

    write_png_folder(tmp_path / "p")
    serial, classes, _ = folder.decode_image_folder(tmp_path / "p", workers=1)
    monkeypatch.setattr(folder, "POOL_MIN_IMAGES", 0)
    pooled, classes2, _ = folder.decode_image_folder(tmp_path / "p", workers=2)
    assert classes == classes2 and serial.keys() == pooled.keys()
    for split in serial:
        assert np.array_equal(serial[split][0], pooled[split][0])
        assert np.array_equal(serial[split][1], pooled[split][1])


def test_shared_cifar_tar_listing():
    """The shared CIFAR-10 tar holds 50,000 train and 10,000 test JPEGs in 10 classes
    (listing only; decoding all of it is the slow test below)."""
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(need(CIFAR_TAR), "r|gz") as t:
        for m in t:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3:
                counts[(parts[0], parts[1])] = counts.get((parts[0], parts[1]), 0) + 1
    assert sorted({c for _, c in counts}) == CIFAR10_CLASSES
    assert all(counts[("train", c)] == 5000 and counts[("test", c)] == 1000
               for c in CIFAR10_CLASSES)


@pytest.mark.slow
def test_shared_cifar_tar_full_decode(tmp_path):
    ds = load_image_folder(need(CIFAR_TAR), "train", cache_dir=tmp_path)
    assert ds.images.shape == (50000, 3, 32, 32) and ds.classes == CIFAR10_CLASSES
    assert np.bincount(ds.labels).tolist() == [5000] * 10
    again = load_image_folder(CIFAR_TAR, "test", cache_dir=tmp_path)
    assert again.extra["cache"] == "hit" and len(again) == 10000
