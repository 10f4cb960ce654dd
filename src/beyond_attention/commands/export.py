"""``beyond-attention export CHECKPOINT|MODEL --format onnx``: an ONNX file that
onnxruntime has been checked against.

Given a checkpoint, the model, its input size and normalisation come from its metadata;
given a registered model name, the model is built with random weights. The parity check
runs on real images: ``--images`` if given, else the first images of the split the run
validated on (when its data still exists), else seeded random inputs (the report says
which). The max abs difference is printed; a file that fails parity is not written.

Point-cloud models (built by name) take seeded random clouds of ``--num-points`` points
(default: the config's), and part segmentation a seeded random object category per
cloud as a second input (``category``, int64); their point axis is exported dynamic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..export.onnx import DEFAULT_OPSET


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``export`` command's flags."""
    p.add_argument("source", metavar="CHECKPOINT|MODEL",
                   help="weights (.safetensors), a run's NAME.json or directory, or a "
                        "registered model name (random weights)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file (default: beside the checkpoint, or MODEL.onnx here)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                   help="images for the parity check (default: the run's validation data)")
    p.add_argument("--parity-batch", type=int, default=3, metavar="N",
                   help="inputs compared (differs from the traced batch of 2)")
    p.add_argument("--atol", type=float, default=1e-4, help="parity: absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="parity: tolerance relative to the largest output")
    p.add_argument("--img-size", type=int, default=None,
                   help="input size of an image model built by name (default: its config's)")
    p.add_argument("--num-points", type=int, default=None, metavar="N",
                   help="points per cloud of a point-cloud model (default: the checkpoint's or "
                        "its config's; the exported point axis is dynamic)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _is_checkpoint(source: str) -> bool:
    path = Path(source)
    return path.exists() or path.suffix in (".safetensors", ".json")


def _recorded_images(meta: dict[str, Any], n: int) -> torch.Tensor | None:
    """The first ``n`` images (uint8) of the split the run validated on, or None."""
    from ..data import find_dataset

    if not meta.get("data") or not Path(meta["data"]).exists():
        return None
    source = find_dataset(meta["data"], meta.get("dataset") or "auto")
    ds = source.load(meta.get("val_split") or "test", img_size=meta.get("decode_size"))
    return torch.from_numpy(ds.images[:n].copy())


def parity_inputs(meta: dict[str, Any], images: list[str] | None, n: int,
                  seed: int = 0) -> tuple[torch.Tensor | tuple[torch.Tensor, ...], str]:
    """Normalised parity inputs and where they came from."""
    from ..inference import Preprocess, find_images

    gen = torch.Generator().manual_seed(seed)
    if str(meta.get("task", "")).startswith("pointcloud"):
        if images:
            raise ValueError("--images is for image models; "
                             f"{meta['model']} takes point clouds")
        points = torch.randn(n, int(meta["in_chans"]), int(meta["num_points"]), generator=gen)
        if meta.get("num_categories"):
            category = torch.randint(0, int(meta["num_categories"]), (n,), generator=gen)
            return (points, category), f"{n} seeded random clouds and categories"
        return points, f"{n} seeded random clouds"
    prep = Preprocess.from_metadata(meta)
    if images:
        paths = find_images(images)[:n]
        return prep.normalizer()(prep.load(paths)), f"{len(paths)} images given"
    raw = _recorded_images(meta, n)
    if raw is not None:
        return prep.normalizer()(raw), f"{len(raw)} images of {meta['data']}"
    shape = (n, int(meta["in_chans"]), *prep.size)
    return torch.randn(shape, generator=gen), f"{n} seeded random inputs"


def _load(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], Path]:
    """The model, its metadata and the default output path."""
    from ..inference import load_for_inference

    if _is_checkpoint(args.source):
        model, meta = load_for_inference(args.source)
        if str(meta.get("task", "")).startswith("pointcloud"):
            meta["num_points"] = args.num_points or meta.get("num_points") or meta["img_size"][-1]
            meta["num_categories"] = getattr(model, "num_categories", 0)
        return model, meta, Path(meta["weights"]).with_suffix(".onnx")
    import beyond_attention.models  # noqa: F401
    from beyond_attention.models._registry import POINTCLOUD_TASKS, create_model, get_model_config

    config = get_model_config(args.source)  # unknown names: a clear ValueError
    meta: dict[str, Any] = {"model": args.source, "task": config.task,
                            "in_chans": config.input_size[0], "decode_size": None,
                            "mean": list(config.mean), "std": list(config.std)}
    torch.manual_seed(0)
    if config.task in POINTCLOUD_TASKS:
        if args.img_size:
            raise ValueError(f"--img-size is for image models; {args.source} takes point "
                             f"clouds (use --num-points)")
        model = create_model(args.source).eval()
        meta["num_points"] = args.num_points or config.input_size[1]
        meta["num_categories"] = getattr(model, "num_categories", 0)
        if meta["num_points"] < getattr(model, "min_points", 1):
            raise ValueError(f"--num-points must be >= {model.min_points} for "
                             f"{args.source}, got {meta['num_points']}")
    else:
        if args.num_points:
            raise ValueError(f"--num-points is for point-cloud models; {args.source} takes "
                             f"images (use --img-size)")
        size = (args.img_size, args.img_size) if args.img_size else tuple(config.input_size[1:])
        model = create_model(args.source, img_size=size).eval()
        meta["img_size"] = list(size)
    return model, meta, Path(f"{args.source}.onnx")


def run(args: argparse.Namespace) -> int:
    """Run the ``export`` command."""
    from ..export.onnx import export_onnx

    if args.parity_batch < 1:
        raise ValueError(f"--parity-batch must be >= 1, got {args.parity_batch}")
    model, meta, default_out = _load(args)
    out = Path(args.out) if args.out else default_out
    inputs, where = parity_inputs(meta, args.images, args.parity_batch)
    result = export_onnx(model, out, inputs, opset=args.opset, atol=args.atol, rtol=args.rtol)
    if args.json:
        json.dump({"model": meta["model"], "inputs": where, **result.to_dict()}, sys.stdout,
                  indent=2)
        print()
        return 0
    p = result.parity
    axes = "batch and point axes" if "num_points" in meta else "batch axis"
    print(f"{meta['model']}: wrote {out} (ONNX opset {result.opset}, "
          f"{result.size_bytes / 2**20:.1f} MiB, dynamic {axes}); onnxruntime vs PyTorch on "
          f"{where}: max abs difference {p.max_abs_diff:.3g} (tolerance {p.tolerance:.3g})")
    return 0
