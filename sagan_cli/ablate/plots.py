"""Ablation plots (PNG): metric-vs-step curves with a band over seeds, and sample grids side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from sagan_cli.fileio import atomic_write  # noqa: E402
from sagan_cli.results import RunDir  # noqa: E402

CURVES = {
    "fid": ("eval", "fid", "FID"),
    "structure": ("structure", "structure", "structural score"),
}


def _series(run: RunDir, kind: str, field: str) -> pd.Series:
    points = {
        r["step"]: r[field]
        for r in run.read_metrics()
        if r.get("kind") == kind and r.get(field) is not None
    }
    return pd.Series(points, dtype=float)


def _label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys)


def _save(figure: plt.Figure, path: Path) -> None:
    atomic_write(
        path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    )
    plt.close(figure)


def plot_curves(
    runs: pd.DataFrame, keys: list[str], folders: dict[str, Path], out_dir: Path
) -> list[Path]:
    """``<metric>_vs_step.png`` for FID and the structural score, where any run has them."""
    written = []
    for name, (kind, field, title) in CURVES.items():
        figure, axes = plt.subplots(figsize=(7, 4.5))
        drawn = False
        for _, group in runs.groupby(keys, sort=False):
            series = [
                _series(RunDir(folders[r.experiment] / "runs" / r.run_id), kind, field)
                for r in group.itertuples()
            ]
            series = [s for s in series if len(s)]
            if not series:
                continue
            frame = pd.concat(series, axis=1).sort_index()
            mean = frame.mean(axis=1)
            (line,) = axes.plot(mean.index, mean.values, label=_label(group.iloc[0], keys))
            if frame.shape[1] > 1:
                axes.fill_between(
                    frame.index,
                    frame.min(axis=1),
                    frame.max(axis=1),
                    alpha=0.2,
                    color=line.get_color(),
                )
            drawn = True
        if drawn:
            if name == "structure":  # the scale's anchor: every real image scores exactly 0
                axes.axhline(
                    0.0, color="grey", linestyle="--", linewidth=1, label="real images (0)"
                )
                axes.set_ylim(bottom=min(0.0, axes.get_ylim()[0]))
            axes.set_xlabel("step")
            axes.set_ylabel(title)
            axes.set_title(f"{title} vs step (band: min to max over seeds)")
            axes.legend(fontsize=8)
            path = out_dir / f"{name}_vs_step.png"
            _save(figure, path)
            written.append(path)
        else:
            plt.close(figure)
    return written


LAYER_CURVES = {
    "gamma": ("gamma_", "gamma (attention gain)"),
    "attention_distance": ("distance_", "mean attention distance (image widths)"),
}
# gamma's axis spans at least this around 0, so a gain of 0.0005 reads as the ~0 it is
GAMMA_MIN_SPAN = 0.1


def uniform_distance(layer: str) -> float | None:
    """The mean distance of uniform attention on a layer's grid (``g16``: 16x16), in image
    widths: the reference a distance curve is read against."""
    import torch

    from sagan_cli.inspect.maps import grid_centres

    size = int(layer[1:]) if layer[1:].isdigit() else None
    if size is None:
        return None
    centres = grid_centres(size, size, torch.device("cpu")).double()
    return float(torch.cdist(centres, centres).mean())


def plot_layer_curves(
    runs: pd.DataFrame, keys: list[str], folders: dict[str, Path], out_dir: Path
) -> list[Path]:
    """``gamma_vs_step.png`` and ``attention_distance_vs_step.png``: a panel per attention layer,
    a line per grid point (mean over seeds) with a min-max band."""
    written = []
    for name, (prefix, title) in LAYER_CURVES.items():
        series: dict[str, dict[str, list[pd.Series]]] = {}  # layer -> grid point -> per seed
        labels: dict[str, str] = {}
        for _, group in runs.groupby(keys, sort=False):
            label = _label(group.iloc[0], keys)
            labels[label] = label
            for r in group.itertuples():
                records = [
                    m
                    for m in RunDir(folders[r.experiment] / "runs" / r.run_id).read_metrics()
                    if m.get("kind") == "attention"
                ]
                for field in sorted({k for m in records for k in m if k.startswith(prefix)}):
                    points = {m["step"]: m[field] for m in records if m.get(field) is not None}
                    layer = field.removeprefix(prefix)
                    series.setdefault(layer, {}).setdefault(label, []).append(
                        pd.Series(points, dtype=float)
                    )
        if not series:
            continue
        # G's layers first, each network's from low to high resolution: g8, g16, d8, d16
        layers = sorted(
            series,
            key=lambda layer: (layer[0] != "g", int(layer[1:]) if layer[1:].isdigit() else 0),
        )
        figure, axes = plt.subplots(
            1, len(layers), figsize=(5 * len(layers), 4), squeeze=False, sharey=True,
            layout="constrained",
        )  # fmt: skip
        for axis, layer in zip(axes[0], layers, strict=True):
            for label, seeds in series[layer].items():
                frame = pd.concat(seeds, axis=1).sort_index()
                (line,) = axis.plot(frame.index, frame.mean(axis=1).values, label=label)
                if frame.shape[1] > 1:
                    axis.fill_between(
                        frame.index, frame.min(axis=1), frame.max(axis=1), alpha=0.2,
                        color=line.get_color(),
                    )  # fmt: skip
            if name == "gamma":
                axis.axhline(
                    0.0,
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label="0 (the block passes its input through)",
                )
            else:
                uniform = uniform_distance(layer)
                if uniform is not None:
                    axis.axhline(
                        uniform, color="grey", linestyle="--", linewidth=1,
                        label=f"uniform attention ({uniform:.2f})",
                    )  # fmt: skip
            axis.set_title(f"layer {layer}", fontsize=9)
            axis.set_xlabel("step")
            axis.legend(fontsize=7, loc="best")
        axes[0, 0].set_ylabel(title)  # one shared scale: the label once
        if name == "gamma":
            low, high = axes[0, 0].get_ylim()
            half = max(GAMMA_MIN_SPAN / 2, abs(low), abs(high))
            axes[0, 0].set_ylim(-half, half)
        else:
            # room above the highest curve and the uniform level (which often coincide): the
            # data must not sit on the frame or under the legend
            top = max(
                (float(np.nanmax(line.get_ydata())) for a in axes[0] for line in a.get_lines()),
                default=1.0,
            )
            axes[0, 0].set_ylim(0.0, top * 1.3 if top > 0 else 1.0)
        path = out_dir / f"{name}_vs_step.png"
        _save(figure, path)
        written.append(path)
    return written


def plot_samples(
    runs: pd.DataFrame, keys: list[str], folders: dict[str, Path], out_dir: Path
) -> Path | None:
    """The data's first images, then the newest sample grid of each grid point's first seed,
    side by side."""
    panels: list[tuple[str, Path]] = []
    for _, group in runs.groupby(keys, sort=False):
        first = group.iloc[0]
        run = RunDir(folders[first.experiment] / "runs" / first.run_id)
        samples = sorted(run.samples.glob("step-*.png"))
        real = run.real_grid
        if real.is_file() and not panels:
            panels.append(("real images (the data)", real))
        if samples:
            panels.append((_label(first, keys), samples[-1]))
    if not panels:
        return None
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (label, path) in zip(axes.flat, panels, strict=False):
        with Image.open(path) as image:
            axis.imshow(image.copy(), interpolation="nearest")
        stem = "" if path.name == run.real_grid.name else f"\n{path.stem}"
        axis.set_title(f"{label}{stem}", fontsize=8)
    path = out_dir / "samples.png"
    _save(figure, path)
    return path
