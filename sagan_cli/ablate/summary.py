"""Ablation tables built from run folders alone (``sagan ablate`` and ``sagan report`` share this).

``collect_runs`` reads one row per run; ``summarize`` groups one experiment's runs
per grid point: mean, std (sample, n-1) and n over the seeds of finished runs
for every metric; deltas against the baseline row with a confidence interval,
a p-value, Holm's correction and a verdict (``sagan_cli.ablate.stats``);
steps, wall time, images/s and parameter counts. Interrupted and failed runs
are counted in the status column and left out of every number. Plain ``sagan
train`` runs (no ablation) are grouped by configuration and labelled with
their run ids.

Metrics per run: ``fid``/``is``/``kid`` from the final evaluation (the newest at
the run's last step), ``fid_best`` the lowest FID any evaluation of the run
recorded, ``fid_best``/``is_best``/``kid_best`` from the evaluation of ``best.pt`` (the
checkpoint with the lowest in-training FID; without one, ``fid_best`` is the
lowest FID recorded), ``structure`` the final structural score and
``structure_best`` its minimum (data with a structural score), ``attn_distance`` and
``attn_partner`` the final attention statistics (mean over the run's attention
layers of G and D; see ``sagan_cli.inspect.maps``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sagan_cli import markdown
from sagan_cli.ablate.stats import (
    BOOTSTRAP_MIN_N,
    StatsOptions,
    compare,
    holm,
    seeds_needed,
    verdict,
)
from sagan_cli.errors import SaganError, did_you_mean
from sagan_cli.metrics import COMPARED, EVAL_METRICS, NAMES, legend
from sagan_cli.metrics import metric as metric_row
from sagan_cli.outcomes import RunStatus
from sagan_cli.recipe import load_recipe, read_toml
from sagan_cli.results import RunDir, config_identity, list_runs

PLAIN_KEY = "run_ids"  # the label of plain-train groups
BASELINE_VALUES = ("none", "[]")


def experiment_axes(folder: Path) -> list[str]:
    marker = folder / "experiment.json"
    return json.loads(marker.read_text())["axes"] if marker.is_file() else []


LEGACY = "cannot be recomputed"


def protocol_of(record: dict[str, Any]) -> str:
    """The evaluation protocol of a record, as reports show and compare it: ``id: label``.

    Records of releases before the complete protocol id (no ``version``: 0.3's id left out
    the weights, k values and torch-fidelity version; 0.2 recorded provenance only) are
    marked as such, so they never merge with an evaluation of today's protocol.
    """
    if not record:
        return ""
    protocol = record.get("protocol")
    if isinstance(protocol, dict) and protocol.get("version"):
        return f"{protocol.get('id')}: {protocol.get('label', '')}"
    if isinstance(protocol, dict):
        return f"{protocol.get('id')} (0.3, {LEGACY}): {protocol.get('label', '')}"
    ref = record.get("reference") or {}
    extractor = (record.get("feature_extractor") or {}).get("extractor", "?")
    return (
        f"0.2 provenance ({LEGACY}): {record.get('num_samples')} samples vs {ref.get('source')} "
        f"{ref.get('split')} ({ref.get('size')}), {extractor}"
    )


def _matches(record: dict[str, Any], wanted: str) -> bool:
    """``--protocol`` names a protocol by its id, its label or the whole ``id: label``."""
    protocol = record.get("protocol") or {}
    return wanted in (protocol_of(record), protocol.get("id"), protocol.get("label"))


def _has_metric(record: dict[str, Any]) -> bool:
    return any(record.get(m.record_key) is not None for m in EVAL_METRICS)


def _final_eval(
    evals: list[dict[str, Any]], last_step: int, protocol: str | None = None
) -> dict[str, Any]:
    at_end = [
        e
        for e in evals
        if e.get("step") == last_step
        and _has_metric(e)
        and (protocol is None or _matches(e, protocol))
    ]
    finals = [e for e in at_end if e.get("final")]
    return (finals or at_end or [{}])[-1]


def run_row(
    run: RunDir, experiment: str, axes: list[str], protocol: str | None = None
) -> dict[str, Any]:
    status = run.read_status()
    metrics = run.read_metrics()
    train = [r for r in metrics if r.get("kind") == "train"]
    structure = [r for r in metrics if r.get("kind") == "structure"]
    attention = [r for r in metrics if r.get("kind") == "attention"]
    evals = [r for r in metrics if r.get("kind") == "eval"]
    last_step = status.get("step", 0)
    final = _final_eval(evals, last_step, protocol)
    fids = [e["fid"] for e in evals if e.get("fid") is not None]
    best = ([e for e in evals if e.get("checkpoint") == "best.pt"] or [{}])[-1]
    labels = status.get("axis_labels") or {}
    row: dict[str, Any] = {"experiment": experiment}
    if axes:
        for axis in axes:
            row[axis] = labels.get(axis, "")
    else:
        row["config"] = run_identity_label(run)
    row.update(
        {
            "attention_off": attention_off(run),
            "seed": status.get("seed"),
            "run_id": run.id,
            "status": str(RunStatus.read(status)),
            "steps": last_step,
            **{m.name: final.get(m.record_key) for m in EVAL_METRICS},
            "protocol": protocol_of(final),
            "fid_best": best.get(metric_row("fid_best").record_key, min(fids) if fids else None),
            "is_best": best.get(metric_row("is_best").record_key),
            "kid_best": best.get(metric_row("kid_best").record_key),
            "structure": structure[-1]["structure"] if structure else None,
            "structure_best": min(r["structure"] for r in structure) if structure else None,
            "attn_distance": _layer_mean(attention, metric_row("attn_distance").record_key),
            # 0.2 runs called the same number (on shapes) mirror_<layer>
            "attn_partner": _layer_mean(attention, metric_row("attn_partner").record_key)
            if any(k.startswith("partner_") for k in (attention[-1] if attention else {}))
            else _layer_mean(attention, "mirror_"),
            "wall_time_s": status.get("wall_time_s"),
            "img_per_s": float(np.median([r["img_per_s"] for r in train[1:] or train]))
            if train
            else None,
            "threads": status.get("threads"),
            "g_params": (status.get("parameters") or {}).get("generator"),
            "d_params": (status.get("parameters") or {}).get("discriminator"),
            "grid_index": status.get("grid_index", 0),
            "error": status.get("error") or "",
            "eval_provenance": _provenance(final),
        }
    )
    return row


def attention_off(run: RunDir) -> bool:
    """Whether the run has no attention block: no placements, or the ``none`` variant (read
    from its recipe file alone, so a report works without the run's plugins installed)."""
    try:
        model = read_toml(run.recipe_path).get("model", {})
    except SaganError:
        return False
    shared = model.get("attention_layer", [16])
    sizes = [model.get("g_attention_layer", shared), model.get("d_attention_layer", shared)]
    variant = (model.get("attention") or {}).get("variant", "sagan")
    return variant == "none" or not any(sizes)


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


@dataclass(frozen=True)
class DamagedRun:
    """A run folder whose status.json cannot be read: left out of every number."""

    run: RunDir
    problem: str  # "its status.json is missing", ...
    reached: int  # the last step its checkpoints or metrics show
    steps: int | None  # the steps its recipe asks for (None: unreadable too)

    @property
    def finished(self) -> bool:
        return self.steps is not None and self.reached >= self.steps

    def describe(self) -> str:
        said = f"{self.run.path}: {self.problem}, so it is left out of the table"
        if self.finished:
            return (
                f"{said}. Its checkpoints and metrics reach step {self.reached} of "
                f"{self.steps}: it finished. Repair its status with `sagan train --resume "
                f"{self.run.path}` (it continues from its last checkpoint, trains no step "
                f"again and records the run done)."
            )
        if self.steps is None:
            return f"{said}; its recipe.toml cannot be read either."
        return (
            f"{said}. Its checkpoints and metrics reach step {self.reached} of {self.steps}; "
            f"`sagan train --resume {self.run.path}` continues it from its last checkpoint."
        )


def damaged_runs(folder: Path) -> list[DamagedRun]:
    """The run folders of an experiment whose status.json cannot be read."""
    damaged = []
    for run in list_runs(folder):
        problem = run.status_damage()
        if problem is None:
            continue
        try:
            steps = int(read_toml(run.recipe_path)["train"]["steps"])
        except (SaganError, KeyError, TypeError, ValueError):
            steps = None
        logged = [int(r.get("step", 0)) for r in run.read_metrics() if r.get("kind") == "train"]
        reached = max([0, *run.checkpoint_steps(), *logged])
        damaged.append(DamagedRun(run, problem, reached, steps))
    return damaged


def collect_runs(folders: list[Path], protocol: str | None = None) -> pd.DataFrame:
    """One row per run folder of the given experiments, in grid order (``protocol``: only
    evaluations of that protocol, by id or label, count). Folders whose status.json cannot be
    read are left out (``damaged_runs`` names them)."""
    rows: list[dict[str, Any]] = []
    for folder in folders:
        axes = experiment_axes(folder)
        readable = [run for run in list_runs(folder) if run.status_damage() is None]
        rows.extend(run_row(run, folder.name, axes, protocol) for run in readable)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if "config" in frame:  # plain runs: a configuration is labelled by its runs' ids
        ids = frame.groupby("config")["run_id"].agg(lambda r: ", ".join(sorted(r)))
        frame[PLAIN_KEY] = frame["config"].map(ids)
        frame = frame.drop(columns="config")
    return frame.sort_values(["experiment", "grid_index", "seed"], kind="stable").reset_index(
        drop=True
    )


def check_one_protocol(runs: pd.DataFrame, name: str) -> None:
    """Deltas and verdicts compare numbers of one evaluation protocol only: refuse a mix."""
    found = sorted({p for p in runs.get("protocol", pd.Series(dtype=str)).dropna() if p})
    if len(found) > 1:
        raise SaganError(
            f"{name}: its runs were evaluated with {len(found)} protocols ("
            + "; ".join(found)
            + "), and numbers of different protocols (sample count, reference, extractor "
            "weights or preprocessing, k values, torch-fidelity version) are not comparable. "
            "Choose one with --protocol ID (each eval record carries its id), or re-evaluate "
            f"the runs alike (`sagan eval RUN`); evaluations marked '{LEGACY}' come from an "
            "older release whose protocol is incomplete."
        )


def group_keys(runs: pd.DataFrame, folders: list[Path]) -> list[str]:
    """The axes of the experiments (run ids for plain runs), plus ``experiment`` when merged."""
    axes: list[str] = []
    for folder in folders:
        for axis in experiment_axes(folder) or [PLAIN_KEY]:
            if axis not in axes:
                axes.append(axis)
    return (["experiment"] if runs["experiment"].nunique() > 1 else []) + axes


def summarize(
    runs: pd.DataFrame, keys: list[str], options: StatsOptions = StatsOptions()
) -> pd.DataFrame:
    """One experiment's table: a row per group with metric mean/std/n over the seeds of
    finished runs, statistics against the baseline row, cost columns."""
    rows: list[dict[str, Any]] = []
    values_by_seed: list[dict[str, dict[int, float]]] = []
    for values, group in runs.fillna({k: "" for k in keys}).groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        counts = group["status"].value_counts()
        row["runs"] = len(group)
        row["status"] = ", ".join(f"{n} {s}" for s, n in counts.items())
        row["attention_off"] = bool(group["attention_off"].all())
        finished = group[group["status"] == RunStatus.DONE]
        values_by_seed.append(
            {
                metric: {
                    int(seed): float(value)
                    for seed, value in zip(finished["seed"], finished[metric], strict=True)
                    if value is not None and not pd.isna(value) and not pd.isna(seed)
                }
                for metric in COMPARED
            }
        )
        for metric in NAMES:
            column = pd.to_numeric(finished[metric], errors="coerce").dropna()
            row[f"{metric}_mean"] = column.mean() if len(column) else np.nan
            row[f"{metric}_std"] = column.std(ddof=1) if len(column) > 1 else np.nan
            row[f"{metric}_n"] = len(column)
        row["steps"] = int(group["steps"].max())
        for column in ("wall_time_s", "img_per_s", "threads"):
            numbers = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = numbers.mean() if len(numbers) else np.nan
        for column in ("g_params", "d_params"):
            numbers = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = int(numbers.iloc[0]) if len(numbers) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if PLAIN_KEY in keys:  # plain runs are no ablation: no baseline to compare against
        table["baseline"] = False
        return table
    baseline = _baseline_row(table, keys, options.baseline)
    table["baseline"] = [i == baseline for i in range(len(table))]
    for metric in COMPARED:
        comparisons = [
            compare(seeds[metric], values_by_seed[baseline][metric], options.ci, options.paired)
            if i != baseline
            else None
            for i, seeds in enumerate(values_by_seed)
        ]
        adjusted = holm([c.p if c is not None and c.testable else math.nan for c in comparisons])
        table[f"{metric}_delta"] = [c.delta if c else np.nan for c in comparisons]
        table[f"{metric}_ci_low"] = [c.ci_low if c else np.nan for c in comparisons]
        table[f"{metric}_ci_high"] = [c.ci_high if c else np.nan for c in comparisons]
        table[f"{metric}_p"] = [c.p if c else np.nan for c in comparisons]
        table[f"{metric}_p_holm"] = adjusted
        table[f"{metric}_paired"] = [c.paired if c else None for c in comparisons]
        table[f"{metric}_verdict"] = [
            "baseline" if c is None else verdict(metric, c, p, options.alpha)
            for c, p in zip(comparisons, adjusted, strict=True)
        ]
        table[f"{metric}_seeds_needed"] = [
            seeds_needed(
                seeds[metric], values_by_seed[baseline][metric], bool(c.paired), options.alpha
            )
            if c is not None
            and c.testable
            and verdict(metric, c, p, options.alpha) == "inconclusive"
            else None
            for seeds, c, p in zip(values_by_seed, comparisons, adjusted, strict=True)
        ]
    return table


def _baseline_row(table: pd.DataFrame, keys: list[str], chosen: str | None) -> int:
    """``--baseline AXIS=VALUE``; else the first row without attention (no placements or the
    ``none`` variant), else one whose axis value is 'none' or [], else the first."""
    if chosen is not None:
        axis, _, value = chosen.partition("=")
        axis, value = axis.strip(), value.strip()
        if axis not in keys:
            raise SaganError(
                f"--baseline {chosen}: '{axis}' is not an axis of this table.{did_you_mean(axis, keys)} "
                f"Axes: {', '.join(k for k in keys if k != 'experiment')}."
            )
        labels = [str(v) for v in table[axis]]
        wanted = value.replace(" ", "")
        for index, label in enumerate(labels):
            if label.replace(" ", "") == wanted:
                return index
        raise SaganError(
            f"--baseline {chosen}: no row has {axis} = {value}. Values in the grid: "
            f"{', '.join(dict.fromkeys(labels))}."
        )
    for index, row in table.iterrows():
        if row["attention_off"]:
            return int(index)
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


def _number(value: float, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _p(value: float) -> str:
    if value is None or pd.isna(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def present_metrics(table: pd.DataFrame) -> list[str]:
    """The table's metrics that have at least one value, in the metric table's order."""
    return [m for m in NAMES if table[f"{m}_n"].sum() > 0]


def display_rows(table: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string rows for Markdown and the terminal: only metrics that have values."""
    present = present_metrics(table)
    compared = [m for m in COMPARED if m in present and f"{m}_delta" in table]
    header = [*keys, *present]
    for metric in compared:
        header += [f"Δ {metric} [95% CI]", f"p {metric} (Holm)", f"{metric} verdict"]
    header += ["steps", "wall s", "img/s", "threads", "G params", "D params", "status"]
    rows = []
    for _, row in table.iterrows():
        line = [str(row[k]) for k in keys] + [cell(row, m) for m in present]
        for metric in compared:
            if row["baseline"]:
                line += ["baseline", "", ""]
                continue
            interval = (
                ""
                if pd.isna(row[f"{metric}_ci_low"])
                else f" [{row[f'{metric}_ci_low']:+.3f}, {row[f'{metric}_ci_high']:+.3f}]"
            )
            line += [
                _number(row[f"{metric}_delta"]) + interval,
                _p(row[f"{metric}_p_holm"]),
                str(row[f"{metric}_verdict"]),
            ]
        line += [
            str(row["steps"]),
            "–" if pd.isna(row["wall_time_s"]) else f"{row['wall_time_s']:.1f}",
            "–" if pd.isna(row["img_per_s"]) else f"{row['img_per_s']:.1f}",
            "–" if pd.isna(row["threads"]) else f"{row['threads']:g}",
            "–" if pd.isna(row["g_params"]) else f"{int(row['g_params']):,}",
            "–" if pd.isna(row["d_params"]) else f"{int(row['d_params']):,}",
            row["status"],
        ]
        rows.append(line)
    return header, rows


def power_hints(table: pd.DataFrame, keys: list[str], alpha: float, ci: str = "welch") -> list[str]:
    """One line per inconclusive comparison: how many seeds would settle it (80% power); with
    ``ci = "bootstrap"``, a line when rows have too few seeds for its interval."""
    hints = []
    if ci == "bootstrap" and "fid_n" in table:
        counts = [int(table[f"{m}_n"].min()) for m in COMPARED if table[f"{m}_n"].max() > 0]
        if counts and min(counts) < BOOTSTRAP_MIN_N:
            hints.append(
                f"--ci bootstrap: rows with fewer than {BOOTSTRAP_MIN_N} seeds get no interval "
                f"(a percentile bootstrap of {min(counts)} values covers far less than 95%); "
                f"the Welch interval (the default) is valid at any n >= 2."
            )
    for _, row in table.iterrows():
        label = ", ".join(f"{k}={row[k]}" for k in keys if k != "experiment")
        for metric in COMPARED:
            if row.get(f"{metric}_verdict") != "inconclusive":
                continue
            delta, have = row[f"{metric}_delta"], int(row[f"{metric}_n"])
            needed = row[f"{metric}_seeds_needed"]
            if needed is None or pd.isna(needed):
                hints.append(
                    f"{metric}, {label}: Δ {delta:+.3g} is too small for its variance to be "
                    f"detected with up to 1000 seeds; treat it as no effect."
                )
            else:
                hints.append(
                    f"{metric}, {label}: about {int(needed)} seeds per row would detect Δ "
                    f"{delta:+.3g} with 80% power at α = {alpha:g} (it has {have})."
                )
    return hints


def to_markdown(
    table: pd.DataFrame,
    keys: list[str],
    runs: pd.DataFrame,
    title: str,
    alpha: float,
    damaged: Sequence[DamagedRun] = (),
) -> str:
    header, rows = display_rows(table, keys)
    lines = [
        f"# {title}",
        "",
        "Mean ± sample std (n seeds) over finished runs. Δ: against the baseline row, with a "
        "95% confidence interval; p: two-sided t test (paired on shared seeds, else Welch), "
        f"Holm-corrected over the rows; verdicts at α = {alpha:g}, by each metric's direction.",
        "",
        *(f"- {line}" for line in legend(present_metrics(table))),
        "",
        markdown.table(header, rows),
    ]
    hints = power_hints(table, keys, alpha)
    if hints:
        lines += ["", "Inconclusive comparisons:", ""] + [f"- {h}" for h in hints]
    provenance = sorted({p for p in runs["eval_provenance"] if p})
    if provenance:
        lines += ["", "Evaluation: " + "; ".join(provenance) + "."]
    unfinished = [RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.INTERRUPTED, RunStatus.SKIPPED]
    failed = runs[runs["status"].isin([str(s) for s in unfinished])]
    if len(failed):
        lines += ["", "Runs that did not finish (not in the statistics):", ""]
        lines += [f"- {r.run_id} ({r.status}): {r.error}" for r in failed.itertuples()]
    if damaged:
        lines += ["", "Run folders left out (their status cannot be read):", ""]
        lines += [f"- {d.describe()}" for d in damaged]
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)
