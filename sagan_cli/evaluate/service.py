"""Evaluating generators and image folders: what ``sagan eval`` and in-training evaluation call.

Every result carries its provenance: sample count and seed, the reference set
(source, split, size), the feature extractor with its weights file and
SHA-256, and the torch-fidelity version, because FID values from different
pipelines and reference sets are not comparable.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from sagan_cli.api import DataSource
from sagan_cli.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_generator_weights,
)
from sagan_cli.components import build_networks, num_classes_for
from sagan_cli.datasets.base import SPLITS, decode_all
from sagan_cli.datasets.files import ImageFolderSource, NpzSource
from sagan_cli.datasets.params import ImageFolderParams, NpzParams
from sagan_cli.device import effective_precision
from sagan_cli.errors import CheckpointError, DataError, SaganError
from sagan_cli.evaluate.fidelity import (
    LazyReference,
    ReferenceCache,
    ReferenceKey,
    calculate,
    default_cache_root,
    kid_subset_size,
)
from sagan_cli.evaluate.weights import InceptionWeights, resolve_inception_weights
from sagan_cli.imagefiles import IMAGE_SUFFIXES, find_images, load_image, lossy_warning
from sagan_cli.model.networks import Generator
from sagan_cli.model.sampling import sample_images
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_before_work
from sagan_cli.recipe import EvalConfig, load_recipe, split_list
from sagan_cli.results import RunDir, open_run_folder

EVAL_SEED_OFFSET = 2_000_003  # evaluation latents: fixed per run seed, distinct from sample grids
REFERENCE_ORDER_SEED = 0


@dataclass
class Reference:
    """A reference set for FID/KID: lazily decoded images plus what identifies them."""

    images: LazyReference
    key_identity: dict[str, Any]
    split: str
    description: dict[str, Any]


def reference_from(source: DataSource, split: str, count: int) -> Reference:
    """The first ``count`` images of a fixed shuffle of ``split`` (all of it if smaller)."""
    if split not in source.splits:
        raise DataError(
            f"Data source '{source.name}' has no '{split}' split (it has {', '.join(source.splits)}). "
            f"Use --reference {source.splits[0]}, or --reference PATH for a folder or .npz of real images."
        )
    available = source.split_size(split)
    size = min(count, available)

    def load() -> torch.Tensor:
        images = source.split(split)
        order = torch.randperm(
            len(images), generator=torch.Generator().manual_seed(REFERENCE_ORDER_SEED)
        )
        # an ImageSet is a map-style dataset; Subset only indexes it
        subset: Subset[Any] = Subset(images, order[:size].tolist())  # type: ignore[arg-type]
        return decode_all(subset, workers=4).images

    description = {"source": source.name, "split": split, "size": size, "available": available}
    return Reference(LazyReference(size, load), source.identity(), split, description)


def reference_from_path(path: Path, resolution: int, count: int) -> Reference:
    """Real images from a folder (resized and centre-cropped) or an .npz file."""
    path = path.expanduser()
    if path.suffix == ".npz":
        source: DataSource = NpzSource("npz", NpzParams(path=str(path)), resolution)
    elif path.is_dir():
        source = ImageFolderSource("image-folder", ImageFolderParams(path=str(path)), resolution)
    else:
        raise DataError(
            f"--reference {path}: not a folder of images or an .npz file. Use train, test, a folder "
            f"of {'/'.join(IMAGE_SUFFIXES)} files, or an .npz of uint8 images."
        )
    source.check()
    reference = reference_from(source, "train", count)
    reference.description = {
        **reference.description,
        "source": str(path.resolve()),
        "split": "path",
    }
    return reference


def reference_for(choice: str, count: int, resolution: int, source: DataSource | None) -> Reference:
    """``train``/``test`` of ``source``, or a folder or .npz path of real images."""
    if choice in SPLITS:
        if source is None:
            raise SaganError(
                f"--reference {choice} names a split of a recipe's data: add --recipe RECIPE."
            )
        return reference_from(source, choice, count)
    return reference_from_path(Path(choice), resolution, count)


def torch_fidelity_version() -> str:
    try:
        return importlib.metadata.version("torch-fidelity")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Evaluation:
    """Scores uint8 images or a generator against one reference with one set of weights."""

    def __init__(
        self,
        weights: InceptionWeights,
        reference: Reference | None,
        device: torch.device,
        batch_size: int,
        cache_root: Path | None = None,
    ) -> None:
        self.weights = weights
        self.reference = reference
        self.device = device
        self.batch_size = batch_size
        self.cache = ReferenceCache(cache_root or default_cache_root())

    def score(
        self,
        images: torch.Tensor,
        metrics: list[str],
        report: Callable[[str], None] = lambda text: None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        cache = None
        against = ""
        if self.reference is not None:
            key = ReferenceKey(
                self.reference.key_identity,
                self.reference.split,
                len(self.reference.images),
                self.weights.sha256,
            )
            cache = (self.cache, key)
            against = f" against {len(self.reference.images)} reference images (their features " + (
                "cached)" if self.cache.is_complete(key) else "computed now, then cached)"
            )
        report(f"scoring {len(images)} images ({', '.join(metrics)}){against}")
        values = calculate(
            images,
            metrics,
            self.weights,
            self.device,
            self.batch_size,
            reference=None if self.reference is None else self.reference.images,
            reference_cache=cache,
        )
        return {
            **values,
            "num_samples": len(images),
            "reference": None if self.reference is None else self.reference.description,
            "feature_extractor": self.weights.provenance(),
            "torch_fidelity": torch_fidelity_version(),
            "kid_subset_size": kid_subset_size(len(images), len(self.reference.images))
            if self.reference
            else None,
            "seconds_metrics": round(time.perf_counter() - started, 3),
        }


def eval_record(
    step: int, *, final: bool, checkpoint: str, values: dict[str, Any]
) -> dict[str, Any]:
    """One evaluation as metrics.jsonl and eval.json store it."""
    return {"kind": "eval", "step": step, "final": final, "checkpoint": checkpoint, **values}


class RunEvaluator:
    """The evaluator training and ``sagan eval`` use: sample the EMA generator, then score."""

    def __init__(self, evaluation: Evaluation, seed: int, precision: str) -> None:
        self.evaluation = evaluation
        self.seed = seed + EVAL_SEED_OFFSET
        self.precision = precision

    def evaluate(
        self,
        generator: Generator,
        step: int,
        metrics: list[str],
        num_samples: int,
        final: bool,
        checkpoint: str,
        report: Callable[[str], None] = lambda text: None,
    ) -> dict[str, Any]:
        report(f"sampling {num_samples} images from the EMA generator ({checkpoint})")
        started = time.perf_counter()
        images = sample_images(
            generator,
            num_samples,
            self.seed,
            self.evaluation.device,
            self.precision,
            self.evaluation.batch_size,
        )
        generated_s = time.perf_counter() - started
        values = {
            **self.evaluation.score(images, metrics, report),
            "sample_seed": self.seed,
            "seconds_generate": round(generated_s, 3),
        }
        return eval_record(step, final=final, checkpoint=checkpoint, values=values)


def evaluator_factory(
    weights: InceptionWeights, device: torch.device
) -> Callable[[Any, DataSource], RunEvaluator]:
    """Builds a run's evaluator once its data source exists (training calls it)."""

    def build(recipe: Any, source: DataSource) -> RunEvaluator:
        reference = reference_from(source, recipe.eval.reference, recipe.eval.reference_samples)
        evaluation = Evaluation(weights, reference, device, recipe.eval.batch_size)
        return RunEvaluator(
            evaluation,
            recipe.seed,
            effective_precision(device, recipe.train.precision, on_cpu=recipe.train.bf16_on_cpu),
        )

    return build


METRICS = ("fid", "is", "kid")


def parse_metrics(text: str) -> list[str]:
    chosen = [m.lower() for m in split_list(text)]
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise SaganError(f"--metrics '{text}': choose from {', '.join(METRICS)} (comma-separated).")
    return list(dict.fromkeys(chosen))


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
    *,
    run_path: Path,
    checkpoint: str,
    metrics: list[str],
    num_samples: int | None,
    reference: str | None,
    reference_samples: int | None,
    batch_size: int | None,
    inception_weights: Path | None,
    device: str,
    registry: Registry,
) -> RunEvaluationJob:
    """Validate everything (run, checkpoint, weights, reference) before any sampling."""
    run, recipe = open_run_folder(run_path, registry)
    path = checkpoint_for(run, checkpoint)
    checked = check_before_work(
        [recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"final": True})})],
        registry,
        device=device,
        inception_weights=inception_weights,
        training=False,
    )
    source = checked.source_for(recipe)
    ref = reference_for(
        reference or recipe.eval.reference,
        reference_samples or recipe.eval.reference_samples,
        recipe.data.resolution,
        source,
    )
    state = load_checkpoint(path, checked.device, run.id, run.path)
    generator, _ = build_networks(recipe, num_classes_for(recipe, source), registry)
    load_generator_weights(generator, state, path, run.recipe_path)
    generator.to(checked.device)
    assert checked.weights is not None
    evaluation = Evaluation(
        checked.weights, ref, checked.device, batch_size or recipe.eval.batch_size
    )
    evaluator = RunEvaluator(
        evaluation,
        recipe.seed,
        effective_precision(
            checked.device, recipe.train.precision, on_cpu=recipe.train.bf16_on_cpu
        ),
    )
    return RunEvaluationJob(
        run,
        path,
        generator,
        int(state["step"]),
        evaluator,
        metrics,
        num_samples or recipe.eval.num_samples,
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


def evaluate_folder(
    *,
    images_dir: Path,
    metrics: list[str],
    reference: str | None,
    recipe_ref: str | None,
    reference_samples: int | None,
    batch_size: int | None,
    inception_weights: Path | None,
    device: str,
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
    resolution = images.shape[-1]
    needs_reference = any(m in ("fid", "kid") for m in metrics)
    if needs_reference and reference is None:
        raise SaganError(
            "FID and KID need --reference: a folder or .npz of real images, or train/test with "
            "--recipe. (Or score IS alone: --metrics is.)"
        )
    recipe = load_recipe(recipe_ref, registry=registry) if recipe_ref is not None else None
    checked = check_before_work(
        [recipe] if recipe is not None and reference in SPLITS else [],
        registry,
        device=device,
        inception_weights=None,
    )
    ref = None
    if needs_reference:
        assert reference is not None
        source = checked.source_for(recipe) if recipe is not None and reference in SPLITS else None
        count = reference_samples or EvalConfig.model_fields["reference_samples"].default
        ref = reference_for(reference, count, resolution, source)
        if reference not in SPLITS:
            path = Path(reference).expanduser()
            warning = lossy_warning(
                find_images(path) if path.is_dir() else [], "the --reference files"
            )
            if warning:
                notify(warning)
    weights = resolve_inception_weights(inception_weights)
    size = batch_size or EvalConfig.model_fields["batch_size"].default
    record = Evaluation(weights, ref, checked.device, size).score(images, metrics, report)
    return {"images": str(images_dir), **record}
