"""``sagan train``: run folders, exact resume after SIGKILL, corrupt checkpoints, divergence."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import (
    InterruptAt,
    assert_bit_exact,
    assert_clean_error,
    kill_when,
    sagan_command,
    sagan_subprocess_env,
    snapshot,
    train_with_sets,
)

from sagan_cli.device import select_device
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe, recipe_toml
from sagan_cli.results import RunDir, list_runs, run_dir_for
from sagan_cli.train.run import train_run


def run_folder(root: Path, recipe_path: Path, *sets: str) -> RunDir:
    recipe = load_recipe(recipe_path, list(sets))
    return run_dir_for(root, recipe.name, recipe)


def records(run: RunDir, kind: str) -> list[dict]:
    return [r for r in run.read_metrics() if r["kind"] == kind]


def test_train_writes_a_complete_run_folder(cli, tiny_recipe, tmp_path):
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    run = run_folder(tmp_path, tiny_recipe)
    assert run.recipe_path.read_text() == recipe_toml(load_recipe(tiny_recipe))
    status = run.read_status()
    assert status["status"] == "done" and status["step"] == 6 and status["device"] == "cpu"
    assert status["precision"] == "fp32"  # bf16 autocast is CUDA-only
    assert status["versions"]["torch"] == torch.__version__
    assert status["versions"]["plugins"]["model.attention"].startswith("sagan (sagan-cli")
    assert "git_commit" in status and status["wall_time_s"] > 0
    train = records(run, "train")
    assert [r["step"] for r in train] == [2, 4, 6]
    for record in train:
        assert {"d_loss", "g_loss", "lr_g", "lr_d", "img_per_s", "gamma_g16", "gamma_d16"} <= set(
            record
        )
        assert record["lr_d"] == 4 * record["lr_g"]  # TTUR
    assert train[-1]["gamma_g16"] != 0.0  # the attention gain moved away from its init
    assert [r["step"] for r in records(run, "structure")] == [0, 3, 6]
    assert sorted(p.name for p in run.samples.iterdir()) == ["real.png"] + [
        f"step-{s:08d}.png" for s in (0, 3, 6)
    ]
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [
        "step-00000003.pt",
        "step-00000006.pt",
    ]
    state = torch.load(run.checkpoints / "step-00000006.pt", weights_only=True)
    assert state["step"] == 6 and state["run_id"] == run.id


def test_rerunning_a_finished_run_changes_nothing(cli, tiny_recipe, tmp_path):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    run = run_folder(tmp_path, tiny_recipe)
    before = snapshot(run.path)
    again = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert again.exit_code == 0 and "already complete" in again.output
    resumed = cli("train", "--resume", str(run.path))
    assert resumed.exit_code == 0 and "already complete" in resumed.output
    assert snapshot(run.path) == before


def test_resume_options_are_checked(cli, tiny_recipe, tmp_path):
    assert_clean_error(cli("train", "--resume", str(tmp_path / "nope")), "no run folder")
    assert_clean_error(cli("train", str(tiny_recipe), "--checkpoint", "x.pt"), "--resume")
    assert_clean_error(cli("train", str(tiny_recipe), "--resume", str(tmp_path)), "not both")
    assert_clean_error(cli("train"), "Give a recipe")


KILL_SETS = (
    "train.steps=40",
    "train.checkpoint_every=5",
    "train.log_every=5",
    "train.sample_every=20",
)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run_bit_for_bit(tiny_recipe, tmp_path):
    sets = [arg for s in KILL_SETS for arg in ("--set", s)]
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"

    def command(root: Path) -> list[str]:
        return sagan_command(
            "train", str(tiny_recipe), "--results", str(root), "--device", "cpu", "-q", *sets
        )

    process = subprocess.Popen(command(killed_root), env=sagan_subprocess_env())
    killed = run_folder(killed_root, tiny_recipe, *KILL_SETS)
    kill_when(killed.checkpoints / "step-00000010.pt", process)
    assert killed.read_status()["status"] == "running"  # SIGKILL leaves no chance to say more
    assert not (killed.checkpoints / "step-00000040.pt").exists()

    subprocess.run(
        command(killed_root), env=sagan_subprocess_env(), check=True
    )  # the same command resumes
    subprocess.run(command(clean_root), env=sagan_subprocess_env(), check=True)
    clean = run_folder(clean_root, tiny_recipe, *KILL_SETS)

    final_killed = torch.load(killed.checkpoints / "step-00000040.pt", weights_only=True)
    final_clean = torch.load(clean.checkpoints / "step-00000040.pt", weights_only=True)
    assert_bit_exact(final_killed, final_clean)
    assert records(killed, "train") == [
        {**r, "img_per_s": k["img_per_s"], "wall_time": k["wall_time"]}
        for r, k in zip(records(clean, "train"), records(killed, "train"), strict=True)
    ]
    assert killed.read_status()["status"] == "done"


def test_interrupt_saves_a_checkpoint_and_corrupt_checkpoint_is_a_clear_error(
    cli, tiny_recipe, tmp_path
):
    recipe = load_recipe(tiny_recipe)
    run = run_dir_for(tmp_path, recipe.name, recipe)
    result = train_run(recipe, run, select_device("cpu"), get_registry(), InterruptAt(5))
    assert result.status == "interrupted" and result.exit_code == 130
    assert run.read_status()["status"] == "interrupted"
    newest = run.checkpoints / "step-00000005.pt"
    assert newest.exists()  # Ctrl-C keeps the work done so far

    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a torn write from a dying disk
    before = snapshot(run.path)
    failed = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert_clean_error(
        failed, "step-00000005.pt", "truncated or corrupt", "step-00000003.pt", "--checkpoint"
    )
    assert snapshot(run.path) == before  # nothing overwritten

    resumed = cli("train", "--resume", str(run.path), "--checkpoint", "step-00000003.pt")
    assert resumed.exit_code == 0, resumed.output
    assert run.read_status()["status"] == "done"
    superseded = list(run.checkpoints.glob("superseded-*/step-00000005.pt"))
    assert len(superseded) == 1 and superseded[0].read_bytes() == data[: len(data) // 2]
    assert [r["step"] for r in records(run, "train")] == [2, 4, 6]


def test_checkpoint_of_another_run_is_refused(tiny_recipe, tmp_path):
    from sagan_cli.errors import CheckpointError

    recipe = load_recipe(tiny_recipe)
    run = run_dir_for(tmp_path, recipe.name, recipe)
    train_run(recipe, run, select_device("cpu"), get_registry(), InterruptAt(4))
    other = load_recipe(tiny_recipe, ["seed=1"])
    other_run = run_dir_for(tmp_path, other.name, other)
    train_run(other, other_run, select_device("cpu"), get_registry(), InterruptAt(4))
    (other_run.checkpoints / "step-00000004.pt").write_bytes(
        (run.checkpoints / "step-00000004.pt").read_bytes()
    )
    with pytest.raises(CheckpointError, match="belongs to run"):
        train_run(other, other_run, select_device("cpu"), get_registry())


def test_nan_loss_stops_the_run_as_diverged(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    sets = [
        "loss.name=nan_hinge",
        "loss.nan_from_call=5",
        "train.checkpoint_every=3",
        "train.log_every=2",
    ]
    result = train_with_sets(cli, tiny_recipe, tmp_path, *sets)
    assert result.exit_code == 3, result.output
    assert "diverged" in result.output and "step 5" in result.output
    run = run_folder(tmp_path, tiny_recipe, *sets)
    status = run.read_status()
    assert status["status"] == "diverged" and status["diverged_step"] == 5
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-00000003.pt"]  # the last good one
    assert run.read_metrics()[-1] == {"kind": "diverged", "step": 5}
    again = cli(
        "train",
        str(tiny_recipe),
        "--results",
        str(tmp_path),
        *[a for s in sets for a in ("--set", s)],
    )
    assert again.exit_code == 3 and "not resumed" in again.output


@pytest.mark.slow
def test_smoke_recipe_improves_its_structural_score(tmp_path):
    """A real learning signal: the shapes' structure score falls well below the untrained one."""
    recipe = load_recipe(
        "smoke", ["train.steps=100", "train.sample_every=50", "train.checkpoint_every=100"]
    )
    run = run_dir_for(tmp_path, recipe.name, recipe)
    result = train_run(recipe, run, select_device("cpu"), get_registry())
    assert result.status == "done"
    structure = {r["step"]: r for r in records(run, "structure")}
    assert set(structure) == {0, 50, 100}
    # the score's first two terms, its whole definition when this test was written: the
    # invalidity term added since also counts colour noise, which 100 steps do not remove
    scores = {step: r["asymmetry"] + r["blankness"] for step, r in structure.items()}
    assert scores[100] < 0.5 * scores[0], scores
    assert structure[100]["structure"] < structure[0]["structure"]


def test_metrics_lines_are_json(cli, tiny_recipe, tmp_path):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    run = run_folder(tmp_path, tiny_recipe)
    for line in run.metrics_path.read_text().splitlines():
        json.loads(line)


# ---- behaviours the first release left untested ---------------------------------------------------


def test_only_the_newest_checkpoints_are_kept(tiny_recipe, tmp_path):
    recipe = load_recipe(
        tiny_recipe, ["train.steps=8", "train.checkpoint_every=1", "train.keep_checkpoints=2"]
    )
    run = run_dir_for(tmp_path, recipe.name, recipe)
    assert train_run(recipe, run, select_device("cpu"), get_registry()).status == "done"
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [
        "step-00000007.pt",
        "step-00000008.pt",
    ]


def test_a_second_trainer_is_refused_while_the_run_is_locked(cli, tiny_recipe, tmp_path):
    from sagan_cli.results import prepare_run, run_lock

    recipe = load_recipe(tiny_recipe)
    run = run_dir_for(tmp_path, recipe.name, recipe)
    prepare_run(recipe, run)
    before = snapshot(run.path)
    with run_lock(run):
        result = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert_clean_error(result, "is being trained right now by pid", "two processes")
    assert snapshot(run.path) == before
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0


@pytest.mark.parametrize(
    "sets",
    [
        ["model.conditional=true", "model.norm.features=conditional_batchnorm"],
        ["loss.name=wasserstein"],  # a gradient penalty through attention in D
        ["train.d_steps=3"],
        [
            "loss.name=wasserstein",
            "model.attention.variant=sagan_pooled",
            "model.attention_layer=[8,16]",
        ],
    ],
    ids=["conditional", "wgan-gp", "d_steps", "wgan-gp-pooled"],
)
def test_training_steps_of_every_flavour_run_and_stay_finite(tiny_recipe, tmp_path, sets):
    recipe = load_recipe(tiny_recipe, ["train.steps=3", *sets])
    run = run_dir_for(tmp_path, recipe.name, recipe)
    result = train_run(recipe, run, select_device("cpu"), get_registry())
    assert result.status == "done", result.detail
    train = records(run, "train")
    assert train and all(
        torch.isfinite(torch.tensor([r["d_loss"], r["g_loss"]])).all() for r in train
    )
    state = torch.load(run.checkpoints / "step-00000003.pt", weights_only=True)
    assert state["data_position"] == 3 * recipe.train.d_steps * recipe.train.batch_size


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating", "least_squares", "wasserstein"])
@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled", "residual", "none"])
def test_every_builtin_loss_trains_with_every_builtin_attention(
    tiny_recipe, tmp_path, loss, variant
):
    """The fused attention kernels have no second derivative; penalties take the maths path."""
    recipe = load_recipe(
        tiny_recipe,
        [f"loss.name={loss}", f"model.attention.variant={variant}", "train.steps=1"],
    )
    run = run_dir_for(tmp_path, recipe.name, recipe)
    assert train_run(recipe, run, select_device("cpu"), get_registry()).status == "done"


def test_model_summary_lists_blocks_and_attention(cli):
    result = cli("model", "summary", "smoke")
    assert result.exit_code == 0, result.output
    assert "Generator" in result.stdout and "Discriminator" in result.stdout
    assert "attention.16" in result.stdout and "32x16x16" in result.stdout
    assert "attention 'sagan' in G at [16] and in D at [16]" in result.stdout
    conditional = cli("model", "summary", "sagan_imagenet128", "--set", "data.path=/nowhere")
    assert_clean_error(conditional, "--num-classes")
    with_classes = cli(
        "model",
        "summary",
        "sagan_imagenet128",
        "--set",
        "data.path=/nowhere",
        "--num-classes",
        "10",
    )
    assert with_classes.exit_code == 0, with_classes.output
    assert "10 classes" in with_classes.stdout


def test_a_collapsed_generator_stops_the_run_as_diverged(cli, tiny_recipe, tmp_path):
    """No spectral norm at lr = 1: a blank generator (structure 1.000) that used to end 'done'."""
    sets = [
        "model.norm.generator=none", "model.norm.discriminator=none", "train.lr_g=1",
        "train.lr_d=1", "train.steps=60", "train.sample_every=10", "train.log_every=10",
        "train.checkpoint_every=20", "train.max_loss=0",
    ]  # fmt: skip
    result = train_with_sets(cli, tiny_recipe, tmp_path, *sets)
    assert result.exit_code == 3, result.output
    assert "the generator collapsed" in result.stderr and "same image" in result.stderr
    (run,) = list_runs(tmp_path / "tiny")
    status = run.read_status()
    assert status["status"] == "diverged" and status["step"] < 60
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert records[-1] == {"kind": "diverged", "step": status["step"]}
