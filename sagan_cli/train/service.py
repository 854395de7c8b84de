"""``sagan train``: resolve what a training command means and check it before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.api import RunTask
from sagan_cli.device import select_device
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.scoring import evaluator_factory
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_batch_divides, check_before_work, check_nproc
from sagan_cli.recipe import Recipe, check_experiment_name, load_recipe
from sagan_cli.results import (
    RunBusy,
    RunDir,
    busy_message,
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
    track: tuple[str, ...] = ()  # --track: trackers added to the recipe's [track] backends
    quiet: bool = False
    # `recipe` with `overrides`, already loaded and validated (by the command's first line)
    loaded: Recipe | None = None


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
            track=request.track,
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
        recipe = request.loaded or load_recipe(request.recipe, overrides, registry=registry)
        if request.experiment is not None:
            check_experiment_name(request.experiment)
        run = run_dir_for(request.results_root, request.experiment or recipe.name, recipe)
    if request.track:  # neither is part of a run's identity: also fine for --resume
        names = list(dict.fromkeys([*recipe.track.backends, *request.track]))
        recipe = recipe.model_copy(
            update={"track": recipe.track.model_copy(update={"backends": names})}
        )
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
        tracking=(request.results_root, run.path.parents[1].name) if world.is_main else None,
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
