"""``sagan train``: resolve what a training command means and check it before any work."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.api import RunTask
from sagan_cli.device import select_device
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.scoring import evaluator_factory
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.outcomes import RunStatus
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_batch_divides, check_before_work, check_nproc
from sagan_cli.recipe import Recipe, check_experiment_name, load_recipe
from sagan_cli.results import (
    RunBusy,
    RunDir,
    busy_message,
    now,
    prepare_run,
    run_dir_for,
    trained_elsewhere,
)
from sagan_cli.train.distributed import SINGLE, World, collective_timeout_s, rank_device
from sagan_cli.train.observer import Observer
from sagan_cli.train.result import TrainResult
from sagan_cli.train.run import train_run


@dataclass(frozen=True)
class TrainingRequest:
    """What ``sagan train`` was asked, as given (``open_training`` resolves and checks it)."""

    recipe: str | None = None
    overrides: tuple[str, ...] = ()
    resume: Path | None = None
    checkpoint: str | None = None
    results_root: Path = Path("results")
    experiment: str | None = None
    device: str = "auto"
    inception_weights: Path | None = None
    retry: bool = False
    nproc: int = 1  # processes for this one run (torchrun is started for > 1)
    threads: int | None = None
    tensorboard: bool = False
    quiet: bool = False


@dataclass
class TrainingJob:
    request: TrainingRequest
    recipe: Recipe
    run: RunDir
    device: torch.device
    registry: Registry
    weights: ExtractorWeights | None
    world: World = SINGLE

    @property
    def starts_ranks(self) -> bool:
        """This process starts ``--nproc`` ranks with torchrun (it is not a rank itself)."""
        return self.request.nproc > 1 and not self.world.distributed

    def rank_task(self) -> RunTask:
        """What every rank of a ``--nproc`` run is told: built from this job, never from argv."""
        request = self.request
        return RunTask(
            run_dir=str(self.run.path),
            label="train",
            device=request.device,
            threads=request.threads,
            inception_weights=str(self.weights.path) if self.weights else None,
            retry_failed=request.retry,
            quiet=request.quiet,
            tensorboard=request.tensorboard,
        )

    def start(self, observer: Observer) -> TrainResult:
        """Train in this process (a single process, or one rank of a data-parallel run)."""
        factory = evaluator_factory(self.weights) if self.weights else None
        return train_run(
            self.recipe,
            self.run,
            self.device,
            self.registry,
            observer,
            factory,
            self.request.checkpoint,
            retry_diverged=self.request.retry,
            world=self.world,
        )


def open_training(
    request: TrainingRequest, registry: Registry, world: World | None = None
) -> TrainingJob:
    """Everything a training command needs, validated: recipe, run folder, device, weights.

    ``world``: this process is a rank of a data-parallel run (under torchrun); with
    ``request.nproc`` > 1 otherwise, the job starts that many ranks (nothing is started here).
    """
    world = world or SINGLE
    resume, overrides = request.resume, list(request.overrides)
    if resume is not None:
        if request.recipe is not None or overrides or request.experiment:
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
        if request.recipe is None:
            raise SaganError(
                "Give a recipe (a .toml file or a shipped name such as smoke), or --resume RUN_DIR."
            )
        if request.checkpoint is not None:
            raise SaganError(
                "--checkpoint chooses where a resumed run continues; use it with --resume RUN_DIR."
            )
        recipe = load_recipe(request.recipe, overrides, registry=registry)
        if request.experiment is not None:
            check_experiment_name(request.experiment)
        run = run_dir_for(request.results_root, request.experiment or recipe.name, recipe)
    if request.tensorboard:  # logging is no part of a run's identity: also fine for --resume
        recipe = recipe.model_copy(
            update={"logging": recipe.logging.model_copy(update={"tensorboard": True})}
        )
    if world.is_main and trained_elsewhere(run):  # say so at once, before any set-up
        raise RunBusy(busy_message(run))
    nproc = request.nproc
    size = world.size if world.distributed else nproc
    if size > 1:
        collective_timeout_s()
    check_batch_divides(recipe, size)
    if nproc > 1 and not world.distributed:
        check_nproc(nproc, select_device(request.device))
    checked = check_before_work(
        [recipe],
        registry,
        device=request.device,
        inception_weights=request.inception_weights,
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
        request, recipe, run, rank_device(checked.device, world), registry, checked.weights, world
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


def train_with_torchrun(job: TrainingJob) -> TrainResult:
    """Start the run on ``--nproc`` processes and wait; the outcome comes from the run folder.

    Ctrl-C reaches every rank through the terminal; they agree on the iteration to
    stop at, rank 0 saves it, and this process reports it. When a rank dies,
    torchrun stops the others; the run is then ``failed`` and resumable.
    """
    prepare_run(job.recipe, job.run)
    nproc = job.request.nproc
    ranks_run = list(job.rank_task().arguments)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
        PARENT_ENV: "1",  # this process reports the outcome; the ranks stay silent about it
    }
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks handle it
    try:
        returncode, said_why = _run_filtered(torchrun_command(nproc, ranks_run), env, job.run.path)
    finally:
        signal.signal(signal.SIGINT, previous)
    status = job.run.read_status()
    state = RunStatus.read(status)
    log = job.run.path / TORCHRUN_LOG
    if state.open:  # a rank died; the others were stopped mid-step
        state = RunStatus.FAILED
        with contextlib.suppress(OSError):
            job.run.update_status(
                status=RunStatus.FAILED,
                error=f"a rank died (torchrun exit code {returncode}; details in {log})",
                finished=now(),
            )
        status = job.run.read_status()
    detail = str(status.get("error") or "")
    if state == RunStatus.FAILED and said_why:
        detail = "a rank said why above"  # its paragraph, once
    elif state == RunStatus.FAILED and "re-run the same command" not in detail:
        detail = f"{detail}; re-run the same command to resume from the last checkpoint"
    code = status.get("exit_code")
    return TrainResult(
        job.run,
        state,
        int(status.get("step", 0)),
        "" if state == RunStatus.DONE else detail,
        stop_signal(detail) if state == RunStatus.INTERRUPTED else None,
        failed_with=code if isinstance(code, int) else None,
    )


def stop_signal(detail: str) -> int:
    """The signal an ``interrupted`` status names (``stopped by SIGTERM``); SIGINT if none."""
    match = re.search(r"\b(SIG[A-Z0-9]+)\b", detail)
    try:
        return int(signal.Signals[match.group(1)]) if match else int(signal.SIGINT)
    except KeyError:
        return int(signal.SIGINT)


TORCHRUN_LOG = "torchrun.log"
_LOGGER_LINE = re.compile(r"^(\[rank\d+\]:)?\[?[DIWEF]\d{4} \d\d:\d\d:\d\d")


class RankOutput:
    """Sorts what torchrun and its ranks print: the ranks' own lines go to the terminal,
    tracebacks, torch's logger lines and torchrun's failure summary go to a log file
    (a dead rank otherwise buries the one-line outcome under a hundred lines)."""

    def __init__(self) -> None:
        self.in_traceback = False
        self.in_summary = False

    def shown(self, line: str) -> bool:
        if self.in_traceback:
            if line.strip() and not line[0].isspace():
                self.in_traceback = False  # the exception's own line ends the traceback
            return False
        if line.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return False
        if line.startswith("=" * 20):
            self.in_summary = not self.in_summary
            return False
        return not (self.in_summary or _LOGGER_LINE.match(line))


def _run_filtered(command: list[str], env: dict[str, str], run_path: Path) -> tuple[int, bool]:
    """Run torchrun; the ranks' lines reach stderr, the rest lands in the run's torchrun.log.
    Returns torchrun's exit code and whether a rank printed an error paragraph."""
    sorter = RankOutput()
    said_why = False
    with (run_path / TORCHRUN_LOG).open("a", encoding="utf-8") as log:
        log.write(f"--- {now()} {' '.join(command)}\n")
        process = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1
        )
        assert process.stderr is not None
        for line in process.stderr:
            if sorter.shown(line):
                said_why = said_why or line.startswith("Error:")
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                log.write(line)
        return process.wait(), said_why
