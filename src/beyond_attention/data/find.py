"""Finding a dataset and recognising its format.

Search order for the data of a run:

1. an explicit path (``--data PATH``): a CIFAR python-format directory or archive, a folder
   of MNIST-style IDX files, an image folder (``SPLIT/CLASS/IMAGE``) or a tar of one; for
   the other tasks a segmentation set (Pascal VOC's layout, or ``images/`` + ``masks/``
   folders, perhaps under split folders), ModelNet40 in HDF5 (``shape_names.txt`` +
   ``train_files.txt``) or as OFF meshes (``CLASS/train/*.off``), or ShapeNet-Part in HDF5
   (``train_hdf5_file_list.txt``); ``--dataset procedural-points`` needs no path (the
   offline set of :mod:`~beyond_attention.data.procedural_points`);
2. the environment variable ``BEYOND_ATTENTION_DATA``: a directory holding datasets under
   their usual names (``cifar-10-batches-py``, ``fashion-mnist``, ...), or one dataset;
3. standard places: the ``shared/data`` directory beside this repository's checkout,
   ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` package installs
   ``/usr/share/datasets/fashion-mnist``), and the per-user cache's downloads;
4. only with ``download=True`` (``--download``): the official address, checksum-verified.

With ``dataset="auto"`` and no path, the default dataset is CIFAR-10 if it is found
anywhere (the official python batches, or the JPEG image-folder tar
``cifar10-jpg.tar.gz``), else Fashion-MNIST; with ``--download`` it is CIFAR-10.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .base import DatasetError, ImageDataset
from .cache import resolve_cache_dir
from .cifar import CIFAR10_DIR, CIFAR100_DIR, cifar_root, cifar_variant, load_cifar
from .downloads import DOWNLOADS, download, download_dir
from .folder import folder_splits, is_tar, load_image_folder, source_stem
from .idx import _FILE_RE, guess_idx_name, idx_splits, load_idx

DATA_ENV = "BEYOND_ATTENTION_DATA"
DATASET_NAMES = ("auto", "cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder",
                 "procedural-points")
PROCEDURAL_POINTS = "procedural-points"

#: The data formats of each kind of task: what a :class:`DataSource`'s ``kind`` holds.
KIND_TASKS: dict[str, str] = {
    "cifar": "image_classification", "idx": "image_classification",
    "folder": "image_classification", "voc": "semantic_segmentation",
    "maskfolder": "semantic_segmentation", "modelnet_h5": "pointcloud_classification",
    "modelnet_off": "pointcloud_classification", "procedural": "pointcloud",
    "shapenet_part_h5": "pointcloud_part_segmentation",
}
#: How each kind is described in error messages.
KIND_NAMES: dict[str, str] = {
    "cifar": "a CIFAR image-classification set", "idx": "an IDX image-classification set",
    "folder": "an image-classification folder", "voc": "a VOC-layout segmentation set",
    "maskfolder": "an images/ + masks/ segmentation set",
    "modelnet_h5": "a ModelNet40 HDF5 point-cloud set",
    "modelnet_off": "a ModelNet OFF-mesh point-cloud set",
    "procedural": "the procedural point-cloud set",
    "shapenet_part_h5": "a ShapeNet-Part HDF5 part-segmentation set",
}
DEFAULT_DATASETS = ("cifar10", "fashion-mnist")

# names a dataset goes by under a data directory, in order of preference
CANDIDATES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10-jpg.tar.gz",
                "cifar10.tar.gz", "cifar10"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", "cifar100"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST/raw"),
}


@dataclass(frozen=True)
class DataSource:
    """A located dataset: its path, format (``cifar``, ``idx`` or ``folder`` for image
    classification; the others in :data:`KIND_TASKS`) and name."""

    path: Path
    kind: str
    name: str

    @property
    def task(self) -> str:
        """The task its format serves (:data:`KIND_TASKS`; ``pointcloud`` for the
        procedural set, which has both class and part labels)."""
        return KIND_TASKS[self.kind]

    def serves(self, task: str) -> bool:
        """Whether a model of ``task`` (``ModelConfig.task``) can train on this data."""
        return self.task == task or (self.task == "pointcloud" and task.startswith("pointcloud"))

    def load(self, split: str, img_size: int | None = None,
             cache_dir: str | Path | None = None, cache: bool = True) -> ImageDataset:
        """Load one split (see :func:`load_dataset`); ``cache=False`` bypasses the decode
        cache of image folders (``--no-cache``)."""
        if self.kind == "cifar":
            return load_cifar(self.path, split)
        if self.kind == "idx":
            return load_idx(self.path, split, name=self.name)
        if self.kind != "folder":
            raise DatasetError(f"{self.path} is {KIND_NAMES[self.kind]}, not image "
                               f"classification data; read it with the task's loader "
                               f"(beyond_attention.train.task_data.load_split)")
        return load_image_folder(self.path, split, img_size=img_size, cache_dir=cache_dir,
                                 cache=cache, name=self.name)

    def splits(self, cache_dir: str | Path | None = None,
               img_size: int | None = None) -> list[str] | None:
        """The split names, or None when they cannot be known without decoding."""
        if self.kind == "cifar":
            return ["test", "train"]
        if self.kind == "idx":
            return sorted(idx_splits(self.path))
        if self.kind in KIND_TASKS and self.kind not in ("folder", "cifar", "idx"):
            return task_splits(self)
        return folder_splits(self.path, cache_dir, img_size)


def repo_data_dir() -> Path:
    """``shared/data`` beside the checkout this package runs from (may not exist)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def standard_roots() -> list[Path]:
    """Directories searched for datasets under their usual names, in order."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    roots += [repo_data_dir(), Path("/usr/share/datasets")]
    return roots


def _tar_top_dirs(path: Path, limit: int = 64) -> set[str]:
    """Names of the first path components seen in the first ``limit`` tar members."""
    names: set[str] = set()
    try:
        with tarfile.open(path, "r|*") as tar:
            for i, m in enumerate(tar):
                names.update(p for p in PurePosixPath(m.name).parts[:2] if p not in (".", "/"))
                if i + 1 >= limit:
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"archive {path} is truncated or corrupt ({e})") from None
    return names


def _cifar_variant_of(path: Path) -> str | None:
    root = cifar_root(path)
    if not root.is_dir():
        return None
    return cifar_variant({p.name for p in root.iterdir() if p.is_file()})


def task_splits(source: DataSource) -> list[str]:
    """The split names of a segmentation or point-cloud source, from its list files."""
    root = source.path
    if source.kind == "voc":
        return sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
    if source.kind == "maskfolder":
        if (root / "images").is_dir():
            return ["all"]
        return sorted(d.name for d in root.iterdir() if (d / "images").is_dir())
    if source.kind == "modelnet_h5":
        return [s for s in ("test", "train") if (root / f"{s}_files.txt").is_file()]
    if source.kind == "shapenet_part_h5":
        return [s for s in ("test", "train", "val")
                if (root / f"{s}_hdf5_file_list.txt").is_file()]
    if source.kind == "modelnet_off":
        return [s for s in ("test", "train") if any(root.glob(f"*/{s}/*.off"))]
    return ["test", "train"]  # procedural: drawn with one seed per split


def _task_kind(path: Path) -> str | None:
    """The segmentation or point-cloud format of a directory, or None."""
    if (path / "ImageSets" / "Segmentation").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "maskfolder"
    if any((d / "images").is_dir() and (d / "masks").is_dir()
           for d in path.iterdir() if d.is_dir()):
        return "maskfolder"
    if (path / "shape_names.txt").is_file() and (path / "train_files.txt").is_file():
        return "modelnet_h5"
    if any(path.glob("*_hdf5_file_list.txt")):
        return "shapenet_part_h5"
    for d in sorted(path.iterdir())[:8]:
        if d.is_dir() and any(next((d / s).glob("*.off"), None) is not None
                              for s in ("train", "test") if (d / s).is_dir()):
            return "modelnet_off"
    return None


def detect(path: str | Path, dataset: str = "auto") -> DataSource:
    """Recognise the format of the dataset at ``path``.

    Args:
        path: a directory, tar archive, or one IDX file (its folder is used).
        dataset: ``auto`` or a name from :data:`DATASET_NAMES`; a name sets the dataset's
            name for the record and is checked against what is found (``imagefolder``
            forces the image-folder reader).
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {dataset!r}")
    if dataset == PROCEDURAL_POINTS:
        raise DatasetError("--dataset procedural-points is generated, not read: leave --data "
                           "out")
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(
            f"data path {path} does not exist; pass an existing dataset with --data, or "
            f"leave --data out to search the standard places"
        )
    if path.is_file() and _FILE_RE.match(path.name):
        path = path.parent
    named = None if dataset in ("auto", "imagefolder") else dataset
    task_kind = _task_kind(path) if path.is_dir() and dataset == "auto" else None
    if dataset == "imagefolder":
        found = DataSource(path, "folder", source_stem(path))
    elif task_kind is not None:
        return DataSource(path, task_kind, path.name)
    elif path.is_dir() and _cifar_variant_of(path) is not None:
        found = DataSource(cifar_root(path), "cifar", _cifar_variant_of(path) or "")
    elif path.is_dir() and idx_splits(path):
        found = DataSource(path, "idx", named or guess_idx_name(path))
    elif path.is_dir():
        found = DataSource(path, "folder", source_stem(path))
    elif is_tar(path):
        tops = _tar_top_dirs(path)
        if CIFAR10_DIR in tops or CIFAR100_DIR in tops:
            found = DataSource(path, "cifar", "cifar10" if CIFAR10_DIR in tops else "cifar100")
        else:
            found = DataSource(path, "folder", source_stem(path))
    else:
        raise DatasetError(
            f"{path} is not a dataset this library reads: expected a CIFAR python-format "
            f"directory or .tar.gz, a folder of IDX files, an image folder SPLIT/CLASS/IMAGE, "
            f"a tar of one, or a segmentation / point-cloud folder"
        )
    if named is not None:
        if found.kind == "cifar" and found.name != named:
            raise DatasetError(f"{path} holds {found.name}, not {named} (--dataset {dataset})")
        if found.kind == "idx" and named not in ("mnist", "fashion-mnist"):
            raise DatasetError(f"{path} holds IDX files (MNIST-style), not {named}")
        found = DataSource(found.path, found.kind, named)
    return found


def _search(name: str, cache_dir: str | Path | None) -> tuple[DataSource | None, list[Path]]:
    looked: list[Path] = []
    for root in standard_roots():
        for cand in CANDIDATES.get(name, ()):
            p = root / cand
            looked.append(p)
            if p.exists():
                try:
                    return detect(p, name), looked
                except DatasetError:
                    continue
    if name in DOWNLOADS:
        p = download_dir(name, cache_dir) / DOWNLOADS[name].root
        looked.append(p)
        if p.exists():
            return detect(p, name), looked
    return None, looked


def find_dataset(data: str | Path | None = None, dataset: str = "auto", download_ok: bool = False,
                 cache_dir: str | Path | None = None) -> DataSource:
    """Locate a dataset by the search order in this module's docstring.

    Args:
        data: an explicit path, or None to search.
        dataset: ``auto`` or a dataset name (:data:`DATASET_NAMES`).
        download_ok: allow downloading from the official address when nothing is found.
        cache_dir: cache root for downloads and decoded folders.

    Raises:
        DatasetError: nothing found; the message lists where it looked and what to do.
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {dataset!r}")
    if dataset == PROCEDURAL_POINTS:
        if data is not None:
            raise DatasetError("--dataset procedural-points is generated, not read: leave "
                               "--data out")
        return DataSource(Path(PROCEDURAL_POINTS), "procedural", "procedural-solids")
    if data is not None:
        return detect(data, dataset)
    env = os.environ.get(DATA_ENV)
    if env:
        env_path = Path(env).expanduser()
        if not env_path.exists():
            raise DatasetError(f"{DATA_ENV}={env} does not exist; fix or unset it")
        if not any((env_path / c).exists() for cands in CANDIDATES.values() for c in cands):
            return detect(env_path, dataset)  # the variable names one dataset
    names = DEFAULT_DATASETS if dataset in ("auto", "imagefolder") else (dataset,)
    looked: list[Path] = []
    for name in names:
        found, where = _search(name, cache_dir)
        looked += where
        if found is not None:
            return found
    target = names[0]
    if download_ok:
        return detect(download(target, cache_dir), target)
    shown = ", ".join(str(p) for p in looked[:8]) + (" ..." if len(looked) > 8 else "")
    raise DatasetError(
        f"no {target if dataset != 'auto' else 'default'} dataset found (looked at: {shown}). "
        f"Pass --data PATH, set {DATA_ENV}=PATH, or add --download to fetch {target} from its "
        f"official address into {resolve_cache_dir(cache_dir) / 'datasets'}"
    )


def load_dataset(data: str | Path | None = None, split: str = "train", dataset: str = "auto", *,
                 download: bool = False, cache_dir: str | Path | None = None,
                 img_size: int | None = None, cache: bool = True) -> ImageDataset:
    """Find and load one split of a dataset.

    Example::

        train = load_dataset("../shared/data/fashion-mnist", "train")
        train.images.shape  # (60000, 1, 28, 28), uint8

    Args:
        data: path or None (search; see :func:`find_dataset`).
        split: split name (``train``, ``test``, ``val``, ...).
        dataset: ``auto`` or a dataset name.
        download: allow downloading when nothing is found locally.
        cache_dir: cache root.
        img_size: resize image folders to this size when decoding (see
            :func:`beyond_attention.data.folder.decode_image_folder`).
        cache: False decodes an image folder afresh, reading and writing no cache.
    """
    source = find_dataset(data, dataset, download, cache_dir)
    return source.load(split, img_size=img_size, cache_dir=cache_dir, cache=cache)
