"""``sagan bench train``: images/s of the full training iteration of a recipe (D and G updates
and EMA, at its batch size, precision and optional ``torch.compile``) on synthetic data, so
that the paper configurations can be timed anywhere."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from sagan_cli.components import build_data_source, count_parameters
from sagan_cli.datasets.synthetic import SyntheticSource
from sagan_cli.device import synchronize
from sagan_cli.errors import SaganError
from sagan_cli.execution import plan_execution
from sagan_cli.flops import count_flops, matmul_rate
from sagan_cli.plugins import Registry, plugin_code
from sagan_cli.recipe import Recipe
from sagan_cli.train.session import TrainingSession

MB = 2**20


@dataclass
class TrainStepResult:
    recipe: str
    device: str
    precision: str
    compile: bool
    memory_format: str
    threads: int
    batch: int
    g_params: int
    d_params: int
    steps: int
    ms_per_step: float
    it_per_s: float
    img_per_s: float
    gflop_per_step: float
    achieved_tflops: float
    matmul_tflops: float
    fraction_of_matmul: float
    warmup_s: float  # the first (warm-up) iterations, compilation included
    peak_mb: float | None


def classes_for_bench(recipe: Recipe, registry: Registry, num_classes: int | None) -> int:
    """Classes a conditional recipe's networks need: given, else its data source's."""
    if not recipe.model.conditional:
        return 0
    if num_classes is not None:
        return num_classes
    source = build_data_source(recipe, registry)
    entry = registry.get("data", source.name, key="data.source")
    try:  # sources that know their classes without files (cifar10: 10) need none here
        with plugin_code(entry, "data.source", "counting its classes"):
            return source.num_classes
    except SaganError as exc:
        raise SaganError(
            f"{recipe.name} is class-conditional and its data is not here to count the classes "
            f"({exc}) Pass --num-classes N, the number of classes of your data (1000 for ImageNet)."
        ) from None


def synthetic_session(
    recipe: Recipe, registry: Registry, device: torch.device, num_classes: int
) -> TrainingSession:
    """A training session of ``recipe`` on random images of its shape, ready to ``advance``."""
    source = SyntheticSource(recipe.data.resolution, num_classes, recipe.train.batch_size * 4)
    session = TrainingSession(recipe, plan_execution(recipe, device), registry, source=source)
    session.open_data(resident=2**62)
    return session


def iteration_flops(
    recipe: Recipe, registry: Registry, device: torch.device, num_classes: int
) -> int:
    """FLOPs of one full iteration (D step(s), G step, EMA), counted on an eager session."""
    eager = recipe.model_copy(update={"train": recipe.train.model_copy(update={"compile": False})})
    return count_flops(synthetic_session(eager, registry, device, num_classes).advance)


def bench_train_step(
    recipe: Recipe,
    registry: Registry,
    device: torch.device,
    compiled: bool,
    num_classes: int,
    steps: int,
    warmup: int,
    memory_format: str = "contiguous",
    precision: str | None = None,
    rates: dict[str, float] | None = None,
) -> TrainStepResult:
    """Time ``steps`` full iterations (D update(s), G update, EMA) after ``warmup`` untimed ones;
    the median iteration is reported (robust to a noisy machine), with its FLOPs against the
    device's matmul rate (``rates`` caches those per precision)."""
    train: dict[str, object] = {"compile": compiled, "memory_format": memory_format}
    if precision is not None:
        train.update(precision=precision, bf16_on_cpu=precision == "bf16")
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update=train)})
    session = synthetic_session(recipe, registry, device, num_classes)
    started = time.perf_counter()
    for _ in range(warmup):
        session.advance()
    synchronize(device)
    warmup_s = time.perf_counter() - started
    flops = iteration_flops(recipe, registry, device, num_classes)
    rates = {} if rates is None else rates
    if session.precision not in rates:
        dtype = torch.bfloat16 if session.precision == "bf16" else torch.float32
        rates[session.precision] = matmul_rate(device, dtype)
    rate = rates[session.precision]
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
        recipe=recipe.name,
        device=device.type,
        precision=session.precision,
        compile=compiled,
        memory_format=memory_format,
        threads=torch.get_num_threads(),
        batch=recipe.train.batch_size,
        g_params=count_parameters(session.generator),
        d_params=count_parameters(session.discriminator),
        steps=steps,
        ms_per_step=1000 * seconds,
        it_per_s=1 / seconds,
        img_per_s=recipe.train.batch_size / seconds,
        gflop_per_step=flops / 1e9,
        achieved_tflops=flops / seconds / 1e12,
        matmul_tflops=rate / 1e12,
        fraction_of_matmul=flops / seconds / rate,
        warmup_s=warmup_s,
        peak_mb=peak,
    )
