"""Evaluating generators and image folders: what ``sagan eval`` and in-training evaluation call.

Every result carries its provenance: sample count and seed, the reference set
(source, split, size), the feature extractor with its weights file and
SHA-256, and the torch-fidelity version, because FID values from different
pipelines and reference sets are not comparable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from sagan_cli.errors import CheckpointError, DataError, SaganError
from sagan_cli.evaluate.extractors import Extractor, extractor, resolve_extractor_weights
from sagan_cli.evaluate.fidelity import (
    Images,
    LazyReference,
    MetricOptions,
    ReferenceCache,
    ReferenceKey,
    default_cache_root,
    features_of,
    kid_subset_size,
    metrics_from_features,
    read_stats_file,
    reference_features,
    write_stats_file,
)
from sagan_cli.evaluate.weights import EXTRACTOR, ExtractorWeights, resolve_inception_weights
from sagan_cli.execution import ExecutionPlan, plan_execution
from sagan_cli.imagefiles import IMAGE_SUFFIXES, find_images, load_image, lossy_warning
from sagan_cli.metrics import COMPUTATION_NAMES, NEEDS_REFERENCE
from sagan_cli.model.networks import Generator
from sagan_cli.model.sampling import sample_images
from sagan_cli.plugins import Registry
from sagan_cli.preflight import check_before_work
from sagan_cli.recipe import EvalConfig, Recipe, load_recipe, split_list
from sagan_cli.results import RunDir, open_run_folder

EVAL_SEED_OFFSET = 2_000_003  # evaluation latents: fixed per run seed, distinct from sample grids
REFERENCE_ORDER_SEED = 0


@dataclass
class Reference:
    """A reference set for FID/KID/PRC: lazily decoded images plus what identifies them, or a
    published statistics file (``images`` None)."""

    images: LazyReference | None
    key_identity: dict[str, Any]
    split: str
    description: dict[str, Any]
    stats_path: Path | None = None

    @property
    def size(self) -> int:
        return int(self.description.get("size", 0))


def reference_from(source: DataSource, split: str, count: int) -> Reference:
    """The first ``count`` images of a fixed shuffle of ``split`` (all of it if smaller or 0)."""
    if split not in source.splits:
        raise DataError(
            f"Data source '{source.name}' has no '{split}' split (it has {', '.join(source.splits)}). "
            f"Use --reference {source.splits[0]}, or --reference PATH for a folder or .npz of real images."
        )
    available = source.split_size(split)
    size = available if count == 0 else min(count, available)

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
    """Real images from a folder (resized and centre-cropped) or an .npz file of images, or a
    statistics file (an .npz with ``mu`` and ``sigma``)."""
    path = path.expanduser()
    if path.suffix == ".npz" and path.is_file() and _is_stats_file(path):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Reference(
            None,
            {"stats_sha256": digest},
            "stats",
            {"source": str(path.resolve()), "split": "stats", "sha256": digest},
            stats_path=path,
        )
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


def _is_stats_file(path: Path) -> bool:
    """An .npz of statistics (``mu``/``sigma``), not of images."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "mu" in archive.files or "sigma" in archive.files
    except Exception:
        return False


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


PROTOCOL_VERSION = 2  # records without a version (0.3 and older) cannot be recomputed


class Evaluation:
    """Scores uint8 images or a generator against one reference in one or more feature spaces:
    one pass of features per sample set and extractor, every metric from it."""

    def __init__(
        self,
        weights: ExtractorWeights | list[ExtractorWeights],
        reference: Reference | None,
        device: torch.device,
        batch_size: int,
        cache_root: Path | None = None,
        options: MetricOptions = MetricOptions(),
    ) -> None:
        self.weights = weights if isinstance(weights, list) else [weights]
        self.reference = reference
        self.device = device
        self.batch_size = batch_size
        self.cache = ReferenceCache(cache_root or default_cache_root())
        self.options = options

    def check(self, metrics: list[str], num_samples: int) -> None:
        """Everything a metric needs, before any sampling (bad input is exit 2, not a crash)."""
        spaces = [extractor(w.extractor) for w in self.weights]
        if "is" in metrics and not any(space.family == "inception" for space in spaces):
            raise SaganError(
                "IS is defined on Inception's class probabilities: add inception-v3-compat to "
                "the feature extractors, or drop is from the metrics."
            )
        needs = [m for m in metrics if m in NEEDS_REFERENCE]
        if needs and self.reference is None:
            raise SaganError(f"{', '.join(needs)} need a reference set (--reference).")
        smallest = min(
            num_samples,
            self.reference.size if self.reference and self.reference.images else num_samples,
        )
        for metric, k in (
            ("prc", self.options.prc_neighborhood),
            ("dc", self.options.dc_neighborhood),
        ):
            if metric in metrics and smallest <= k:
                raise SaganError(
                    f"{metric} compares each sample with its {k} nearest neighbours, so it needs "
                    f"more than {k} generated and {k} reference images (it has {smallest}). Use "
                    f"more samples, or a smaller eval.{metric}_neighborhood."
                )
        if self.reference is not None and self.reference.stats_path is not None:
            for space in spaces:
                stats = read_stats_file(self.reference.stats_path, space)
                raw = [m for m in needs if m != "fid"]
                if raw and stats.features is None:
                    raise SaganError(
                        f"--reference {self.reference.stats_path} holds only mu and sigma, enough "
                        f"for FID; {', '.join(raw)} need the reference's features (a file "
                        f"written by `sagan eval --export-stats` has them). Drop them or give "
                        f"another reference."
                    )

    def protocol(self, num_samples: int) -> dict[str, Any]:
        """How the numbers were made, as data; its id is a hash of every field that changes a
        number (sample count, the reference's identity and size, each extractor's weights and
        preprocessing, the k of the neighbourhood metrics, torch-fidelity's version), so
        numbers of different protocols are never merged."""
        reference = self.reference
        fields = {
            "version": PROTOCOL_VERSION,
            "num_samples": num_samples,
            "reference": None
            if reference is None
            else {**reference.description, "identity": reference.key_identity},
            "extractors": [w.extractor for w in self.weights],
            "weights_sha256": [w.sha256 for w in self.weights],
            "preprocessing": [extractor(w.extractor).preprocessing for w in self.weights],
            "neighborhoods": {
                "prc": self.options.prc_neighborhood,
                "dc": self.options.dc_neighborhood,
            },
            "torch_fidelity": torch_fidelity_version(),
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
        if reference is None:
            against = "no reference"
        elif reference.description.get("split") == "stats":
            against = f"stats {str(reference.description.get('sha256'))[:12]}"
        else:
            description = reference.description
            against = f"{description.get('source')} {description.get('split')} ({description.get('size')})"
        weights = "+".join(f"{w.extractor} {w.sha256[:8]}" for w in self.weights)
        return {
            "id": digest.hexdigest()[:8],
            "label": f"{num_samples} samples vs {against}, {weights}",
            **fields,
        }

    def score(
        self,
        images: torch.Tensor,
        metrics: list[str],
        report: Callable[[str], None] = lambda text: None,
    ) -> dict[str, Any]:
        self.check(metrics, len(images))
        started = time.perf_counter()
        values: dict[str, float] = {}
        timings: dict[str, float] = {}
        for weights in self.weights:
            space = extractor(weights.extractor)
            wanted = [m for m in metrics if m != "is" or space.family == "inception"]
            values.update(self._score_space(images, wanted, weights, space, report))
            timings[space.name] = round(time.perf_counter() - started - sum(timings.values()), 3)
        reference = self.reference
        return {
            **values,
            "num_samples": len(images),
            "reference": None if reference is None else reference.description,
            "feature_extractor": self.weights[0].provenance(),
            "feature_extractors": [w.provenance() for w in self.weights],
            "protocol": self.protocol(len(images)),
            "torch_fidelity": torch_fidelity_version(),
            "kid_subset_size": kid_subset_size(len(images), reference.size)
            if reference is not None and reference.images is not None and "kid" in metrics
            else None,
            "neighborhoods": {
                "prc": self.options.prc_neighborhood,
                "dc": self.options.dc_neighborhood,
            },
            "seconds_metrics": round(time.perf_counter() - started, 3),
            "seconds_per_extractor": timings,
        }

    def _score_space(
        self,
        images: torch.Tensor,
        metrics: list[str],
        weights: ExtractorWeights,
        space: Extractor,
        report: Callable[[str], None],
    ) -> dict[str, float]:
        layers = sorted({space.layers[m] for m in metrics if m in space.layers})
        report(f"{space.name}: features of {len(images)} images ({', '.join(metrics)})")
        generated = features_of(Images(images), weights, layers, self.device, self.batch_size)
        reference, stats = self.reference_features(weights, space, metrics, report)
        return metrics_from_features(space, metrics, generated, reference, stats, self.options)

    def reference_features(
        self,
        weights: ExtractorWeights,
        space: Extractor,
        metrics: list[str],
        report: Callable[[str], None] = lambda text: None,
    ) -> tuple[torch.Tensor | None, dict[str, np.ndarray] | None]:
        """The reference's features in ``space`` (cached), or a statistics file's mu/sigma."""
        reference = self.reference
        if reference is None or not any(m in NEEDS_REFERENCE for m in metrics):
            return None, None
        if reference.stats_path is not None:
            stats = read_stats_file(reference.stats_path, space)
            features = None if stats.features is None else torch.from_numpy(stats.features)
            return features, stats.stats()
        assert reference.images is not None
        key = ReferenceKey(
            reference.key_identity,
            reference.split,
            reference.size,
            weights.sha256,
            space.name,
            space.preprocessing,
        )
        cached = "cached" if self.cache.is_complete(key) else "computed now, then cached"
        report(f"{space.name}: features of {reference.size} reference images ({cached})")
        features = reference_features(
            reference.images,
            weights,
            space.layers["fid"],
            self.device,
            self.batch_size,
            (self.cache, key),
        )
        return features, None

    def export_stats(self, path: Path) -> Path:
        """The reference's statistics and features in the first extractor's space, as an .npz
        others can compare against (TTUR's format, plus features and the extractor's name)."""
        if self.reference is None:
            raise SaganError("--export-stats writes a reference's statistics: give --reference.")
        weights = self.weights[0]
        space = extractor(weights.extractor)
        features, stats = self.reference_features(weights, space, ["fid"])
        if features is None:
            raise SaganError(
                f"--export-stats: the reference {self.reference.stats_path} has no features to "
                f"export (it is a statistics file already)."
            )
        write_stats_file(path, features, space, self.reference.description)
        return path


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
    weights: ExtractorWeights,
) -> Callable[[Recipe, DataSource, ExecutionPlan], RunEvaluator]:
    """Builds a run's evaluator once its data source and execution plan exist (training calls
    it); the evaluation samples in the plan's precision on its device."""

    def build(recipe: Recipe, source: DataSource, plan: ExecutionPlan) -> RunEvaluator:
        reference = reference_from(source, recipe.eval.reference, recipe.eval.reference_samples)
        spaces = [
            weights if name == weights.extractor else resolve_extractor_weights(name)
            for name in recipe.eval.feature_extractor
        ]
        evaluation = Evaluation(
            spaces,
            reference,
            plan.device,
            recipe.eval.batch_size,
            options=MetricOptions(recipe.eval.prc_neighborhood, recipe.eval.dc_neighborhood),
        )
        return RunEvaluator(evaluation, recipe.seed, plan.precision)

    return build


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
    extractors: str | None = None,
    dinov2_weights: Path | None = None,
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
    generator, _ = build_networks(recipe, num_classes_for(recipe, source), registry, source)
    load_generator_weights(generator, state, path, run.recipe_path)
    generator.to(checked.device)
    assert checked.weights is not None
    names = parse_extractors(extractors, recipe.eval.feature_extractor)
    evaluation = Evaluation(
        extractor_weights(names, checked.weights, dinov2_weights),
        ref,
        checked.device,
        batch_size or recipe.eval.batch_size,
        options=MetricOptions(recipe.eval.prc_neighborhood, recipe.eval.dc_neighborhood),
    )
    evaluation.check(metrics, num_samples or recipe.eval.num_samples)
    evaluator = RunEvaluator(
        evaluation,
        recipe.seed,
        plan_execution(recipe, checked.device).precision,
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


def extractor_weights(
    names: list[str], inception: ExtractorWeights | None, dinov2: Path | None = None
) -> list[ExtractorWeights]:
    """The weights of every named extractor (Inception's already resolved, when given)."""
    found = []
    for name in names:
        spec = extractor(name)
        if spec.family == "inception":
            found.append(inception or resolve_inception_weights(None))
        else:
            found.append(resolve_extractor_weights(name, dinov2))
    return found


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
    extractors: str | None = None,
    dinov2_weights: Path | None = None,
    neighborhoods: tuple[int, int] = (3, 5),
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
    needs_reference = any(m in NEEDS_REFERENCE for m in metrics)
    if needs_reference and reference is None:
        raise SaganError(
            "FID, KID, PRC and DC need --reference: a folder or .npz of real images, a statistics "
            ".npz, or train/test with "
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
    names = parse_extractors(extractors, recipe.eval.feature_extractor if recipe else [EXTRACTOR])
    inception = resolve_inception_weights(inception_weights) if EXTRACTOR in names else None
    size = batch_size or EvalConfig.model_fields["batch_size"].default
    evaluation = Evaluation(
        extractor_weights(names, inception, dinov2_weights),
        ref,
        checked.device,
        size,
        options=MetricOptions(*neighborhoods),
    )
    record = evaluation.score(images, metrics, report)
    return {"images": str(images_dir), **record}


def export_reference_stats(
    *,
    out: Path,
    reference: str,
    recipe_ref: str | None,
    reference_samples: int | None,
    batch_size: int | None,
    inception_weights: Path | None,
    device: str,
    registry: Registry,
    extractors: str | None = None,
    dinov2_weights: Path | None = None,
    report: Callable[[str], None] = lambda text: None,
) -> Path:
    """``sagan eval --export-stats OUT.npz``: the reference's statistics and features (the
    recipe's data split, a folder or an .npz of images) for other tools to compare against."""
    if out.suffix != ".npz":
        raise SaganError(f"--export-stats {out}: give a path ending in .npz.")
    if out.exists():
        raise SaganError(
            f"--export-stats {out} already exists; nothing was written. Choose another path."
        )
    recipe = load_recipe(recipe_ref, registry=registry) if recipe_ref is not None else None
    if reference in SPLITS and recipe is None:
        raise SaganError(
            f"--reference {reference} names a split of a recipe's data: add --recipe RECIPE."
        )
    checked = check_before_work(
        [recipe] if recipe is not None and reference in SPLITS else [],
        registry,
        device=device,
        inception_weights=None,
    )
    source = checked.source_for(recipe) if recipe is not None and reference in SPLITS else None
    resolution = recipe.data.resolution if recipe is not None else 32
    count = (
        reference_samples
        if reference_samples is not None
        else (recipe.eval.reference_samples if recipe is not None else 0)
    )
    ref = reference_for(reference, count, resolution, source)
    names = parse_extractors(extractors, recipe.eval.feature_extractor if recipe else [EXTRACTOR])
    inception = resolve_inception_weights(inception_weights) if EXTRACTOR in names else None
    size = batch_size or EvalConfig.model_fields["batch_size"].default
    report(f"features of the reference ({ref.description.get('size')} images)")
    return Evaluation(
        extractor_weights(names, inception, dinov2_weights), ref, checked.device, size
    ).export_stats(out)
