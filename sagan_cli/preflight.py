"""Checks every command runs before its first step of work: device, data, weights, memory.

``train``, ``ablate`` and ``eval`` call ``check_before_work`` so that a missing
file, an absent GPU or a configuration that cannot fit in memory is one clear
paragraph before anything is written, not a failure minutes in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sagan_cli.api import DataSource
from sagan_cli.components import build_data_source, check_data, placement_problem
from sagan_cli.cores import read_cores
from sagan_cli.device import available_memory, select_device
from sagan_cli.errors import SaganError
from sagan_cli.evaluate.weights import ExtractorWeights, resolve_inception_weights
from sagan_cli.model import arch
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe
from sagan_cli.trackers import backends, build_trackers

GiB = 2**30


def needs_evaluation(recipe: Recipe) -> bool:
    return bool(recipe.eval.every or recipe.eval.final)


@dataclass
class Checked:
    device: torch.device
    weights: ExtractorWeights | None
    sources: dict[str, DataSource] = field(default_factory=dict)

    def source_for(self, recipe: Recipe) -> DataSource:
        return self.sources[_data_key(recipe)]


def _data_key(recipe: Recipe) -> str:
    return json.dumps(recipe.data.model_dump(mode="json"), sort_keys=True)


def memory_estimate(recipe: Recipe, world_size: int = 1) -> int:
    """Bytes one process needs at least: weights, gradients, Adam moments and the EMA copy, plus
    the activations of one iteration (the conv layers alone; attention adds to it)."""
    res, model = recipe.data.resolution, recipe.model
    g_params, d_params = arch.parameter_estimate(
        res, model.g_channels, model.d_channels, model.z_dim
    )
    weights = 4 * (5 * g_params + 4 * d_params)  # weight, grad, 2 moments (+ EMA for G)
    batch = max(1, recipe.train.batch_size // world_size)
    activations = 4 * batch * arch.activation_estimate(res, model.g_channels, model.d_channels)
    return weights + activations


def check_memory(recipe: Recipe, device: torch.device, world_size: int = 1) -> None:
    need = memory_estimate(recipe, world_size)
    free = available_memory(device)
    if need > free:
        raise SaganError(
            f"{recipe.name}: this configuration needs at least {need / GiB:.1f} GiB on {device} "
            f"(weights, gradients, Adam state and EMA for model.g_channels = "
            f"{recipe.model.g_channels}, model.d_channels = {recipe.model.d_channels}, plus the "
            f"activations of train.batch_size = {recipe.train.batch_size}), but only "
            f"{free / GiB:.1f} GiB is free. Lower the widths or the batch size."
        )


# Below this many FLOPs per iteration a run does not scale across CPU threads (measured:
# docs/benchmarks.md), so a grid runs one single-threaded run per core instead.
SMALL_RUN_FLOPS = 50e9


def auto_jobs(recipes: list[Recipe], device: torch.device, pending: int) -> tuple[int, int | None]:
    """``--jobs auto``: (runs at once, torch threads per run) for this machine and grid."""
    if device.type == "cuda":
        return max(1, min(torch.cuda.device_count(), pending)), None
    # other work's cores are not ours to share out, except to a deterministic run, whose
    # results depend on its thread count (sagan_cli.cores.default_threads)
    cores = read_cores().to_use(deterministic=any(r.train.deterministic for r in recipes))
    largest = max(
        arch.iteration_flops_estimate(
            r.data.resolution, r.model.g_channels, r.model.d_channels, r.train.batch_size
        )
        for r in recipes
    )
    if largest >= SMALL_RUN_FLOPS:
        return 1, cores  # a big run uses every core better than several runs share them
    jobs = max(1, min(cores, pending))
    return jobs, max(1, cores // jobs)


def check_nproc(nproc: int, device: torch.device) -> None:
    """``--nproc`` processes: one GPU each on CUDA (all must be visible), any number on CPU."""
    if nproc < 1:
        raise SaganError(f"--nproc {nproc}: give 1 or more processes.")
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise SaganError(
            f"--nproc {nproc} asks for more GPUs than the {torch.cuda.device_count()} visible "
            f"here: each process trains on its own GPU. Use --nproc "
            f"{torch.cuda.device_count()} or fewer (or several nodes with torchrun)."
        )
    if device.type == "mps" and nproc > 1:
        raise SaganError("--nproc > 1 needs CUDA GPUs or the CPU; MPS has no process groups.")


def check_batch_divides(recipe: Recipe, world_size: int) -> None:
    """The batch is global: every rank takes the same share of it."""
    batch = recipe.train.batch_size
    if batch % world_size:
        fitting = max(world_size, batch // world_size * world_size)
        raise SaganError(
            f"train.batch_size = {batch} does not divide over {world_size} processes: the batch "
            f"is global and split evenly across ranks. Use a multiple of {world_size} "
            f"(--set train.batch_size={fitting})."
        )


def check_before_work(
    recipes: Iterable[Recipe],
    registry: Registry,
    *,
    device: str,
    inception_weights: Path | None,
    world_size: int = 1,
    training: bool = True,
    tracking: tuple[Path, str] | None = None,
) -> Checked:
    """Placements the attention plugin declines, the device, every distinct data source,
    memory, (when needed) Inception weights, and (``tracking``: the results folder and the
    experiment's name) the experiment trackers' backends."""
    recipes = list(recipes)
    checked = Checked(select_device(device), None)
    for recipe in recipes:
        problem = placement_problem(recipe, registry)
        if problem is not None:
            raise problem
        key = _data_key(recipe)
        if key not in checked.sources:
            source = build_data_source(recipe, registry)
            check_data(source, registry)
            checked.sources[key] = source
        check_memory(recipe, checked.device, world_size)
    if tracking is not None:  # each distinct [track] once: an unreachable tracker stops here
        results, experiment = tracking
        seen: set[str] = set()
        for recipe in recipes:
            key = recipe.track.model_dump_json() + str(recipe.logging.tensorboard)
            if backends(recipe) and key not in seen:
                seen.add(key)
                build_trackers(recipe, registry, results, experiment)
    if any(needs_evaluation(r) for r in recipes):
        checked.weights = resolve_inception_weights(inception_weights, training=training)
    return checked
