"""Plugin contract round two and crash safety round three: what passes the check trains, and
every failure is one paragraph with the documented exit code (each case was a defect first)."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import assert_clean_error, sagan_command, sagan_subprocess_env, wait_for
from rich.console import Console

from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe
from sagan_cli.results import list_runs, run_dir_for
from sagan_cli.testing import ContractViolation, check_plugin


@pytest.fixture
def contract_plugins(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "contract_plugins")
    get_registry.cache_clear()


def train(cli, recipe, root, *sets: str):
    args = [a for s in sets for a in ("--set", s)]
    return cli("train", str(recipe), "--results", str(root), *args)


# ---- packages written for another API version ------------------------------------------------


def test_a_package_importing_the_0_1_names_gets_one_migration_paragraph(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api01_imports")
    result = cli("plugins")
    said = result.stderr
    assert result.exit_code == 2 and "Traceback" not in said
    assert said.count("Warning: plugin 'api01_imports'") == 1
    for fragment in ("API 0.1", "sagan_cli.api", "factory(params, context)", "Writing a plugin"):
        assert fragment in said, said


def test_old_style_factories_are_refused_once_naming_every_plugin(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAGAN_PLUGINS", "api01_factories")
    listed = cli("plugins", "--kind", "attention")
    said = listed.stderr
    assert said.count("Warning: plugin 'api01_factories'") == 1, said  # not one per plugin
    assert "old_a, old_b, old_c" in said and "(params, context" in said
    used = train(cli, tiny_recipe, tmp_path, "model.attention.variant=old_a")
    assert_clean_error(
        used, "'old_a' is not a registered attention plugin", "factory(params, context)"
    )


def test_a_descriptor_for_a_newer_api_is_told_to_upgrade_sagan_cli(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_future")
    result = cli("plugins")
    assert result.exit_code == 2 and "api_version = 2" in result.stderr
    assert "a newer plugin API than this sagan-cli" in result.stderr
    assert 'pip install -U "sagan-cli"' in result.stderr
    assert "sagan_cli.plugins" not in result.stderr  # not the 0.1 migration paragraph


def test_a_descriptor_for_an_older_api_gets_the_migration_paragraph(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_past")
    result = cli("plugins")
    assert result.exit_code == 2 and "api_version = 0" in result.stderr
    assert "speaks plugin API v1" in result.stderr and "factory(params, context)" in result.stderr


def test_a_descriptor_without_api_version_is_taken_as_this_api_and_said_once(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_undeclared")
    listed = cli("plugins", "--kind", "attention")
    assert listed.exit_code == 0, listed.output
    assert "quiet_one" in listed.stdout and "quiet_two" in listed.stdout
    assert listed.stderr.count("without api_version") == 1, listed.stderr
    assert "quiet_one, quiet_two without api_version; taken as plugin API v1" in listed.stderr
    assert "api_version=1" in listed.stderr


# ---- the contract helper for plugin authors' own tests -----------------------------------------


def test_check_plugin_runs_in_process_for_chosen_places():
    rows = check_plugin("sagan", placements=["g16@32", "d8@64"])
    assert [r.place for r in rows] == [
        "G 16x16, 32 ch (32px)",
        "G 16x16, 256 ch (32px)",
        "D 8x8, 256 ch (64px)",
    ]
    assert {r.outcome for r in rows} == {"ok"}
    with pytest.raises(Exception, match="not NETWORK SIZE"):
        check_plugin("sagan", placements=["x16"])


def test_check_plugin_raises_naming_each_failed_place_for_an_uninstalled_module():
    with pytest.raises(ContractViolation) as caught:
        check_plugin("layout_breaker", modules=["contract_plugins"], placements=["g8@32", "d16@32"])
    text = str(caught.value)
    assert "4 of 4 contract checks" in text and "G 8x8" in text and "D 16x16" in text
    assert "as training runs it (channels_last" in text and "view size" in text


def test_the_sagan_check_fixture(sagan_check):
    rows = sagan_check("gamma_param", modules=["contract_plugins"], placements=["g8@32"])
    assert rows and {r.outcome for r in rows} == {"ok"}


def test_the_check_feeds_the_size_the_context_promises():
    """A block with a position table of the context's size: the old checker cropped large maps
    to 16x16 for second derivatives and failed it with a bare AssertionError."""
    rows = check_plugin(
        "sized", modules=["contract_plugins"], placements=["g32@64", "d32@64", "g64@64"]
    )
    assert {r.outcome for r in rows} == {"ok"}, [(r.place, r.detail) for r in rows]


def test_a_5d_weight_passes_the_check_and_trains_in_channels_last(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    rows = check_plugin("conv3d_block", placements=["g16@32", "d8@32"])
    assert {r.outcome for r in rows} == {"ok"}
    result = train(
        cli, tiny_recipe, tmp_path, "model.attention.variant=conv3d_block", "train.steps=2"
    )
    assert result.exit_code == 0, result.output
    status = next(iter(list_runs(tmp_path / "tiny"))).read_status()
    assert status["execution"]["memory_format"] == "channels_last"  # what training chose here


def test_a_layout_breaking_block_fails_the_check_and_is_refused_before_training(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    checked = cli("plugins", "check", "layout_breaker", "--at", "g16@32")
    assert_clean_error(checked, "layout_breaker", "as training runs it", "channels_last")
    trained = train(cli, tiny_recipe, tmp_path, "model.attention.variant=layout_breaker")
    message = assert_clean_error(trained, "attention plugin 'layout_breaker'", "view size")
    assert message.strip().count("\n") == 0
    ablated = cli(
        "ablate", str(tiny_recipe), "--vary", "attention=none,layout_breaker", "--name", "lb",
        "--results", str(tmp_path), "--set", "train.steps=2",
    )  # fmt: skip
    # the other run finished; the command exits 2 naming the plugin: the cause is configuration
    assert ablated.exit_code == 2, ablated.output
    assert "failed on their configuration" in ablated.stderr
    assert "attention plugin 'layout_breaker'" in ablated.stderr
    statuses = {r.read_status()["status"]: r.read_status() for r in list_runs(tmp_path / "lb")}
    assert set(statuses) == {"done", "failed"}  # never left queued with "see the lines above"
    assert "layout_breaker" in statuses["failed"]["error"]
    assert statuses["failed"]["exit_code"] == 2


def test_a_declined_placement_is_not_supported_refused_and_skipped(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    checked = cli("plugins", "check", "small_only", "--at", "g8@32,g16@32")
    assert checked.exit_code == 0, checked.output
    assert "not supported" in checked.stdout and "not above 8x8" in checked.stderr
    assert "2 not supported: the plugin declines these places" in checked.stderr

    refused = train(cli, tiny_recipe, tmp_path, "model.attention.variant=small_only")
    assert_clean_error(refused, "does not support the generator at 16x16", "not above 8x8")
    assert not (tmp_path / "tiny").exists()  # before any work
    validated = cli(
        "recipe", "validate", str(tiny_recipe), "--set", "model.attention.variant=small_only"
    )
    assert validated.exit_code == 2 and "not above 8x8" in validated.stderr

    ablated = cli(
        "ablate", str(tiny_recipe), "--set", "model.attention.variant=small_only",
        "--vary", "attention_layer=[8],[16]", "--name", "small", "--results", str(tmp_path),
        "--set", "train.steps=2",
    )  # fmt: skip
    assert ablated.exit_code == 0, ablated.output
    statuses = sorted(r.read_status()["status"] for r in list_runs(tmp_path / "small"))
    assert statuses == ["done", "skipped"]
    assert "1 run(s) skipped" in ablated.stderr and "not above 8x8" in ablated.stderr
    assert "not above 8x8" in (tmp_path / "small" / "summary.md").read_text()


def test_identity_at_init_may_depend_on_the_parameters(contract_plugins):
    assert {r.outcome for r in check_plugin("gamma_param", placements=["g8@32"])} == {"ok"}
    lifted = check_plugin("gamma_param", {"gamma_init": 0.5}, placements=["g8@32"])
    assert {r.outcome for r in lifted} == {"ok"}  # no claim when gamma starts at 0.5
    with pytest.raises(ContractViolation, match="claims identity_at_init"):
        check_plugin("gamma_liar", {"gamma_init": 0.5}, placements=["g8@32"])


def test_plugins_check_parameters_are_validated(cli):
    for bad, fragment in (
        ("reduction=abc", "--param.reduction"),
        ("reduction=0", "--param.reduction"),
        ("heads=2", "has no parameter 'heads'"),
    ):
        result = cli("plugins", "check", "sagan", "--param", bad)
        assert_clean_error(result, fragment)


# ---- failures inside training ------------------------------------------------------------------


def test_a_plugin_raising_during_training_is_one_paragraph_and_a_failed_status(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    result = train(cli, tiny_recipe, tmp_path, "model.attention.variant=fails_in_training")
    message = assert_clean_error(
        result, "attention plugin 'fails_in_training'", "while training at step 0", "einsum()"
    )
    assert message.strip().splitlines()[-1].startswith("Error:")  # the paragraph is one line
    status = next(iter(list_runs(tmp_path / "tiny"))).read_status()
    assert status["status"] == "failed" and "fails_in_training" in status["error"]


def test_divergence_by_a_loss_bound_exits_3_and_stays_diverged(cli, tiny_recipe, tmp_path):
    sets = ("train.max_loss=0.01", "train.log_every=1")  # hinge losses are near 1: beyond it
    first = train(cli, tiny_recipe, tmp_path, *sets)
    assert first.exit_code == 3, first.output
    run = next(iter(list_runs(tmp_path / "tiny")))
    status = run.read_status()
    assert status["status"] == "diverged" and status["diverged_step"] == 3
    assert "train.max_loss = 0.01 for 3 log lines" in status["error"]
    assert train(cli, tiny_recipe, tmp_path, *sets).exit_code == 3


def test_a_file_size_limit_during_training_is_a_paragraph(tiny_recipe, tmp_path):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))  # a checkpoint is larger

    result = subprocess.run(
        sagan_command("train", str(tiny_recipe), "--results", str(tmp_path), "-q"),
        env=sagan_subprocess_env(),
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "File too large" in result.stderr and "re-run the same command" in result.stderr
    assert next(iter(list_runs(tmp_path / "tiny"))).read_status()["status"] == "failed"


def test_an_unexpected_error_is_a_paragraph_with_a_crash_log(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    import sagan_cli.recipe

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sagan_cli.recipe, "load_recipe", broken)
    result = cli("recipe", "show", str(tiny_recipe))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "internal error: ZeroDivisionError: a bug" in result.stderr
    log = result.stderr.split("traceback is in ")[1].split(" (please")[0]
    assert "ZeroDivisionError" in Path(log).read_text()


# ---- bad numbers in options, recipes and the environment --------------------------------------


@pytest.mark.parametrize("steps", ["9223372036854775807", "99999999999999999999999"])
def test_absurd_step_counts_are_refused(cli, tiny_recipe, tmp_path, steps):
    result = train(cli, tiny_recipe, tmp_path, f"train.steps={steps}")
    assert_clean_error(result, "train.steps", "1000000000")


def test_absurd_thread_counts_are_refused(cli, tiny_recipe, tmp_path):
    result = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path),
        env={"SAGAN_THREADS": "99999999999999999999"},
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "SAGAN_THREADS" in result.output


def test_a_bad_collective_timeout_is_named_before_any_rank_starts(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAGAN_DIST_TIMEOUT_S", "abc")
    result = cli("train", str(tiny_recipe), "--nproc", "2", "--results", str(tmp_path))
    message = assert_clean_error(result, "SAGAN_DIST_TIMEOUT_S='abc'", "seconds")
    assert "network" not in message and not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("num", ["1000000000000", "99999999999999999999999"])
def test_absurd_sample_counts_are_refused(cli, tmp_path, num):
    result = cli("sample", str(tmp_path), "--num", num)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_bench_out_that_is_a_file(cli, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    result = cli("bench", "attention", "--out", str(target), "--sizes", "8")
    assert_clean_error(result, "is a file")


# ---- results are never lost ------------------------------------------------------------------


def test_sample_force_replaces_only_its_own_files(cli, tiny_recipe, tmp_path):
    assert train(cli, tiny_recipe, tmp_path / "r", "train.steps=2").exit_code == 0
    run = next(iter(list_runs(tmp_path / "r" / "tiny")))
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    refused = cli("sample", str(run.path), "--num", "4", "--out", str(out), "--device", "cpu")
    assert_clean_error(refused, "already exists")
    for num in ("4", "2"):
        result = cli(
            "sample", str(run.path), "--num", num, "--out", str(out), "--force", "--device", "cpu"
        )
        assert result.exit_code == 0, result.output
    assert (out / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]  # no mix


# ---- signals and locks around start-up ----------------------------------------------------------


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_is_one_line_and_the_rerun_finishes(tiny_recipe, tmp_path, delay):
    command = sagan_command("train", str(tiny_recipe), "--results", str(tmp_path), "-q")
    process = subprocess.Popen(
        command, env=sagan_subprocess_env(), stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived (a fast machine)")
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) <= 2, stderr
    rerun = subprocess.run(
        command, env=sagan_subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr


def test_a_run_killed_at_step_0_is_taken_over_at_once(tiny_recipe, tmp_path):
    command = sagan_command("train", str(tiny_recipe), "--results", str(tmp_path))
    process = subprocess.Popen(command, env=sagan_subprocess_env(), stderr=subprocess.DEVNULL)
    run = run_dir_for(tmp_path, "tiny", load_recipe(tiny_recipe))
    wait_for(lambda: run.read_status().get("status") == "running", "the run started", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = subprocess.run(
        command, env=sagan_subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "ended without recording why" in rerun.stderr


def test_a_run_being_trained_is_refused_at_once_before_any_set_up(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    assert train(cli, tiny_recipe, tmp_path, "train.steps=1").exit_code == 0
    run = next(iter(list_runs(tmp_path / "tiny")))
    import sagan_cli.preflight

    def never(*args, **kwargs):
        raise AssertionError("set-up ran although the run is busy")

    monkeypatch.setattr(sagan_cli.preflight, "build_data_source", never)
    (run.path / ".lock.owner").write_text(f"pid {os.getpid()} on testhost")
    with FileLock(str(run.lock_path), timeout=0):
        result = subprocess.run(
            sagan_command("train", "--resume", str(run.path)),
            env=sagan_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        in_process = cli("train", "--resume", str(run.path))
    assert result.returncode == 2 and "being trained right now by pid" in result.stderr
    assert_clean_error(in_process, "being trained right now")


# ---- tables ----------------------------------------------------------------------------------


def test_terminal_tables_fold_long_labels_instead_of_cutting_them():
    from sagan_cli.commands.common import summary_table as _summary_table

    label = "variant=timm_nonlocal_with_a_long_name"
    table = _summary_table(["block", "fid"], [[label, "12.3 ± 0.4 (3)"]], "t")
    console = Console(width=30, record=True, file=io.StringIO())
    console.print(table)
    text = console.export_text()
    assert "…" not in text
    assert label in "".join(line.strip("│ ").split("│")[0].strip() for line in text.splitlines())


def test_the_default_baseline_is_the_row_without_attention(cli, tmp_path):
    from helpers import TINY_RECIPE

    recipe = tmp_path / "rows.toml"
    recipe.write_text(
        TINY_RECIPE.replace('name = "tiny"', 'name = "rows"')
        + '\n[ablate.axes]\nblock = [\n  { "model.attention.variant" = "residual" },\n'
        + '  { "model.attention_layer" = [] },\n]\n'
    )
    result = cli(
        "ablate",
        str(recipe),
        "--seeds",
        "2",
        "--results",
        str(tmp_path / "r"),
        "--set",
        "train.steps=2",
    )
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "r" / "rows-block" / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in summary[1:]]
    assert [r["baseline"] for r in rows] == ["False", "True"]


def test_a_rank_output_sorter_keeps_tracebacks_and_torchrun_reports_off_the_terminal():
    from sagan_cli.train.service import RankOutput

    lines = [
        "train step 5/60  D 1.2  G 0.8\n",
        "Error: Rank 0 of 2 lost the other ranks at step 10.\n",
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        "    main()\n",
        "RuntimeError: [gloo] Connection closed by peer\n",
        "W1127 14:21:38.123000 1234 torch/distributed/elastic/multiprocessing/api.py:900] Sending process 17 closing signal SIGTERM\n",
        "[rank0]:[W1127 14:21:38.125000 1234 ProcessGroupGloo.cpp:12] Warning: something\n",
        "=" * 60 + "\n",
        "sagan_cli FAILED\n",
        "Root Cause (first observed failure):\n",
        "=" * 60 + "\n",
        "failed at step 10\n",
    ]
    sorter = RankOutput()
    shown = [line for line in lines if sorter.shown(line)]
    assert shown == [lines[0], lines[1], lines[-1]]


if sys.platform != "linux":  # RLIMIT_FSIZE and /proc: Linux behaviour
    pytestmark = pytest.mark.skip(reason="Linux only")
