"""``sagan train``: one run, in this process or on ``--nproc`` processes."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sagan_cli.commands.common import registry, set_threads
from sagan_cli.commands.options import (
    DEFAULT_RESULTS,
    DeviceOption,
    InceptionOption,
    NprocOption,
    QuietOption,
    ResultsOption,
    SetOption,
    TensorBoardOption,
    ThreadsOption,
    TrackOption,
    YesOption,
)
from sagan_cli.console import TrainProgress, console, err_console, progress_bar
from sagan_cli.outcomes import RunStatus
from sagan_cli.recipe import Recipe, split_list


def train_command(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe file or shipped recipe name (omit with --resume).")
    ] = None,
    set_: SetOption = None,
    device: DeviceOption = "auto",
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its newest checkpoint."),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="With --resume: continue from this checkpoint file instead.")
    ] = None,
    results: ResultsOption = DEFAULT_RESULTS,
    name: Annotated[
        str | None,
        typer.Option(
            help="Experiment folder (default: the recipe's name).", rich_help_panel="Output"
        ),
    ] = None,
    inception_weights: InceptionOption = None,
    nproc: NprocOption = 1,
    threads: ThreadsOption = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Also continue a run that diverged (from its last checkpoint)."
        ),
    ] = False,
    tensorboard: TensorBoardOption = False,
    track: TrackOption = None,
    quiet: QuietOption = False,
    yes: YesOption = False,
) -> None:
    """Train a SAGAN from a recipe into results/<experiment>/runs/<run_id>/ (resumes if it exists).

    Exit codes: the README's table (sagan_cli.outcomes): 0 done, 1 a crash (error.log in the
    run folder), 2 bad input, 3 diverged, 128+N stopped by signal N after saving a
    checkpoint (130 Ctrl-C, 143 SIGTERM, 138/140 SIGUSR1/SIGUSR2).
    """
    from sagan_cli.signals import hold_warning_signals
    from sagan_cli.train import launched_by_torchrun

    hold_warning_signals()
    found = registry()
    rank = launched_by_torchrun()
    loaded = None
    if recipe is not None and resume is None and not rank and not quiet:
        loaded = _first_line(recipe, set_ or [], name, results, device, found)

    # torch loads from here (seconds; a minute on a busy machine)
    from sagan_cli.train.distributed import join_process_group
    from sagan_cli.train.service import TrainingRequest, open_training
    from sagan_cli.train.torchrun import PARENT_ENV, train_with_torchrun

    request = TrainingRequest(
        recipe=recipe,
        overrides=tuple(set_ or ()),
        resume=resume,
        checkpoint=checkpoint,
        results_root=results,
        experiment=name,
        device=device,
        inception_weights=inception_weights,
        retry=retry_failed,
        nproc=nproc,
        threads=threads,
        tensorboard=tensorboard,
        track=tuple(split_list(track)) if track else (),
        quiet=quiet,
        loaded=loaded,
    )
    world = join_process_group(device) if rank else None
    job = open_training(request, found, world)
    # a rank of --nproc takes OMP_NUM_THREADS, chosen by its launcher from the free cores
    set_threads(
        threads,
        free_cores_only=not rank and not job.starts_ranks,
        quiet=quiet,
        deterministic=job.recipe.train.deterministic,
    )
    if job.starts_ranks:
        result = train_with_torchrun(job)
        (console if result.status == RunStatus.DONE else err_console).print(
            escape(f"{result.describe()}\nrun folder: {result.run.path}")
        )
        raise typer.Exit(result.exit_code)
    quiet = quiet or not job.world.is_main
    observer = TrainProgress(quiet=quiet, assume_yes=yes)
    try:
        with progress_bar() if not quiet else nullcontext() as progress:
            observer.progress = progress
            result = job.start(observer)
    finally:
        if job.world.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if os.environ.get(PARENT_ENV):  # a rank of --nproc: the parent reports the outcome
        # a non-zero exit makes torchrun kill the other ranks, maybe while rank 0 still saves
        stopped = result.status == RunStatus.INTERRUPTED
        raise typer.Exit(0 if stopped else result.exit_code)
    if job.world.is_main:
        summary = f"{result.describe()}\nrun folder: {result.run.path}"
        (console if result.status == RunStatus.DONE else err_console).print(escape(summary))
    raise typer.Exit(result.exit_code)


def _first_line(
    recipe: str, sets: list[str], name: str | None, results: Path, device: str, found: Any
) -> Recipe:
    """What will run and where it will be written, before torch loads: a typo in the recipe
    is reported here in a second. Returns the recipe, validated, for open_training."""
    from sagan_cli.recipe import load_recipe
    from sagan_cli.results import run_dir_for

    loaded = load_recipe(recipe, sets, registry=found)
    run = run_dir_for(results, name or loaded.name, loaded)
    err_console.print(
        escape(
            f"train {loaded.name}: {loaded.train.steps:,} steps at {loaded.data.resolution}px, "
            f"attention '{loaded.model.attention.variant}' at {loaded.model.attention_layer}, "
            f"into {run.path} (device {device}); loading torch..."
        )
    )
    return loaded
