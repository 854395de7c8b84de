"""``sagan train``: resolve what a training command means and check it before any work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.components import build_data_source
from sagan_cli.datasets.base import DataSource
from sagan_cli.device import effective_precision, select_device
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.service import Evaluation, RunEvaluator, reference_from
from sagan_cli.evaluate.weights import InceptionWeights, resolve_inception_weights
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe, load_recipe
from sagan_cli.results import RunDir, run_dir_for
from sagan_cli.train.loop import Observer, TrainResult, train_run


def evaluator_factory(
    weights: InceptionWeights, device: torch.device
) -> Callable[[Recipe, DataSource], RunEvaluator]:
    """Builds the in-training evaluator once the run's data source exists."""

    def build(recipe: Recipe, source: DataSource) -> RunEvaluator:
        reference = reference_from(source, recipe.eval.reference, recipe.eval.reference_samples)
        evaluation = Evaluation(weights, reference, device, recipe.eval.batch_size)
        return RunEvaluator(
            evaluation, recipe.seed, effective_precision(device, recipe.train.precision)
        )

    return build


def needs_evaluation(recipe: Recipe) -> bool:
    return bool(recipe.eval.every or recipe.eval.final)


@dataclass
class TrainingJob:
    recipe: Recipe
    run: RunDir
    device: torch.device
    registry: Registry
    weights: InceptionWeights | None
    checkpoint: str | None

    def start(self, observer: Observer) -> TrainResult:
        factory = evaluator_factory(self.weights, self.device) if self.weights else None
        return train_run(
            self.recipe, self.run, self.device, self.registry, observer, factory, self.checkpoint
        )


def open_training(
    recipe_ref: str | None,
    overrides: list[str],
    resume: Path | None,
    checkpoint: str | None,
    results_root: Path,
    experiment: str | None,
    device: str,
    inception_weights: Path | None,
    registry: Registry,
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
        run = run_dir_for(results_root, experiment or recipe.name, recipe)
    chosen = select_device(device)
    build_data_source(recipe, registry).check()
    weights = resolve_inception_weights(inception_weights) if needs_evaluation(recipe) else None
    try:
        run.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(
            f"Cannot create the results folder {run.path.parent}: {exc.strerror}."
        ) from None
    return TrainingJob(recipe, run, chosen, registry, weights, checkpoint)
