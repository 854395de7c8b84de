"""Ablation plots (PNG): metric-vs-step curves with a band over seeds, and sample grids side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
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
        layers = sorted(series)
        figure, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 4), squeeze=False)
        for axis, layer in zip(axes[0], layers, strict=True):
            for label, seeds in series[layer].items():
                frame = pd.concat(seeds, axis=1).sort_index()
                (line,) = axis.plot(frame.index, frame.mean(axis=1).values, label=label)
                if frame.shape[1] > 1:
                    axis.fill_between(
                        frame.index, frame.min(axis=1), frame.max(axis=1), alpha=0.2,
                        color=line.get_color(),
                    )  # fmt: skip
            axis.set_title(f"layer {layer}", fontsize=9)
            axis.set_xlabel("step")
            axis.set_ylabel(title)
            axis.legend(fontsize=7)
        path = out_dir / f"{name}_vs_step.png"
        _save(figure, path)
        written.append(path)
    return written


def plot_samples(
    runs: pd.DataFrame, keys: list[str], folders: dict[str, Path], out_dir: Path
) -> Path | None:
    """The newest sample grid of each grid point's first seed, side by side."""
    panels = []
    for _, group in runs.groupby(keys, sort=False):
        first = group.iloc[0]
        run = RunDir(folders[first.experiment] / "runs" / first.run_id)
        samples = sorted(run.samples.glob("step-*.png"))
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
            axis.imshow(image.copy())
        axis.set_title(f"{label}\n{path.stem}", fontsize=8)
    path = out_dir / "samples.png"
    _save(figure, path)
    return path
