"""Using a trained model: :func:`load_for_inference`, the validation preprocessing and
:func:`predict`.

A weights file written by training (``best.safetensors`` or ``last.safetensors``) carries in
its metadata what inference needs (:func:`beyond_attention.train.checkpoint.model_metadata`):
the model's registered name and keywords, its classes, input size and mean/std. So a
checkpoint alone rebuilds the model and prepares images the way the run validated them:

1. decode the file (grey for 1-channel models, RGB otherwise);
2. if its size is not the model's ``(H, W)``: resize (bicubic) so the image covers it and
   centre-crop, as the image-folder reader does with ``--img-size``;
3. ``(x / 255 - mean) / std`` with the recorded statistics
   (:class:`~beyond_attention.data.Normalize`).

Example::

    model, meta = load_for_inference("runs/x/best.safetensors")
    rows = predict(model, meta, find_images(["photos/"]), topk=3)
"""

from __future__ import annotations

import glob
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .data import Normalize
from .train.checkpoint import (
    CheckpointError,
    check_model_name,
    load_safetensors,
    load_weights,
    parse_metadata,
    rebuild_arguments,
)

#: File name endings :func:`find_images` picks up inside folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pnm")


class InferenceError(ValueError):
    """An image that cannot be found or decoded, or an input that does not fit the model."""


def weights_path(checkpoint: str | Path) -> Path:
    """The weights file of ``checkpoint``: a ``.safetensors`` file as given, a run's
    ``NAME.json`` -> ``NAME.safetensors``, a run directory -> ``best.safetensors`` (else
    ``last.safetensors``)."""
    path = Path(checkpoint)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no best.safetensors or last.safetensors")
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path


def read_metadata(checkpoint: str | Path) -> dict[str, Any]:
    """The decoded metadata of a weights file, with the keys older checkpoints lack filled
    in as unknown (``model_kwargs`` empty, the others None)."""
    path = weights_path(checkpoint)
    _, raw = load_safetensors(path)
    meta = parse_metadata(raw)
    for key in ("model", "model_arguments", "num_classes", "in_chans", "img_size", "mean",
                "std", "classes", "decode_size", "data", "dataset", "val_split", "version"):
        meta.setdefault(key, None)
    meta["model_kwargs"] = meta.get("model_kwargs") or {}
    meta["weights"] = str(path)
    return meta


def load_for_inference(checkpoint: str | Path, model: str | None = None,
                       device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as and load its weights.

    Args:
        checkpoint: a weights file, a run's ``NAME.json`` or its directory (see
            :func:`weights_path`).
        model: the registered name; default the one recorded (given both, they must agree).
        device: where the model goes.

    Returns:
        ``(model in eval mode, metadata)``; the metadata as :func:`read_metadata`, with
        ``img_size`` ``[H, W]``, ``mean``, ``std`` and ``classes`` always set (from the
        model's config when the checkpoint does not record them).

    Raises:
        CheckpointError: unreadable file, no model recorded or given, another model's
            weights, or weights that do not fit.
    """
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import get_model_config

    meta = read_metadata(checkpoint)
    path = meta["weights"]
    name = model or meta["model"]
    if name is None:
        raise CheckpointError(f"{path} does not record its model: pass --model NAME")
    check_model_name(name, meta["model"], path)
    try:
        config = get_model_config(name)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: model {name!r} is not registered ({e})") from None
    points = config.task.startswith("pointcloud")
    in_chans, *size = config.input_size  # (C, H, W), or (3, N) for point clouds
    meta["in_chans"] = int(meta["in_chans"] or in_chans)
    meta["img_size"] = list(meta["img_size"] or size)
    num_classes = int(meta["num_classes"] or len(meta["classes"] or ()) or config.num_classes)
    meta["num_classes"] = num_classes
    if not meta["mean"] or not meta["std"]:
        meta["mean"], meta["std"] = list(config.mean), list(config.std)
    meta["classes"] = list(meta["classes"] or [str(i) for i in range(num_classes)])
    if len(meta["classes"]) != num_classes:
        raise CheckpointError(f"{path} records {len(meta['classes'])} class names for "
                              f"{num_classes} classes")
    net = build_recorded_model(name, meta, path, num_classes=num_classes,
                               in_chans=meta["in_chans"],
                               img_size=None if points else tuple(meta["img_size"]))
    load_weights(net, path, name)
    meta["model"] = name
    return net.to(device).eval(), meta


def build_recorded_model(name: str, meta: dict[str, Any], path: str | Path,
                         **common: Any) -> nn.Module:
    """``create_model(name, **common)`` with the family keywords checkpoint metadata
    ``meta`` records (:func:`~beyond_attention.train.checkpoint.rebuild_arguments`): the
    model the checkpoint was trained as, even after the registration changed.

    Raises:
        CheckpointError: a recorded keyword that this version's model does not take.
    """
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import create_model

    try:
        return create_model(name, **common, **rebuild_arguments(meta))
    except ValueError as e:
        raise CheckpointError(f"{path} cannot rebuild the model it was trained as (written "
                              f"by version {meta.get('version')}): {e}") from None


@dataclass(frozen=True)
class Preprocess:
    """The validation preprocessing of a checkpoint's model (module docstring, steps 1-3).

    Attributes:
        size: the model's input ``(H, W)``.
        mean, std: per-channel normalisation (length C).
        mode: ``"L"`` (C = 1) or ``"RGB"`` (C = 3).
        draft: let JPEG decoding shrink by powers of two first, as the image-folder reader
            does when the run decoded its images at a fixed size.
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "RGB"
    draft: bool = False

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Preprocess:
        """From :func:`load_for_inference`'s metadata."""
        h, w = meta["img_size"]
        return cls((int(h), int(w)), tuple(meta["mean"]), tuple(meta["std"]),
                   "L" if int(meta["in_chans"]) == 1 else "RGB",
                   draft=meta.get("decode_size") is not None)

    def decode(self, data: bytes, where: str | Path = "image") -> np.ndarray:
        """Image file bytes -> ``(C, H, W)`` uint8 at the model's size.

        Raises:
            InferenceError: the bytes are not an image PIL can decode (names ``where``).
        """
        h, w = self.size
        try:
            with Image.open(io.BytesIO(data)) as im:
                if self.draft and im.format == "JPEG":
                    im.draft(self.mode, (w, h))
                im = im.convert(self.mode)
                if im.size != (w, h):
                    iw, ih = im.size
                    scale = max(w / iw, h / ih)
                    im = im.resize((max(w, round(iw * scale)), max(h, round(ih * scale))),
                                   Image.Resampling.BICUBIC)
                    left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
                    im = im.crop((left, top, left + w, top + h))
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InferenceError(f"cannot decode image {where}: {e}") from None
        return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))

    def load(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Decode image files into one ``(B, C, H, W)`` uint8 batch (all or nothing)."""
        arrays = []
        for p in paths:
            try:
                data = Path(p).read_bytes()
            except OSError as e:
                raise InferenceError(f"cannot read image {p}: {e.strerror or e}") from None
            arrays.append(self.decode(data, p))
        if not arrays:
            raise InferenceError("no images given")
        return torch.from_numpy(np.stack(arrays))

    def normalizer(self) -> Normalize:
        """uint8 batch -> normalised float batch."""
        return Normalize(self.mean, self.std, self.size)


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (searched recursively for :data:`IMAGE_SUFFIXES`) and glob
    patterns into a list of files, in the order given (folders and globs sorted).

    Raises:
        InferenceError: an input names nothing, or a folder holds no images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InferenceError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += files
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(str(item)):
            files = sorted(Path(p) for p in glob.glob(str(item), recursive=True)
                           if Path(p).is_file())
            if not files:
                raise InferenceError(f"pattern {item!r} matches no files")
            found += files
        else:
            raise InferenceError(f"image {item} does not exist")
    if not found:
        raise InferenceError("no images given")
    return found


@torch.no_grad()
def predict(model: nn.Module, meta: dict[str, Any], images: Sequence[str | Path],
            topk: int = 5, batch_size: int = 64,
            device: str | torch.device | None = None) -> list[dict[str, Any]]:
    """Top-k classes of each image file, with softmax probabilities.

    Every image is decoded before the first forward, so an unreadable one fails the call
    before any result exists.

    Args:
        model, meta: from :func:`load_for_inference`.
        images: image files (see :func:`find_images` for folders and globs).
        topk: classes per image (capped at the number of classes).
        batch_size: images per forward pass.

    Returns:
        ``[{"image": path, "top": [{"class": name, "index": k, "prob": p}, ...]}]``, most
        probable first.
    """
    if topk < 1 or batch_size < 1:
        raise ValueError(f"topk and batch_size must be >= 1, got {topk} and {batch_size}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    prep = Preprocess.from_metadata(meta)
    batch = prep.load(images)
    normalize = prep.normalizer().to(dev)
    k = min(topk, len(meta["classes"]))
    model.eval()
    out: list[dict[str, Any]] = []
    for start in range(0, len(batch), batch_size):
        x = normalize(batch[start : start + batch_size].to(dev))
        probs = model(x).float().softmax(dim=-1)
        top = probs.topk(k, dim=-1)
        for i, (p, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist(),
                                         strict=True)):
            out.append({"image": str(images[start + i]), "top": [
                {"class": meta["classes"][j], "index": j, "prob": q}
                for q, j in zip(p, idx, strict=True)]})
    return out
