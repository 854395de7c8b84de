"""Running an ablation grid: every point is an ordinary run (the same code as ``sagan train``).

Re-running the same command skips finished runs, resumes interrupted ones from
their checkpoints, and retries failed or diverged ones only when asked. A run
that fails is recorded and the others go on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sagan_cli.ablate.grid import Axis, GridPoint, format_value
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.weights import InceptionWeights
from sagan_cli.fileio import atomic_write_json
from sagan_cli.plugins import Registry, get_registry
from sagan_cli.recipe import Recipe, load_recipe
from sagan_cli.results import RunDir, config_identity, now
from sagan_cli.train.loop import Observer, prepare_run, train_run
from sagan_cli.train.service import evaluator_factory

FINISHED = ("done",)
RETRYABLE = ("failed", "diverged")


@dataclass
class Outcome:
    point: GridPoint
    run: RunDir
    status: str
    message: str
    skipped: bool = False


def prepare_experiment(folder: Path, base: Recipe, axes: list[Axis], write: bool = True) -> None:
    """Refuse to mix runs of different recipes or axes under one name; record the experiment."""
    marker = folder / "experiment.json"
    identity = config_identity(base)  # the base recipe (after --set, before axes and seeds)
    labels = [axis.label for axis in axes]
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing["base"] != identity:
            changed = sorted(_differences(existing["base"], identity))
            raise ResultsError(
                f"{folder} already holds an ablation of a different recipe (differing: "
                f"{', '.join(changed[:6])}{'...' if len(changed) > 6 else ''}). Runs of different "
                f"recipes are never mixed: choose another --name, or move that folder."
            )
        if existing["axes"] != labels:
            raise ResultsError(
                f"{folder} holds an ablation over {', '.join(existing['axes'])}, not "
                f"{', '.join(labels)}. Choose another --name for a different grid."
            )
        return
    if (folder / "runs").is_dir() and any((folder / "runs").iterdir()):
        raise ResultsError(
            f"{folder} already holds runs that are not part of an ablation (from sagan train?). "
            f"Choose another --name."
        )
    if write:
        atomic_write_json(
            marker, {"name": folder.name, "axes": labels, "base": identity, "created": now()}
        )


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = set(a) | set(b)
    found = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found.extend(_differences(left, right, f"{prefix}{key}."))
        elif left != right:
            found.append(f"{prefix}{key}")
    return found


def create_runs(folder: Path, points: list[GridPoint]) -> list[RunDir]:
    """Every run folder exists (queued) before the first trains: the grid is visible at once."""
    runs = []
    for point in points:
        run = RunDir(folder / "runs" / point.run_id)
        prepare_run(point.recipe, run)
        if "axes" not in run.read_status():
            run.update_status(
                axes={label: value for label, value in point.settings.items()},
                axis_labels={label: format_value(value) for label, value in point.settings.items()},
                seed=point.seed,
                grid_index=point.index,
            )
        runs.append(run)
    return runs


def should_run(status: str | None, retry_failed: bool) -> bool:
    if status in FINISHED:
        return False
    return status not in RETRYABLE or retry_failed


def run_one(
    recipe: Recipe,
    run: RunDir,
    device: torch.device,
    registry: Registry,
    weights: InceptionWeights | None,
    observer: Observer,
    retry: bool,
) -> tuple[str, str]:
    """Train one point; any failure becomes its recorded status instead of stopping the grid."""
    factory = evaluator_factory(weights, device) if weights else None
    try:
        result = train_run(recipe, run, device, registry, observer, factory, retry_diverged=retry)
    except SaganError as exc:
        run.update_status(status="failed", error=str(exc), finished=now())
        return "failed", str(exc)
    except Exception as exc:  # a bug in one configuration must not cost the rest of the grid
        return "failed", run.read_status().get("error") or f"{type(exc).__name__}: {exc}"
    return result.status, result.message


_worker_device: str = "cpu"


def _claim_device(counter: Any, device_type: str, threads: int) -> None:
    global _worker_device
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _worker_device = f"cuda:{index}" if device_type == "cuda" else device_type
    torch.set_num_threads(threads)


def _train_in_worker(
    run_path: str, weights: InceptionWeights | None, retry: bool
) -> tuple[str, str]:
    run = RunDir(Path(run_path))
    registry = get_registry()
    recipe = load_recipe(run.recipe_path, registry=registry)
    return run_one(recipe, run, torch.device(_worker_device), registry, weights, Observer(), retry)


def run_grid(
    points: list[GridPoint],
    runs: list[RunDir],
    device: torch.device,
    registry: Registry,
    weights: InceptionWeights | None,
    jobs: int,
    retry_failed: bool,
    observer_for: Callable[[GridPoint, RunDir], Observer],
    on_outcome: Callable[[Outcome], None],
    poll: Callable[[list[RunDir]], None] = lambda runs: None,
) -> list[Outcome]:
    """Train every point that needs it (``jobs`` at a time); returns one outcome per point."""
    outcomes: dict[int, Outcome] = {}
    pending: list[int] = []
    for position, (point, run) in enumerate(zip(points, runs, strict=True)):
        status = run.read_status().get("status")
        if should_run(status, retry_failed):
            pending.append(position)
        else:
            outcome = Outcome(
                point, run, status or "queued", run.read_status().get("error") or "", skipped=True
            )
            outcomes[position] = outcome
            on_outcome(outcome)

    if jobs == 1:
        for position in pending:
            point, run = points[position], runs[position]
            status, message = run_one(
                point.recipe, run, device, registry, weights, observer_for(point, run), retry_failed
            )
            outcomes[position] = Outcome(point, run, status, message)
            on_outcome(outcomes[position])
            if status == "interrupted":
                break
    elif pending:
        threads = max(1, (os.cpu_count() or 1) // jobs) if device.type == "cpu" else 1
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", device.index or 0)
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_claim_device,
            initargs=(counter, device.type, threads),
        ) as pool:
            futures: dict[Future, int] = {
                pool.submit(_train_in_worker, str(runs[p].path), weights, retry_failed): p
                for p in pending
            }
            while futures:
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                poll([runs[p] for p in futures.values()])
                for future in done:
                    position = futures.pop(future)
                    try:
                        status, message = future.result()
                    except Exception as exc:  # the worker process itself died
                        status, message = "failed", f"worker crashed: {exc}"
                        runs[position].update_status(status="failed", error=message, finished=now())
                    outcomes[position] = Outcome(points[position], runs[position], status, message)
                    on_outcome(outcomes[position])
    return [outcomes[p] for p in sorted(outcomes)]
