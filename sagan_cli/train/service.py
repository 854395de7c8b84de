"""``sagan train``: resolve what a training command means and check it before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.service import evaluator_factory
from sagan_cli.evaluate.weights import InceptionWeights
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_batch_divides, check_before_work
from sagan_cli.recipe import Recipe, check_experiment_name, load_recipe
from sagan_cli.results import RunDir, run_dir_for
from sagan_cli.train.distributed import SINGLE, World
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
    world: World = SINGLE,
) -> TrainingJob:
    """Everything a training command needs, validated: recipe, run folder, device, weights."""
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
    check_batch_divides(recipe, world.size)
    checked = check_before_work(
        [recipe],
        registry,
        device=device,
        inception_weights=inception_weights,
        world_size=world.size,
    )
    if world.is_main:
        try:
            run.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(
                f"Cannot create the results folder {run.path.parent}: {exc.strerror}."
            ) from None
    return TrainingJob(
        recipe, run, checked.device, registry, checked.weights, checkpoint, retry, world
    )
