"""``sagan bench fid``: seconds for reference features (cold), sample generation and the
generated features plus FID (with the reference cached), and images/s per feature extractor."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from sagan_cli.components import build_data_source, build_networks, num_classes_for
from sagan_cli.evaluate.reference import reference_from
from sagan_cli.evaluate.scoring import Evaluation, RunEvaluator
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.execution import plan_execution
from sagan_cli.model.sampling import sample_images
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe


def bench_fid(
    recipe: Recipe,
    registry: Registry,
    device: torch.device,
    weights: list[ExtractorWeights],
    num_samples: int,
    reference_samples: int,
    batch_size: int,
    cache_root: Path,
) -> dict[str, object]:
    """Where FID time goes: reference features (cold), then generation and scoring (warm cache)."""
    source = build_data_source(recipe, registry)
    source.check()
    torch.manual_seed(0)
    generator, _ = build_networks(recipe, num_classes_for(recipe, source), registry, source)
    generator.to(device)
    precision = plan_execution(recipe, device).precision
    reference = reference_from(source, recipe.eval.reference, reference_samples)
    evaluation = Evaluation(weights, reference, device, batch_size, cache_root)
    start = time.perf_counter()
    warm_up = sample_images(generator, min(num_samples, 64), 0, device, precision, batch_size)
    evaluation.score(warm_up, ["fid"])  # computes and caches the reference features
    cold = time.perf_counter() - start
    record = RunEvaluator(evaluation, 0, precision).evaluate(
        generator, 0, ["fid"], num_samples, False, "untrained"
    )
    return {
        "recipe": recipe.name,
        "device": device.type,
        "precision": precision,
        "resolution": recipe.data.resolution,
        "num_samples": num_samples,
        "reference_samples": reference.description["size"],
        "reference_cold_s": round(cold, 2),  # reference features plus a 64-sample FID
        "generate_s": record["seconds_generate"],
        "features_and_fid_s": record["seconds_metrics"],
        "total_warm_s": round(record["seconds_generate"] + record["seconds_metrics"], 2),
        **{
            f"img_per_s_{name}": round(num_samples / max(seconds, 1e-9), 1)
            for name, seconds in record["seconds_per_extractor"].items()
        },
        **{key: round(float(record[key]), 4) for key in ("fid", "fd_dinov2") if key in record},
        "weights_sha256": ", ".join(w.sha256[:12] for w in weights),
    }
