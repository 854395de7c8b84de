"""The paper's Figure 5 for any run: images with query points and where each query attends."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sagan_cli.fileio import atomic_write  # noqa: E402

MARKERS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#64d2ff", "#ff9f0a", "#ffffff")


@dataclass
class LayerMaps:
    """One layer's maps for the chosen queries: (images, queries, h, w) over its key grid."""

    name: str
    size: int
    maps: torch.Tensor


def upsample(maps: torch.Tensor, resolution: int) -> torch.Tensor:
    """(..., h, w) key-grid maps -> (..., R, R) in image pixels (nearest: cells stay cells)."""
    shape = maps.shape
    flat = maps.reshape(-1, 1, shape[-2], shape[-1])
    return F.interpolate(flat, size=(resolution, resolution), mode="nearest").reshape(
        *shape[:-2], resolution, resolution
    )


def render(
    images: torch.Tensor,
    queries: torch.Tensor,
    layers: list[LayerMaps],
    title: str,
) -> plt.Figure:
    """One block of rows per layer: each image with its queries marked, then one heat map per
    query over the (greyed) image. ``images`` uint8 (B, 3, R, R); ``queries`` (B, Q, 2) x, y.

    Every map shares one colour scale, from 0 to the largest weight shown, with a colour
    bar that marks each layer's uniform level (1 / its key positions): a near-uniform map
    looks flat, not structured, and maps of different layers compare directly.
    """
    count, num_queries = queries.shape[:2]
    resolution = images.shape[-1]
    rows, columns = count * len(layers), num_queries + 1
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns + 0.9, 1.9 * rows + 0.4), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    pictures = images.permute(0, 2, 3, 1).numpy()
    grey = pictures.mean(axis=-1) / 255.0
    top = max(float(layer.maps.float().max()) for layer in layers) or 1.0
    shown = None
    for block, layer in enumerate(layers):
        heat = upsample(layer.maps.float(), resolution).numpy()
        for index in range(count):
            row = block * count + index
            axes[row, 0].imshow(pictures[index])
            for q in range(num_queries):
                x, y = queries[index, q].tolist()
                axes[row, 0].scatter(
                    [x], [y], s=28, c=MARKERS[q % len(MARKERS)], edgecolors="black"
                )
                axes[row, q + 1].imshow(grey[index], cmap="gray", vmin=0, vmax=1)
                shown = axes[row, q + 1].imshow(
                    heat[index, q], cmap="inferno", alpha=0.7, vmin=0.0, vmax=top
                )
                axes[row, q + 1].scatter(
                    [x], [y], s=28, c=MARKERS[q % len(MARKERS)], edgecolors="white"
                )
            axes[row, 0].set_ylabel(f"{layer.name}\nimage {index}", fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if shown is not None:
        bar = figure.colorbar(shown, ax=axes[:, 1:], shrink=0.9, aspect=30)
        bar.set_label("attention weight (one scale for all maps)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        for layer in layers:
            uniform = 1.0 / (layer.maps.shape[-1] * layer.maps.shape[-2])
            bar.ax.axhline(uniform, color="cyan", linewidth=1.2)
            bar.ax.text(1.6, uniform, f"uniform {layer.name}", fontsize=5, va="center",
                        transform=bar.ax.get_yaxis_transform())  # fmt: skip
    figure.suptitle(title, fontsize=8, wrap=True)
    return figure


def save_figure(figure: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    plt.close(figure)


def figure_array(figure: plt.Figure) -> np.ndarray:
    """The figure as uint8 (3, H, W) (for TensorBoard)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    buffer.seek(0)
    from PIL import Image

    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()
