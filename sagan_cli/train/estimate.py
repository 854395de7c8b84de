"""How long will this run take here? Said before the first step, from FLOPs and this device.

The FLOPs of one image through G and D, forward and backward, are counted on
meta-device copies of the networks (shapes only: no arithmetic, about half a
second for the 128x128 paper model); an iteration is about ``2 * d_steps + 1`` such passes per image of the
batch (each D update runs D forward and backward on real and fake images and G
forward; the G update runs both forward and backward). This device's dense
matmul rate is measured in a fraction of a second, and training is taken to
reach about half of it (``sagan bench train`` measured 36-89% on CPUs for the
shipped recipes, docs/benchmarks.md). The estimate is an order of magnitude,
and says so; the progress lines' ETA then follows the measured pace.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from sagan_cli.components import build_data_source, build_networks, num_classes_for
from sagan_cli.flops import count_flops, matmul_rate
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe

if TYPE_CHECKING:
    from sagan_cli.train.session import TrainingSession

EFFICIENCY = 0.5  # the share of the measured matmul rate a training iteration reaches
MIN_STEPS = 100  # shorter runs finish before an estimate would help; they get none
LONG_S = 24 * 3600  # beyond this, say what to do instead


def image_flops(
    generator: nn.Module, discriminator: nn.Module, z_dim: int, conditional: bool
) -> int:
    """FLOPs of one image through G and D, forward and backward (on meta copies).

    The copies run in eval mode: the count is the same (spectral norm's training-mode power
    iteration runs under no_grad, as vector products the counter does not count), in half
    the time, since meta kernels run as Python."""
    g = copy.deepcopy(generator).to("meta").eval()
    d = copy.deepcopy(discriminator).to("meta").eval()
    z = torch.zeros(2, z_dim, device="meta")
    labels = torch.zeros(2, dtype=torch.long, device="meta") if conditional else None
    return count_flops(lambda: d(g(z, labels), labels).sum().backward()) // 2


def iteration_flops(per_image: int, batch: int, d_steps: int) -> int:
    return per_image * batch * (2 * d_steps + 1)


def device_rate(device: torch.device, precision: str) -> float:
    """FLOP/s of a dense matmul on ``device`` in the run's precision (a quick measurement)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return matmul_rate(device, dtype, size=None if device.type == "cuda" else 512, repeats=3)


def estimate_seconds(flops_per_iteration: int, steps: int, rate: float) -> float:
    return flops_per_iteration * steps / (rate * EFFICIENCY)


def duration(seconds: float) -> str:
    """A rough human duration: "about 40 seconds", "about 3 hours", "about 9 days"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size:
            count = round(seconds / size)
            return f"about {count} {unit}s"
    count = max(1, round(seconds))
    return f"about {count} second{'s' if count > 1 else ''}"


def describe_estimate(flops_per_iteration: int, steps: int, rate: float, device: str) -> str:
    """The line printed before training (with advice when the run is far too long here);
    ``rate``: all of the run's devices together."""
    seconds = estimate_seconds(flops_per_iteration, steps, rate)
    text = (
        f"estimated time: {duration(seconds)} on this {device} ({flops_per_iteration / 1e12:.3g} "
        f"TFLOP per iteration x {steps:,} iterations at about half its measured "
        f"{rate / 1e12:.3g} TFLOP/s matmul rate; an order of magnitude, the ETA follows the pace)"
    )
    if seconds > LONG_S:
        text += (
            ". This run is sized for a GPU: on this machine try `sagan train smoke` (the whole "
            "pipeline in minutes) or lower train.steps and the model widths"
        )
    return text


def recipe_iteration_flops(recipe: Recipe, registry: Registry) -> int:
    """FLOPs of one iteration of ``recipe``, counted on meta copies of its networks (no data is
    read). They are built on the CPU, as ``sagan model`` builds them: built under the meta
    device, spectral norm's 15 initial power iterations alone took 3.6 s for paper_table1's
    networks (meta kernels run as Python), against 0.3 s for the whole CPU build."""
    source = build_data_source(recipe, registry)
    generator, discriminator = build_networks(
        recipe, num_classes_for(recipe, source), registry, source
    )
    per_image = image_flops(generator, discriminator, recipe.model.z_dim, recipe.model.conditional)
    return iteration_flops(per_image, recipe.train.batch_size, recipe.train.d_steps)


def describe_grid(
    recipes: list[Recipe], registry: Registry, device: torch.device, jobs: int, threads: int | None
) -> str | None:
    """The line an ablation prints before it starts: its runs' time at ``jobs`` at once."""
    if threads is not None and device.type == "cpu":
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # each run's share of the cores
    try:
        rates = {p: device_rate(device, p) for p in {r.train.precision for r in recipes}}
    finally:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(before)
    flops: dict[str, int | None] = {}  # one count per distinct model
    seconds = []
    for recipe in recipes:
        key = recipe.model_dump_json(include={"data", "model"}) + str(recipe.train.batch_size)
        if key not in flops:
            try:
                flops[key] = recipe_iteration_flops(recipe, registry)
            except Exception:  # a plugin that cannot build: its run will say why, in its folder
                flops[key] = None
        counted = flops[key]
        if counted is not None:
            rate = rates[recipe.train.precision]
            seconds.append(estimate_seconds(counted, recipe.train.steps, rate))
    if not seconds:
        return None
    at_once = max(1, min(jobs, len(seconds)))
    total = sum(seconds) / at_once
    text = (
        f"estimated time: {duration(total)} for {len(seconds)} run(s) to train, {at_once} at once "
        f"on this {device.type.upper()} ({duration(max(seconds))} for the longest; an order of "
        f"magnitude, from FLOPs and a measured matmul rate)"
    )
    if len(seconds) < len(recipes):
        text += f"; {len(recipes) - len(seconds)} run(s) whose networks cannot be built not counted"
    if device.type == "cpu" and total > LONG_S:
        text += ". This grid is sized for GPUs: try fewer steps or smaller widths here"
    return text


def estimate_session(session: TrainingSession) -> tuple[float, str]:
    """Seconds per iteration of a session about to train its remaining steps, and its line."""
    recipe = session.recipe
    per_image = image_flops(
        session.generator, session.discriminator, recipe.model.z_dim, session.num_classes > 0
    )
    flops = iteration_flops(per_image, recipe.train.batch_size, recipe.train.d_steps)
    rate = device_rate(session.device, session.precision) * session.world.size
    steps = recipe.train.steps - session.step
    line = describe_estimate(flops, steps, rate, session.device.type.upper())
    return estimate_seconds(flops, 1, rate), line
