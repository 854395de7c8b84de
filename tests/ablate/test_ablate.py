"""``sagan ablate`` and ``sagan report``: grids, resumability, isolation, tables that add up."""

from __future__ import annotations

import io
import json
import subprocess

import pandas as pd
import pytest
import torch
from helpers import (
    assert_clean_error,
    kill_when,
    sagan_command,
    sagan_subprocess_env,
    snapshot,
    wait_for,
)

from sagan_cli.results import RunDir, list_runs


def vary(*specs: str) -> list[str]:
    return [arg for spec in specs for arg in ("--vary", spec)]


def sets(*specs: str) -> list[str]:
    return [arg for spec in specs for arg in ("--set", spec)]


def final_structure(run: RunDir) -> float:
    return [r for r in run.read_metrics() if r["kind"] == "structure"][-1]["structure"]


@pytest.mark.slow
def test_two_axes_two_seeds_make_eight_runs_and_four_rows_that_add_up(cli, tiny_recipe, tmp_path):
    args = ("ablate", str(tiny_recipe), *vary("attention_layer=[],[16]", "lr_d=4e-4,2e-4"))
    args += ("--seeds", "2", "--name", "grid", "--results", str(tmp_path))
    result = cli(*args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "grid"
    runs = list_runs(folder)
    assert len(runs) == 8 and all(r.read_status()["status"] == "done" for r in runs)
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == 4
    assert list(summary["attention_layer"]) == ["[]", "[]", "[16]", "[16]"]
    assert list(summary["lr_d"]) == [0.0004, 0.0002, 0.0004, 0.0002]
    for row in summary.itertuples():
        members = [
            r
            for r in runs
            if r.read_status()["axis_labels"]
            == {"attention_layer": row.attention_layer, "lr_d": format(row.lr_d, "g")}
        ]
        values = pd.Series([final_structure(r) for r in members])
        assert len(members) == 2 and row.structure_n == 2
        assert row.structure_mean == pytest.approx(values.mean(), rel=1e-12)
        assert row.structure_std == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert row.g_params == members[0].read_status()["parameters"]["generator"]
    assert summary.loc[0, "baseline"]  # attention_layer = [] is the baseline row
    assert summary["structure_delta"].iloc[2] == pytest.approx(
        summary["structure_mean"].iloc[2] - summary["structure_mean"].iloc[0]
    )
    markdown = (folder / "summary.md").read_text()
    assert "| attention_layer | lr_d | structure |" in markdown and "± " in markdown
    assert (folder / "structure_vs_step.png").stat().st_size > 0 and (
        folder / "samples.png"
    ).exists()

    report = cli("report", "grid", "--results", str(tmp_path), "--format", "csv")
    assert report.exit_code == 0
    assert report.stdout == (folder / "summary.csv").read_text()  # rebuilt from the folders alone
    by_axis = pd.read_csv(
        io.StringIO(
            cli(
                "report",
                "grid",
                "--results",
                str(tmp_path),
                "--format",
                "csv",
                "--by",
                "attention_layer",
            ).stdout
        )
    )
    assert list(by_axis["structure_n"]) == [4, 4]

    before = snapshot(folder / "runs")
    again = cli(*args)
    assert again.exit_code == 0 and "already there" in again.output
    assert snapshot(folder / "runs") == before


def test_dry_run_prints_the_numbered_grid_and_writes_nothing(cli, tmp_path):
    result = cli("ablate", "paper_table1", "--dry-run", "--results", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    assert "9 runs (9 grid points)" in result.stdout
    assert "variant=residual attention_layer=[64]" in result.stdout
    assert not (tmp_path / "results").exists()


def test_built_in_candidates_and_recipe_axes(cli, tmp_path):
    result = cli(
        "ablate",
        "smoke",
        "--vary",
        "attention_layer",
        "--seeds",
        "0,3",
        "--dry-run",
        "--results",
        str(tmp_path),
    )
    assert result.exit_code == 0
    assert "6 runs (3 grid points)" in result.stdout  # none, [8], [16] at 32x32, two seeds each
    attention = cli(
        "ablate", "smoke", "--vary", "attention", "--dry-run", "--results", str(tmp_path)
    )
    assert "none" in attention.stdout and "sagan_pooled" in attention.stdout


@pytest.mark.slow
def test_killed_ablation_resumes_without_retraining_finished_runs(tiny_recipe, tmp_path):
    command = sagan_command(
        "ablate",
        str(tiny_recipe),
        *vary("attention_layer=[],[16]"),
        "--name",
        "k",
        "--results",
        str(tmp_path),
        "--device",
        "cpu",
        "-q",
        *sets(
            "train.steps=40",
            "train.checkpoint_every=5",
            "train.log_every=5",
            "train.sample_every=20",
        ),
    )
    process = subprocess.Popen(command, env=sagan_subprocess_env())
    folder = tmp_path / "k"

    def grid_is_created() -> bool:
        runs = list_runs(folder)
        return len(runs) == 2 and all("grid_index" in r.read_status() for r in runs)

    wait_for(grid_is_created, "both run folders with their grid index", process)
    first, second = sorted(list_runs(folder), key=lambda r: r.read_status()["grid_index"])
    kill_when(second.checkpoints / "step-00000010.pt", process)
    assert first.read_status()["status"] == "done" and second.read_status()["status"] == "running"
    finished = snapshot(first.path)

    subprocess.run(command, env=sagan_subprocess_env(), check=True)
    assert snapshot(first.path) == finished  # not retrained, not touched
    status = second.read_status()
    assert status["status"] == "done" and status["resumed_from"] is not None
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["status"]) == ["1 done", "1 done"] and list(summary["steps"]) == [40, 40]


def test_a_diverging_run_is_recorded_while_the_others_finish(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    args = (
        "ablate",
        str(tiny_recipe),
        *sets("loss.name=nan_hinge"),
        *vary("loss.nan_from_call=4,1000"),
        "--name",
        "d",
        "--results",
        str(tmp_path),
    )
    result = cli(*args)
    assert result.exit_code == 1, result.output  # one run did not finish
    summary = pd.read_csv(tmp_path / "d" / "summary.csv")
    assert list(summary["status"]) == ["1 diverged", "1 done"]
    assert "diverged" in (tmp_path / "d" / "summary.md").read_text()
    again = cli(*args)
    assert (
        again.exit_code == 1 and "already there" in again.output
    )  # not retried without --retry-failed


def test_a_run_another_process_holds_before_its_first_status_write_is_left_to_it(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    # A concurrent ablation that has locked a run but not yet written "running" into its
    # status: this ablation must leave the run to it, not call it a run its launcher never
    # started (which would fail the command).
    import contextlib

    import sagan_cli.ablate.runner as runner
    from sagan_cli.results import run_lock

    held = contextlib.ExitStack()
    real_train_run = runner.train_run

    def train_run(recipe, run, *args, **kwargs):
        if run.read_status()["grid_index"] == 1:
            held.enter_context(run_lock(run))  # the "other process" takes it first
        return real_train_run(recipe, run, *args, **kwargs)

    monkeypatch.setattr(runner, "train_run", train_run)
    with held:
        result = cli(
            "ablate", str(tiny_recipe), *vary("attention_layer=[],[16]"), "--name", "b",
            "--results", str(tmp_path),
        )  # fmt: skip
        statuses = sorted(
            (r.read_status() for r in list_runs(tmp_path / "b")), key=lambda s: s["grid_index"]
        )
    assert result.exit_code == 0, result.output
    assert "being trained by another process" in result.output
    assert "never started" not in result.output
    assert [s["status"] for s in statuses] == ["done", "queued"]  # its status is not ours to write


def test_parallel_jobs_on_cpu_use_processes(cli, tiny_recipe, tmp_path):
    result = cli(
        "ablate",
        str(tiny_recipe),
        *vary("attention_layer=[],[16]"),
        "--jobs",
        "2",
        "--name",
        "p",
        "--results",
        str(tmp_path),
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    statuses = [r.read_status() for r in list_runs(tmp_path / "p")]
    assert [s["status"] for s in statuses] == ["done", "done"]
    assert len({s["pid"] for s in statuses}) == 2  # two worker processes, not this one


# ---- bad input: one paragraph, exit 2, nothing started ---------------------------------------------


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (
            vary("atention_layer"),
            ["Unknown axis 'atention_layer'", "Did you mean 'attention_layer'"],
        ),
        (
            vary("attention_layer=[32]"),
            ["Grid point #1 (attention_layer=[32], seed 0)", "Valid: [8, 16]"],
        ),
        (vary("lr_d=0.0004"), ["changes nothing", "same recipe as the base recipe"]),
        (vary("attention=sagan,sagan"), ["lists a value twice"]),
        (vary("attention_layer="), ["no values", "empty"]),
        (vary("eps"), ["ambiguous", "model.norm.generator.eps"]),
        (vary("lr_g"), ["no built-in values", "--vary lr_g=v1,v2"]),
        ([*vary("attention_layer"), "--seeds", "zero"], ["--seeds 'zero'"]),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(
    cli, tiny_recipe, tmp_path, arguments, fragments
):
    result = cli("ablate", str(tiny_recipe), *arguments, "--results", str(tmp_path / "results"))
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "results").exists()


def test_nothing_to_vary(cli, tiny_recipe, tmp_path):
    assert_clean_error(
        cli("ablate", str(tiny_recipe), "--results", str(tmp_path)), "Nothing to vary"
    )


def test_a_name_made_from_another_recipe_is_refused(cli, tiny_recipe, tmp_path):
    def ablate(*args: str):
        return cli("ablate", str(tiny_recipe), *args, "--name", "x", "--results", str(tmp_path))

    first = ablate(*vary("attention_layer=[],[16]"))
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path / "x")
    other = ablate(*vary("attention_layer=[],[16]"), *sets("train.lr_g=2e-4"))
    assert_clean_error(other, "different recipe", "train.lr_g", "another --name")
    other_axes = ablate(*vary("lr_d=1e-4,2e-4"))
    assert_clean_error(other_axes, "attention_layer", "another --name")
    assert snapshot(tmp_path / "x") == before


def test_more_jobs_than_gpus_is_refused(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = cli(
        "ablate",
        str(tiny_recipe),
        *vary("attention_layer=[],[16]"),
        "--device",
        "cuda",
        "--jobs",
        "2",
        "--dry-run",
        "--results",
        str(tmp_path),
    )
    assert_clean_error(result, "--jobs 2", "1 visible")


def test_report_errors_and_merging(cli, tiny_recipe, tmp_path):
    assert_clean_error(cli("report", "--results", str(tmp_path)), "No experiments")
    for name, values in (("a", "[],[16]"), ("b", "[],[8]")):
        assert (
            cli(
                "ablate",
                str(tiny_recipe),
                *vary(f"attention_layer={values}"),
                "--name",
                name,
                "--results",
                str(tmp_path),
            ).exit_code
            == 0
        )
    assert_clean_error(
        cli("report", "c", "--results", str(tmp_path)), "'c' is not an experiment", "a, b"
    )
    assert_clean_error(
        cli("report", "a", "--results", str(tmp_path), "--by", "loss"), "attention_layer"
    )
    merged = cli("report", "a", "b", "--results", str(tmp_path), "--format", "json")
    assert merged.exit_code == 0
    rows = json.loads(merged.stdout)["summary"]
    assert [(r["experiment"], r["attention_layer"]) for r in rows] == [
        ("a", "[]"),
        ("a", "[16]"),
        ("b", "[]"),
        ("b", "[8]"),
    ]


def test_retry_failed_reruns_the_failed_runs_only(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    args = (
        "ablate",
        str(tiny_recipe),
        *sets("loss.name=nan_hinge"),
        *vary("loss.nan_from_call=4,1000"),
        "--name",
        "retry",
        "--results",
        str(tmp_path),
    )
    assert cli(*args).exit_code == 1
    runs = {
        r.read_status()["axis_labels"]["loss.nan_from_call"]: r
        for r in list_runs(tmp_path / "retry")
    }
    done_before = snapshot(runs["1000"].path)
    assert runs["4"].read_status()["status"] == "diverged"
    retried = cli(*args, "--retry-failed")
    # resumed from its last good checkpoint (step 3) in a fresh process, whose loss object
    # counts from 1 again: NaN would come at step 7, after the 6 steps the run has
    assert retried.exit_code == 0, retried.output
    assert "already there" in retried.output  # the finished run is not retrained
    assert snapshot(runs["1000"].path) == done_before
    status = runs["4"].read_status()
    assert status["status"] == "done" and status["resumed_from"] == "step-00000003.pt"


def test_report_formats_table_and_markdown(cli, tiny_recipe, tmp_path):
    assert (
        cli(
            "ablate",
            str(tiny_recipe),
            *vary("attention_layer=[],[16]"),
            "--name",
            "f",
            "--results",
            str(tmp_path),
        ).exit_code
        == 0
    )
    table = cli("report", "f", "--results", str(tmp_path), "--format", "table")
    assert table.exit_code == 0 and "attention_layer" in table.stdout and "[16]" in table.stdout
    markdown = cli("report", "f", "--results", str(tmp_path), "--format", "md")
    assert markdown.exit_code == 0
    assert markdown.stdout == (tmp_path / "f" / "summary.md").read_text()
    assert markdown.stdout.startswith("# f") and "| attention_layer |" in markdown.stdout


def test_the_detach_hint_is_built_from_the_options_the_user_gave(tmp_path):
    from sagan_cli.ablate.service import AblationOutcome, AblationRequest, plan_ablation
    from sagan_cli.plugins import get_registry

    request = AblationRequest(
        recipe="smoke", varies=("attention_layer",), results_root=tmp_path / "my results",
        dry_run=True,
    )  # fmt: skip
    plan = plan_ablation(request, get_registry())
    (hint,) = AblationOutcome(plan, []).notes()  # detached: no report yet
    assert f"`sagan status smoke-attention_layer --results '{tmp_path}/my results'`" in hint
    default = plan_ablation(
        AblationRequest(recipe="smoke", varies=("lr_d=1e-4",), dry_run=True), get_registry()
    )
    assert default.status_command() == f"sagan status {default.name}"


@pytest.mark.slow
def test_report_names_unreadable_run_folders_and_keeps_them_out_of_the_numbers(
    cli, tiny_recipe, tmp_path
):
    """A garbage status.json was an unlabelled 0-step "queued" row (n dropped from 2 to 1);
    a deleted one showed a finished run as "1 queued"; both silent, exit 0."""
    args = ("ablate", str(tiny_recipe), *vary("attention_layer=[],[16]"), "--seeds", "2")
    assert cli(*args, "--name", "d", "--results", str(tmp_path)).exit_code == 0
    garbage, deleted, *_ = list_runs(tmp_path / "d")
    garbage.status_path.write_text("{not json")
    deleted.status_path.unlink()

    shown = cli("report", "d", "--results", str(tmp_path), "--format", "json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert {r["run_id"] for r in report["runs"]} == {r.id for r in list_runs(tmp_path / "d")} - {
        garbage.id,
        deleted.id,
    }
    assert all(r["status"] == "done" for r in report["runs"])  # no invented "queued" row
    assert {d["run_dir"] for d in report["left_out"]} == {str(garbage.path), str(deleted.path)}
    for run, problem in ((garbage, "not valid JSON"), (deleted, "missing")):
        (warning,) = [line for line in shown.stderr.splitlines() if str(run.path) in line]
        assert warning.startswith("Warning:") and problem in warning
        # its checkpoints and metrics show it finished: how to repair it
        assert f"sagan train --resume {run.path}" in warning and "it finished" in warning
    table = cli("report", "d", "--results", str(tmp_path))
    assert "2 run folder(s) left out of this table" in table.stdout
    markdown = cli("report", "d", "--results", str(tmp_path), "--format", "md").stdout
    assert "Run folders left out" in markdown and str(garbage.path) in markdown

    repaired = cli("train", "--resume", str(deleted.path))  # the repair the warning names
    assert repaired.exit_code == 0, repaired.output
    assert deleted.read_status()["status"] == "done"
    again = json.loads(cli("report", "d", "--results", str(tmp_path), "--format", "json").stdout)
    assert [d["run_dir"] for d in again["left_out"]] == [str(garbage.path)]


def test_the_distance_plot_leaves_room_above_curves_that_sit_at_the_uniform_level(
    tmp_path, monkeypatch
):
    import pandas as pd

    from sagan_cli.ablate import plots

    uniform = plots.uniform_distance("g8")
    folder = tmp_path / "e"
    for run_id in ("a", "b"):
        run = folder / "runs" / run_id
        run.mkdir(parents=True)
        lines = [
            {"kind": "attention", "step": step, "distance_g8": uniform, "gamma_g8": 0.1}
            for step in (10, 20, 30)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    runs = pd.DataFrame(
        {"experiment": ["e", "e"], "run_id": ["a", "b"], "attention_layer": ["[8]", "[8]"]}
    )
    limits = {}

    def keep(figure, path):
        limits[path.name] = figure.axes[0].get_ylim()

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_layer_curves(runs, ["attention_layer"], {"e": folder}, tmp_path)
    low, high = limits["attention_distance_vs_step.png"]
    assert low == 0.0 and high >= 1.2 * uniform  # not at the curve's (and the uniform) level
