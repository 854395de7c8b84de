"""Scaling out: data-parallel runs over gloo, and the ray and slurm launchers (all on CPU)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    assert_clean_error,
    finish,
    run_command,
    sagan_command,
    sagan_subprocess_env,
    snapshot,
    wait_for,
    within,
)

from sagan_cli.recipe import load_recipe
from sagan_cli.results import RunDir, list_runs, run_dir_for

# no batch norm: with it, Adam turns round-off-sized gradients of the biases in front of
# each BN (which BN removes again) into full steps, so ranks agree only to ~lr
EXACT = ["model.norm.features=identity", "train.steps=6", "train.checkpoint_every=3"]


def sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def train(recipe: Path, root: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    command = sagan_command(
        "train", str(recipe), "--results", str(root), "--device", "cpu", "-q", *extra
    )
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    return subprocess.run(command, env=sagan_subprocess_env(), capture_output=True, text=True)


def weights(run: RunDir, step: int) -> dict:
    return torch.load(run.checkpoints / f"step-{step:08d}.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict, tolerance: float) -> None:
    for part in ("generator", "discriminator", "ema"):
        for name, tensor in a[part].items():
            torch.testing.assert_close(
                tensor.float(), b[part][name].float(), rtol=0, atol=tolerance, msg=f"{part}.{name}"
            )


@pytest.mark.slow
def test_two_gloo_ranks_compute_what_one_process_does_and_resume_across_rank_counts(
    tiny_recipe, tmp_path
):
    two = train(tiny_recipe, tmp_path / "two", *sets(*EXACT), nproc=2)
    assert two.returncode == 0, two.stderr
    one = train(tiny_recipe, tmp_path / "one", *sets(*EXACT))
    assert one.returncode == 0, one.stderr
    recipe = load_recipe(tiny_recipe, EXACT)
    run_two = run_dir_for(tmp_path / "two", "tiny", recipe)
    run_one = run_dir_for(tmp_path / "one", "tiny", recipe)
    status = run_two.read_status()
    assert status["world_size"] == 2 and status["status"] == "done"
    assert weights(run_two, 6)["data_position"] == weights(run_one, 6)["data_position"] == 48
    assert_same_weights(weights(run_two, 6), weights(run_one, 6), 1e-5)

    # the 2-rank checkpoint of step 3 continues on 1 rank and on 2 ranks to the same weights
    for ranks in (1, 2):
        copy = tmp_path / f"resumed-{ranks}" / "tiny" / "runs" / run_two.id
        shutil.copytree(run_two.path, copy)
        resumed = RunDir(copy)
        (resumed.checkpoints / "step-00000006.pt").unlink()
        resumed.update_status(status="interrupted")
        command = sagan_command("train", "--resume", str(copy), "--device", "cpu", "-q")
        if ranks > 1:
            command += ["--nproc", str(ranks)]
        done = subprocess.run(command, env=sagan_subprocess_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert resumed.read_status()["resumed_from"] == "step-00000003.pt"
        assert_same_weights(weights(resumed, 6), weights(run_two, 6), 1e-5)


def all_floats(state: dict) -> dict[str, torch.Tensor]:
    """Every floating tensor of a checkpoint: weights and buffers (batch-norm running statistics,
    spectral-norm vectors) of G, D and the EMA, and both optimisers' moments."""
    found = {
        f"{part}.{name}": tensor
        for part in ("generator", "discriminator", "ema")
        for name, tensor in state[part].items()
        if tensor.is_floating_point()
    }
    for part in ("opt_g", "opt_d"):
        for index, moments in state[part]["state"].items():
            for key, tensor in moments.items():
                if torch.is_tensor(tensor) and tensor.is_floating_point() and tensor.dim():
                    found[f"{part}[{index}].{key}"] = tensor
    return found


@pytest.mark.slow
def test_batch_norm_over_two_ranks_computes_what_one_process_does(tiny_recipe, tmp_path):
    """G's batch norm (and attention) on 2 gloo ranks vs one process, 20 deterministic steps.

    In fp64 the two agree to round-off (measured: ~5e-10 after 20 smoke steps), so the
    synchronisation is exact: global batch statistics, running statistics, gradients. In fp32
    they drift apart by more (~4e-3 relative in G's first layers after one step on smoke, in
    fp64 2e-14): BN's backward subtracts nearly equal numbers, which magnifies the different
    summation order of a split batch, and Adam turns round-off-sized gradients into full steps.
    """
    extra = sets(
        "train.precision=fp64", "train.steps=20", "train.checkpoint_every=20",
        "train.sample_every=20", "train.log_every=5",
    )  # fmt: skip
    two = train(tiny_recipe, tmp_path / "two", *extra, nproc=2)
    assert two.returncode == 0, two.stderr
    one = train(tiny_recipe, tmp_path / "one", *extra)
    assert one.returncode == 0, one.stderr
    recipe = load_recipe(tiny_recipe, [e for e in extra if e != "--set"])
    runs = [run_dir_for(tmp_path / name, "tiny", recipe) for name in ("two", "one")]
    # the logged losses are the global means: one process's numbers, on every log line
    logged = [
        [(r["step"], r["d_loss"], r["g_loss"]) for r in run.read_metrics() if r["kind"] == "train"]
        for run in runs
    ]
    assert [s for s, _, _ in logged[0]] == [5, 10, 15, 20]
    np.testing.assert_allclose(np.array(logged[0]), np.array(logged[1]), rtol=1e-9, atol=0)
    a = all_floats(weights(runs[0], 20))
    b = all_floats(weights(runs[1], 20))
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    assert all(t.dtype == torch.float64 for t in a.values())
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=1e-8, msg=name)
    untrained = b["generator.blocks.0.norm2.running_mean"]
    assert untrained.abs().max() > 1e-3  # the running statistics did move


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


@pytest.mark.slow
def test_a_dying_rank_stops_the_run_without_a_hang_and_it_resumes(tiny_recipe, tmp_path):
    extra = sets("train.steps=60", "train.checkpoint_every=5", "train.log_every=5")
    command = sagan_command(
        "train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu", "-q",
        "--nproc", "2", *extra,
    )  # fmt: skip
    process = subprocess.Popen(command, env=sagan_subprocess_env(), stderr=subprocess.PIPE)
    recipe = load_recipe(tiny_recipe, [e for e in extra if e != "--set"])
    run = run_dir_for(tmp_path, "tiny", recipe)
    deadline = time.monotonic() + 180
    while not (run.checkpoints / "step-00000010.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    rank0 = run.read_status()["pid"]
    ranks = [
        p
        for p in children(process.pid)
        if p != rank0 and Path(f"/proc/{p}/cmdline").read_bytes().count(b"sagan_cli")
    ]
    assert ranks, "rank 1 was not found"
    killed_at = time.monotonic()
    for pid in ranks:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    _, stderr = finish(process, 120)  # drains the pipe: a full one would block
    assert within(120, killed_at)  # the others stop without hanging (limit scaled by load)
    assert process.returncode not in (0, None)
    status = run.read_status()
    assert status["status"] == "failed"
    said = stderr.decode()
    assert "re-run the same command" in said
    # the outcome is a few lines, not buried in gloo's and torchrun's tracebacks (kept in a log)
    assert "Traceback" not in said and len(said.strip().splitlines()) <= 6, said
    assert (run.path / "torchrun.log").is_file()  # where torchrun's own reports go

    rerun = train(
        tiny_recipe, tmp_path, *extra[:2], *sets("train.checkpoint_every=5", "train.log_every=5")
    )
    assert rerun.returncode == 0, rerun.stderr
    assert run.read_status()["status"] == "done" and run.read_status()["resumed_from"]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running sagan process (a rank or torchrun)."""
    try:
        return b"sagan_cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def is_torchrun(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"torch.distributed.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


@pytest.fixture
def launch(tmp_path):
    """Starts ``sagan train --nproc 2`` commands; whatever a failed test left running (the
    launcher, torchrun, the ranks in their own sessions) is killed afterwards."""
    started: list[int] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        command = sagan_command(
            "train", *args, "--results", str(tmp_path), "--device", "cpu", "--nproc", "2"
        )
        process = subprocess.Popen(command, env=sagan_subprocess_env(**env), stderr=subprocess.PIPE)
        started.append(process.pid)
        return process

    yield start
    for pid in started:
        for left in [pid, *children(pid)] if alive(pid) else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_launcher_alone_reaches_the_ranks_and_checkpoints(
    tiny_recipe, tmp_path, launch, stop
):
    """What docker stop or systemd do: the signal goes to the launcher's PID, not the group.
    SIGTERM used to end the launcher with no checkpoint and the run left "running"; SIGINT was
    ignored and the run finished "done"."""
    extra = sets("train.steps=100000", "train.checkpoint_every=5", "train.log_every=5")
    process = launch(str(tiny_recipe), *extra)
    run = run_dir_for(tmp_path, "tiny", load_recipe(tiny_recipe, extra[1::2]))
    wait_for(lambda: (run.checkpoints / "step-00000010.pt").exists(), "a checkpoint", process)
    started = [p for p in children(process.pid) if alive(p)]
    assert len([p for p in started if not is_torchrun(p)]) == 2, started
    process.send_signal(stop)
    _, stderr = finish(process, 120)
    said = stderr.decode()
    assert process.returncode == 128 + stop, said
    status = run.read_status()
    name = signal.Signals(stop).name
    assert status["status"] == "interrupted" and status["error"] == f"stopped by {name}", status
    assert f"{name}: stopping after this iteration" in said and "saved a checkpoint of it" in said
    assert "Traceback" not in said
    assert (run.checkpoints / f"step-{status['step']:08d}.pt").exists()  # the iteration it stopped
    assert not any(alive(p) for p in started)  # the ranks and torchrun are gone


@pytest.mark.slow
def test_a_second_ctrl_c_to_the_launcher_stops_the_ranks_at_once(tiny_recipe, tmp_path, launch):
    marker = tmp_path / "inside"
    process = launch(
        str(tiny_recipe), "-q", "--set", "model.attention.variant=slow_iteration",
        SAGAN_PLUGINS="slow_iteration", SLOW_ITERATION_MARKER=str(marker),
    )  # fmt: skip
    wait_for(marker.exists, "the long iteration", process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two separate deliveries, not one coalesced signal
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = finish(process, 120)
    said = stderr.decode()
    assert within(10, sent), f"exited {time.monotonic() - sent:.0f} s after the second Ctrl-C"
    assert process.returncode == 130, said
    assert "stopped at once" in said and "was not saved" in said, said
    (run,) = list_runs(tmp_path / "tiny")
    assert run.read_status()["status"] == "interrupted"


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_rank_training(tiny_recipe, tmp_path, launch):
    """SIGKILL cannot be passed on: torchrun dies with the launcher and stops the ranks, which
    save a checkpoint of their iteration and record the run interrupted."""
    extra = sets("train.steps=100000", "train.checkpoint_every=5", "train.log_every=5")
    process = launch(str(tiny_recipe), "-q", *extra)
    run = run_dir_for(tmp_path, "tiny", load_recipe(tiny_recipe, extra[1::2]))
    wait_for(lambda: (run.checkpoints / "step-00000010.pt").exists(), "a checkpoint", process)
    started = [p for p in children(process.pid) if alive(p)]
    process.kill()
    finish(process, 60)
    wait_for(lambda: not any(alive(p) for p in started), "the ranks to end")
    status = run.read_status()
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"], status
    assert (run.checkpoints / f"step-{status['step']:08d}.pt").exists()


# ---- bad input: one paragraph, exit 2, nothing started --------------------------------------------


def test_batch_that_does_not_divide_over_the_ranks(cli, tiny_recipe, tmp_path):
    result = cli("train", str(tiny_recipe), "--nproc", "3", "--results", str(tmp_path / "r"))
    assert_clean_error(
        result, "train.batch_size = 8 does not divide over 3", "--set train.batch_size=6"
    )
    assert not (tmp_path / "r").exists()


def test_more_processes_than_gpus(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    result = cli(
        "train", str(tiny_recipe), "--device", "cuda", "--nproc", "4", "--set", "train.batch_size=8",
        "--results", str(tmp_path / "r"),
    )  # fmt: skip
    assert_clean_error(result, "--nproc 4", "2 visible")
    assert not (tmp_path / "r").exists()


def ablate(cli, recipe, tmp_path, *args):
    return cli(
        "ablate", str(recipe), "--vary", "attention_layer=[],[16]", "--results", str(tmp_path / "r"),
        *args,
    )  # fmt: skip


def test_unknown_launcher_lists_the_available_ones(cli, tiny_recipe, tmp_path):
    result = ablate(cli, tiny_recipe, tmp_path, "--launcher", "kubernetes")
    assert_clean_error(result, "'kubernetes' is not a registered launcher", "local, ray, slurm")
    assert not (tmp_path / "r").exists()


def test_launcher_whose_extra_is_missing(cli, tiny_recipe, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    result = ablate(cli, tiny_recipe, tmp_path, "--launcher", "slurm")
    message = assert_clean_error(result, 'pip install "sagan-cli[slurm]"', "--launcher local")
    # the user's install to fix, not the plugin's fault
    assert "plugin" not in message and "refused" not in message, message
    assert not (tmp_path / "r").exists()


def test_ray_address_that_does_not_answer(cli, tiny_recipe, tmp_path):
    result = ablate(
        cli, tiny_recipe, tmp_path, "--launcher", "ray", "--set", "launch.address=127.0.0.1:9",
        "--set", "launch.connect_timeout_s=2",
    )  # fmt: skip
    message = assert_clean_error(result, "127.0.0.1:9", "does not answer", "ray start --head")
    assert "Change its parameters" not in message  # the launcher's own fix, not a generic one
    assert "choose another launch.launcher" in message
    assert not (tmp_path / "r").exists()


def test_nproc_with_a_launcher_that_cannot_honour_it(cli, tiny_recipe, tmp_path):
    result = ablate(cli, tiny_recipe, tmp_path, "--launcher", "ray", "--nproc", "2")
    assert_clean_error(result, "--nproc 2", "ray launcher", "--launcher local or slurm")
    assert not (tmp_path / "r").exists()


def test_slurm_without_sbatch_says_how_to_try_it_locally(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = ablate(cli, tiny_recipe, tmp_path, "--launcher", "slurm")
    assert_clean_error(result, "sbatch", "--set launch.cluster=local")


def test_runs_a_launcher_never_started_make_the_ablation_fail(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    """A launcher whose tasks die before training (a broken node image, say) is not success."""
    from sagan_cli.launchers.local import LocalLauncher

    def tasks_die(self, context):
        for task in context.tasks:
            context.report(f"{task.label}: its job died before training")

    monkeypatch.setattr(LocalLauncher, "launch", tasks_die)
    result = ablate(cli, tiny_recipe, tmp_path)
    assert result.exit_code == 2, result.output  # the two runs
    assert "2 run(s) were never started" in result.output and "Re-run" in result.output
    (experiment,) = (tmp_path / "r").iterdir()
    assert [r.read_status()["status"] for r in list_runs(experiment)] == ["queued", "queued"]


# ---- launchers: the same run folders and summary as local ----------------------------------------

TIMING = ["wall_time_s", "img_per_s"]  # the only columns a launcher may change


def grid(cli, recipe, root, *args):
    # one thread everywhere: float sums (hence results) depend on the thread count
    result = cli(
        "ablate", str(recipe), "--vary", "attention_layer=[],[16]", "--seeds", "2", "--name", "g",
        "--results", str(root), "--device", "cpu", "--threads", "1", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = {r.id: r.read_status()["status"] for r in list_runs(root / "g")}
    summary = pd.read_csv(root / "g" / "summary.csv").drop(columns=TIMING)
    return result, runs, summary


@pytest.fixture
def local_grid(cli, tiny_recipe, tmp_path):
    return grid(cli, tiny_recipe, tmp_path / "local")


@pytest.mark.slow
def test_ray_launcher_matches_local_and_skips_on_a_rerun(cli, tiny_recipe, tmp_path, local_grid):
    """A local Ray instance, started by the command as a user's would be (a fresh process):
    on loopback only, and never a cluster it happens to find running on this machine."""
    _, local_runs, local_summary = local_grid
    root = tmp_path / "ray"

    def ray_grid() -> tuple[str, dict[str, str], pd.DataFrame]:
        command = sagan_command(
            "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--seeds", "2",
            "--name", "g", "--results", str(root), "--device", "cpu", "--threads", "1",
            "--launcher", "ray", "--set", "launch.num_cpus=2",
        )  # fmt: skip
        done = run_command(command, 900, env=sagan_subprocess_env())
        assert done.returncode == 0, done.stdout + done.stderr
        runs = {r.id: r.read_status()["status"] for r in list_runs(root / "g")}
        return done.stdout + done.stderr, runs, pd.read_csv(root / "g" / "summary.csv")

    _, runs, summary = ray_grid()
    assert runs == local_runs and set(runs.values()) == {"done"}
    pd.testing.assert_frame_equal(summary.drop(columns=TIMING), local_summary)
    before = snapshot(root / "g" / "runs")
    again, _, _ = ray_grid()
    assert again.count("already there") == 4 and "submitted" not in again
    assert snapshot(root / "g" / "runs") == before


@pytest.mark.slow
def test_slurm_launcher_through_submitits_local_executor(cli, tiny_recipe, tmp_path, local_grid):
    _, local_runs, local_summary = local_grid
    root = tmp_path / "slurm"
    result, runs, summary = grid(
        cli, tiny_recipe, root, "--launcher", "slurm", "--set", "launch.cluster=local"
    )
    assert "submitted job array" in result.output
    assert runs == local_runs
    pd.testing.assert_frame_equal(summary, local_summary)
    assert any((root / "g" / "slurm").glob("*_log.out"))  # submitit's logs, per job


@pytest.mark.slow
def test_slurm_array_element_with_two_ranks_equals_train_nproc_2(tiny_recipe, tmp_path):
    """--nproc 2 under SLURM: each array element runs 2 tasks that join as the 2 ranks."""
    point = "train.lr_d=2e-4"
    command = sagan_command(
        "ablate", str(tiny_recipe), "--vary", "lr_d=2e-4", "--name", "s",
        "--results", str(tmp_path / "slurm"), "--device", "cpu", "--threads", "1", "-q",
        "--launcher", "slurm", "--nproc", "2", *sets(*EXACT, "launch.cluster=local"),
    )  # fmt: skip
    ablation = subprocess.run(command, env=sagan_subprocess_env(), capture_output=True, text=True)
    output = ablation.stdout + ablation.stderr
    assert ablation.returncode == 0 and "failed" not in output, output
    (run,) = list_runs(tmp_path / "slurm" / "s")
    status = run.read_status()
    assert status["status"] == "done" and status["world_size"] == 2

    direct = train(tiny_recipe, tmp_path / "two", "--threads", "1", *sets(*EXACT, point), nproc=2)
    assert direct.returncode == 0, direct.stderr
    two = run_dir_for(tmp_path / "two", "tiny", load_recipe(tiny_recipe, [*EXACT, point]))
    assert_same_weights(weights(run, 6), weights(two, 6), 0.0)


def test_the_ranks_are_told_what_the_job_holds_never_what_argv_held(
    tiny_recipe, tmp_path, monkeypatch
):
    """--nproc's ranks get the job's options (--tensorboard was lost when argv was filtered)."""
    from sagan_cli.plugins import get_registry
    from sagan_cli.train.service import TrainingRequest, open_training
    from sagan_cli.train.torchrun import torchrun_command

    monkeypatch.setattr(sys, "argv", ["sagan", "train", "--bogus", "--threads=3"])
    request = TrainingRequest(
        recipe=str(tiny_recipe), results_root=tmp_path, nproc=2, threads=1, tensorboard=True,
        quiet=True, retry=True, device="cpu", track=("tensorboard",),
    )  # fmt: skip
    job = open_training(request, get_registry())
    assert job.starts_ranks
    arguments = job.rank_task().arguments
    assert arguments[:3] == ("train", "--resume", str(job.run.path))
    for option in ("--tensorboard", "--quiet", "--retry-failed"):
        assert option in arguments
    assert arguments[arguments.index("--threads") + 1] == "1"
    assert arguments[arguments.index("--device") + 1] == "cpu"
    assert arguments[arguments.index("--track") + 1] == "tensorboard"
    assert "--bogus" not in arguments and "--nproc" not in arguments  # each rank is one process
    assert torchrun_command(2, list(arguments))[-len(arguments) :] == list(arguments)


@pytest.mark.slow
def test_a_plugin_failing_in_the_dry_run_of_a_data_parallel_run_is_recorded(tiny_recipe, tmp_path):
    """The ranks' set-up failure was left 'queued' (the parent only saw 'a rank died')."""
    command = sagan_command(
        "train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu", "-q",
        "--nproc", "2", "--set", "model.attention.variant=bad_channels",
    )  # fmt: skip
    result = run_command(command, 300, env=sagan_subprocess_env(SAGAN_PLUGINS="bad_plugins"))
    assert result.returncode == 2, result.stderr
    (run,) = list_runs(tmp_path / "tiny")
    status = run.read_status()
    assert status["status"] == "failed" and status["exit_code"] == 2
    assert "'bad_channels'" in status["error"] and "feature map" in status["error"]
