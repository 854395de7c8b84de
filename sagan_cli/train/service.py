"""``sagan train``: resolve what a training command means and check it before any work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.device import select_device
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.service import evaluator_factory
from sagan_cli.evaluate.weights import InceptionWeights
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_batch_divides, check_before_work, check_nproc
from sagan_cli.recipe import Recipe, check_experiment_name, load_recipe
from sagan_cli.results import RunDir, now, prepare_run, run_dir_for
from sagan_cli.train.distributed import SINGLE, World, rank_device
from sagan_cli.train.loop import TrainResult, train_run
from sagan_cli.train.observer import Observer


@dataclass
class TrainingJob:
    recipe: Recipe
    run: RunDir
    device: torch.device
    registry: Registry
    weights: InceptionWeights | None
    checkpoint: str | None
    retry: bool = False
    world: World = SINGLE

    def start(self, observer: Observer) -> TrainResult:
        factory = evaluator_factory(self.weights, self.device) if self.weights else None
        return train_run(
            self.recipe,
            self.run,
            self.device,
            self.registry,
            observer,
            factory,
            self.checkpoint,
            retry_diverged=self.retry,
            world=self.world,
        )


def open_training(
    *,
    recipe_ref: str | None,
    overrides: list[str],
    resume: Path | None,
    checkpoint: str | None,
    results_root: Path,
    experiment: str | None,
    device: str,
    inception_weights: Path | None,
    registry: Registry,
    retry: bool = False,
    world: World | None = None,
    nproc: int = 1,
    tensorboard: bool = False,
) -> TrainingJob:
    """Everything a training command needs, validated: recipe, run folder, device, weights.

    ``world``: this process is a rank of a data-parallel run (under torchrun);
    ``nproc``: the run will be started on that many processes (nothing is started here).
    """
    world = world or SINGLE
    if resume is not None:
        if recipe_ref is not None or overrides or experiment:
            raise SaganError(
                "--resume continues a run exactly as it was defined: give either RECIPE (with "
                "--set/--name) or --resume RUN_DIR, not both."
            )
        run = RunDir(resume.expanduser())
        if not run.exists():
            raise ResultsError(
                f"--resume {resume}: no run folder there (expected {run.recipe_path}). Give a folder "
                f"from results/<experiment>/runs/."
            )
        recipe = load_recipe(run.recipe_path, registry=registry)
    else:
        if recipe_ref is None:
            raise SaganError(
                "Give a recipe (a .toml file or a shipped name such as smoke), or --resume RUN_DIR."
            )
        if checkpoint is not None:
            raise SaganError(
                "--checkpoint chooses where a resumed run continues; use it with --resume RUN_DIR."
            )
        recipe = load_recipe(recipe_ref, overrides, registry=registry)
        if experiment is not None:
            check_experiment_name(experiment)
        run = run_dir_for(results_root, experiment or recipe.name, recipe)
    if tensorboard:  # logging is no part of a run's identity: also fine for --resume
        recipe = recipe.model_copy(
            update={"logging": recipe.logging.model_copy(update={"tensorboard": True})}
        )
    size = world.size if world.distributed else nproc
    check_batch_divides(recipe, size)
    if nproc > 1 and not world.distributed:
        check_nproc(nproc, select_device(device))
    checked = check_before_work(
        [recipe],
        registry,
        device=device,
        inception_weights=inception_weights,
        world_size=size,
    )
    if world.is_main:
        try:
            run.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(
                f"Cannot create the results folder {run.path.parent}: {exc.strerror}."
            ) from None
    return TrainingJob(
        recipe,
        run,
        rank_device(checked.device, world),
        registry,
        checked.weights,
        checkpoint,
        retry,
        world,
    )


PARENT_ENV = "SAGAN_TORCHRUN_PARENT"


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m sagan_cli ARGUMENTS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "sagan_cli",
        *arguments,
    ]


def train_with_torchrun(
    job: TrainingJob, nproc: int, arguments: list[str], quiet: bool
) -> TrainResult:
    """Start the run on ``nproc`` processes and wait; the outcome comes from the run folder.

    Ctrl-C reaches every rank through the terminal; they agree on the iteration to
    stop at, rank 0 saves it, and this process reports it. When a rank dies,
    torchrun stops the others; the run is then ``failed`` and resumable.
    """
    prepare_run(job.recipe, job.run)
    ranks_run = ["train", "--resume", str(job.run.path), *_passed_on(arguments)]
    if quiet and "--quiet" not in ranks_run and "-q" not in ranks_run:
        ranks_run.append("--quiet")
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
        PARENT_ENV: "1",  # this process reports the outcome; the ranks stay silent about it
    }
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks handle it
    try:
        completed = subprocess.run(torchrun_command(nproc, ranks_run), env=env, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    status = job.run.read_status()
    state = status.get("status", "failed")
    if state in ("running", "queued"):  # a rank died; the others were stopped mid-step
        state = "failed"
        with contextlib.suppress(OSError):
            job.run.update_status(
                status="failed",
                error=f"a rank died (torchrun exit code {completed.returncode})",
                finished=now(),
            )
    detail = str(status.get("error") or "")
    if state == "failed":
        detail = (
            f"{detail or f'torchrun exited with {completed.returncode}'}; re-run the same "
            f"command to resume from the last checkpoint"
        )
    signum = int(signal.SIGTERM) if "SIGTERM" in detail else int(signal.SIGINT)
    return TrainResult(
        job.run,
        state,
        int(status.get("step", 0)),
        "" if state == "done" else detail,
        signum if state == "interrupted" else None,
    )


def _passed_on(arguments: list[str]) -> list[str]:
    """The options every rank needs (device, weights, threads, retry, quiet) from ARGUMENTS."""
    valued = {"--device", "--inception-weights", "--threads"}
    flags = {"--retry-failed", "--quiet", "-q"}
    kept, index = [], 0
    while index < len(arguments):
        argument = arguments[index]
        if argument.split("=", 1)[0] in valued:
            if "=" in argument:
                kept.append(argument)
            elif index + 1 < len(arguments):
                kept += [argument, arguments[index + 1]]
                index += 1
        elif argument in flags:
            kept.append(argument)
        index += 1
    return kept
