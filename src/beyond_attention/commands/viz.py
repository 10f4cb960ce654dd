"""``beyond-attention viz``: look inside the mixers.

``viz maps`` draws what a model's token mixers compute on a few images (attention of a
query point and of the class token per layer and head, external attention's memory-slot
maps, the lambda layer's keys and position kernels, LaViT's vanilla vs less-attention
maps) as PNGs with one HTML index page. ``viz saturation`` measures how similar each
layer's attention is to the previous layer's (see :mod:`beyond_attention.viz.saturation`).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_bytes, atomic_write_json
from ..tables import format_table
from ..viz.capture import CapturedMap, capture_maps
from ..viz.load import LoadedModel, load_images, load_model, load_split, normalize
from ..viz.plots import grid_map, plot_kernels, plot_lines, plot_overlays, query_index, token_layout


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="model weights (.safetensors), e.g. runs/NAME/best.safetensors")
    p.add_argument("--model", default=None,
                   help="registered model name (default: the checkpoint's; without a "
                        "checkpoint: random weights)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra create_model keyword (JSON value), repeatable")
    p.add_argument("--data", default=None, metavar="PATH", help="dataset path")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0, help="image choice and random weights")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``viz`` command's subcommands and flags."""
    sub = p.add_subparsers(dest="viz_command", metavar="WHAT", required=True)
    m = sub.add_parser("maps", help="PNGs of every mixer's maps and an index.html")
    _common(m)
    m.add_argument("--images", nargs="+", default=None, metavar="FILE",
                   help="image files (default: --num-images from the dataset split)")
    m.add_argument("--num-images", type=int, default=4)
    m.add_argument("--query", default=None, metavar="Y,X",
                   help="query pixel of the input image (default: the centre)")
    m.add_argument("--layers", default=None, metavar="I,J",
                   help="indices among the model's mixer layers (default: all attention "
                        "layers; first and last for slot and kernel maps)")
    m.add_argument("--slots", type=int, default=8, help="memory slots / key depths shown")
    s = sub.add_parser("saturation", help="layer-to-layer attention similarity against depth")
    _common(s)
    s.add_argument("--num-images", type=int, default=256)
    s.add_argument("--batch-size", type=int, default=32)


def _model_kwargs(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model-arg must be KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _load(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.checkpoint, args.model, _model_kwargs(args.model_arg), seed=args.seed)


def _images(args, lm: LoadedModel, count: int) -> tuple[torch.Tensor, list[str]]:
    if getattr(args, "images", None):
        names = [Path(p).name for p in args.images]
        return load_images(args.images, lm.img_size, lm.in_chans), names
    return load_split(args.data, args.split, count, lm.in_chans, lm.img_size, args.seed)


def _parse_layers(text: str | None, count: int, model: str) -> list[int] | None:
    if text is None:
        return None
    try:
        idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {text!r}") from None
    for i in idx:
        if not -count <= i < count:
            raise ValueError(
                f"--layers: index {i} is out of range for {model}'s {count} mixer layers "
                f"(0..{count - 1})")
    return [i % count for i in idx]


def _key_map(m: CapturedMap, row: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """A row over keys -> (values on the key grid, key grid), class-token key dropped."""
    prefix, grid = token_layout(row.shape[-1], m.key_hw or m.query_hw)
    return row[prefix:], grid


def _query_grid(m: CapturedMap) -> tuple[int, tuple[int, int]]:
    return token_layout(m.tensor.shape[2], m.query_hw)


def _attention_figures(maps, images, labels, point, out, lm) -> list[tuple[str, str]]:
    figs = []
    img_hw = lm.img_size
    for b in range(min(2, len(images))):
        for what in ("query", "cls"):
            rows = []
            for m in maps:
                prefix, qgrid = _query_grid(m)
                if what == "query":
                    rows_q = m.tensor[b, :, prefix + query_index(point, img_hw, qgrid)]
                elif prefix:
                    rows_q = m.tensor[b, :, 0]
                else:
                    rows_q = m.tensor[b].mean(dim=1)
                panels = []
                for h in range(rows_q.shape[0]):
                    vals, kgrid = _key_map(m, rows_q[h])
                    panels.append((f"head {h}", grid_map(vals, kgrid, img_hw)))
                rows.append((f"{m.index}: {m.layer}\n({m.family})", images[b], panels))
            has_cls = _query_grid(maps[0])[0] == 1
            who = ("query pixel (y, x)=" + str(point)) if what == "query" else (
                "class token" if has_cls else "mean over all queries (no class token)")
            name = f"attn_{what}_img{b}.png"
            plot_overlays(rows, f"{lm.name}: attention of the {who}, image {labels[b]}",
                          out / name, marker=point if what == "query" else None)
            figs.append((name, f"Attention of the {who} on image {b} ({labels[b]}), one row "
                               f"per layer, one column per head; each row's colour bar runs "
                               f"from 0 to its largest weight. Keys cells are drawn as blocks."))
    return figs


def _slot_figure(m: CapturedMap, images, labels, n_slots, out, lm, what: str) -> tuple[str, str]:
    t = m.tensor  # attn (B, h, N, S) or keys (B, u, k, N)
    if what == "slots":
        prefix, grid = _query_grid(m)
        maps = t[:, 0, prefix:, :]  # head 0: (B, N, S)
    else:
        prefix, grid = token_layout(t.shape[-1], m.query_hw)
        maps = t[:, 0].transpose(1, 2)  # u = 0: (B, N, k)
    spread = maps.std(dim=1).mean(dim=0)  # slots that vary most over the image first
    chosen = spread.argsort(descending=True)[:n_slots].tolist()
    rows = []
    for b in range(len(images)):
        panels = [(f"{'slot' if what == 'slots' else 'k'} {s}", grid_map(maps[b, :, s], grid,
                   lm.img_size)) for s in chosen]
        rows.append((str(labels[b]), images[b], panels))
    name = f"{what}_layer{m.index}.png"
    label = "memory-slot attention A[:, s] (head 0)" if what == "slots" else (
        "lambda keys softmax_m(K) per key depth k (u = 0)")
    plot_overlays(rows, f"{lm.name} layer {m.index} ({m.layer}): {label}", out / name,
                  cbar_label="weight")
    caption = (f"Layer {m.index} ({m.layer}): which pixels each of the {len(chosen)} most "
               f"varying {'memory slots' if what == 'slots' else 'key depths'} picks out, "
               f"one row per image (the EANet figure). " + (
                   "Each token's weights over the slots sum to 1 (double normalisation)."
                   if what == "slots" else "Each map sums to 1 over the positions."))
    return name, caption


def run_maps(args: argparse.Namespace) -> int:
    lm = _load(args)
    images, labels = _images(args, lm, args.num_images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    h, w = lm.img_size
    point = (h // 2, w // 2)
    if args.query:
        try:
            point = tuple(int(v) for v in args.query.split(","))
            assert len(point) == 2
        except (ValueError, AssertionError):
            raise ValueError(f"--query must be Y,X pixel coordinates, got {args.query!r}") from None
        query_index(point, lm.img_size, (1, 1))  # range check
    with torch.no_grad(), capture_maps(lm.model) as record:
        lm.model(normalize(images, lm.mean, lm.std))
    layer_count = len(record.layers)
    chosen = _parse_layers(args.layers, layer_count, lm.name)
    figs: list[tuple[str, str]] = []

    def pick(maps, default_ends: bool):
        if chosen is not None:
            return [m for m in maps if m.index in chosen]
        return [maps[0], maps[-1]] if default_ends and len(maps) > 1 else maps

    attn = [m for m in record.per_layer("attn") if m.family in ("self", "vanilla", "less")]
    if pick(attn, False):
        figs += _attention_figures(pick(attn, False), images, labels, point, out, lm)
    for m in pick(record.per_layer("attn", "external"), True):
        figs.append(_slot_figure(m, images, labels, args.slots, out, lm, "slots"))
    for m in pick(record.per_layer("keys", "lambda"), True):
        figs.append(_slot_figure(m, images, labels, args.slots, out, lm, "keys"))
    for m in pick(record.per_layer("position_kernel", "lambda"), True):
        name = f"position_kernel_layer{m.index}.png"
        plot_kernels(m.tensor, f"{lm.name} layer {m.index} ({m.layer}): position kernels R",
                     out / name)
        figs.append((name, f"Layer {m.index} ({m.layer}): the learned relative position "
                           f"kernels R[k, u] over offsets (row, column) from the query; red "
                           f"positive, blue negative."))
    va_la = [m for m in attn if m.family in ("vanilla", "less")]
    if va_la and any(m.family == "less" for m in va_la):
        rows = []
        for b in range(min(2, len(images))):
            for m in va_la:
                prefix, qgrid = _query_grid(m)
                row = m.tensor[b, :, prefix + query_index(point, lm.img_size, qgrid)].mean(0)
                vals, kgrid = _key_map(m, row)
                rows.append((f"{labels[b]}", images[b],
                             [(f"{m.family.upper() if m.family == 'less' else 'VA'} "
                               f"{m.layer.split('.attn')[0]}",
                               grid_map(vals, kgrid, lm.img_size))]))
        plot_overlays(rows, f"{lm.name}: vanilla (VA) vs less-attention (LA) maps of the "
                            f"query pixel {point}, mean over heads", out / "va_vs_la.png",
                      marker=point)
        figs.append(("va_vs_la.png", "LaViT: the attention of the query pixel in each stage's "
                     "vanilla layer and in the less-attention layer that follows it (which "
                     "transforms the vanilla scores instead of computing Q K^T), mean over "
                     "heads, in forward order."))
    if not figs:
        raise ValueError(f"{lm.name} has no maps to draw")
    _write_index(out, lm, figs)
    print(f"wrote {len(figs)} figures and {out / 'index.html'}")
    return 0


def _write_index(out: Path, lm: LoadedModel, figs: list[tuple[str, str]]) -> None:
    body = "\n".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(n)}">'
        f"<figcaption><b>{html.escape(n)}</b>: {html.escape(c)}</figcaption></figure>"
        for n, c in figs)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(lm.name)} "
            f"maps</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
            f"img{{max-width:100%}}figure{{margin:2em 0}}</style></head><body>"
            f"<h1>{html.escape(lm.name)}: inside the mixers</h1><p>Weights: "
            f"{html.escape(lm.source)}.</p>\n{body}\n</body></html>\n")
    atomic_write_bytes(out / "index.html", page.encode("utf-8"))


def run_saturation(args: argparse.Namespace) -> int:
    from ..viz.saturation import saturation

    lm = _load(args)
    images, _ = load_split(args.data, args.split, args.num_images, lm.in_chans, lm.img_size,
                           args.seed)
    x = normalize(images, lm.mean, lm.std)
    stats = saturation(lm.model, x.split(args.batch_size))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "saturation.json", {
        "model": lm.name, "source": lm.source, "model_kwargs": lm.model_kwargs,
        "images": len(images), "split": args.split, "layers": [s.to_dict() for s in stats]})
    with_prev = [(i, s) for i, s in enumerate(stats) if s.prev_sim_mean is not None]
    if with_prev:
        series = [("mean over heads (band: std over images)",
                   np.array([i for i, _ in with_prev]),
                   np.array([s.prev_sim_mean for _, s in with_prev]),
                   np.array([s.prev_sim_std for _, s in with_prev])),
                  ("reference: cos(A_l, uniform map)", np.array([i for i, _ in with_prev]),
                   np.array([s.uniform_sim_mean for _, s in with_prev]), None)]
        heads = len(with_prev[0][1].prev_sim_heads)
        if all(len(s.prev_sim_heads) == heads for _, s in with_prev) and heads <= 8:
            for h in range(heads):
                series.append((f"head {h}", np.array([i for i, _ in with_prev]),
                               np.array([s.prev_sim_heads[h] for _, s in with_prev]), None))
        plot_lines(series, "layer", "cos(A_l, A_{l-1})",
                   f"{lm.name}: attention vs the previous layer's ({len(images)} images)",
                   out / "similarity_vs_depth.png")
    la = [(i, s) for i, s in enumerate(stats) if s.vanilla_sim_mean is not None]
    if la:
        xs = np.arange(len(la))
        plot_lines([
            ("cos(A_LA, A_VA on the LA input)", xs, np.array([s.vanilla_sim_mean for _, s in la]),
             np.array([s.vanilla_sim_std for _, s in la])),
            ("cos(A_LA, previous layer's A)", xs, np.array([s.prev_sim_mean for _, s in la]),
             np.array([s.prev_sim_std for _, s in la])),
        ], "less-attention layer", "cosine similarity",
            f"{lm.name}: LA attention vs vanilla attention",
            out / "lavit_la_vs_va.png", xticks=[s.layer for _, s in la])
    rows = [[i, s.layer, s.family, _f(s.prev_sim_mean, s.prev_sim_std), _f(s.uniform_sim_mean),
             _f(s.vanilla_sim_mean, s.vanilla_sim_std), _f(s.own_mass), _f(s.vanilla_own_mass),
             _f(s.diag_loss)] for i, s in enumerate(stats)]
    print(format_table(["#", "layer", "family", "cos to previous", "cos to uniform",
                        "cos to VA(x_l)",
                        "own cell xM", "VA(x_l) own xM", "diag loss"], rows, markdown=True))
    return 0


def _f(v: float | None, sd: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def run(args: argparse.Namespace) -> int:
    """Run ``viz maps`` or ``viz saturation``."""
    if args.viz_command == "maps":
        return run_maps(args)
    return run_saturation(args)
