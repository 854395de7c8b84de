"""Scoring: features once per sample set and extractor, every metric from them, against one
reference, with the protocol that made the numbers; and the evaluator of a run's generator.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagan_cli.api import DataSource
from sagan_cli.errors import SaganError
from sagan_cli.evaluate.extractors import Extractor, extractor, resolve_extractor_weights
from sagan_cli.evaluate.fidelity import (
    Images,
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
from sagan_cli.evaluate.reference import Reference, reference_from
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.execution import ExecutionPlan
from sagan_cli.metrics import NEEDS_REFERENCE
from sagan_cli.model.networks import Generator
from sagan_cli.model.sampling import sample_images
from sagan_cli.recipe import Recipe

EVAL_SEED_OFFSET = 2_000_003  # evaluation latents: fixed per run seed, distinct from sample grids


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
