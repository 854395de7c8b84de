"""``sagan ablate`` (a grid of runs and its summary), ``sagan status`` and ``sagan report``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from sagan_cli.commands.common import print_report, print_table, registry
from sagan_cli.commands.options import (
    DEFAULT_RESULTS,
    AlphaOption,
    BaselineOption,
    CiOption,
    DeviceOption,
    InceptionOption,
    Interval,
    PairedOption,
    QuietOption,
    ReportFormat,
    ResultsOption,
    RetryOption,
    SetOption,
    TensorBoardOption,
    ThreadsOption,
    TrackOption,
)
from sagan_cli.console import TrainProgress, console, err_console, progress_bar
from sagan_cli.outcomes import RunStatus
from sagan_cli.recipe import split_list

if TYPE_CHECKING:
    from sagan_cli.ablate.grid import GridPoint
    from sagan_cli.ablate.runner import Outcome
    from sagan_cli.results import RunDir
    from sagan_cli.train.observer import Observer

MARKS = {
    RunStatus.DONE: "[green]✓[/]",
    RunStatus.INTERRUPTED: "[yellow]…[/]",
    RunStatus.RUNNING: "[yellow]…[/]",
    RunStatus.SKIPPED: "[yellow]–[/]",
}


class GridProgress:
    """A grid on the terminal: a bar for the grid and one per run in training; a line per
    outcome (off a terminal: plain lines)."""

    def __init__(self, progress: Progress, total: int, quiet: bool) -> None:
        self.progress, self.quiet = progress, quiet
        self.grid_task = progress.add_task("grid", total=total, info="")
        self.tasks: dict[Path, TaskID] = {}

    def run_observer(self, point: GridPoint) -> Observer:
        label = f"#{point.index + 1} seed {point.seed}"
        return TrainProgress(quiet=self.quiet, progress=self.progress, label=label)

    def poll(self, running: list[RunDir]) -> None:
        if self.progress.disable:
            return
        for run in running:
            status = run.read_status()
            if RunStatus.read(status) != RunStatus.RUNNING:
                continue
            if run.path not in self.tasks:
                self.tasks[run.path] = self.progress.add_task(
                    run.id, total=status.get("steps") or 1, info=""
                )
            self.progress.update(self.tasks[run.path], completed=status.get("step", 0))

    def outcome(self, outcome: Outcome) -> None:
        self.progress.advance(self.grid_task)
        if outcome.run.path in self.tasks:
            self.progress.remove_task(self.tasks.pop(outcome.run.path))
        status = outcome.status
        note = " (already there)" if outcome.existing and status != RunStatus.SKIPPED else ""
        if status == RunStatus.RUNNING:
            note = " (being trained by another process)"
        shown = status not in (RunStatus.DONE, RunStatus.RUNNING) and outcome.message
        detail = f": {outcome.message}" if shown else ""
        if not self.quiet or status != RunStatus.DONE:
            self.progress.console.print(
                f"{MARKS.get(status, '[red]✗[/]')} #{outcome.point.index + 1} "
                f"{escape(outcome.point.describe())} seed {outcome.point.seed}: "
                f"{status}{note}{escape(detail)}"
            )

    def message(self, text: str) -> None:
        self.progress.console.print(escape(text))


def ablate_command(
    recipe: Annotated[
        str, typer.Argument(help="Base recipe (default: the shipped sagan_full).")
    ] = "sagan_full",
    vary: Annotated[
        list[str] | None,
        typer.Option(
            help="AXIS or AXIS=v1,v2 (values parsed as TOML, e.g. attention_layer=\\[],\\[16]). Repeat "
            "for a cartesian product. Without values: the recipe's \\[ablate.axes], else built-in "
            "candidates.",
            rich_help_panel="Grid",
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="A count (3 -> 0,1,2) or a list (0,4,7).", rich_help_panel="Grid"),
    ] = None,
    set_: SetOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Experiment folder (default: recipe name + axes).", rich_help_panel="Output"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the numbered grid; run nothing.")
    ] = False,
    launcher: Annotated[
        str | None,
        typer.Option(
            help="Where runs go: local (default), ray, slurm, or an installed launcher plugin; "
            "its parameters: --set launch.KEY=VALUE.",
            rich_help_panel="Execution",
        ),
    ] = None,
    jobs: Annotated[
        str,
        typer.Option(
            help="Runs at once with the local launcher: N, or auto (one per GPU; on CPU from the "
            "cores and the model size).",
            rich_help_panel="Execution",
        ),
    ] = "1",
    nproc: Annotated[
        int,
        typer.Option(
            min=1, help="Processes (GPUs) per run: data-parallel runs.", rich_help_panel="Execution"
        ),
    ] = 1,
    threads: ThreadsOption = None,
    retry_failed: RetryOption = False,
    tensorboard: TensorBoardOption = False,
    track: TrackOption = None,
    results: ResultsOption = DEFAULT_RESULTS,
    device: DeviceOption = "auto",
    inception_weights: InceptionOption = None,
    alpha: AlphaOption = 0.05,
    ci: CiOption = Interval.welch,
    paired: PairedOption = None,
    baseline: BaselineOption = None,
    quiet: QuietOption = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Submit the runs and return at once (SLURM); `sagan status NAME` reports on "
            "them, and re-running this command attaches to them.",
            rich_help_panel="Execution",
        ),
    ] = False,
) -> None:
    """Train and evaluate a grid of recipe variants x seeds; write summary.csv/md and plots.

    Re-running the same command skips finished runs, resumes interrupted ones and attaches
    to runs still queued on a cluster. Exit code (the README's table, sagan_cli.outcomes):
    0 when every run is done (or skipped as unsupported); 2 for bad input, or when a run
    failed on its configuration (a plugin refused or broke; the others still finish); else
    the number of runs that did not finish (at most 100); 130 when Ctrl-C stopped it.
    """
    from sagan_cli.ablate.service import AblationRequest, plan_ablation, run_ablation
    from sagan_cli.ablate.stats import StatsOptions
    from sagan_cli.signals import hold_warning_signals

    hold_warning_signals()
    request = AblationRequest(
        recipe=recipe,
        overrides=(
            *(set_ or ()),
            *(["logging.tensorboard=true"] if tensorboard else []),
            *([f"track.backends={json.dumps(split_list(track))}"] if track else []),
        ),
        varies=tuple(vary or ()),
        seeds=seeds,
        name=name,
        results_root=results,
        device=device,
        jobs=jobs,
        inception_weights=inception_weights,
        dry_run=dry_run,
        launcher=launcher,
        nproc=nproc,
        threads=threads,
        retry_failed=retry_failed,
        quiet=quiet,
        detach=detach,
        stats=StatsOptions(alpha=alpha, ci=str(ci), paired=paired, baseline=baseline),
    )
    plan = plan_ablation(request, registry())
    line = None if quiet else plan.estimate()
    if line is not None:  # before any run starts: a grid of days is better known now
        err_console.print(escape(line))
    if dry_run:
        table = Table("#", *(a.label for a in plan.axes), "seed", "run id", "status")
        table.title = str(plan.folder)
        for row in plan.dry_run_rows():
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        points = len({p.index for p in plan.points})
        console.print(f"{len(plan.points)} runs ({points} grid points); nothing was run.")
        return
    with progress_bar() as progress:
        outcome = run_ablation(plan, GridProgress(progress, len(plan.points), quiet))
    if outcome.report is not None:
        print_report(outcome.report, title=f"{plan.name} ({len(plan.points)} runs)")
        console.print("wrote " + ", ".join(str(p) for p in outcome.written))
    for line in outcome.notes():
        (console if outcome.report is None else err_console).print(escape(line))
    raise typer.Exit(outcome.exit_code)


def status_command(
    experiment: Annotated[str, typer.Argument(help="Experiment name (under --results) or folder.")],
    results: ResultsOption = DEFAULT_RESULTS,
) -> None:
    """Where each run of an experiment stands: its folder's status and step, and for SLURM
    the scheduler's state of its job (pending, running, requeued, ...)."""
    from sagan_cli.ablate.service import experiment_folders, experiment_status

    (folder,) = experiment_folders([experiment], results)
    states = experiment_status(folder, registry())
    print_table(
        ["run", "grid point", "seed", "status", "step", "scheduler", "note"],
        [[s.run, s.point, str(s.seed), str(s.status), s.step, s.scheduler, s.note] for s in states],
        title=folder.name,
    )
    counts: dict[str, int] = {}
    for state in states:
        counts[str(state.status)] = counts.get(str(state.status), 0) + 1
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()) or "no runs")


def report_command(
    experiments: Annotated[
        list[str] | None,
        typer.Argument(help="Experiment names (under --results) or folders; default: all."),
    ] = None,
    format_: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            help="table (the terminal), md, csv, json, latex (a booktabs table for a paper) or "
            "html (one self-contained page with tables, plots and attention figures); on stdout.",
        ),
    ] = ReportFormat.table,
    caption: Annotated[
        str | None, typer.Option(help="--format latex: the table's caption.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="--format latex: the table's \\label (default tab:NAME).")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Group by this axis only (others are pooled).")
    ] = None,
    results: ResultsOption = DEFAULT_RESULTS,
    alpha: AlphaOption = 0.05,
    ci: Annotated[
        Interval | None,
        typer.Option(
            "--ci",
            help="welch (t interval, the default) or bootstrap (percentile); with --format "
            "latex|html, given: cells show the 95% interval of each row's mean, not its std.",
            rich_help_panel="Statistics",
        ),
    ] = None,
    paired: PairedOption = None,
    baseline: BaselineOption = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Only evaluations of this protocol (its id, as `sagan eval` prints) count; "
            "needed when runs were evaluated in several ways.",
            rich_help_panel="Statistics",
        ),
    ] = None,
) -> None:
    """Rebuild tables from run folders alone: one per experiment, statistics within each."""
    from sagan_cli.ablate.service import build_reports, experiment_folders
    from sagan_cli.ablate.stats import StatsOptions

    options = StatsOptions(
        alpha=alpha, ci=str(ci or Interval.welch), paired=paired, baseline=baseline,
        protocol=protocol,
    )  # fmt: skip
    options.check()
    folders = experiment_folders(experiments or [], results)
    reports = build_reports(folders, by, options)
    # a paper's cells show the interval of the mean only when --ci was asked for
    interval = None if ci is None else str(ci)
    if format_ == ReportFormat.table:
        for report in reports.reports:
            print_report(report)
    elif format_ == ReportFormat.latex:
        from sagan_cli.ablate.paper import to_latex

        many = len(reports.reports) > 1
        for report in reports.reports:
            sys.stdout.write(
                to_latex(
                    report,
                    caption,
                    None if label is None else (f"{label}-{report.name}" if many else label),
                    interval,
                )
            )
    elif format_ == ReportFormat.html:
        from sagan_cli.ablate.paper import to_html

        sys.stdout.write(to_html(reports.reports, {f.name: f for f in folders}, interval))
    else:
        written: dict[ReportFormat, Any] = {
            ReportFormat.md: reports.markdown,
            ReportFormat.csv: reports.csv,
            ReportFormat.json: reports.json,
        }
        sys.stdout.write(written[format_]())
    for warning in reports.warnings():  # also under a table piped to a file
        err_console.print(escape(f"Warning: {warning}"))
