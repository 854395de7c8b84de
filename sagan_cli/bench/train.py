"""``sagan bench train``: images/s of the full training iteration of a recipe (D and G updates
and EMA, at its batch size, precision and optional ``torch.compile``) on synthetic data, so
that the paper configurations can be timed anywhere."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from sagan_cli.components import build_data_source, check_data, count_parameters
from sagan_cli.datasets.synthetic import SyntheticSource
from sagan_cli.device import synchronize
from sagan_cli.errors import SaganError
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe
from sagan_cli.train.loop import TrainingSession

MB = 2**20


@dataclass
class TrainStepResult:
    recipe: str
    device: str
    precision: str
    compile: bool
    batch: int
    g_params: int
    d_params: int
    steps: int
    ms_per_step: float
    it_per_s: float
    img_per_s: float
    peak_mb: float | None


def classes_for_bench(recipe: Recipe, registry: Registry, num_classes: int | None) -> int:
    """Classes a conditional recipe's networks need: given, else its data source's."""
    if not recipe.model.conditional:
        return 0
    if num_classes is not None:
        return num_classes
    try:
        source = build_data_source(recipe, registry)
        check_data(source, registry)
        return source.num_classes
    except SaganError as exc:
        raise SaganError(
            f"{recipe.name} is class-conditional and its data is not here to count the classes "
            f"({exc}) Pass --num-classes (1000 for ImageNet)."
        ) from None


def bench_train_step(
    recipe: Recipe,
    registry: Registry,
    device: torch.device,
    compiled: bool,
    num_classes: int,
    steps: int,
    warmup: int,
) -> TrainStepResult:
    """Time ``steps`` full iterations (D update(s), G update, EMA) after ``warmup`` untimed ones;
    the median iteration is reported (robust to a noisy machine)."""
    recipe = recipe.model_copy(
        update={"train": recipe.train.model_copy(update={"compile": compiled})}
    )
    source = SyntheticSource(recipe.data.resolution, num_classes, recipe.train.batch_size * 4)
    session = TrainingSession(recipe, device, registry, source=source)
    session.open_data(resident=2**62)
    for _ in range(warmup):
        session.advance()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        session.advance()
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None
    return TrainStepResult(
        recipe.name,
        device.type,
        session.precision,
        compiled,
        recipe.train.batch_size,
        count_parameters(session.generator),
        count_parameters(session.discriminator),
        steps,
        1000 * seconds,
        1 / seconds,
        recipe.train.batch_size / seconds,
        peak,
    )
