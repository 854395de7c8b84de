"""``sagan eval``: a run's generator, a folder of samples from any codebase, or a reference's
statistics (``--export-stats``), all from one request resolved one way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sagan_cli.api import DataSource
from sagan_cli.checkpoint import list_checkpoints, load_checkpoint, load_generator_weights
from sagan_cli.components import build_networks, num_classes_for
from sagan_cli.datasets.base import SPLITS
from sagan_cli.errors import CheckpointError, DataError, SaganError
from sagan_cli.evaluate.extractors import extractor, resolve_extractor_weights
from sagan_cli.evaluate.fidelity import MetricOptions
from sagan_cli.evaluate.reference import Reference, reference_for
from sagan_cli.evaluate.scoring import Evaluation, RunEvaluator
from sagan_cli.evaluate.weights import EXTRACTOR, ExtractorWeights, resolve_inception_weights
from sagan_cli.execution import plan_execution
from sagan_cli.imagefiles import find_images, load_image, lossy_warning
from sagan_cli.metrics import COMPUTATION_NAMES, NEEDS_REFERENCE
from sagan_cli.model.networks import Generator
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_before_work
from sagan_cli.recipe import EvalConfig, Recipe, load_recipe, split_list
from sagan_cli.results import RunDir, open_run_folder


@dataclass(frozen=True)
class EvalRequest:
    """What ``sagan eval`` was asked, as given. Resolved the same way for a run, a folder of
    samples and ``--export-stats``: ``reference_samples`` None means the recipe's
    ``eval.reference_samples`` for a split of its data and every image of a folder or file;
    0 means every image everywhere."""

    metrics: tuple[str, ...] = tuple(EvalConfig.model_fields["metrics"].default)
    extractors: str | None = None  # --feature-extractor, comma-separated (None: the recipe's)
    num_samples: int | None = None
    reference: str | None = None  # train, test, a folder or .npz of images, a statistics .npz
    reference_samples: int | None = None
    batch_size: int | None = None
    recipe: str | None = None  # with --images or --export-stats: whose data train/test name
    inception_weights: Path | None = None
    dinov2_weights: Path | None = None
    device: str = "auto"

    def reference_count(self, reference: str, recipe: Recipe | None) -> int:
        """Real images in the reference (0: all of it)."""
        if self.reference_samples is not None:
            return self.reference_samples
        if reference in SPLITS and recipe is not None:
            return recipe.eval.reference_samples
        return 0

    def extractor_names(self, recipe: Recipe | None) -> list[str]:
        return parse_extractors(
            self.extractors, list(recipe.eval.feature_extractor) if recipe else [EXTRACTOR]
        )

    def batch(self, recipe: Recipe | None) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return recipe.eval.batch_size if recipe else EvalConfig.model_fields["batch_size"].default

    def evaluation(
        self,
        reference: Reference | None,
        recipe: Recipe | None,
        device: torch.device,
        inception: ExtractorWeights | None = None,
    ) -> Evaluation:
        """The scoring of this request against ``reference``: every extractor's weights (the
        Inception weights already resolved, when given), the recipe's k values."""
        names = self.extractor_names(recipe)
        weights = [
            inception or resolve_inception_weights(self.inception_weights)
            if extractor(name).family == "inception"
            else resolve_extractor_weights(name, self.dinov2_weights)
            for name in names
        ]
        options = (
            MetricOptions(recipe.eval.prc_neighborhood, recipe.eval.dc_neighborhood)
            if recipe
            else MetricOptions()
        )
        return Evaluation(weights, reference, device, self.batch(recipe), options=options)


def parse_metrics(text: str) -> list[str]:
    chosen = [m.lower() for m in split_list(text)]
    unknown = [m for m in chosen if m not in COMPUTATION_NAMES]
    if unknown or not chosen:
        from sagan_cli.errors import did_you_mean

        hint = did_you_mean(unknown[0], COMPUTATION_NAMES) if unknown else ""
        raise SaganError(
            f"--metrics '{text}': choose from {', '.join(COMPUTATION_NAMES)} (comma-separated; "
            f"prc is precision/recall, dc density/coverage).{hint}"
        )
    return list(dict.fromkeys(chosen))


def parse_extractors(text: str | None, default: list[str]) -> list[str]:
    """``--feature-extractor`` (comma-separated), checked; else the recipe's list."""
    if text is None:
        return default
    names = list(dict.fromkeys(split_list(text)))
    for name in names:
        extractor(name)
    if not names:
        raise SaganError("--feature-extractor gives no extractor; name one, e.g. dinov2-vit-l-14.")
    return names


def checkpoint_for(run: RunDir, choice: str) -> Path:
    """``last`` (newest step checkpoint), ``best`` (best.pt) or a path."""
    if choice == "last":
        found = list_checkpoints(run.checkpoints)
        if not found:
            raise CheckpointError(
                f"{run.path} has no checkpoints yet; train it first (sagan train --resume {run.path})."
            )
        return found[-1]
    if choice == "best":
        best = run.checkpoints / "best.pt"
        if not best.is_file():
            raise CheckpointError(
                f"{run.path} has no best.pt: it is written when in-training FID runs (eval.every > 0). "
                f"Use --checkpoint last."
            )
        return best
    path = Path(choice).expanduser()
    if not path.is_file() and (run.checkpoints / choice).is_file():
        path = run.checkpoints / choice
    if not path.is_file():
        available = ", ".join(p.name for p in list_checkpoints(run.checkpoints)) or "none"
        raise CheckpointError(
            f"--checkpoint {choice}: no such file. Give last, best, a file in "
            f"{run.checkpoints} (there: {available}) or a checkpoint path."
        )
    return path


@dataclass
class RunEvaluationJob:
    run: RunDir
    checkpoint: Path
    generator: Generator
    step: int
    evaluator: RunEvaluator
    metrics: list[str]
    num_samples: int

    def start(self, report: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
        """Sample, score and record; ``report`` hears each phase as it begins."""
        record = self.evaluator.evaluate(
            self.generator,
            self.step,
            self.metrics,
            self.num_samples,
            False,
            self.checkpoint.name,
            report,
        )
        self.run.record_evaluation(record)
        return record


def open_run_evaluation(
    run_path: Path, checkpoint: str, request: EvalRequest, registry: Registry
) -> RunEvaluationJob:
    """Validate everything (run, checkpoint, weights, reference) before any sampling."""
    run, recipe = open_run_folder(run_path, registry)
    path = checkpoint_for(run, checkpoint)
    checked = check_before_work(
        [recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"final": True})})],
        registry,
        device=request.device,
        inception_weights=request.inception_weights,
        training=False,
    )
    source = checked.source_for(recipe)
    choice = request.reference or recipe.eval.reference
    reference = reference_for(
        choice, request.reference_count(choice, recipe), recipe.data.resolution, source
    )
    state = load_checkpoint(path, checked.device, run.id, run.path)
    generator, _ = build_networks(recipe, num_classes_for(recipe, source), registry, source)
    load_generator_weights(generator, state, path, run.recipe_path)
    generator.to(checked.device)
    evaluation = request.evaluation(reference, recipe, checked.device, checked.weights)
    metrics = list(request.metrics)
    num_samples = request.num_samples or recipe.eval.num_samples
    evaluation.check(metrics, num_samples)
    precision = plan_execution(recipe, checked.device).precision
    evaluator = RunEvaluator(evaluation, recipe.seed, precision)
    return RunEvaluationJob(
        run, path, generator, int(state["step"]), evaluator, metrics, num_samples
    )


def load_image_folder(folder: Path) -> torch.Tensor:
    """Every image under ``folder`` as uint8 (N, 3, H, W); all must share one size."""
    folder = folder.expanduser()
    files = find_images(folder) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"--images {folder}: no .png/.jpg/.jpeg files found"
            + (" (searched recursively)." if folder.is_dir() else "; it is not a folder.")
        )
    images = []
    for path in files:
        images.append(load_image(path))
        if images[-1].shape != images[0].shape:
            raise DataError(
                f"--images {folder}: {path.name} is {tuple(images[-1].shape[1:])} but {files[0].name} is "
                f"{tuple(images[0].shape[1:])}; generated samples must share one resolution."
            )
    return torch.stack(images)


def _request_reference(
    request: EvalRequest, registry: Registry, resolution: int, notify: Callable[[str], None]
) -> tuple[Reference, Recipe | None, torch.device]:
    """The reference a folder evaluation or an export names: a split of ``--recipe``'s data
    (then the recipe is needed), or a folder or file (no recipe needed)."""
    choice = request.reference
    assert choice is not None
    if choice in SPLITS and request.recipe is None:
        raise SaganError(
            f"--reference {choice} names a split of a recipe's data: add --recipe RECIPE, or "
            f"give a folder or .npz of real images."
        )
    recipe = load_recipe(request.recipe, registry=registry) if request.recipe else None
    checked = check_before_work(
        [recipe] if recipe is not None and choice in SPLITS else [],
        registry,
        device=request.device,
        inception_weights=None,
    )
    source: DataSource | None = None
    if recipe is not None and choice in SPLITS:
        source = checked.source_for(recipe)
        resolution = recipe.data.resolution
    reference = reference_for(choice, request.reference_count(choice, recipe), resolution, source)
    if choice not in SPLITS:
        path = Path(choice).expanduser()
        warning = lossy_warning(find_images(path) if path.is_dir() else [], "the --reference files")
        if warning:
            notify(warning)
    return reference, recipe, checked.device


def evaluate_folder(
    images_dir: Path,
    request: EvalRequest,
    registry: Registry,
    notify: Callable[[str], None] = lambda text: None,
    report: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Score a folder of samples from any codebase with the same pipeline as our runs.

    Checked in the order a user fixes things: the images, the reference, the weights.
    ``notify`` hears warnings, ``report`` the scoring phase as it begins.
    """
    images = load_image_folder(images_dir)
    warning = lossy_warning(find_images(images_dir.expanduser()), "the --images files")
    if warning:
        notify(warning)
    metrics = list(request.metrics)
    needs_reference = any(m in NEEDS_REFERENCE for m in metrics)
    if needs_reference and request.reference is None:
        raise SaganError(
            "FID, KID, PRC and DC need --reference: a folder or .npz of real images, a statistics "
            ".npz, or train/test with --recipe. (Or score IS alone: --metrics is.)"
        )
    reference, recipe, device = None, None, torch.device("cpu")
    if needs_reference:
        reference, recipe, device = _request_reference(request, registry, images.shape[-1], notify)
    else:
        recipe = load_recipe(request.recipe, registry=registry) if request.recipe else None
        device = check_before_work(
            [], registry, device=request.device, inception_weights=None
        ).device
    record = request.evaluation(reference, recipe, device).score(images, metrics, report)
    return {"images": str(images_dir), **record}


def export_reference_stats(
    out: Path,
    request: EvalRequest,
    registry: Registry,
    report: Callable[[str], None] = lambda text: None,
) -> Path:
    """``sagan eval --export-stats OUT.npz``: the reference's statistics and features (a split
    of ``--recipe``'s data, or a folder or .npz of images: all of it unless
    ``--reference-samples``) for other tools to compare against."""
    if out.suffix != ".npz":
        raise SaganError(f"--export-stats {out}: give a path ending in .npz.")
    if out.exists():
        raise SaganError(
            f"--export-stats {out} already exists; nothing was written. Choose another path."
        )
    reference, recipe, device = _request_reference(request, registry, 32, lambda text: None)
    report(f"features of the reference ({reference.description.get('size')} images)")
    return request.evaluation(reference, recipe, device).export_stats(out)
