"""``beyond-attention export CHECKPOINT|MODEL --format onnx``: an ONNX file that
onnxruntime has been checked against.

Given a checkpoint, the model, its input size and normalisation come from its metadata;
given a registered model name, the model is built with random weights. The parity check
runs on real images: ``--images`` if given, else the first images of the split the run
validated on (when its data still exists), else seeded random inputs (the report says
which). The max abs difference is printed; a file that fails parity is not written.
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
                   help="input size of a model built by name (default: its config's)")
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
                  seed: int = 0) -> tuple[torch.Tensor, str]:
    """Normalised parity inputs and where they came from."""
    from ..inference import Preprocess, find_images

    prep = Preprocess.from_metadata(meta)
    if images:
        paths = find_images(images)[:n]
        return prep.normalizer()(prep.load(paths)), f"{len(paths)} images given"
    raw = _recorded_images(meta, n)
    if raw is not None:
        return prep.normalizer()(raw), f"{len(raw)} images of {meta['data']}"
    gen = torch.Generator().manual_seed(seed)
    shape = (n, int(meta["in_chans"]), *prep.size)
    return torch.randn(shape, generator=gen), f"{n} seeded random inputs"


def _load(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], Path]:
    """The model, its metadata and the default output path."""
    from ..inference import load_for_inference

    if _is_checkpoint(args.source):
        model, meta = load_for_inference(args.source)
        return model, meta, Path(meta["weights"]).with_suffix(".onnx")
    import beyond_attention.models  # noqa: F401
    from beyond_attention.models._registry import create_model, get_model_config

    config = get_model_config(args.source)  # unknown names: a clear ValueError
    size = (args.img_size, args.img_size) if args.img_size else tuple(config.input_size[1:])
    torch.manual_seed(0)
    model = create_model(args.source, img_size=size).eval()
    meta = {"model": args.source, "in_chans": config.input_size[0], "img_size": list(size),
            "mean": list(config.mean), "std": list(config.std), "decode_size": None}
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
    print(f"{meta['model']}: wrote {out} (ONNX opset {result.opset}, "
          f"{result.size_bytes / 2**20:.1f} MiB, dynamic batch); onnxruntime vs PyTorch on "
          f"{where}: max abs difference {p.max_abs_diff:.3g} (tolerance {p.tolerance:.3g})")
    return 0
