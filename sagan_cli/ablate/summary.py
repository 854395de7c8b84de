"""Ablation tables built from run folders alone (``sagan ablate`` and ``sagan report`` share this).

``collect_runs`` reads one row per run; ``summarize`` groups them per grid point:
mean, std (sample, n-1) and n over seeds for every metric, the baseline delta,
steps, wall time, images/s and parameter counts.

Metrics per run: ``fid``/``is``/``kid`` from the final evaluation (the newest at
the run's last step), ``fid_best`` the lowest FID any evaluation of the run
recorded, ``fid_best``/``is_best``/``kid_best`` from the evaluation of ``best.pt`` (the
checkpoint with the lowest in-training FID; without one, ``fid_best`` is the
lowest FID recorded), ``structure`` the final structural score and
``structure_best`` its minimum (shapes data only), ``attn_distance`` and
``attn_mirror`` the final attention statistics (mean over the run's attention
layers of G and D; see ``sagan_cli.inspect.maps``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sagan_cli import markdown
from sagan_cli.recipe import load_recipe
from sagan_cli.results import RunDir, config_identity, list_runs

METRICS = (
    "fid",
    "is",
    "kid",
    "fid_best",
    "is_best",
    "kid_best",
    "structure",
    "structure_best",
    "attn_distance",
    "attn_mirror",
)
DELTA_METRICS = ("fid", "structure")
BASELINE_VALUES = ("none", "[]")


def experiment_axes(folder: Path) -> list[str]:
    marker = folder / "experiment.json"
    return json.loads(marker.read_text())["axes"] if marker.is_file() else []


def _final_eval(evals: list[dict[str, Any]], last_step: int) -> dict[str, Any]:
    at_end = [
        e
        for e in evals
        if e.get("step") == last_step and e.get("fid", e.get("is_mean")) is not None
    ]
    finals = [e for e in at_end if e.get("final")]
    return (finals or at_end or [{}])[-1]


def run_row(run: RunDir, experiment: str, axes: list[str]) -> dict[str, Any]:
    status = run.read_status()
    metrics = run.read_metrics()
    train = [r for r in metrics if r.get("kind") == "train"]
    structure = [r for r in metrics if r.get("kind") == "structure"]
    attention = [r for r in metrics if r.get("kind") == "attention"]
    evals = [r for r in metrics if r.get("kind") == "eval"]
    last_step = status.get("step", 0)
    final = _final_eval(evals, last_step)
    fids = [e["fid"] for e in evals if e.get("fid") is not None]
    best = ([e for e in evals if e.get("checkpoint") == "best.pt"] or [{}])[-1]
    labels = status.get("axis_labels") or {}
    if not axes:
        identity = run_identity_label(run)
        labels = {"config": identity}
    row: dict[str, Any] = {"experiment": experiment}
    for axis in axes or ["config"]:
        row[axis] = labels.get(axis, "")
    row.update(
        {
            "seed": status.get("seed"),
            "run_id": run.id,
            "status": status.get("status", "queued"),
            "steps": last_step,
            "fid": final.get("fid"),
            "is": final.get("is_mean"),
            "kid": final.get("kid_mean"),
            "fid_best": best.get("fid", min(fids) if fids else None),
            "is_best": best.get("is_mean"),
            "kid_best": best.get("kid_mean"),
            "structure": structure[-1]["structure"] if structure else None,
            "structure_best": min(r["structure"] for r in structure) if structure else None,
            "attn_distance": _layer_mean(attention, "distance_"),
            "attn_mirror": _layer_mean(attention, "mirror_"),
            "wall_time_s": status.get("wall_time_s"),
            "img_per_s": float(np.median([r["img_per_s"] for r in train[1:] or train]))
            if train
            else None,
            "g_params": (status.get("parameters") or {}).get("generator"),
            "d_params": (status.get("parameters") or {}).get("discriminator"),
            "grid_index": status.get("grid_index", 0),
            "error": status.get("error") or "",
            "eval_provenance": _provenance(final),
        }
    )
    return row


def _layer_mean(records: list[dict[str, Any]], prefix: str) -> float | None:
    """The mean over layers of the last record's ``prefix<layer>`` values."""
    if not records:
        return None
    values = [v for k, v in records[-1].items() if k.startswith(prefix) and v is not None]
    return float(np.mean(values)) if values else None


def run_identity_label(run: RunDir) -> str:
    """For runs outside an ablation: a short id of the recipe minus its seed."""
    identity = config_identity(load_recipe(run.recipe_path))
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def _provenance(record: dict[str, Any]) -> str:
    if not record:
        return ""
    ref = record.get("reference") or {}
    extractor = record.get("feature_extractor") or {}
    return (
        f"{record.get('num_samples')} samples vs {ref.get('source')} {ref.get('split')} "
        f"({ref.get('size')} images), {extractor.get('extractor')} {str(extractor.get('sha256'))[:12]}, "
        f"torch-fidelity {record.get('torch_fidelity')}"
    )


def collect_runs(folders: list[Path]) -> pd.DataFrame:
    """One row per run folder of the given experiments, in grid order."""
    rows: list[dict[str, Any]] = []
    for folder in folders:
        axes = experiment_axes(folder)
        rows.extend(run_row(run, folder.name, axes) for run in list_runs(folder))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["experiment", "grid_index", "seed"], kind="stable").reset_index(
        drop=True
    )


def group_keys(runs: pd.DataFrame, folders: list[Path]) -> list[str]:
    """The axes of the experiments (``config`` for plain runs), plus ``experiment`` when merged."""
    axes: list[str] = []
    for folder in folders:
        for axis in experiment_axes(folder) or ["config"]:
            if axis not in axes:
                axes.append(axis)
    return (["experiment"] if runs["experiment"].nunique() > 1 else []) + axes


def summarize(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group: metric mean/std/n over seeds, baseline deltas, cost columns."""
    rows: list[dict[str, Any]] = []
    for values, group in runs.fillna({k: "" for k in keys}).groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        counts = group["status"].value_counts()
        row["runs"] = len(group)
        row["status"] = ", ".join(f"{n} {s}" for s, n in counts.items())
        for metric in METRICS:
            column = pd.to_numeric(group[metric], errors="coerce").dropna()
            row[f"{metric}_mean"] = column.mean() if len(column) else np.nan
            row[f"{metric}_std"] = column.std(ddof=1) if len(column) > 1 else np.nan
            row[f"{metric}_n"] = len(column)
        row["steps"] = int(group["steps"].max())
        for column in ("wall_time_s", "img_per_s"):
            numbers = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = numbers.mean() if len(numbers) else np.nan
        for column in ("g_params", "d_params"):
            numbers = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = int(numbers.iloc[0]) if len(numbers) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    baseline = _baseline_row(table, keys)
    for metric in DELTA_METRICS:
        table[f"{metric}_delta"] = table[f"{metric}_mean"] - table.loc[baseline, f"{metric}_mean"]
    table["baseline"] = [i == baseline for i in range(len(table))]
    return table


def _baseline_row(table: pd.DataFrame, keys: list[str]) -> int:
    """The row whose axis value is 'none' or [] if there is one, else the first."""
    for index, row in table.iterrows():
        if any(str(row[k]) in BASELINE_VALUES for k in keys if k != "experiment"):
            return int(index)
    return 0


def cell(row: pd.Series, metric: str, digits: int = 3) -> str:
    mean, std, n = row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_n"]
    if n == 0 or pd.isna(mean):
        return "–"
    if pd.isna(std):
        return f"{mean:.{digits}f} ({n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def display_rows(table: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string rows for Markdown and the terminal: only metrics that have values."""
    present = [m for m in METRICS if table[f"{m}_n"].sum() > 0]
    header = [
        *keys,
        *present,
        *(f"Δ {m}" for m in DELTA_METRICS if m in present),
        "steps",
        "wall s",
        "img/s",
        "G params",
        "D params",
        "status",
    ]
    rows = []
    for _, row in table.iterrows():
        line = [str(row[k]) for k in keys] + [cell(row, m) for m in present]
        for metric in DELTA_METRICS:
            if metric in present:
                delta = row[f"{metric}_delta"]
                line.append(
                    "baseline" if row["baseline"] else ("–" if pd.isna(delta) else f"{delta:+.3f}")
                )
        line += [
            str(row["steps"]),
            "–" if pd.isna(row["wall_time_s"]) else f"{row['wall_time_s']:.1f}",
            "–" if pd.isna(row["img_per_s"]) else f"{row['img_per_s']:.1f}",
            "–" if pd.isna(row["g_params"]) else f"{int(row['g_params']):,}",
            "–" if pd.isna(row["d_params"]) else f"{int(row['d_params']):,}",
            row["status"],
        ]
        rows.append(line)
    return header, rows


def to_markdown(table: pd.DataFrame, keys: list[str], runs: pd.DataFrame, title: str) -> str:
    header, rows = display_rows(table, keys)
    lines = [
        f"# {title}",
        "",
        "Mean ± sample std (n seeds). Lower is better for FID, KID and structure.",
        "",
        markdown.table(header, rows),
    ]
    provenance = sorted({p for p in runs["eval_provenance"] if p})
    if provenance:
        lines += ["", "Evaluation: " + "; ".join(provenance) + "."]
    failed = runs[runs["status"].isin(["failed", "diverged"])]
    if len(failed):
        lines += ["", "Runs that did not finish:", ""]
        lines += [f"- {r.run_id} ({r.status}): {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)
