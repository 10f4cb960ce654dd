"""Round trip of the point-cloud file formats: write tiny sets, detect them, load them back.

Writes, in a temporary directory, the three formats ``beyond_attention.data.points`` reads:

- ModelNet40 in HDF5 (``modelnet40_ply_hdf5_2048``): ``ply_data_{train,test}0.h5`` with
  ``data`` (n, 2048, 3) float32 and ``label`` (n, 1) uint8, ``train_files.txt`` /
  ``test_files.txt`` listing them under the path the public release uses, and
  ``shape_names.txt`` with the 40 class names;
- ModelNet as OFF meshes, ``CLASS/{train,test}/*.off`` (one file with ModelNet's header
  quirk, the counts on the ``OFF`` line, and one with a quad face);
- ShapeNet-Part in HDF5 (``hdf5_data``): ``data``, ``label`` (the object category) and
  ``pid`` (n, 2048) part labels, listed in ``{train,val,test}_hdf5_file_list.txt``;

with clouds from the procedural set (:func:`~beyond_attention.data.procedural_points.
procedural_point_clouds`), then runs ``--data`` detection (:func:`beyond_attention.data.
find.detect`) on each folder, loads every split with the readers of
``beyond_attention.data.points``, checks that what comes back is what was written, and
feeds one batch of each through a registered model. It prints counts and shapes.

Run: ``python benchmarks/pointcloud_loaders.py`` (needs h5py, the ``pointclouds`` extra).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from beyond_attention.data.find import detect
from beyond_attention.data.points import (
    SHAPENET_PART_CATEGORIES,
    PointCloudDataset,
    load_modelnet40_h5,
    load_modelnet_off,
    load_shapenet_part_h5,
)
from beyond_attention.data.procedural_points import procedural_point_clouds
from beyond_attention.models import create_model

MODELNET40 = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
    "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar",
    "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano",
    "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)
# each procedural solid stands for a ShapeNet-Part category with at least as many parts
PART_CATEGORIES = ("Airplane", "Car", "Chair", "Lamp", "Motorbike", "Guitar", "Earphone")

CUBE = """OFF
8 6 0
-1 -1 -1
1 -1 -1
1 1 -1
-1 1 -1
-1 -1 1
1 -1 1
1 1 1
-1 1 1
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""
# ModelNet's quirk: the counts on the OFF line; triangles only
TETRA = """OFF4 4 0
0 0 0
2 0 0
0 2 0
0 0 2
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""


def _write_h5(path: Path, **arrays: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def write_modelnet40_h5(root: Path, clouds: dict[str, PointCloudDataset]) -> None:
    root.mkdir(parents=True)
    (root / "shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
    for split, ds in clouds.items():
        name = f"ply_data_{split}0.h5"
        _write_h5(root / name, data=ds.points, label=ds.labels.astype(np.uint8)[:, None])
        (root / f"{split}_files.txt").write_text(f"data/modelnet40_ply_hdf5_2048/{name}\n")


def write_modelnet_off(root: Path) -> None:
    for cls, mesh in (("cube", CUBE), ("tetrahedron", TETRA)):
        for split, copies in (("train", 3), ("test", 1)):
            d = root / cls / split
            d.mkdir(parents=True)
            for i in range(copies):
                (d / f"{cls}_{split}_{i:04d}.off").write_text(mesh)


def shapenet_parts(ds: PointCloudDataset) -> tuple[np.ndarray, np.ndarray]:
    """Categories and ShapeNet-Part part labels for procedural clouds (solid -> category)."""
    names = list(SHAPENET_PART_CATEGORIES)
    cats = np.array([names.index(PART_CATEGORIES[c]) for c in ds.labels])
    local = ds.parts - np.array([ds.category_parts[c][0] for c in ds.labels])[:, None]
    table = [SHAPENET_PART_CATEGORIES[names[c]] for c in cats]
    pid = np.stack([np.asarray(t)[row] for t, row in zip(table, local, strict=True)])
    return cats, pid


def write_shapenet_part_h5(root: Path, clouds: dict[str, PointCloudDataset]) -> None:
    root.mkdir(parents=True)
    for split, ds in clouds.items():
        cats, pid = shapenet_parts(ds)
        name = f"ply_data_{split}0.h5"
        _write_h5(root / name, data=ds.points, label=cats.astype(np.uint8)[:, None],
                  pid=pid.astype(np.uint8))
        (root / f"{split}_hdf5_file_list.txt").write_text(f"{name}\n")


def describe(ds: PointCloudDataset) -> str:
    parts = "" if ds.parts is None else f", parts {ds.parts.shape} {ds.num_parts} labels"
    counts = np.bincount(ds.labels, minlength=len(ds.classes))
    used = {ds.classes[i]: int(n) for i, n in enumerate(counts) if n}
    return (f"{ds.name}/{ds.split}: {len(ds)} clouds, points {ds.points.shape} "
            f"{ds.points.dtype}, labels {ds.labels.shape}{parts}; per class {used}")


def forward(model_name: str, ds: PointCloudDataset, category: bool = False) -> str:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=ds.num_parts if category else len(ds.classes))
    x = torch.from_numpy(ds.points[:2]).transpose(1, 2).contiguous()  # (B, 3, P)
    kw = {"category": torch.from_numpy(ds.labels[:2])} if category else {}
    with torch.no_grad():
        out = model.eval()(x, **kw)
    return f"{model_name}: input {tuple(x.shape)} -> logits {tuple(out.shape)}"


def main() -> None:
    procedural = {split: procedural_point_clouds(n, 2048, seed=s, split=split)
                  for split, n, s in (("train", 14, 0), ("test", 7, 1))}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        h5 = tmp_path / "modelnet40_ply_hdf5_2048"
        off = tmp_path / "ModelNet-off"
        part = tmp_path / "hdf5_data"
        write_modelnet40_h5(h5, procedural)
        write_modelnet_off(off)
        part_splits = {"train": procedural["train"], "val": procedural["test"],
                       "test": procedural["test"]}
        write_shapenet_part_h5(part, part_splits)
        for path in (h5, off, part):
            source = detect(path)
            task = getattr(source, "task", None)  # the task a recognised format serves
            print(f"detect {path.name}: kind {source.kind!r}" + (
                f", task {task}" if task else
                " (not recognised as point-cloud data: the readers below are called directly)"))

        print("ModelNet40 HDF5")
        for split, ds_in in procedural.items():
            ds = load_modelnet40_h5(h5, split)
            assert np.array_equal(ds.points, ds_in.points), "points changed in the round trip"
            assert np.array_equal(ds.labels, ds_in.labels), "labels changed in the round trip"
            print("  " + describe(ds) + "; identical to what was written")
        print("  " + forward("pct_ea", ds))

        print("ModelNet OFF meshes (1024 points sampled per mesh, unit sphere)")
        for split in ("train", "test"):
            ds = load_modelnet_off(off, split, num_points=1024)
            radius = np.linalg.norm(ds.points, axis=2).max(axis=1)
            assert np.allclose(radius, 1.0, atol=1e-5), "not scaled into the unit sphere"
            print("  " + describe(ds) + f"; max radius {radius.max():.4f}")
        print("  " + forward("spct", ds))

        print("ShapeNet-Part HDF5")
        for split, ds_in in part_splits.items():
            ds = load_shapenet_part_h5(part, split)
            cats, pid = shapenet_parts(ds_in)
            assert np.array_equal(ds.points, ds_in.points) and np.array_equal(ds.labels, cats)
            assert np.array_equal(ds.parts, pid), "part labels changed in the round trip"
            print("  " + describe(ds) + "; identical to what was written")
        print("  " + forward("pct_ea_partseg", ds, category=True))


if __name__ == "__main__":
    main()
