"""Point-cloud datasets: ModelNet40 (HDF5 or OFF meshes) and ShapeNet-Part (HDF5).

Formats read:

- ModelNet40 in the widely used HDF5 form (``modelnet40_ply_hdf5_2048``): HDF5 files with
  ``data`` (n, 2048, 3) float and ``label`` (n, 1) int, listed in ``train_files.txt`` and
  ``test_files.txt`` (one path a line; only the file name is used, so the lists may keep
  the paths they were written with), class names in ``shape_names.txt``.
- ModelNet40 as meshes: ``ROOT/CLASS/train/*.off`` and ``ROOT/CLASS/test/*.off``, each
  mesh turned into ``num_points`` points by area-weighted surface sampling.
- ShapeNet-Part in its HDF5 form (``hdf5_data``): files with ``data`` (n, 2048, 3),
  ``label`` (n, 1) the object category and ``pid`` (n, 2048) the part label of every
  point, listed in ``{train,val,test}_hdf5_file_list.txt``.

Every reader validates what it reads (shapes, dtypes, finite coordinates, labels in
range) and raises :class:`~beyond_attention.data.base.DatasetError` naming the file.
HDF5 needs ``h5py`` (the ``pointclouds`` extra), imported only when an HDF5 file is read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from .base import DatasetError

__all__ = [
    "SHAPENET_PART_CATEGORIES",
    "PointCloudDataset",
    "load_modelnet40_h5",
    "load_modelnet_off",
    "load_shapenet_part_h5",
    "read_off",
    "sample_surface",
]

# ShapeNet-Part's 16 categories and their part labels (50 in all), in label order.
SHAPENET_PART_CATEGORIES: dict[str, list[int]] = {
    "Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Car": [8, 9, 10, 11],
    "Chair": [12, 13, 14, 15], "Earphone": [16, 17, 18], "Guitar": [19, 20, 21],
    "Knife": [22, 23], "Lamp": [24, 25, 26, 27], "Laptop": [28, 29],
    "Motorbike": [30, 31, 32, 33, 34, 35], "Mug": [36, 37], "Pistol": [38, 39, 40],
    "Rocket": [41, 42, 43], "Skateboard": [44, 45, 46], "Table": [47, 48, 49],
}


@dataclass
class PointCloudDataset:
    """One split of a point-cloud dataset, held in memory.

    Attributes:
        points: ``(n, P, 3)`` float32 coordinates (channels last, as stored; the models take
            ``(B, 3, P)``: transpose a batch once).
        labels: ``(n,)`` int64 class (or, for part segmentation, object category) indices.
        classes: class names; ``labels`` index into it.
        parts: ``(n, P)`` int64 part label of every point, or ``None``.
        category_parts: for part segmentation, the part labels of each class.
        name, split, source: the record of where the data came from.
    """

    points: np.ndarray
    labels: np.ndarray
    classes: list[str]
    parts: np.ndarray | None = None
    category_parts: list[list[int]] | None = None
    name: str = "points"
    split: str = "train"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.points
        if not isinstance(p, np.ndarray) or p.ndim != 3 or p.shape[-1] != 3:
            raise DatasetError(f"{self.source or self.name}: points must be an (n, P, 3) "
                               f"array, got {getattr(p, 'shape', type(p).__name__)}")
        if not np.isfinite(p).all():
            raise DatasetError(f"{self.source or self.name}: points contain NaN or infinite "
                               "coordinates")
        self.points = p.astype(np.float32, copy=False)
        self.labels = np.asarray(self.labels).reshape(-1).astype(np.int64, copy=False)
        if self.labels.shape != (len(p),):
            raise DatasetError(f"{self.source or self.name}: {len(self.labels)} labels for "
                               f"{len(p)} clouds")
        if len(p) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DatasetError(
                f"{self.source or self.name}: labels must lie in [0, {len(self.classes)}), "
                f"got [{self.labels.min()}, {self.labels.max()}]"
            )
        if self.parts is not None:
            self.parts = np.asarray(self.parts).astype(np.int64, copy=False)
            if self.parts.shape != p.shape[:2]:
                raise DatasetError(f"{self.source or self.name}: parts must have shape "
                                   f"{p.shape[:2]}, got {self.parts.shape}")

    def __len__(self) -> int:
        return len(self.points)

    @property
    def num_points(self) -> int:
        return self.points.shape[1]

    @property
    def num_parts(self) -> int:
        """Part labels in all (0 without part labels)."""
        if self.category_parts:
            return 1 + max(max(p) for p in self.category_parts)
        return 0 if self.parts is None else int(self.parts.max()) + 1


# ----------------------------------------------------------------------------- HDF5

def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading HDF5 point clouds needs h5py: pip install 'beyond-attention[pointclouds]'"
        ) from err
    return h5py


def _read_h5(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DatasetError(f"{path}: missing dataset(s) {missing}; found {list(f)}")
            return {k: np.asarray(f[k][()]) for k in keys}
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({err})") from err


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _list_files(root: Path, list_name: str) -> list[Path]:
    """The files a list names, found in ``root`` by their file name."""
    files = []
    for line in _read_lines(root / list_name):
        path = root / Path(line).name
        if not path.is_file():
            raise DatasetError(f"{root / list_name} lists {line!r}, not found as {path}")
        files.append(path)
    if not files:
        raise DatasetError(f"{root / list_name} lists no files")
    return files


def _check_cloud_arrays(path: Path, data: np.ndarray, label: np.ndarray) -> np.ndarray:
    if data.ndim != 3 or data.shape[-1] != 3 or not np.issubdtype(data.dtype, np.floating):
        raise DatasetError(f"{path}: 'data' must be a float (n, P, 3) array, got "
                           f"{data.dtype} {data.shape}")
    if not np.isfinite(data).all():
        raise DatasetError(f"{path}: 'data' contains NaN or infinite coordinates")
    if not np.issubdtype(label.dtype, np.integer) or label.size != len(data) or (
            label.ndim == 2 and label.shape[1] != 1) or label.ndim > 2:
        raise DatasetError(f"{path}: 'label' must be an integer (n, 1) array with "
                           f"n={len(data)}, got {label.dtype} {label.shape}")
    return label.reshape(-1)


def load_modelnet40_h5(root: str | Path, split: str = "train") -> PointCloudDataset:
    """ModelNet40 from its HDF5 form (``modelnet40_ply_hdf5_2048``); ``split`` train/test."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    classes = _read_lines(root / "shape_names.txt")
    points, labels = [], []
    for path in _list_files(root, f"{split}_files.txt"):
        arrays = _read_h5(path, ("data", "label"))
        label = _check_cloud_arrays(path, arrays["data"], arrays["label"])
        if len(label) and (label.min() < 0 or label.max() >= len(classes)):
            raise DatasetError(f"{path}: labels must lie in [0, {len(classes)}) "
                               f"(shape_names.txt), got [{label.min()}, {label.max()}]")
        points.append(arrays["data"].astype(np.float32))
        labels.append(label)
    if len({p.shape[1] for p in points}) > 1:
        raise DatasetError(f"{root}: files hold different numbers of points per cloud")
    return PointCloudDataset(np.concatenate(points), np.concatenate(labels), classes,
                             name="modelnet40", split=split, source=str(root))


def load_shapenet_part_h5(root: str | Path, split: str = "train") -> PointCloudDataset:
    """ShapeNet-Part from its HDF5 form; ``split`` train/val/test.

    ``labels`` are the 16 object categories (:data:`SHAPENET_PART_CATEGORIES` order) and
    ``parts`` the 50 part labels; each point's part must belong to its cloud's category.
    """
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    classes = list(SHAPENET_PART_CATEGORIES)
    category_parts = list(SHAPENET_PART_CATEGORIES.values())
    owner = np.full(50, -1)
    for c, parts in enumerate(category_parts):
        owner[parts] = c
    points, labels, pids = [], [], []
    for path in _list_files(root, f"{split}_hdf5_file_list.txt"):
        arrays = _read_h5(path, ("data", "label", "pid"))
        label = _check_cloud_arrays(path, arrays["data"], arrays["label"])
        pid = arrays["pid"]
        if pid.shape != arrays["data"].shape[:2] or not np.issubdtype(pid.dtype, np.integer):
            raise DatasetError(f"{path}: 'pid' must be an integer {arrays['data'].shape[:2]} "
                               f"array, got {pid.dtype} {pid.shape}")
        if len(label) and (label.min() < 0 or label.max() >= 16):
            raise DatasetError(f"{path}: category labels must lie in [0, 16)")
        if pid.size and (pid.min() < 0 or pid.max() >= 50):
            raise DatasetError(f"{path}: part labels must lie in [0, 50)")
        wrong = owner[pid] != label[:, None]
        if wrong.any():
            i = int(np.argwhere(wrong)[0, 0])
            raise DatasetError(f"{path}: cloud {i} ({classes[label[i]]}) has part labels "
                               f"outside its category's {category_parts[label[i]]}")
        points.append(arrays["data"].astype(np.float32))
        labels.append(label)
        pids.append(pid.astype(np.int64))
    return PointCloudDataset(np.concatenate(points), np.concatenate(labels), classes,
                             parts=np.concatenate(pids), category_parts=category_parts,
                             name="shapenet-part", split=split, source=str(root))


# ----------------------------------------------------------------------------- OFF meshes

def _parse_vertices(lines: list[str]) -> np.ndarray:
    """(V, 3) from ``x y z`` lines (extra columns, colours for instance, are dropped)."""
    flat = np.array(" ".join(lines).split(), dtype=np.float64)
    if flat.size == 3 * len(lines):
        return flat.reshape(-1, 3)
    return np.array([[float(v) for v in ln.split()[:3]] for ln in lines])


def _parse_faces(lines: list[str]) -> np.ndarray:
    """(F', 3) triangles from ``k i_1 ... i_k`` lines; polygons split into fans."""
    flat = np.array(" ".join(lines).split(), dtype=np.int64)
    if flat.size == 4 * len(lines) and np.all(flat[::4] == 3):  # all triangles: fast path
        return flat.reshape(-1, 4)[:, 1:]
    faces = []
    for ln in lines:
        vals = [int(v) for v in ln.split()]
        k, idx = vals[0], vals[1:1 + vals[0]]
        if k < 3 or len(idx) != k:
            raise ValueError(f"face line {ln!r}")
        faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, k - 1))
    return np.asarray(faces, dtype=np.int64)


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangles (F, 3) int64 of an OFF mesh.

    Accepts the ModelNet quirk of the counts on the header line (``OFF490 518 0``);
    polygons with more than three corners are split into triangle fans.
    """
    path = Path(path)
    try:
        tokens = path.read_text(errors="strict").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read as a text OFF file ({err})") from err
    lines = [ln.split("#")[0].strip() for ln in tokens]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise DatasetError(f"{path}: not an OFF file (first line must start with 'OFF')")
    head = lines[0][3:].strip()
    body = lines[1:]
    if not head:
        if not body:
            raise DatasetError(f"{path}: OFF file without counts")
        head, body = body[0], body[1:]
    try:
        nv, nf = (int(v) for v in head.split()[:2])
    except ValueError as err:
        raise DatasetError(f"{path}: bad OFF counts line {head!r}") from err
    if nv <= 0 or nf <= 0 or len(body) < nv + nf:
        raise DatasetError(f"{path}: OFF file declares {nv} vertices and {nf} faces but has "
                           f"{len(body)} data lines (truncated?)")
    try:
        verts = _parse_vertices(body[:nv])
        faces_arr = _parse_faces(body[nv:nv + nf])
    except (ValueError, IndexError) as err:
        raise DatasetError(f"{path}: malformed OFF data ({err})") from err
    if verts.shape != (nv, 3) or not np.isfinite(verts).all():
        raise DatasetError(f"{path}: vertices must be {nv} finite (x, y, z) triples")
    if faces_arr.min() < 0 or faces_arr.max() >= nv:
        raise DatasetError(f"{path}: face indices must lie in [0, {nv})")
    return verts, faces_arr


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples of a triangle mesh's surface.

    Faces are drawn with probability proportional to their area, then a point uniformly
    inside each drawn triangle: ``(1 - sqrt(u)) a + sqrt(u) (1 - v) b + sqrt(u) v c``.

    Returns points (num_points, 3) float64 and the face index of each point (num_points,).
    """
    tri = vertices[faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise DatasetError("mesh has zero surface area: nothing to sample")
    face = rng.choice(len(faces), size=num_points, p=area / total)
    u, v = rng.random((2, num_points, 1))
    su = np.sqrt(u)
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    return (1 - su) * a + su * (1 - v) * b + su * v * c, face


def _off_cache_file(cache_dir: Path, root: Path, files: list[Path], split: str,
                    num_points: int, seed: int, normalize: bool) -> Path:
    h = hashlib.sha256(f"{split}|{num_points}|{seed}|{normalize}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return cache_dir / f"modelnet-off-{split}-{num_points}-{h.hexdigest()[:16]}.npz"


def load_modelnet_off(root: str | Path, split: str = "train", num_points: int = 1024,
                      seed: int = 0, normalize: bool = True,
                      cache_dir: str | Path | None = None) -> PointCloudDataset:
    """ModelNet (10 or 40) from its OFF meshes, ``ROOT/CLASS/{train,test}/*.off``.

    Each mesh is sampled to ``num_points`` points (:func:`sample_surface`, deterministic
    by ``seed`` and the file's position), then, with ``normalize``, centred and scaled into
    the unit sphere as the HDF5 release is. Classes are the sorted folder names. With
    ``cache_dir``, the sampled clouds are saved there (``.npz``, written atomically, keyed
    by the files' names, sizes and times and the arguments) and read back next time.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if num_points <= 0:
        raise ValueError(f"num_points must be positive, got {num_points}")
    classes = sorted(d.name for d in root.iterdir() if (d / split).is_dir()) if root.is_dir() \
        else []
    if not classes:
        raise DatasetError(f"{root}: no CLASS/{split}/ folders of OFF meshes found")
    files = [(c, i, path) for c, name in enumerate(classes)
             for i, path in enumerate(sorted((root / name / split).glob("*.off")))]
    cache = None
    if cache_dir is not None and files:
        cache = _off_cache_file(Path(cache_dir), root, [f for _, _, f in files], split,
                                num_points, seed, normalize)
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                return PointCloudDataset(z["points"], z["labels"], classes,
                                         name=root.name or "modelnet", split=split,
                                         source=str(root), extra={"cache": str(cache)})
    points, labels = [], []
    for c, i, path in files:
        verts, faces = read_off(path)
        rng = np.random.default_rng([seed, c, i])
        try:
            pts, _ = sample_surface(verts, faces, num_points, rng)
        except DatasetError as err:
            raise DatasetError(f"{path}: {err}") from err
        if normalize:
            pts = pts - pts.mean(0)
            pts = pts / max(np.linalg.norm(pts, axis=1).max(), 1e-12)
        points.append(pts.astype(np.float32))
        labels.append(c)
    if not points:
        raise DatasetError(f"{root}: no .off files in any CLASS/{split}/ folder")
    stacked, label_arr = np.stack(points), np.asarray(labels, dtype=np.int64)
    if cache is not None:
        atomic_write(cache, lambda f: np.savez(f, points=stacked, labels=label_arr))
    return PointCloudDataset(stacked, label_arr, classes, name=root.name or "modelnet",
                             split=split, source=str(root))
