"""Running an ablation grid: every point is an ordinary run (the same code as ``sagan train``).

Re-running the same command skips finished runs, resumes interrupted ones from
their checkpoints, and retries failed or diverged ones only when asked. A run
that fails is recorded and the others go on.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sagan_cli.ablate.axes import Axis, format_value
from sagan_cli.ablate.grid import GridPoint
from sagan_cli.api import LaunchContext, Launcher, RunTask
from sagan_cli.errors import ResultsError, SaganError
from sagan_cli.evaluate.scoring import evaluator_factory
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.fileio import atomic_write_json
from sagan_cli.outcomes import RunStatus
from sagan_cli.plugins import Registry, get_registry
from sagan_cli.recipe import Recipe, load_recipe
from sagan_cli.results import (
    RunBusy,
    RunDir,
    config_identity,
    now,
    prepare_run,
    run_dir_in,
    trained_elsewhere,
)
from sagan_cli.train.observer import LogLines, Observer
from sagan_cli.train.run import train_run


@dataclass
class Outcome:
    point: GridPoint
    run: RunDir
    status: RunStatus
    message: str
    existing: bool = False  # read from the folder: this command did not (re)run it
    exit_code: int | None = None  # a failed run's: 2 when the cause is its configuration

    @classmethod
    def read(
        cls, point: GridPoint, run: RunDir, status: dict[str, Any], existing: bool = False
    ) -> Outcome:
        """The outcome a run's status.json records."""
        code = status.get("exit_code")
        return cls(
            point,
            run,
            RunStatus.read(status),
            status.get("error") or "",
            existing,
            code if isinstance(code, int) else None,
        )


class GridObserver(Protocol):
    """What a grid reports while it runs (the terminal's bars, plain lines, or nothing)."""

    def run_observer(self, point: GridPoint) -> Observer:
        """The observer of one run trained in this process."""

    def outcome(self, outcome: Outcome) -> None:
        """A run's outcome, as soon as it is known."""

    def poll(self, running: list[RunDir]) -> None:
        """Called while the launcher waits: refresh what is shown of ``running`` runs."""

    def message(self, text: str) -> None:
        """A line from the launcher for the user."""


class PlainGrid:
    """A grid's progress as plain lines on stderr (benchmarks, logs): each run's lines and
    each outcome."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def run_observer(self, point: GridPoint) -> Observer:
        return Observer() if self.quiet else LogLines(f"#{point.index + 1} seed {point.seed}")

    def outcome(self, outcome: Outcome) -> None:
        if not self.quiet or outcome.status != RunStatus.DONE:
            self.message(f"#{outcome.point.index + 1} seed {outcome.point.seed}: {outcome.status}")

    def poll(self, running: list[RunDir]) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def prepare_experiment(folder: Path, base: Recipe, axes: list[Axis], write: bool = True) -> None:
    """Refuse to mix runs of different recipes or axes under one name; record the experiment."""
    marker = folder / "experiment.json"
    identity = config_identity(base)  # the base recipe (after --set, before axes and seeds)
    labels = [axis.label for axis in axes]
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if not (isinstance(existing, dict) and {"base", "axes"} <= set(existing)):
            raise ResultsError(
                f"{marker} is unreadable or not an experiment record, so the runs in {folder} "
                f"cannot be matched to this grid. Move that folder aside (its runs stay "
                f"readable) or choose another --name."
            ) from None
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


def create_runs(
    folder: Path, points: list[GridPoint], unsupported: dict[int, str] | None = None
) -> list[RunDir]:
    """Every run folder exists (queued) before the first trains: the grid is visible at once.

    Points whose placement the attention plugin declines (``unsupported``: grid index ->
    the plugin's reason) are ``skipped`` with that reason; a point no longer declined
    (a newer plugin) is queued again.
    """
    unsupported = unsupported or {}
    runs = []
    for point in points:
        run = run_dir_in(folder / "runs", point.recipe)
        # the grid fields go into the status with its first write: a reader never sees a
        # run of this grid without them
        prepare_run(
            point.recipe,
            run,
            axes={label: value for label, value in point.settings.items()},
            axis_labels={label: format_value(value) for label, value in point.settings.items()},
            seed=point.seed,
            grid_index=point.index,
        )
        status = run.status
        reason = unsupported.get(point.index)
        if reason is not None and status in (RunStatus.QUEUED, RunStatus.SKIPPED):
            run.update_status(status=RunStatus.SKIPPED, error=reason)
        elif reason is None and status == RunStatus.SKIPPED:
            run.update_status(status=RunStatus.QUEUED, error=None)
        runs.append(run)
    return runs


def should_run(status: RunStatus, retry_failed: bool) -> bool:
    if status.finished:
        return False
    return not status.retryable or retry_failed


def run_one(
    recipe: Recipe,
    run: RunDir,
    device: torch.device,
    registry: Registry,
    weights: ExtractorWeights | None,
    observer: Observer,
    retry: bool,
) -> tuple[RunStatus, str]:
    """Train one point; any failure becomes its recorded status instead of stopping the grid."""
    factory = evaluator_factory(weights) if weights else None
    try:
        result = train_run(
            recipe,
            run,
            device,
            registry,
            observer,
            factory,
            retry_diverged=retry,
            record_preflight_errors=True,
        )
    except RunBusy as exc:  # another process trains it: its status is not ours to write
        return RunStatus.RUNNING, str(exc)  # by the process that holds it
    except SaganError as exc:
        return RunStatus.FAILED, str(exc)
    except Exception as exc:  # a bug in one configuration must not cost the rest of the grid
        return RunStatus.FAILED, run.read_status().get("error") or f"{type(exc).__name__}: {exc}"
    return result.status, result.detail


def execute_task(task: RunTask, observer: Observer | None = None) -> str:
    """Train one task in this process (a launcher's worker); returns the run's final status.

    Module-level and free of closures, so Ray and submitit can ship it by reference.
    """
    from sagan_cli.device import select_device
    from sagan_cli.evaluate.weights import resolve_inception_weights

    if task.threads:
        torch.set_num_threads(task.threads)
    if task.nproc > 1:
        return _execute_data_parallel(task)
    run = RunDir(Path(task.run_dir))
    registry = get_registry()
    try:
        recipe = load_recipe(run.recipe_path, registry=registry)
        device = select_device(task.device)
        weights = (
            resolve_inception_weights(Path(task.inception_weights))
            if task.inception_weights
            else None
        )
    except SaganError as exc:
        run.update_status(status=RunStatus.FAILED, error=str(exc), finished=now())
        return RunStatus.FAILED
    if observer is None:
        observer = Observer() if task.quiet else LogLines(task.label)
    status, _ = run_one(recipe, run, device, registry, weights, observer, task.retry_failed)
    return status


def _execute_data_parallel(task: RunTask) -> str:
    """One run on ``task.nproc`` processes: ``sagan train --resume ... --nproc N`` (torchrun)."""
    import subprocess

    completed = subprocess.run(list(task.argv), check=False)
    status = RunDir(Path(task.run_dir)).status
    if completed.returncode != 0 and status.open:
        return RunStatus.FAILED
    return status


def task_for(
    run: RunDir,
    point: GridPoint,
    device: str,
    weights: ExtractorWeights | None,
    options: GridOptions,
) -> RunTask:
    return RunTask(
        run_dir=str(run.path.resolve()),  # workers may start in another folder
        label=f"#{point.index + 1} seed {point.seed}",
        device=device,
        nproc=options.nproc,
        threads=options.threads,
        inception_weights=str(weights.path) if weights else None,
        retry_failed=options.retry_failed,
        quiet=options.quiet,
    )


@dataclass(frozen=True)
class GridOptions:
    """How a grid's runs are executed (none of this changes what a run computes)."""

    jobs: int = 1
    nproc: int = 1
    threads: int | None = None
    retry_failed: bool = False
    quiet: bool = False
    detach: bool = False  # submit and return (launchers whose jobs outlive the command)


RESUME = "re-run the same command to resume from the last checkpoint"


def mark_lost(run: RunDir, reason: str) -> None:
    """A launcher saw the task of ``run`` end without finishing (its process died, or the
    scheduler ended its job): record why, unless the run recorded a final outcome or another
    process holds it. A run that had started is ``interrupted`` (a re-run resumes it from its
    last checkpoint); one that never started stays queued; one that had stopped itself (a
    signal, a requeue) keeps that and gains the scheduler's word, which is newer."""
    state = run.status
    if trained_elsewhere(run) or state not in (*OPEN, RunStatus.INTERRUPTED):
        return
    if state == RunStatus.RUNNING:
        run.update_status(status=RunStatus.INTERRUPTED, error=f"{reason}; {RESUME}", finished=now())
    elif state == RunStatus.INTERRUPTED:
        before = str(run.read_status().get("error") or "").removesuffix(f"; {RESUME}")
        if not before.startswith(reason):
            run.update_status(error=f"{reason}; before that: {before}; {RESUME}")
    else:
        run.update_status(error=reason)


OPEN = (RunStatus.QUEUED, RunStatus.RUNNING)


def run_grid(
    points: list[GridPoint],
    runs: list[RunDir],
    device: torch.device,
    weights: ExtractorWeights | None,
    launcher: Launcher,
    options: GridOptions,
    observer: GridObserver,
    experiment: str = "",
) -> list[Outcome]:
    """Hand every run that needs training to ``launcher``; one outcome per point, read back
    from the run folders at the end of this command (so every launcher reports the same
    way, and a re-run never reports what an earlier attempt left there)."""
    outcomes: dict[int, Outcome] = {}
    pending: list[int] = []
    before: dict[int, dict[str, Any]] = {}
    for position, (point, run) in enumerate(zip(points, runs, strict=True)):
        status = run.read_status()
        if should_run(RunStatus.read(status), options.retry_failed):
            pending.append(position)
            before[position] = status
        else:
            outcomes[position] = Outcome.read(point, run, status, existing=True)
            observer.outcome(outcomes[position])
    device_name = str(device) if device.type != "cuda" or device.index is not None else "cuda"
    tasks = {
        task.run_dir: (p, task)
        for p in pending
        for task in [task_for(runs[p], points[p], device_name, weights, options)]
    }
    reported: set[int] = set()

    def finish(position: int, final: bool) -> None:
        """Report a run's outcome: while waiting, only one this command settled; at the end,
        whatever its folder says (a run still marked running whose process is gone died)."""
        if position in reported:
            return
        run = runs[position]
        status = run.read_status()
        state = RunStatus.read(status)
        if not final and (status == before[position] or not state.settled):
            return
        if final and state.open:
            if trained_elsewhere(run):
                status = {**status, "status": RunStatus.RUNNING}  # a concurrent command's
            elif state == RunStatus.RUNNING:
                mark_lost(run, "its process ended without recording an outcome (killed?)")
                status = run.read_status()
        reported.add(position)
        outcomes[position] = Outcome.read(points[position], run, status)
        observer.outcome(outcomes[position])

    def poll_pending() -> None:
        observer.poll([runs[p] for p, _ in tasks.values() if p not in reported])
        for p, _ in tasks.values():
            finish(p, final=False)

    def here(task: RunTask) -> str:
        position, _ = tasks[task.run_dir]
        run_observer = observer.run_observer(points[position])
        try:
            status = execute_task(task, run_observer)
        finally:
            run_observer.finished()
        finish(position, final=True)
        return status

    def lost(task: RunTask, reason: str) -> None:
        mark_lost(RunDir(Path(task.run_dir)), reason)

    if tasks:
        context = LaunchContext(
            tasks=tuple(task for _, task in tasks.values()),
            results_root=str(runs[0].path.parent.parent.parent),
            jobs=options.jobs,
            gpus_per_run=options.nproc if device.type == "cuda" else 0,
            cpus_per_run=options.threads or 1,
            execute=execute_task,
            run_here=here,
            poll=poll_pending,
            report=observer.message,
            lost=lost,
            detach=options.detach,
            experiment=experiment or runs[0].path.parent.parent.name,
            experiment_dir=str(runs[0].path.parent.parent),
        )
        launcher.launch(context)
    if options.detach:
        return [outcomes[p] for p in sorted(outcomes)]
    for position in pending:
        finish(position, final=True)
    return [outcomes[p] for p in sorted(outcomes)]
