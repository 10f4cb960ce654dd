"""Figures of captured maps over their images (matplotlib, Agg backend, PNG bytes).

Every figure keeps the image visible under a semi-transparent map, has a title per
panel and a colour bar per row, and is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ..io import atomic_write_bytes  # noqa: E402

__all__ = ["grid_map", "query_index", "save_figure", "token_layout",
           "plot_overlays", "plot_kernels", "plot_lines"]

HW = tuple[int, int]
DPI = 100


def token_layout(n: int, hw: HW | None = None) -> tuple[int, HW]:
    """``(prefix, (H, W))``: how N tokens lie on a grid, ``prefix`` class tokens first.

    With ``hw`` given, N must be H*W or H*W + 1; otherwise the grid is taken square
    (N = r^2, or r^2 + 1 with a class token).
    """
    if hw is not None:
        for prefix in (0, 1):
            if hw[0] * hw[1] + prefix == n:
                return prefix, hw
    for prefix in (0, 1):
        r = math.isqrt(n - prefix)
        if r * r == n - prefix and r > 0:
            return prefix, (r, r)
    raise ValueError(f"{n} tokens do not form a square grid (with or without a class token)")


def query_index(point: tuple[float, float], img_hw: HW, grid: HW) -> int:
    """The token of ``grid`` (row-major) that covers pixel ``point`` = (y, x) of the image."""
    y, x = point
    if not (0 <= y < img_hw[0] and 0 <= x < img_hw[1]):
        raise ValueError(f"query point (y, x)={point} lies outside the {img_hw} image")
    gy, gx = int(y * grid[0] // img_hw[0]), int(x * grid[1] // img_hw[1])
    return gy * grid[1] + gx


def grid_map(values: torch.Tensor, grid: HW, img_hw: HW) -> np.ndarray:
    """A (H*W,) map on ``grid`` -> (img H, img W) array, nearest upsampling (cells stay
    visible as blocks)."""
    m = values.reshape(1, 1, *grid).float()
    return F.interpolate(m, size=img_hw, mode="nearest")[0, 0].numpy()


def _show_image(ax, image: torch.Tensor) -> None:
    img = image.permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_overlays(
    rows: list[tuple[str, torch.Tensor, list[tuple[str, np.ndarray]]]],
    title: str,
    path: str | Path,
    marker: tuple[float, float] | None = None,
    cbar_label: str = "attention",
) -> Path:
    """A grid of maps over images: one row per entry ``(row label, image uint8 (C, H, W),
    [(panel title, map (H, W)), ...])``; the first column shows the image alone. Each row
    shares one colour scale from 0 to its maximum, with a colour bar."""
    cols = 1 + max(len(p) for _, _, p in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols + 0.8, 1.9 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    for r, (label, image, panels) in enumerate(rows):
        _show_image(axes[r, 0], image)
        axes[r, 0].set_title(label, fontsize=8)
        if marker is not None:
            axes[r, 0].plot(marker[1], marker[0], "r+", markersize=10, mew=2)
        vmax = max(float(np.max(m)) for _, m in panels) or 1.0
        im = None
        for c in range(1, cols):
            ax = axes[r, c]
            if c - 1 >= len(panels):
                ax.axis("off")
                continue
            name, m = panels[c - 1]
            _show_image(ax, image)
            im = ax.imshow(m, cmap="inferno", alpha=0.6, vmin=0.0, vmax=vmax)
            if marker is not None:
                ax.plot(marker[1], marker[0], "c+", markersize=8, mew=1.5)
            ax.set_title(name, fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=list(axes[r, 1:]), shrink=0.9, label=cbar_label)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_kernels(kernels: torch.Tensor, title: str, path: str | Path) -> Path:
    """Relative position kernels R (k, u, KH, KW) as k x u heatmaps around offset (0, 0),
    one diverging colour scale symmetric about 0."""
    k, u, kh, kw = kernels.shape
    cols = min(8, k * u)
    rows = math.ceil(k * u / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.0, 1.6 * rows + 0.6),
                             squeeze=False, layout="constrained")
    vmax = float(kernels.abs().max()) or 1.0
    im = None
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= k * u:
            ax.axis("off")
            continue
        kk, uu = divmod(i, u)
        im = ax.imshow(kernels[kk, uu].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       extent=(-(kw // 2) - 0.5, kw // 2 + 0.5, kh // 2 + 0.5, -(kh // 2) - 0.5))
        ax.set_title(f"k={kk}" + (f" u={uu}" if u > 1 else ""), fontsize=8)
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="R (offset: column, row)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_lines(
    series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: str | Path,
    xticks: list[str] | None = None,
) -> Path:
    """Lines ``(label, x, mean, spread or None)``; the spread is drawn as a band."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for label, x, y, spread in series:
        ax.plot(x, y, marker="o", label=label)
        if spread is not None:
            ax.fill_between(x, y - spread, y + spread, alpha=0.2)
    if xticks is not None:
        ax.set_xticks(series[0][1], xticks, rotation=30, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
