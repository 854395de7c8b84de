"""One run from its folder to its outcome: the lock, resuming, the callbacks, and every failure
as one paragraph recorded in status.json.

Problems found before training starts (data, checkpoint, plugins) raise without
touching the folder, unless ``record_preflight_errors`` (an ablation records them as
the run's ``failed`` status); failures after it started are recorded in status.json
(and error.log for bugs). Only the process holding the run's lock writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sagan_cli import checkpoint as ckpt
from sagan_cli.api import DataSource, Tracker
from sagan_cli.components import origin_in_traceback
from sagan_cli.device import default_dtype
from sagan_cli.environment import environment_problem
from sagan_cli.errors import (
    CheckpointError,
    ResultsError,
    RunFailed,
    SaganError,
    describe_exception,
)
from sagan_cli.execution import ExecutionPlan, plan_execution
from sagan_cli.fileio import atomic_write_text
from sagan_cli.outcomes import RunStatus
from sagan_cli.plugins import CHECKED, Registry, attributed
from sagan_cli.recipe import Recipe
from sagan_cli.results import RunDir, now, prepare_run, run_lock
from sagan_cli.trackers import backends, build_trackers
from sagan_cli.train import estimate
from sagan_cli.train.callbacks import Callback
from sagan_cli.train.callbacks.allocation import AllocationCheck
from sagan_cli.train.callbacks.attention import AttentionStatistics
from sagan_cli.train.callbacks.checkpoints import Checkpoints
from sagan_cli.train.callbacks.collapse import CollapseCheck
from sagan_cli.train.callbacks.evaluation import Evaluation, Evaluator
from sagan_cli.train.callbacks.losses import LossLog
from sagan_cli.train.callbacks.pace import PaceCheck
from sagan_cli.train.callbacks.progress import Progress
from sagan_cli.train.callbacks.samples import SampleGrids
from sagan_cli.train.callbacks.tracking import Tracking
from sagan_cli.train.distributed import SINGLE, World
from sagan_cli.train.loop import Loop, TrainResult
from sagan_cli.train.observer import Observer
from sagan_cli.train.session import TrainingSession

EvaluatorFactory = Callable[[Recipe, DataSource, ExecutionPlan], Evaluator]


def callbacks_for(
    recipe: Recipe,
    run: RunDir,
    world: World,
    observer: Observer,
    evaluates: bool,
    evaluator: Evaluator | None,
    trackers: dict[str, Tracker] | None = None,
) -> list[Callback]:
    """The side work of a run, in the order it happens after an iteration: the same on every
    rank, so that every rank keeps one schedule (``evaluator``: rank 0's when ``evaluates``)."""
    cfg = recipe.train
    callbacks: list[Callback] = [Progress(observer), LossLog(cfg.log_every, cfg.max_loss)]
    tracked = bool(trackers)  # they take G's attention figure too
    callbacks.append(SampleGrids(cfg.sample_every, cfg.structure_samples))
    callbacks.append(CollapseCheck(cfg.sample_every))
    if recipe.logging.attention_images:
        callbacks.append(
            AttentionStatistics(cfg.sample_every, recipe.logging.attention_images, tracked)
        )
    if evaluates:
        callbacks.append(
            Evaluation(
                evaluator,
                recipe.eval.every,
                recipe.eval.final,
                list(recipe.eval.metrics),
                recipe.eval.num_samples,
            )
        )
    callbacks.append(Checkpoints(cfg.checkpoint_every))
    allocation = AllocationCheck.from_environment(cfg.checkpoint_every)
    if allocation is not None:
        callbacks.append(allocation)
    if trackers and world.is_main:  # first: its runs start before any callback records
        callbacks.insert(0, Tracking(trackers))
    return callbacks


def _confirm_a_long_cpu_run(
    session: TrainingSession, per_iteration: float, line: str, observer: Observer
) -> None:
    """A CPU run estimated past a day starts only when a person says so (or ``--yes``):
    most likely it is a GPU recipe run here by mistake. Asked before any data is loaded."""
    left = session.recipe.train.steps - session.step
    if session.device.type != "cpu" or per_iteration * left <= estimate.LONG_S:
        return
    if session.world.distributed or observer.confirm(
        f"This run would take {estimate.duration(per_iteration * left)} on this CPU. Start it?"
    ):
        return
    raise SaganError(
        f"Not started: {line}. To start it anyway, run the same command with --yes (needed "
        f"off a terminal, where nobody can be asked)."
    )


def resume_point(run: RunDir, checkpoint_name: str | None) -> Path | None:
    """The checkpoint to start from: the named one, else the newest (None: start fresh)."""
    available = ckpt.list_checkpoints(run.checkpoints)
    if checkpoint_name is None:
        return available[-1] if available else None
    chosen = run.checkpoints / checkpoint_name
    if not chosen.is_file():
        names = ", ".join(p.name for p in available) or "none"
        raise CheckpointError(
            f"--checkpoint {checkpoint_name}: no such file in {run.checkpoints} (there: {names})."
        )
    return chosen


def set_aside_newer_than(run: RunDir, chosen: Path, observer: Observer) -> None:
    """Checkpoints after ``chosen`` belong to an abandoned continuation: keep them aside."""
    newer = [p for p in ckpt.list_checkpoints(run.checkpoints) if p.name > chosen.name]
    if not newer:
        return
    aside = run.checkpoints / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in newer:
        path.rename(aside / path.name)
    observer.message(f"moved {len(newer)} newer checkpoint(s) to {aside}")


def _announce_resume(
    run: RunDir, start: Path | None, step: int, previous: dict[str, Any], observer: Observer
) -> None:
    """What the user should know before a run continues (rank 0, which holds the lock)."""
    if RunStatus.read(previous) == RunStatus.RUNNING:
        where = start.name if start else "step 0"
        observer.message(
            f"the previous attempt ({previous.get('pid', '?')} on {previous.get('host', '?')}) "
            f"ended without recording why (killed?); continuing from {where}"
        )
    if start is None:
        return
    set_aside_newer_than(run, start, observer)
    aside = run.keep_metrics_until(step)  # later lines are recomputed identically
    if aside is not None:
        observer.message(
            f"metrics.jsonl had unreadable lines; the original is kept as {aside.name}"
        )
    observer.message(f"resuming from {start.name} (step {step})")


def train_run(
    recipe: Recipe,
    run: RunDir,
    device: torch.device,
    registry: Registry,
    observer: Observer | None = None,
    evaluator_factory: EvaluatorFactory | None = None,
    checkpoint_name: str | None = None,
    retry_diverged: bool = False,
    world: World = SINGLE,
    record_preflight_errors: bool = False,
) -> TrainResult:
    """Train (or resume, or skip if done) the run in ``run`` on ``device``."""
    observer = observer or Observer()
    if world.is_main:
        prepare_run(recipe, run)
    world.barrier()
    with (
        run_lock(run) if world.is_main else contextlib.nullcontext(),
        default_dtype(recipe.train.precision),
    ):
        status = run.read_status()
        state = RunStatus.read(status)
        if state == RunStatus.DONE and checkpoint_name is None:
            return TrainResult(
                run, RunStatus.DONE, status.get("step", recipe.train.steps), "already complete"
            )
        if state == RunStatus.DIVERGED and not retry_diverged and checkpoint_name is None:
            return TrainResult(
                run,
                RunStatus.DIVERGED,
                status.get("diverged_step", 0),
                f"{status.get('error')} (not resumed)",
            )
        previous = torch.are_deterministic_algorithms_enabled()
        if recipe.train.deterministic and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CUDA's fused attention backward has no deterministic kernel: warn there instead of
        # failing. Bit-exact resume is guaranteed (and tested) on CPU.
        torch.use_deterministic_algorithms(
            recipe.train.deterministic, warn_only=device.type == "cuda"
        )
        session: TrainingSession | None = None
        try:
            try:
                plan = plan_execution(recipe, device)
                session = TrainingSession(recipe, plan, registry, observer, world=world)
                start = resume_point(run, checkpoint_name)
                if start is not None:
                    session.restore(start, run.id, run.path)
                per_iteration = None  # seconds, estimated
                if world.is_main and recipe.train.steps - session.step >= estimate.MIN_STEPS:
                    per_iteration, line = estimate.estimate_session(session)
                    observer.message(line)
                    _confirm_a_long_cpu_run(session, per_iteration, line, observer)
                with observer.phase("loading the training images"):
                    session.open_data(session.data_position)
                evaluator = None
                evaluates = evaluator_factory is not None and bool(
                    recipe.eval.every or recipe.eval.final
                )
                if evaluator_factory is not None and evaluates and world.is_main:
                    with observer.phase("preparing the evaluation (reference statistics)"):
                        evaluator = evaluator_factory(recipe, session.source, plan)
                trackers = (
                    build_trackers(
                        recipe, registry, run.path.parents[2], run.path.parents[1].name, check=False
                    )
                    if world.is_main and backends(recipe)
                    else {}
                )
                callbacks = callbacks_for(
                    recipe, run, world, observer, evaluates, evaluator, trackers
                )
                if per_iteration is not None and session.device.type == "cpu":
                    callbacks.append(PaceCheck(per_iteration))
                loop = Loop(
                    session,
                    run,
                    callbacks,
                    observer,
                    registry,
                    start.name if start else None,
                )
            except Exception as exc:  # ours (SaganError) as they are; anything else explained
                error = (
                    exc
                    if isinstance(exc, SaganError)
                    else _logged_crash(exc, run, world, None, "setting up the run", plan)
                )
                # an ablation's run, and a rank of a data-parallel run (its folder exists: the
                # launching process made it), keep why; a plain `sagan train` leaves no trace
                if world.is_main and (record_preflight_errors or world.distributed):
                    _record_failure(run, world, error)
                if error is exc:
                    raise
                raise error from exc
            try:
                if world.is_main:  # set-up changed no file; from here the run's folder changes
                    _announce_resume(run, start, session.step, status, observer)
                return loop.run_to_end()
            except OSError as exc:  # disk full, folder gone or read-only
                error = write_failure(run, exc)
                _record_failure(run, world, error)
                raise error from None
            except SaganError as exc:
                _record_failure(run, world, exc)
                raise
            except Exception as exc:
                error = _logged_crash(exc, run, world, session.step, "training", plan)
                _record_failure(run, world, error)
                raise error from exc
        finally:
            torch.use_deterministic_algorithms(previous)


def _record_failure(run: RunDir, world: World, error: SaganError) -> None:
    """Status ``failed`` with the paragraph and its exit code (2: the cause is the input or a
    plugin, 1: a crash), when this rank writes and the disk still takes it."""
    if world.is_main:
        with contextlib.suppress(OSError):
            run.update_status(
                status=RunStatus.FAILED,
                error=str(error),
                exit_code=error.exit_code,
                finished=now(),
            )


def write_failure(run: RunDir, exc: OSError) -> ResultsError:
    """One paragraph for a write that failed mid-run: where, why, and what was kept."""
    kept = ckpt.list_checkpoints(run.checkpoints)
    last = (
        f"the last good checkpoint, {kept[-1].name}, is kept"
        if kept
        else "no checkpoint was written yet"
    )
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return ResultsError(
        f"Writing to {run.path} failed: {exc.strerror or exc}"
        + (" (the disk is full or a file-size limit was reached)" if full else "")
        + f"; {last} and no partial file was left. "
        + ("Free space or raise the limit (ulimit -f)" if full else "Make the folder writable")
        + ", then re-run the same command to resume."
    )


def crash_error(
    exc: Exception,
    run: RunDir,
    step: int | None,
    doing: str,
    world: World = SINGLE,
    plan: ExecutionPlan | None = None,
) -> SaganError:
    """One paragraph for an exception that is not the user's input.

    A plugin's module on the stack is named (exit 2, like every plugin error); running
    out of memory says what to lower; a failed collective of a data-parallel run says
    a rank was lost; anything else is a bug: exit 1, with the traceback in the run's
    error.log.
    """
    at = f" at step {step}" if step is not None else ""
    kept = ckpt.list_checkpoints(run.checkpoints)
    resume = f"from {kept[-1].name}" if kept else "from the start"
    if world.distributed and _lost_a_rank(exc):
        return RunFailed(
            f"Rank {world.rank} of {world.size} lost the other ranks while {doing}{at} "
            f"({describe_exception(exc, 120)}): a rank died or its node failed. The run is "
            f"marked failed; re-run the same command to resume {resume}."
        )
    origin = origin_in_traceback(exc)
    if origin is not None:
        return attributed(
            origin.entry,
            origin.key,
            f"running {origin.where()} while {doing}{at}",
            describe_exception(exc),
            mode=(plan.device.type, plan.precision) if plan else CHECKED,
        )
    broken = environment_problem(exc)
    if broken is not None:
        return broken
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return SaganError(
            f"{run.path} ran out of memory while {doing}{at} ({describe_exception(exc)}). Lower "
            f"train.batch_size or the widths (model.g_channels, model.d_channels), or free the "
            f"device; then re-run the same command to resume from the last checkpoint."
        )
    return RunFailed(
        f"Training {run.path} failed while {doing}{at}: {describe_exception(exc)}. This is not a "
        f"problem in your recipe: the traceback is in {run.path / 'error.log'} (please include "
        f"it when reporting a bug). The run is marked failed; re-run the same command to "
        f"resume {resume}."
    )


def _lost_a_rank(exc: BaseException) -> bool:
    """A collective failed because a peer went away (gloo and NCCL say it in different ways)."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        mark in text for mark in ("gloo", "nccl", "connection closed by peer", "connection reset")
    )


def _logged_crash(
    exc: Exception,
    run: RunDir,
    world: World,
    step: int | None,
    doing: str,
    plan: ExecutionPlan | None = None,
) -> SaganError:
    """``crash_error`` with the traceback kept in the run's error.log (when this rank writes)."""
    if world.is_main:
        with contextlib.suppress(OSError):
            atomic_write_text(run.path / "error.log", traceback.format_exc())
    return crash_error(exc, run, step, doing, world, plan)
