"""Point-cloud readers on small files written by the test in the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beyond_attention.data.base import DatasetError
from beyond_attention.data.points import (
    SHAPENET_PART_CATEGORIES,
    load_modelnet40_h5,
    load_modelnet_off,
    load_shapenet_part_h5,
    read_off,
    sample_surface,
)

h5py = pytest.importorskip("h5py")


def _write_h5(path: Path, **arrays: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def _modelnet_h5(root: Path, n_train: int = 5, n_test: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    data = rng.standard_normal((n_train, 64, 3)).astype(np.float32)
    _write_h5(root / "ply_data_train0.h5", data=data[:3],
              label=np.array([[0], [1], [2]], dtype=np.uint8))
    _write_h5(root / "ply_data_train1.h5", data=data[3:],
              label=np.array([[2], [1]], dtype=np.uint8))
    _write_h5(root / "ply_data_test0.h5", data=data[:n_test], label=np.zeros((n_test, 1), "i4"))
    prefix = "data/modelnet40_ply_hdf5_2048/"
    (root / "train_files.txt").write_text(
        f"{prefix}ply_data_train0.h5\n{prefix}ply_data_train1.h5\n")
    (root / "test_files.txt").write_text(f"{prefix}ply_data_test0.h5\n")
    return data


def test_modelnet40_h5_reads_every_file_in_the_list(tmp_path: Path) -> None:
    data = _modelnet_h5(tmp_path)
    train = load_modelnet40_h5(tmp_path, "train")
    assert train.points.shape == (5, 64, 3) and train.points.dtype == np.float32
    np.testing.assert_array_equal(train.points, data)
    assert train.labels.tolist() == [0, 1, 2, 2, 1]
    assert train.classes == ["airplane", "bathtub", "bed"]
    assert len(load_modelnet40_h5(tmp_path, "test")) == 3


def test_modelnet40_h5_errors_name_the_file(tmp_path: Path) -> None:
    _modelnet_h5(tmp_path)
    bad = tmp_path / "ply_data_train1.h5"
    _write_h5(bad, data=np.zeros((2, 64, 3), np.float32), label=np.array([[0], [7]], "u1"))
    with pytest.raises(DatasetError, match=r"ply_data_train1.h5: labels must lie in \[0, 3\)"):
        load_modelnet40_h5(tmp_path)
    nan = np.zeros((2, 64, 3), np.float32)
    nan[1, 5, 0] = np.nan
    _write_h5(bad, data=nan, label=np.zeros((2, 1), "u1"))
    with pytest.raises(DatasetError, match="NaN"):
        load_modelnet40_h5(tmp_path)
    _write_h5(bad, data=np.zeros((2, 64), np.float32), label=np.zeros((2, 1), "u1"))
    with pytest.raises(DatasetError, match=r"float \(n, P, 3\)"):
        load_modelnet40_h5(tmp_path)
    _write_h5(bad, data=np.zeros((2, 64, 3), np.float32))
    with pytest.raises(DatasetError, match=r"missing dataset\(s\) \['label'\]"):
        load_modelnet40_h5(tmp_path)
    bad.write_bytes(b"\x89HDF\r\n truncated garbage")
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        load_modelnet40_h5(tmp_path)
    bad.unlink()
    with pytest.raises(DatasetError, match="lists 'data/modelnet40_ply_hdf5_2048/ply_data_tr"):
        load_modelnet40_h5(tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_modelnet40_h5(tmp_path, "val")


def _shapenet(root: Path, pid: np.ndarray, label: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    _write_h5(root / "ply_data_train0.h5",
              data=rng.standard_normal((len(label), pid.shape[1], 3)).astype(np.float32),
              label=label.reshape(-1, 1).astype(np.uint8), pid=pid.astype(np.uint8))
    (root / "train_hdf5_file_list.txt").write_text("ply_data_train0.h5\n")


def test_shapenet_part_h5_reads_categories_and_parts(tmp_path: Path) -> None:
    pid = np.array([[0, 1, 3, 2], [47, 48, 49, 47]])
    _shapenet(tmp_path, pid, np.array([0, 15]))
    ds = load_shapenet_part_h5(tmp_path, "train")
    assert ds.labels.tolist() == [0, 15] and ds.classes[15] == "Table"
    np.testing.assert_array_equal(ds.parts, pid)
    assert ds.num_parts == 50 and ds.category_parts == list(SHAPENET_PART_CATEGORIES.values())


def test_shapenet_part_rejects_parts_of_another_category(tmp_path: Path) -> None:
    _shapenet(tmp_path, np.array([[0, 1, 4, 2]]), np.array([0]))
    with pytest.raises(DatasetError, match=r"cloud 0 \(Airplane\) has part labels outside"):
        load_shapenet_part_h5(tmp_path, "train")


def _write_off(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SQUARE = "OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"


def test_read_off_triangulates_and_accepts_the_header_quirk(tmp_path: Path) -> None:
    v, f = read_off(_write_off(tmp_path / "a.off", SQUARE))
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    tri = "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 2 1 0\n"
    assert read_off(_write_off(tmp_path / "t.off", tri))[1].tolist() == [[2, 1, 0]]
    v2, f2 = read_off(_write_off(tmp_path / "b.off", SQUARE.replace("OFF\n4 1 0", "OFF4 1 0")))
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, f)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("PLY\n", "not an OFF file"),
        ("OFF\n4 1 0\n0 0 0\n1 0 0\n", "truncated"),
        (SQUARE.replace("4 0 1 2 3", "3 0 1 9"), r"face indices must lie in \[0, 4\)"),
        (SQUARE.replace("1 1 0", "1 nan 0"), "finite"),
        (SQUARE.replace("4 0 1 2 3", "4 0 1 x 3"), "malformed"),
    ],
)
def test_read_off_rejects_corrupt_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        read_off(_write_off(tmp_path / "bad.off", text))


def test_surface_sampling_is_area_weighted_and_on_the_surface() -> None:
    # two triangles in the plane z = 0 with areas 1/2 and 3
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [0, 3, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 4]])
    rng = np.random.default_rng(0)
    p, face = sample_surface(v, f, 40000, rng)
    assert abs((face == 0).mean() - 1 / 7) < 0.01
    assert np.all(p[:, 2] == 0)
    first = p[face == 0]
    assert np.all(first[:, :2] >= -1e-12) and np.all(first.sum(1) <= 1 + 1e-12)
    # uniform inside a triangle: the mean is its centroid
    np.testing.assert_allclose(first[:, :2].mean(0), [1 / 3, 1 / 3], atol=0.01)


def test_modelnet_off_folder(tmp_path: Path) -> None:
    tetra = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
    _write_off(tmp_path / "chair" / "train" / "chair_0001.off", tetra)
    _write_off(tmp_path / "chair" / "train" / "chair_0002.off", SQUARE)
    _write_off(tmp_path / "airplane" / "train" / "airplane_0001.off", SQUARE)
    _write_off(tmp_path / "airplane" / "test" / "airplane_0002.off", SQUARE)
    ds = load_modelnet_off(tmp_path, "train", num_points=128, seed=3)
    assert ds.classes == ["airplane", "chair"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.points.shape == (3, 128, 3)
    np.testing.assert_allclose(np.linalg.norm(ds.points, axis=2).max(axis=1), 1.0, rtol=1e-6)
    again = load_modelnet_off(tmp_path, "train", num_points=128, seed=3)
    np.testing.assert_array_equal(again.points, ds.points)
    cache = tmp_path / "cache"
    first = load_modelnet_off(tmp_path, "train", num_points=128, seed=3, cache_dir=cache)
    cached = load_modelnet_off(tmp_path, "train", num_points=128, seed=3, cache_dir=cache)
    assert "cache" in cached.extra and "cache" not in first.extra
    np.testing.assert_array_equal(cached.points, ds.points)
    np.testing.assert_array_equal(cached.labels, ds.labels)
    assert len(list(cache.glob("*.npz"))) == 1
    assert len(load_modelnet_off(tmp_path, "test", num_points=16)) == 1
    _write_off(tmp_path / "chair" / "train" / "chair_0003.off", "OFF\n3 1 0\n0 0 0\n0 0 0\n"
               "0 0 0\n3 0 1 2\n")
    with pytest.raises(DatasetError, match="chair_0003.off: mesh has zero surface area"):
        load_modelnet_off(tmp_path, "train", num_points=16)
    with pytest.raises(DatasetError, match="no CLASS/train/ folders"):
        load_modelnet_off(tmp_path / "missing", "train")


def test_missing_h5py_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    _modelnet_h5(tmp_path)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"beyond-attention\[pointclouds\]"):
        load_modelnet40_h5(tmp_path)
