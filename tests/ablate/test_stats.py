"""Ablation statistics: intervals, p-values, Holm and verdicts equal scipy's, on known values."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import assert_clean_error
from scipy import stats

from sagan_cli.ablate.axes import Axis
from sagan_cli.ablate.grid import GridPoint
from sagan_cli.ablate.runner import create_runs, prepare_experiment
from sagan_cli.ablate.service import build_report, write_summary
from sagan_cli.ablate.stats import StatsOptions, seeds_needed
from sagan_cli.recipe import resolve_recipe
from sagan_cli.results import run_id

BASE = {"name": "synthetic", "train": {"steps": 10}, "eval": {"final": False}}


def synthetic_experiment(root, values: dict[str, dict[int, dict[str, float]]], status=None):
    """An ablation over attention_layer whose runs report the given per-seed metric values.

    ``values``: axis label -> seed -> {"structure": ..., "fid": ..., "is": ...}.
    """
    folder = root / "synthetic-attention_layer"
    layers = {"[]": [], "[8]": [8], "[16]": [16]}
    axis = Axis("attention_layer", "model.attention_layer", tuple(layers[k] for k in values))
    points = []
    for index, (label, seeds) in enumerate(values.items()):
        for seed in seeds:
            recipe = resolve_recipe(
                {**BASE, "seed": seed, "model": {"attention_layer": layers[label]}}, origin="t"
            )
            points.append(
                GridPoint(index, seed, {"attention_layer": layers[label]}, recipe, run_id(recipe))
            )
    base = resolve_recipe(BASE, origin="t")
    prepare_experiment(folder, base, [axis])
    for run, point in zip(create_runs(folder, points), points, strict=True):
        label = json.dumps(point.settings["attention_layer"], separators=(",", ""))
        metrics = values[label][point.seed]
        record_status = (status or {}).get((label, point.seed), "done")
        run.update_status(status=record_status, step=10, wall_time_s=1.0)
        run.append_metrics({"kind": "structure", "step": 10, "structure": metrics["structure"]})
        if "fid" in metrics:
            run.append_metrics(
                {"kind": "eval", "step": 10, "final": True, "checkpoint": "training",
                 "fid": metrics["fid"], "is_mean": metrics["is"]}
            )  # fmt: skip
    return folder


def row_for(table: pd.DataFrame, label: str) -> pd.Series:
    return table[table["attention_layer"] == label].iloc[0]


def holm_by_hand(pvalues: list[float]) -> list[float]:
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def test_welch_intervals_p_values_holm_and_verdicts_equal_scipys(tmp_path):
    rng = np.random.default_rng(7)
    baseline = {s: 0.50 + 0.05 * rng.standard_normal() for s in range(5)}
    better = {s: 0.30 + 0.05 * rng.standard_normal() for s in range(5, 10)}  # other seeds:
    similar = {s: 0.50 + 0.05 * rng.standard_normal() for s in range(10, 14)}  # unpaired
    values = {
        "[]": {s: {"structure": v} for s, v in baseline.items()},
        "[8]": {s: {"structure": v} for s, v in better.items()},
        "[16]": {s: {"structure": v} for s, v in similar.items()},
    }
    table = build_report(synthetic_experiment(tmp_path, values)).table
    base = list(baseline.values())
    pvalues = []
    for label, group in (("[8]", better), ("[16]", similar)):
        expected = stats.ttest_ind(list(group.values()), base, equal_var=False)
        interval = expected.confidence_interval(0.95)
        row = row_for(table, label)
        assert row["structure_delta"] == pytest.approx(
            np.mean(list(group.values())) - np.mean(base)
        )
        assert row["structure_p"] == pytest.approx(expected.pvalue, rel=1e-12)
        assert row["structure_ci_low"] == pytest.approx(interval.low, rel=1e-12)
        assert row["structure_ci_high"] == pytest.approx(interval.high, rel=1e-12)
        assert not row["structure_paired"]
        pvalues.append(expected.pvalue)
    adjusted = holm_by_hand(pvalues)
    assert row_for(table, "[8]")["structure_p_holm"] == pytest.approx(adjusted[0])
    assert row_for(table, "[16]")["structure_p_holm"] == pytest.approx(adjusted[1])
    assert row_for(table, "[8]")["structure_verdict"] == (
        "better" if adjusted[0] < 0.05 else "inconclusive"
    )
    assert row_for(table, "[16]")["structure_verdict"] == "inconclusive"
    assert row_for(table, "[]")["structure_verdict"] == "baseline"


def test_shared_seeds_are_paired(tmp_path):
    baseline = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    shifted = {0: 1.1, 1: 2.05, 2: 3.2, 3: 4.1}  # tiny, consistent gains: only pairing sees them
    values = {
        "[]": {s: {"structure": v} for s, v in baseline.items()},
        "[8]": {s: {"structure": v} for s, v in shifted.items()},
    }
    folder = synthetic_experiment(tmp_path, values)
    row = row_for(build_report(folder).table, "[8]")
    expected = stats.ttest_rel(list(shifted.values()), list(baseline.values()))
    interval = expected.confidence_interval(0.95)
    assert row["structure_paired"] and row["structure_p"] == pytest.approx(expected.pvalue)
    assert row["structure_ci_low"] == pytest.approx(interval.low)
    unpaired = row_for(build_report(folder, options=StatsOptions(paired=False)).table, "[8]")
    welch = stats.ttest_ind(list(shifted.values()), list(baseline.values()), equal_var=False)
    assert unpaired["structure_p"] == pytest.approx(welch.pvalue)
    assert unpaired["structure_p"] > row["structure_p"]


def test_identical_rows_give_p_one_and_no_verdict(tmp_path):
    values = {
        "[]": {s: {"structure": 0.3 + s / 10} for s in range(3)},
        "[8]": {s: {"structure": 0.3 + s / 10} for s in range(3)},
    }
    row = row_for(build_report(synthetic_experiment(tmp_path, values)).table, "[8]")
    assert row["structure_p"] == 1.0 and row["structure_verdict"] == "inconclusive"
    assert row["structure_delta"] == 0.0


@pytest.mark.parametrize("direction", [-1, 1])
def test_a_ten_sigma_shift_is_better_or_worse_by_the_metrics_direction(tmp_path, direction):
    rng = np.random.default_rng(3)
    values = {"[]": {}, "[8]": {}}
    for seed in range(5):
        noise = rng.standard_normal(3) * 0.01
        values["[]"][seed] = {"structure": 0.5 + noise[0], "fid": 50 + noise[1], "is": 5 + noise[2]}
        values["[8]"][seed] = {
            "structure": 0.5 + direction * 0.1 + noise[0],
            "fid": 50 + direction * 0.1 + noise[1],
            "is": 5 + direction * 0.1 + noise[2],
        }
    row = row_for(build_report(synthetic_experiment(tmp_path, values)).table, "[8]")
    lower = "better" if direction < 0 else "worse"
    higher = "worse" if direction < 0 else "better"
    assert row["structure_verdict"] == lower and row["fid_verdict"] == lower
    assert row["is_verdict"] == higher


def test_fewer_than_two_seeds_is_never_a_number(tmp_path):
    values = {"[]": {0: {"structure": 0.5}}, "[8]": {0: {"structure": 0.2}, 1: {"structure": 0.25}}}
    row = row_for(build_report(synthetic_experiment(tmp_path, values)).table, "[8]")
    assert row["structure_verdict"] == "inconclusive (n<2)"
    assert math.isnan(row["structure_p"]) and math.isnan(row["structure_ci_low"])


def test_interrupted_and_failed_runs_are_shown_but_left_out(tmp_path):
    values = {
        "[]": {s: {"structure": 0.5} for s in range(3)},
        "[8]": {0: {"structure": 0.1}, 1: {"structure": 0.1}, 2: {"structure": 99.0}},
    }
    folder = synthetic_experiment(tmp_path, values, status={("[8]", 2): "interrupted"})
    row = row_for(build_report(folder).table, "[8]")
    assert row["structure_mean"] == pytest.approx(0.1) and row["structure_n"] == 2
    assert "1 interrupted" in row["status"] and "2 done" in row["status"]


def test_bootstrap_intervals_are_deterministic_and_report_rebuilds_the_summary(cli, tmp_path):
    rng = np.random.default_rng(1)
    values = {
        label: {s: {"structure": mean + 0.05 * rng.standard_normal()} for s in range(6)}
        for label, mean in (("[]", 0.5), ("[8]", 0.4))
    }
    folder = synthetic_experiment(tmp_path, values)
    options = StatsOptions(ci="bootstrap")
    write_summary(folder, options)
    first = (folder / "summary.csv").read_text()
    again = cli("report", str(folder), "--format", "csv", "--ci", "bootstrap")
    assert again.exit_code == 0 and again.stdout == first  # byte for byte
    row = pd.read_csv(io.StringIO(first)).iloc[1]
    assert row["structure_ci_low"] < row["structure_delta"] < row["structure_ci_high"]
    write_summary(folder)
    welch = cli("report", str(folder), "--format", "csv")
    assert welch.stdout == (folder / "summary.csv").read_text() != first


def test_a_bootstrap_of_too_few_seeds_gives_no_interval_and_says_why(cli, tmp_path):
    rng = np.random.default_rng(3)
    values = {
        label: {s: {"structure": mean + 0.01 * rng.standard_normal()} for s in range(3)}
        for label, mean in (("[]", 0.5), ("[8]", 0.4))
    }
    folder = synthetic_experiment(tmp_path, values)
    result = cli("report", str(folder), "--ci", "bootstrap")
    assert result.exit_code == 0, result.output
    assert "--ci bootstrap: rows with fewer than 6 seeds get no interval" in result.stdout
    row = row_for(build_report(folder, options=StatsOptions(ci="bootstrap")).table, "[8]")
    assert np.isnan(row["structure_ci_low"]) and np.isnan(row["structure_ci_high"])
    assert row["structure_p"] < 0.05  # the test itself is valid at any n >= 2
    welch = row_for(build_report(folder).table, "[8]")
    assert welch["structure_ci_low"] < welch["structure_delta"] < welch["structure_ci_high"]


def test_power_hint_names_the_seeds_that_would_settle_it(cli, tmp_path):
    rng = np.random.default_rng(5)
    values = {
        label: {s: {"structure": mean + 0.1 * rng.standard_normal()} for s in range(3)}
        for label, mean in (("[]", 0.5), ("[8]", 0.45))
    }
    folder = synthetic_experiment(tmp_path, values)
    table = build_report(folder).table
    row = row_for(table, "[8]")
    assert row["structure_verdict"] == "inconclusive"
    needed = int(row["structure_seeds_needed"])
    diffs = np.array(
        [values["[8]"][s]["structure"] - values["[]"][s]["structure"] for s in range(3)]
    )
    shift = abs(diffs.mean()) / diffs.std(ddof=1)

    def power(n: int) -> float:
        critical = stats.t.ppf(0.975, n - 1)
        return stats.nct.sf(critical, n - 1, shift * n**0.5) + stats.nct.cdf(
            -critical, n - 1, shift * n**0.5
        )

    assert power(needed) >= 0.8 > power(needed - 1)
    report = cli("report", str(folder))
    assert f"about {needed} seeds per row would detect" in report.stdout
    assert seeds_needed({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}, True, 0.05) is None


def test_report_lists_experiments_separately_and_labels_plain_runs_by_id(
    cli, tiny_recipe, tmp_path
):
    values = {label: {s: {"structure": 0.5} for s in range(2)} for label in ("[]", "[8]")}
    synthetic_experiment(tmp_path, values)
    assert (
        cli(
            "train", str(tiny_recipe), "--results", str(tmp_path), "--set", "train.steps=2"
        ).exit_code
        == 0
    )
    result = cli("report", "--results", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "synthetic-attention_layer" in result.stdout and "tiny" in result.stdout
    run = next((tmp_path / "tiny" / "runs").iterdir()).name
    assert run in result.stdout  # a plain run's row is labelled by its run id
    table = json.loads(cli("report", "tiny", "--results", str(tmp_path), "--format", "json").stdout)
    assert table["summary"][0]["run_ids"] == run and "structure_delta" not in table["summary"][0]


# ---- bad input -----------------------------------------------------------------------------------


@pytest.fixture
def experiment(tmp_path):
    values = {label: {s: {"structure": 0.5 + s / 10} for s in range(2)} for label in ("[]", "[8]")}
    return synthetic_experiment(tmp_path, values)


@pytest.mark.parametrize("alpha", ["0", "1", "-0.5", "1.5"])
def test_alpha_outside_the_unit_interval(cli, experiment, alpha):
    assert_clean_error(cli("report", str(experiment), "--alpha", alpha), f"--alpha {float(alpha)}")


def test_unknown_ci_method(cli, experiment):
    assert_clean_error(
        cli("report", str(experiment), "--ci", "jackknife"),
        "--ci 'jackknife'",
        "welch",
        "bootstrap",
    )


def test_baseline_value_not_in_the_grid(cli, experiment, tiny_recipe, tmp_path):
    assert_clean_error(
        cli("report", str(experiment), "--baseline", "attention_layer=[32]"), "[32]", "[], [8]"
    )
    assert_clean_error(cli("report", str(experiment), "--baseline", "lr=1"), "'lr' is not an axis")
    ablate = cli(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--baseline",
        "attention_layer=[8]", "--results", str(tmp_path / "r"),
    )  # fmt: skip
    assert_clean_error(ablate, "--baseline attention_layer=[8]", "[16]")
    assert not (tmp_path / "r").exists()


def test_paired_with_mismatched_seeds(cli, tmp_path):
    values = {
        "[]": {s: {"structure": 0.5 + s} for s in (0, 1)},
        "[8]": {s: {"structure": 0.2 + s} for s in (2, 3)},
    }
    folder = synthetic_experiment(tmp_path, values)
    assert_clean_error(cli("report", str(folder), "--paired"), "--paired", "same seeds", "[0, 1]")


def test_baseline_can_be_chosen(experiment):
    table = build_report(experiment, options=StatsOptions(baseline="attention_layer=[8]")).table
    assert row_for(table, "[8]")["structure_verdict"] == "baseline"
    assert row_for(table, "[]")["structure_delta"] == pytest.approx(0.0)


def test_a_verdict_needs_a_metric_of_the_table_with_a_direction():
    from sagan_cli.ablate.stats import Comparison, verdict

    comparison = Comparison(-1.0, -2.0, -0.5, 0.001, False, 5, 5)
    assert verdict("fd_dinov2", comparison, 0.001, 0.05) == "better"  # lower is better
    assert verdict("recall", comparison, 0.001, 0.05) == "worse"  # higher is better
    with pytest.raises(KeyError, match="'fdd' is not a metric"):
        verdict("fdd", comparison, 0.001, 0.05)
    with pytest.raises(ValueError, match="no direction"):
        verdict("attn_distance", comparison, 0.001, 0.05)


def test_the_summary_legend_explains_every_metric_it_shows_with_its_direction(tmp_path):
    folder = synthetic_experiment(
        tmp_path,
        {
            "[]": {s: {"structure": 0.5 + s / 10, "fid": 50.0 + s, "is": 2.0} for s in range(2)},
            "[16]": {s: {"structure": 0.4 + s / 10, "fid": 40.0 + s, "is": 2.5} for s in range(2)},
        },
    )
    text = build_report(folder).markdown()
    for line in (
        "`fid`: FID of the final evaluation (Inception features) (lower is better)",
        "`is`: Inception Score of the final evaluation (higher is better)",
        "`structure`: ",
        "`structure_best`: the lowest structural score",
    ):
        assert line in text, text
    assert "`kid`" not in text  # no KID values: no legend line for it


def test_an_unknown_eval_metric_in_a_recipe_is_named_with_a_suggestion():
    from sagan_cli.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown metric 'fd'.*Did you mean 'fid'"):
        resolve_recipe({**BASE, "eval": {"metrics": ["fd"]}}, origin="t")
