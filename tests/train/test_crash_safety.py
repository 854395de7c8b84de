"""Fault injection: signals at random iterations, full disks, corrupt files of every kind the
toolkit reads, concurrent commands, and bad input that must be one paragraph (exit 2)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    InterruptAt,
    assert_bit_exact,
    assert_clean_error,
    finish,
    sagan_command,
    sagan_subprocess_env,
    wait_for,
    within,
)
from PIL import Image

from sagan_cli.checkpoint import first_non_finite, list_checkpoints
from sagan_cli.device import select_device
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe
from sagan_cli.results import RunDir, list_runs, run_dir_for
from sagan_cli.train.observer import Observer
from sagan_cli.train.run import train_run

LONG = ["train.steps=40", "train.checkpoint_every=5", "train.log_every=1", "train.sample_every=20"]


def sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def train_command(recipe: Path, root: Path, *extra: str) -> list[str]:
    return sagan_command(
        "train", str(recipe), "--results", str(root), "--device", "cpu", "-q", *sets(*LONG), *extra
    )


def final_state(run: RunDir) -> dict:
    return torch.load(run.checkpoints / "step-00000040.pt", weights_only=True)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The uninterrupted run every interrupted one must equal."""
    from helpers import TINY_RECIPE

    folder = tmp_path_factory.mktemp("clean")
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    subprocess.run(train_command(recipe, folder / "r"), env=sagan_subprocess_env(), check=True)
    run = run_dir_for(folder / "r", "tiny", load_recipe(recipe, LONG))
    return recipe, final_state(run), [r for r in run.read_metrics() if r["kind"] == "train"]


SIGNALS = {
    "SIGINT": (signal.SIGINT, 130),
    "SIGTERM": (signal.SIGTERM, 143),
    "SIGKILL": (signal.SIGKILL, -9),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_at_random_iterations_then_resume_is_bit_exact(clean_run, tmp_path, name):
    recipe, clean, clean_train = clean_run
    signum, exit_code = SIGNALS[name]
    rng = random.Random(f"faults-{name}")  # seeded: the same iterations on every machine
    root = tmp_path / "r"
    run = run_dir_for(root, "tiny", load_recipe(recipe, LONG))
    for target in sorted(rng.sample(range(3, 36), 2)):
        process = subprocess.Popen(train_command(recipe, root), env=sagan_subprocess_env())
        wait_for(
            lambda t=target: (
                run.read_status().get("status") == "running"
                and run.read_status().get("step", 0) >= t
            ),
            f"step {target}",
            process,
        )
        process.send_signal(signum)
        finish(process, 120)
        assert process.returncode == exit_code
        status = run.read_status()
        if signum == signal.SIGKILL:
            assert status["status"] == "running"  # no chance to say more
            continue
        assert status["status"] == "interrupted" and f"stopped by {name}" in status["error"]
        stopped = status["step"]
        assert (run.checkpoints / f"step-{stopped:08d}.pt").exists()  # that very iteration
    subprocess.run(train_command(recipe, root), env=sagan_subprocess_env(), check=True)
    assert run.read_status()["status"] == "done"
    assert_bit_exact(final_state(run), clean)
    resumed_train = [r for r in run.read_metrics() if r["kind"] == "train"]
    assert [
        {k: v for k, v in r.items() if k not in ("img_per_s", "wall_time")} for r in resumed_train
    ] == [{k: v for k, v in r.items() if k not in ("img_per_s", "wall_time")} for r in clean_train]


def test_the_sigint_message_says_it_once(cli, tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    result = train_run(
        recipe,
        run_dir_for(tmp_path, "tiny", recipe),
        select_device("cpu"),
        get_registry(),
        InterruptAt(3),
    )
    assert result.exit_code == 130
    text = result.describe()
    assert text.count("step 3") == 1 and text.count("SIGINT") == 1 and "re-run" in text
    done = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert "done at step 6\n" in done.stdout and "done at step 6: done" not in done.stdout


class CtrlCAt(Observer):
    """Sends this process SIGINT (a real Ctrl-C) at ``step`` and notes what had been said
    by the time the signal returned, before the next iteration could start."""

    def __init__(self, step: int) -> None:
        self.at, self.messages, self.said_at_once = step, [], []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def advanced(self, step: int) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            self.said_at_once = list(self.messages)


def test_ctrl_c_is_acknowledged_at_once_with_the_step_it_stops_after(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    observer = CtrlCAt(2)
    result = train_run(
        recipe,
        run_dir_for(tmp_path, "tiny", recipe),
        select_device("cpu"),
        get_registry(),
        observer,
    )
    assert result.exit_code == 130
    (line,) = observer.said_at_once
    assert line.startswith("SIGINT: stopping after this iteration (step 3)")
    assert "Ctrl-C again to stop now" in line


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_inside_a_long_iteration_stops_within_a_second(
    tiny_recipe, tmp_path, second
):
    """The iteration spends a minute in C code that takes no signal: the first Ctrl-C waits for
    its end, the second ends the process at once (it took 73 s) and says what was not saved."""
    marker = tmp_path / "inside"
    command = sagan_command(
        "train", str(tiny_recipe), "--results", str(tmp_path), "-q",
        "--set", "model.attention.variant=slow_iteration",
    )  # fmt: skip
    env = sagan_subprocess_env(SAGAN_PLUGINS="slow_iteration", SLOW_ITERATION_MARKER=str(marker))
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    wait_for(marker.exists, "the long iteration", process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two separate deliveries, not one coalesced signal
    sent = time.monotonic()
    process.send_signal(second)
    _, stderr = finish(process, 120)
    assert within(5, sent), f"exited {time.monotonic() - sent:.0f} s after the second signal"
    assert process.returncode == 128 + second, stderr
    assert "stopped at once" in stderr and "was not saved" in stderr, stderr
    assert "Traceback" not in stderr
    (run,) = list_runs(tmp_path / "tiny")
    assert run.read_status()["status"] == "interrupted"


def test_ctrl_c_during_set_up_ends_the_process_at_once(tiny_recipe, tmp_path):
    """Outside a training loop the first Ctrl-C ends the process, also inside long C code."""
    marker = tmp_path / "inside"
    command = sagan_command(
        "train", str(tiny_recipe), "--results", str(tmp_path), "-q",
        "--set", "model.attention.variant=slow_iteration", "--set", "train.steps=1",
    )  # fmt: skip
    env = sagan_subprocess_env(SAGAN_PLUGINS="slow_iteration", SLOW_ITERATION_MARKER=str(marker))
    # the first training forward is slow; before it, the set-up: Ctrl-C while importing
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = finish(process, 120)
    assert within(10, sent)
    assert process.returncode == 130 and "Traceback" not in stderr and "bug" not in stderr, stderr
    assert len(stderr.strip().splitlines()) <= 2, stderr


def test_weights_that_go_non_finite_under_finite_losses_are_never_checkpointed(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    """The issue's case: losses still finite, weights already NaN; every kept file is finite.

    (The issue's lr=1 recipe no longer overflows reliably on every CPU, so the NaN weights
    come from a loss whose gradient turns NaN at G's 4th step while its value stays finite.)
    """
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    result = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path),
        *sets(
            "loss.name=nan_hinge", "loss.nan_from_call=1000", "loss.nan_grad_from_call=4",
            "train.checkpoint_every=1", "train.keep_checkpoints=10",
        ),
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    (run,) = list_runs(tmp_path / "tiny")
    kept = list_checkpoints(run.checkpoints)
    assert [p.name for p in kept] == [f"step-0000000{i}.pt" for i in (1, 2, 3)]
    for path in kept:
        assert first_non_finite(torch.load(path, weights_only=True)) is None, path.name
    assert "diverged at step 4" in result.output and result.output.count("at step") == 1
    assert "non-finite weights" in result.output
    assert run.read_status()["status"] == "diverged"


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    from sagan_cli.checkpoint import NonFiniteWeights, write_checkpoint

    state = {"generator": {"w": torch.tensor([1.0, float("nan")])}, "discriminator": {}, "ema": {}}
    with pytest.raises(NonFiniteWeights, match="generator.w"):
        write_checkpoint(state, tmp_path / "step-00000001.pt")
    assert list(tmp_path.iterdir()) == []


# ---- full disks and unwritable folders ------------------------------------------------------------


def test_disk_full_while_saving_a_checkpoint(cli, tiny_recipe, tmp_path, monkeypatch):
    import sagan_cli.checkpoint as checkpoint

    real_save = torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-6 checkpoint: the disk is full now
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    message = assert_clean_error(
        result, "No space left on device", "disk is full", "last good checkpoint", "resume"
    )
    (run,) = list_runs(tmp_path / "tiny")
    assert str(run.checkpoints / "step-00000006.pt") in message
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-00000003.pt"]  # no temp file
    assert not list(run.path.rglob("*.tmp"))
    monkeypatch.undo()
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0


def test_disk_full_while_appending_metrics(cli, tiny_recipe, tmp_path, monkeypatch):
    from sagan_cli.results import RunDir as Folder

    real_append = Folder.append_metrics

    def append(self, record):
        if record.get("step", 0) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, record)

    monkeypatch.setattr(Folder, "append_metrics", append)
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert_clean_error(result, "disk is full", "step-00000003.pt", "re-run the same command")


def test_an_existing_run_folder_that_cannot_be_locked(cli, tiny_recipe, tmp_path, monkeypatch):
    from filelock import FileLock

    assert (
        cli(
            "train", str(tiny_recipe), "--results", str(tmp_path), "--set", "train.steps=3"
        ).exit_code
        == 0
    )

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(FileLock, "acquire", refuse)
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--set", "train.steps=3")
    assert_clean_error(result, "Cannot lock the run folder", "Permission denied", "writable")


# ---- corrupt files of every kind the toolkit reads --------------------------------------------------


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b'name = "x"\n\xff\xfe\x00garbage', "not UTF-8 text"),
        (bytes(range(256)), "not UTF-8 text"),
        (b'name = "x"\nsteps = = 3\n', "not valid TOML"),
        # saved by Notepad as "UTF-8 with BOM": tomllib says only "Invalid statement"
        (b'\xef\xbb\xbfname = "x"\n', "byte order mark"),
    ],
)
def test_a_corrupt_recipe_file(cli, tmp_path, content, fragment):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    assert_clean_error(cli("recipe", "show", str(path)), "bad.toml", fragment)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p.write_bytes(b""), "not a readable .npz"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "not a readable .npz"),
        (
            lambda p: np.savez(p, images=np.array([{"a": 1}], dtype=object)),
            "pickled object array",
        ),
    ],
    ids=["empty", "not-a-zip", "object-array"],
)
def test_a_corrupt_npz_file(cli, tmp_path, make, fragment):
    path = tmp_path / "data.npz"
    make(path)
    result = cli(
        "train", "smoke", *sets("data.source=npz", f"data.path={path}"), "--results", str(tmp_path / "r"),
    )  # fmt: skip
    assert_clean_error(result, "data.path", fragment)
    assert "Aborted" not in result.output and not (tmp_path / "r").exists()


def test_some_corrupt_pngs_in_an_image_folder_are_named(cli, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(12):
        Image.fromarray(np.full((32, 32, 3), index * 10, dtype=np.uint8)).save(
            folder / f"{index:02d}.png"
        )
    (folder / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = cli(
        "train", "smoke", *sets("data.source=image-folder", f"data.path={folder}", "train.steps=2"),
        "--results", str(tmp_path / "r"),
    )  # fmt: skip
    message = assert_clean_error(result, "07.png", "Remove or replace the file")
    assert "Original Traceback" not in message and "worker" not in message


def test_a_corrupt_checkpoint_inside_superseded_points_at_a_valid_one(
    cli, tiny_recipe, tmp_path, inception_weights
):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    (run,) = list_runs(tmp_path / "tiny")
    aside = run.checkpoints / "superseded-x"
    aside.mkdir()
    (aside / "step-00000009.pt").write_bytes(b"garbage")
    result = cli(
        "eval", str(run.path), "--checkpoint", str(aside / "step-00000009.pt"),
        "--inception-weights", str(inception_weights),
    )  # fmt: skip
    message = assert_clean_error(result, "truncated or corrupt", "step-00000006.pt")
    assert "no earlier checkpoint" not in message.lower() and "delete the run folder" not in message


@pytest.mark.slow
def test_a_checkpoint_of_another_run_offers_this_runs_checkpoints(
    cli, tiny_recipe, tmp_path, inception_weights
):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    assert (
        cli("train", str(tiny_recipe), "--results", str(tmp_path), "--set", "seed=1").exit_code == 0
    )
    first, second = list_runs(tmp_path / "tiny")
    result = cli(
        "eval", str(first.path), "--checkpoint", str(second.checkpoints / "step-00000006.pt"),
        "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert_clean_error(
        result, f"belongs to run {second.id}", str(first.checkpoints / "step-00000006.pt")
    )


def test_garbage_experiment_marker(cli, tiny_recipe, tmp_path):
    args = (
        "ablate",
        str(tiny_recipe),
        "--vary",
        "attention_layer=[],[16]",
        "--name",
        "g",
        "--results",
        str(tmp_path),
    )
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "experiment.json").write_text('{"base": ')
    assert_clean_error(cli(*args), "experiment.json", "unreadable", "another --name")
    (tmp_path / "g" / "experiment.json").write_text("[1, 2]")
    assert_clean_error(cli(*args), "not an experiment record")


def test_garbage_status_and_metrics_are_tolerated_and_kept(cli, tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    run = run_dir_for(tmp_path, "tiny", recipe)
    train_run(recipe, run, select_device("cpu"), get_registry(), InterruptAt(5))
    with run.metrics_path.open("a") as handle:
        handle.write('{"kind": "train", "step": 9, broken\n')
    status = run.status_path.read_text()
    run.status_path.write_text(status[: len(status) // 2])  # torn by some other tool
    assert run.read_status() == {}
    # the only run's status cannot be read: the report says so and how to repair it
    report = cli("report", "tiny", "--results", str(tmp_path))
    assert_clean_error(report, "status.json is not valid JSON", "sagan train --resume")
    resumed = cli("train", str(tiny_recipe), "--results", str(tmp_path))
    assert resumed.exit_code == 0, resumed.output
    (aside,) = run.path.glob("metrics.jsonl.unreadable-*")
    assert "broken" in aside.read_text()
    assert "unreadable lines" in resumed.output


def test_a_corrupt_reference_cache_entry_is_recomputed_with_a_notice(tmp_path):
    from sagan_cli.evaluate.fidelity import ReferenceCache, ReferenceKey

    notices: list[str] = []
    cache = ReferenceCache(tmp_path, notify=notices.append)
    key = ReferenceKey({"source": "x"}, "train", 8, "abc", "inception-v3-compat", "torch-fidelity")
    with cache.filling(key) as folder:
        (folder / "reference-features.pt").write_bytes(b"\x80\x04garbage, not a pickle")
        cache.commit(key)
    assert cache.is_complete(key)
    with cache.filling(key) as folder:
        assert not list(folder.glob("*.pt")) and not cache.is_complete(key)
    assert len(notices) == 1 and "discarded and recomputed" in notices[0]


def test_a_reference_cache_entry_being_filled_is_not_wiped(tmp_path):
    """Another process holds the entry: a second evaluation waits instead of deleting it."""
    from sagan_cli.evaluate.fidelity import ReferenceCache, ReferenceKey

    cache = ReferenceCache(tmp_path)
    key = ReferenceKey({"source": "x"}, "train", 8, "abc", "inception-v3-compat", "torch-fidelity")
    cache.folder(key).mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from filelock import FileLock; "
            "lock = FileLock(sys.argv[1]); lock.acquire(); open(sys.argv[2], 'w').write('x'); "
            "time.sleep(3)",
            str(cache.folder(key) / ".lock"), str(cache.folder(key) / "partial.pt"),
        ],
    )  # fmt: skip
    wait_for((cache.folder(key) / "partial.pt").exists, "the holder's partial file", holder, 60)
    started = time.monotonic()
    with cache.filling(key):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 1.0  # it waited for the holder rather than wiping its files


def test_stale_temp_files_of_a_killed_writer_are_removed_on_start(cli, tiny_recipe, tmp_path):
    assert (
        cli(
            "train", str(tiny_recipe), "--results", str(tmp_path), "--set", "train.steps=3"
        ).exit_code
        == 0
    )
    (run,) = list_runs(tmp_path / "tiny")
    stale = run.checkpoints / ".step-00000006.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert cli("train", "--resume", str(run.path)).exit_code == 0
    assert not stale.exists()


def test_results_files_follow_the_umask(cli, tiny_recipe, tmp_path):
    previous = os.umask(0o022)
    try:
        assert (
            cli(
                "train", str(tiny_recipe), "--results", str(tmp_path), "--set", "train.steps=3"
            ).exit_code
            == 0
        )
    finally:
        os.umask(previous)
    (run,) = list_runs(tmp_path / "tiny")
    for path in (run.status_path, run.recipe_path, run.checkpoints / "step-00000003.pt"):
        assert path.stat().st_mode & 0o777 == 0o644, path


# ---- bad input ---------------------------------------------------------------------------------------


def test_debug_off_values_keep_the_paragraph(cli, tmp_path):
    for value in ("0", "false", "no", ""):
        result = cli("recipe", "show", str(tmp_path / "nope.toml"), env={"SAGAN_DEBUG": value})
        assert_clean_error(result, "not found")


@pytest.mark.parametrize("name", ["../x", "/abs/dir", "a/b", ".."])
def test_train_name_cannot_leave_the_results_root(cli, tiny_recipe, tmp_path, name):
    result = cli("train", str(tiny_recipe), "--name", name, "--results", str(tmp_path / "r"))
    assert_clean_error(result, f"--name '{name}'", "one folder under --results")
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "override, fragments",
    [
        ('train.steps="10"', ["train.steps", "valid integer"]),
        ('train.deterministic="yes"', ["train.deterministic", "valid boolean"]),
        ('model.attention.reduction="4"', ["model.attention.reduction", "valid integer"]),
        ("train.lr_d=true", ["train.lr_d", "valid number"]),
    ],
)
def test_strings_are_not_taken_for_numbers_or_booleans(cli, tmp_path, override, fragments):
    key, value = override.split("=", 1)
    section, field = key.split(".", 1)
    path = tmp_path / "typed.toml"
    path.write_text(f'name = "t"\n[{section}]\n{field} = {value}\n')
    assert_clean_error(cli("recipe", "show", str(path)), *fragments)


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("model.g_channels=1000000", ["GiB", "model.g_channels = 1000000", "free"]),
        ("train.batch_size=100000000", ["GiB", "train.batch_size = 100000000", "free"]),
    ],
)
def test_absurd_sizes_are_refused_before_allocating(
    cli, tiny_recipe, tmp_path, override, fragments
):
    result = cli("train", str(tiny_recipe), "--set", override, "--results", str(tmp_path / "r"))
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "r").exists()


def test_wrong_place_for_a_plugin_name(cli, tmp_path):
    path = tmp_path / "wrongplace.toml"
    path.write_text('name = "w"\n[model]\nattention = "sagan"\n')
    message = assert_clean_error(
        cli("recipe", "show", str(path)), "model.attention.variant = 'sagan'"
    )
    assert message.count("wrongplace.toml") == 1 and "AttentionConfig" not in message


def test_help_shows_no_type_after_flags(cli):
    for command in (["train", "--help"], ["ablate", "--help"], ["eval", "--help"]):
        result = cli(*command)
        assert result.exit_code == 0 and "<bool>" not in result.stdout
    assert "[ablate.axes]" in cli("ablate", "--help").stdout


def test_eval_offline_advice_fits_the_command(cli, tiny_recipe, tmp_path):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    (run,) = list_runs(tmp_path / "tiny")
    message = assert_clean_error(cli("eval", str(run.path)), "--inception-weights")
    assert "--set" not in message
    training = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path / "t"), "--set", "eval.final=true"
    )
    assert_clean_error(training, "--set eval.final=false")


class Opaque:
    """An object torch.load(weights_only=True) refuses."""


def test_a_corrupt_weights_file_is_described_in_whole_sentences(cli, tiny_recipe, tmp_path):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    (run,) = list_runs(tmp_path / "tiny")
    weights = tmp_path / "weights.pth"
    torch.save({"x": Opaque()}, weights)  # not loadable with weights_only
    message = assert_clean_error(
        cli("eval", str(run.path), "--inception-weights", str(weights)), "Replace it with"
    )
    assert "`torch.)" not in message and "( " not in message


def test_eval_of_an_empty_image_folder_says_so_first(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("eval", "--images", str(tmp_path / "empty"))
    message = assert_clean_error(result, "no .png/.jpg/.jpeg files")
    assert "Inception" not in message


def test_recipe_validate_catches_an_unknown_axis(cli, tmp_path):
    path = tmp_path / "axes.toml"
    path.write_text('name = "a"\n[ablate.axes]\natention_layer = [[], [16]]\n')
    assert_clean_error(cli("recipe", "validate", str(path)), "Unknown axis 'atention_layer'")


def test_jpegs_are_flagged_as_lossy():
    from sagan_cli.imagefiles import lossy_warning

    assert lossy_warning([Path("a.png"), Path("b.png")], "x") is None
    assert "50% of x are JPEG" in lossy_warning([Path("a.png"), Path("b.JPG")], "x")


def test_a_content_change_changes_the_reference_identity(tmp_path):
    """Same path, same parameters, new images: the cache key must follow the content."""
    from sagan_cli.components import build_data_source
    from sagan_cli.datasets.files import forget_scans
    from sagan_cli.recipe import resolve_recipe

    path = tmp_path / "real.npz"
    recipe = resolve_recipe({"name": "t", "data": {"source": "npz", "path": str(path)}}, origin="t")
    np.savez(path, images=np.zeros((4, 32, 32, 3), dtype=np.uint8))
    before = build_data_source(recipe).identity()
    np.savez(path, images=np.full((4, 32, 32, 3), 9, dtype=np.uint8))
    os.utime(path, ns=(before["content"]["mtime_ns"], before["content"]["mtime_ns"]))  # same mtime
    after = build_data_source(recipe).identity()
    assert before["params"] == after["params"] and before["content"] != after["content"]
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    image_recipe = resolve_recipe(
        {"name": "t", "data": {"source": "image-folder", "path": str(folder)}}, origin="t"
    )
    first = build_data_source(image_recipe).identity()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "b.png")
    forget_scans()  # a new command walks the folder again (within one, the walk is shared)
    assert build_data_source(image_recipe).identity()["content"] != first["content"]


@pytest.mark.slow
def test_overwriting_the_reference_npz_changes_the_fid(
    cli, tiny_recipe, tmp_path, inception_weights
):
    """The defect: a cached reference kept FID at the old data's value."""
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path)).exit_code == 0
    (run,) = list_runs(tmp_path / "tiny")
    reference = tmp_path / "real.npz"
    rng = np.random.default_rng(0)

    def fid() -> float:
        result = cli(
            "eval", str(run.path), "--reference", str(reference), "--metrics", "fid",
            "--num-samples", "16", "--reference-samples", "16", "--batch-size", "16",
            "--inception-weights", str(inception_weights), "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["fid"]

    np.savez(reference, images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    first = fid()
    np.savez(reference, images=np.zeros((16, 32, 32, 3), dtype=np.uint8))
    assert fid() != pytest.approx(first, rel=1e-3)


# ---- concurrent commands and orphans -------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_killing_a_parallel_ablation_leaves_no_orphan_workers(tiny_recipe, tmp_path):
    extra = sets("train.steps=2000", "train.checkpoint_every=5", "train.log_every=1")
    command = sagan_command(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--jobs", "2",
        "--name", "o", "--results", str(tmp_path), "--device", "cpu", "-q", *extra,
    )  # fmt: skip
    process = subprocess.Popen(command, env=sagan_subprocess_env())
    folder = tmp_path / "o"

    def both_training() -> bool:
        runs = list_runs(folder)
        return len(runs) == 2 and all(r.read_status().get("step", 0) >= 6 for r in runs)

    wait_for(both_training, "both runs past step 6", process)
    workers = [r.read_status()["pid"] for r in list_runs(folder)]
    process.send_signal(signal.SIGKILL)
    process.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), "the workers exiting", timeout=120)
    for run in list_runs(folder):
        status = run.read_status()
        assert status["status"] == "interrupted", status
        assert (run.checkpoints / f"step-{status['step']:08d}.pt").exists()


@pytest.mark.slow
def test_two_concurrent_ablations_of_one_experiment_never_mark_each_others_runs(
    tiny_recipe, tmp_path
):
    command = sagan_command(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--name", "c",
        "--results", str(tmp_path), "--device", "cpu", "-q", *sets("train.steps=40"),
    )  # fmt: skip
    first = subprocess.Popen(command, env=sagan_subprocess_env(), stderr=subprocess.PIPE, text=True)
    wait_for(
        lambda: any(r.read_status().get("status") == "running" for r in list_runs(tmp_path / "c")),
        "the first ablation training",
        first,
    )
    second = subprocess.run(command, env=sagan_subprocess_env(), capture_output=True, text=True)
    _, first_stderr = finish(first, 300)
    assert first.returncode == 0, first_stderr
    assert second.returncode == 0, second.stderr
    statuses = [r.read_status() for r in list_runs(tmp_path / "c")]
    assert [s["status"] for s in statuses] == ["done", "done"]
    assert all(not s.get("error") for s in statuses)
    assert "being trained by another process" in second.stderr + first_stderr


@pytest.mark.slow
def test_off_a_terminal_an_ablation_prints_progress_lines(cli, tiny_recipe, tmp_path):
    result = cli(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--results", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0
    for label in ("#1 seed 0", "#2 seed 0"):
        assert f"{label}: " in result.output and f"{label} step 6/6" in result.output
