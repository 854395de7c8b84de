"""``sagan ablate`` and ``sagan report``: plan and check a grid before any run, summarise after."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sagan_cli.ablate.axes import Axis, build_axes, format_value
from sagan_cli.ablate.grid import GridPoint, expand, parse_seeds
from sagan_cli.ablate.plots import plot_curves, plot_layer_curves, plot_samples
from sagan_cli.ablate.runner import (
    GridObserver,
    GridOptions,
    Outcome,
    create_runs,
    mark_lost,
    prepare_experiment,
    run_grid,
)
from sagan_cli.ablate.stats import StatsOptions
from sagan_cli.ablate.summary import (
    DamagedRun,
    check_one_protocol,
    collect_runs,
    damaged_runs,
    group_keys,
    power_hints,
    summarize,
    to_csv,
    to_markdown,
)
from sagan_cli.api import Launcher, Tracker
from sagan_cli.components import placement_problem, plugin_for
from sagan_cli.cores import default_threads
from sagan_cli.device import select_device
from sagan_cli.errors import (
    PlacementUnsupported,
    ResultsError,
    SaganError,
    describe_exception,
    did_you_mean,
)
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.fileio import atomic_write_json, atomic_write_text
from sagan_cli.outcomes import INTERRUPTED_BY_CTRL_C, ExitCode, RunStatus
from sagan_cli.plugins import Registry, attributed, plugin_code
from sagan_cli.preflight import auto_jobs, check_batch_divides, check_before_work, check_nproc
from sagan_cli.recipe import (
    Recipe,
    check_experiment_name,
    find_recipe,
    parse_override,
    read_toml,
    resolve_recipe,
)
from sagan_cli.results import RunDir, list_runs, now, run_dir_in
from sagan_cli.trackers import backends, build_trackers, flat_params
from sagan_cli.trackers import read_state as read_tracking
from sagan_cli.trackers import write_state as write_tracking

DEFAULT_RESULTS = Path("results")


@dataclass(frozen=True)
class AblationRequest:
    """What ``sagan ablate`` was asked, as given (``plan_ablation`` resolves and checks it)."""

    recipe: str = "sagan_full"
    overrides: tuple[str, ...] = ()
    varies: tuple[str, ...] = ()
    seeds: str | None = None
    name: str | None = None
    results_root: Path = DEFAULT_RESULTS
    device: str = "auto"
    jobs: str = "1"
    inception_weights: Path | None = None
    dry_run: bool = False
    launcher: str | None = None
    nproc: int = 1
    threads: int | None = None
    retry_failed: bool = False
    quiet: bool = False
    detach: bool = False
    stats: StatsOptions = StatsOptions()


@dataclass
class AblationPlan:
    name: str
    folder: Path
    results_root: Path
    base: Recipe
    axes: list[Axis]
    points: list[GridPoint]
    device: torch.device
    weights: ExtractorWeights | None
    launcher: Launcher | None
    launcher_name: str
    options: GridOptions
    unsupported: dict[int, str]  # grid index -> why its attention plugin declines the placement
    stats: StatsOptions
    registry: Registry

    def status_command(self) -> str:
        """The command that shows where this experiment's runs stand, with the user's options."""
        command = f"sagan status {shlex.quote(self.name)}"
        if self.results_root != DEFAULT_RESULTS:
            command += f" --results {shlex.quote(str(self.results_root))}"
        return command

    def point_runs(self) -> list[tuple[GridPoint, RunDir]]:
        """Each grid point with its run folder (which may not exist yet)."""
        return [(p, run_dir_in(self.folder / "runs", p.recipe)) for p in self.points]

    def estimate(self) -> str | None:
        """The time the runs still to train will take here (None: nothing left to train, or
        they run elsewhere: a cluster's devices are not this machine's to measure)."""
        from sagan_cli.train.estimate import describe_grid

        if self.launcher_name != "local":
            return None
        pending = [
            point.recipe
            for point, run in self.point_runs()
            if point.index not in self.unsupported
            and RunStatus.read(run.read_status()) != RunStatus.DONE
        ]
        if not pending:
            return None
        return describe_grid(
            pending, self.registry, self.device, self.options.jobs, self.options.threads
        )

    def dry_run_rows(self) -> list[list[str]]:
        """The numbered grid: the point's axis values, seed, run id and what its folder says."""
        rows = []
        for number, (point, run) in enumerate(self.point_runs(), 1):
            existing = run.read_status().get("status", "new")
            if point.index in self.unsupported:
                existing = "skipped (placement not supported)"
            rows.append(
                [
                    str(number),
                    *(format_value(point.settings[a.label]) for a in self.axes),
                    str(point.seed),
                    run.id,
                    str(existing),
                ]
            )
        return rows


def _launcher(
    base: Recipe, registry: Registry, nproc: int, dry_run: bool
) -> tuple[Launcher | None, str]:
    """The recipe's launcher (``--launcher`` is an override of ``launch.launcher``), checked."""
    entry, params = plugin_for(base, "launch", registry)
    if dry_run:
        return None, entry.name
    with plugin_code(entry, "launch.launcher", "building the launcher"):
        launcher = entry.plugin.factory(params)
    if not isinstance(launcher, Launcher):
        raise attributed(
            entry,
            "launch.launcher",
            "building the launcher",
            f"its factory returned {type(launcher).__name__}, not a sagan_cli.api.Launcher",
        )
    if nproc > 1 and not launcher.supports_nproc:
        raise SaganError(
            f"--nproc {nproc}: the {entry.name} launcher runs each run as one process and cannot "
            f"give a run several; use --launcher local or slurm, or drop --nproc."
        )
    with plugin_code(
        entry,
        "launch.launcher",
        "checking its backend",
        fix="Do as it says, or choose another launch.launcher (--launcher local runs here).",
    ):
        launcher.check()
    return launcher, entry.name


def plan_ablation(request: AblationRequest, registry: Registry) -> AblationPlan:
    """The whole grid, resolved and validated; nothing is written."""
    request.stats.check()
    path = find_recipe(request.recipe)
    raw = read_toml(path)
    overrides = list(request.overrides)
    if request.launcher is not None:
        overrides.append(f"launch.launcher={request.launcher}")
    parsed = [parse_override(o) for o in overrides]
    base = resolve_recipe(raw, parsed, origin=str(path), registry=registry)
    axes = build_axes(list(request.varies), base, registry)
    points = expand(raw, parsed, axes, parse_seeds(request.seeds, base.seed), str(path), registry)
    _check_baseline(request.stats.baseline, axes)
    name = check_experiment_name(
        request.name or f"{base.name}-" + "-".join(axis.label.replace(".", "_") for axis in axes)
    )
    folder = request.results_root / name
    prepare_experiment(folder, base, axes, write=False)
    device, nproc, threads = request.device, request.nproc, request.threads
    chosen = select_device(device)
    if request.jobs == "auto":
        jobs, auto_threads = auto_jobs([p.recipe for p in points], chosen, len(points))
        threads = threads or auto_threads
    else:
        try:
            jobs = int(request.jobs)
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise SaganError("--jobs: give a positive number of runs at once, or auto.")
    if chosen.type == "cuda" and chosen.index is None and jobs > torch.cuda.device_count():
        raise SaganError(
            f"--jobs {jobs} asks for more GPUs than the {torch.cuda.device_count()} visible: runs go one "
            f"per GPU. Use --jobs {torch.cuda.device_count()} or fewer."
        )
    if chosen.type == "cuda" and chosen.index is not None and jobs > 1:
        raise SaganError(
            f"--jobs {jobs} with --device {device}: parallel runs need one GPU each; use --device cuda."
        )
    check_nproc(nproc, chosen)
    for point in points:
        check_batch_divides(point.recipe, nproc)
    unsupported: dict[int, str] = {}
    for point in points:
        if point.index not in unsupported:
            problem = placement_problem(point.recipe, registry)
            if isinstance(problem, PlacementUnsupported):
                unsupported[point.index] = str(problem)
            elif problem is not None:  # the plugin refused the recipe itself: bad input
                raise problem
    checked = check_before_work(
        [] if request.dry_run else [p.recipe for p in points if p.index not in unsupported],
        registry,
        device=device,
        inception_weights=request.inception_weights,
        world_size=nproc,
        tracking=None if request.dry_run else (request.results_root, name),
    )
    built, launcher_name = _launcher(base, registry, nproc, request.dry_run)
    if threads is None and chosen.type == "cpu" and launcher_name == "local":
        # this machine's free cores, shared by the runs at once (a cluster's are not ours to
        # measure: its jobs keep one CPU each unless --threads says otherwise)
        deterministic = any(p.recipe.train.deterministic for p in points)
        threads = default_threads(share=jobs, deterministic=deterministic)[0]
    if request.detach and built is not None and not built.supports_detach:
        raise SaganError(
            f"--detach: the {launcher_name} launcher's runs end with this command, so there is "
            f"nothing to leave running. Use --launcher slurm (whose jobs outlive it), or drop "
            f"--detach."
        )
    options = GridOptions(
        jobs=jobs,
        nproc=nproc,
        threads=threads,
        retry_failed=request.retry_failed,
        quiet=request.quiet,
        detach=request.detach,
    )
    return AblationPlan(
        name,
        folder,
        request.results_root,
        base,
        axes,
        points,
        chosen,
        checked.weights,
        built,
        launcher_name,
        options,
        unsupported,
        request.stats,
        registry,
    )


def _check_baseline(baseline: str | None, axes: list[Axis]) -> None:
    """``--baseline AXIS=VALUE`` names a row of this grid (checked before anything runs)."""
    if baseline is None:
        return
    axis, _, value = baseline.partition("=")
    labels = {a.label: [format_value(v).replace(" ", "") for v in a.values] for a in axes}
    if axis.strip() not in labels or value.strip().replace(" ", "") not in labels[axis.strip()]:
        raise SaganError(
            f"--baseline {baseline}: the grid has "
            + "; ".join(f"{k} = {', '.join(v)}" for k, v in labels.items())
            + ". Name one of those values."
        )


@dataclass
class AblationOutcome:
    """What an ablation ended with: every run's outcome, the summary, and the exit code."""

    plan: AblationPlan
    outcomes: list[Outcome]
    report: Report | None = None  # None: detached (the runs are still queued or running)
    written: list[Path] = field(default_factory=list)

    def _count(self, *states: RunStatus) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in states]

    @property
    def stopped_by_ctrl_c(self) -> bool:
        ran = [o for o in self.outcomes if not o.existing]
        return any(o.status == RunStatus.INTERRUPTED and "SIGINT" in o.message for o in ran)

    @property
    def configuration_failures(self) -> list[Outcome]:
        """Runs that failed on their configuration: a plugin refused or broke (exit code 2)."""
        return [o for o in self._count(RunStatus.FAILED) if o.exit_code == ExitCode.BAD_INPUT]

    @property
    def exit_code(self) -> int:
        """0 when every run is done (or skipped); Ctrl-C's code when Ctrl-C stopped the grid;
        2 when a run failed on its configuration (the other runs still finished); else the
        number of runs that did not finish, at most ``ExitCode.MAX_UNFINISHED``."""
        if self.report is None:
            return ExitCode.DONE
        if self.stopped_by_ctrl_c:
            return INTERRUPTED_BY_CTRL_C
        if self.configuration_failures:
            return ExitCode.BAD_INPUT
        unfinished = self._count(
            RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.INTERRUPTED, RunStatus.QUEUED
        )
        return min(len(unfinished), ExitCode.MAX_UNFINISHED)

    def notes(self) -> list[str]:
        """The lines under the table: what did not finish, why, and what to do."""
        if self.report is None:
            return [
                f"submitted; `{self.plan.status_command()}` shows where each run stands, and "
                f"re-running this command waits for them and writes the summary."
            ]
        lines = []
        if self.stopped_by_ctrl_c:
            lines.append("interrupted (Ctrl-C): re-run the same command to resume.")
        busy = self._count(RunStatus.RUNNING)
        if busy:
            lines.append(
                f"{len(busy)} run(s) are being trained by another process right now; they were "
                f"left to it. Re-run this command when it has finished to complete the summary."
            )
        skipped = self._count(RunStatus.SKIPPED)
        if skipped:
            lines.append(
                f"{len(skipped)} run(s) skipped: their attention plugin does not support the "
                f"placement ({skipped[0].message})"
            )
        interrupted = self._count(RunStatus.INTERRUPTED)
        if interrupted:
            lines.append(
                f"{len(interrupted)} run(s) were interrupted (a signal, a time limit, or a worker "
                f"or job that died: see the table); re-run the same command to resume them."
            )
        never_started = self._count(RunStatus.QUEUED)
        if never_started:
            lines.append(
                f"{len(never_started)} run(s) were never started: the launcher's task for them "
                f"failed before training (see the lines above and the launcher's logs). Re-run "
                f"the same command to start them."
            )
        configuration = self.configuration_failures
        if configuration:
            lines.append(
                f"{len(configuration)} run(s) failed on their configuration, so the command exits "
                f"{ExitCode.BAD_INPUT} (the other runs finished): {configuration[0].message} "
                f"After fixing it, --retry-failed re-runs them."
            )
        failed = len(self._count(RunStatus.FAILED, RunStatus.DIVERGED)) - len(configuration)
        if failed:
            lines.append(
                f"{failed} run(s) failed or diverged (see the table); --retry-failed re-runs them."
            )
        return lines


def run_ablation(plan: AblationPlan, observer: GridObserver) -> AblationOutcome:
    """Create the grid's run folders, hand the runs to the plan's launcher, and (unless
    detached) summarise the experiment from its run folders."""
    assert plan.launcher is not None, "a dry-run plan runs nothing"
    prepare_experiment(plan.folder, plan.base, plan.axes)
    runs = create_runs(plan.folder, plan.points, plan.unsupported)
    record_launcher(plan)
    group = TrackedGroup.open(plan, observer)
    outcomes = run_grid(
        plan.points,
        runs,
        plan.device,
        plan.weights,
        plan.launcher,
        plan.options,
        observer,
        experiment=plan.name,
    )
    if plan.options.detach:
        return AblationOutcome(plan, outcomes)
    report, written = write_summary(plan.folder, plan.stats)
    group.close([p for p in written if p.suffix in (".csv", ".md")])
    return AblationOutcome(plan, outcomes, report, written)


@dataclass
class TrackedGroup:
    """An ablation's parent run in each of its trackers (MLflow: runs nest under it; W&B:
    runs share its name as group), recorded in the experiment folder so that its runs find
    it wherever they train and a re-run continues it."""

    trackers: dict[str, Tracker]
    parents: dict[str, str | None]
    observer: Any

    @classmethod
    def open(cls, plan: AblationPlan, observer: Any) -> TrackedGroup:
        if not backends(plan.base):
            return cls({}, {}, observer)
        trackers = build_trackers(
            plan.base, plan.registry, plan.results_root, plan.name, check=False
        )
        state = read_tracking(plan.folder)
        parents: dict[str, str | None] = state.get("parents", {})
        params = {**flat_params(plan.base), "axes": ", ".join(a.label for a in plan.axes)}
        group = cls(trackers, parents, observer)
        for name, tracker in list(trackers.items()):
            if name in parents:
                continue
            try:
                parents[name] = tracker.start_group(plan.name, str(plan.folder), params)
            except Exception as exc:  # the runs log without a parent; the folder has all
                group.warn(name, exc)
        write_tracking(plan.folder, {**state, "parents": parents, "group": plan.name})
        return group

    def warn(self, name: str, exc: Exception) -> None:
        del self.trackers[name]
        self.observer.message(
            f"Warning: tracker '{name}' failed with the ablation's parent run "
            f"({describe_exception(exc)}); the experiment folder keeps every result"
        )

    def close(self, files: list[Path]) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.finish_group(self.parents.get(name), [str(f) for f in files])
            except Exception as exc:
                self.warn(name, exc)


LAUNCH_RECORD = "launch.json"


def record_launcher(plan: AblationPlan) -> None:
    """Which launcher (and parameters) the experiment's runs were handed to, for ``sagan status``."""
    entry, params = plugin_for(plan.base, "launch")
    atomic_write_json(
        plan.folder / LAUNCH_RECORD,
        {"launcher": entry.name, "params": params.model_dump(mode="json"), "updated": now()},
    )


@dataclass
class RunState:
    run: str
    point: str
    seed: Any
    status: RunStatus
    step: str
    scheduler: str
    note: str


def experiment_status(folder: Path, registry: Registry) -> list[RunState]:
    """Every run of an experiment: its folder's status and, for launchers whose jobs outlive
    the command (SLURM), the scheduler's state of its job."""
    scheduler: dict[str, str] = {}
    try:
        record = json.loads((folder / LAUNCH_RECORD).read_text(encoding="utf-8"))
        entry = registry.get("launcher", record["launcher"], key="launch.launcher")
        params = entry.plugin.params.model_validate(record.get("params") or {})
        with plugin_code(entry, "launch.launcher", "reading its jobs' states"):
            launcher = entry.plugin.factory(params)
            scheduler = launcher.job_states(str(folder))
            ended = launcher.ended_jobs(str(folder))
        for run_dir, reason in ended.items():  # the scheduler ended them: the folders say so
            mark_lost(RunDir(Path(run_dir)), reason)
    except (OSError, ValueError, KeyError, TypeError, SaganError):
        scheduler = {}
    states = []
    for run in list_runs(folder):
        status = run.read_status()
        labels = status.get("axis_labels") or {}
        steps = status.get("steps")
        states.append(
            RunState(
                run=run.id,
                point=", ".join(f"{k}={v}" for k, v in labels.items()) or "-",
                seed=status.get("seed", "-"),
                status=RunStatus.read(status),
                step=f"{status.get('step', 0)}/{steps}" if steps else "-",
                scheduler=scheduler.get(str(run.path.resolve()), "-"),
                note=str(status.get("error") or status.get("warning") or ""),
            )
        )
    return states


def experiment_folders(targets: list[str], results_root: Path) -> list[Path]:
    """Experiment names (under the results root) or folders; none means every experiment."""
    available = (
        sorted(p.name for p in results_root.glob("*") if (p / "runs").is_dir())
        if results_root.is_dir()
        else []
    )
    if not targets:
        if not available:
            raise ResultsError(
                f"No experiments under {results_root}. Run sagan train or sagan ablate first."
            )
        return [results_root / name for name in available]
    folders = []
    for target in targets:
        direct = Path(target).expanduser()
        folder = direct if (direct / "runs").is_dir() else results_root / target
        if not (folder / "runs").is_dir():
            raise ResultsError(
                f"'{target}' is not an experiment folder (no runs/ inside) nor an experiment under "
                f"{results_root}.{did_you_mean(target, available)} Available: {', '.join(available) or 'none'}."
            )
        folders.append(folder)
    return folders


@dataclass
class Report:
    """One experiment's table: statistics never cross experiments."""

    name: str
    runs: pd.DataFrame
    table: pd.DataFrame
    keys: list[str]
    options: StatsOptions
    damaged: list[DamagedRun] = field(default_factory=list)  # left out: status unreadable

    def markdown(self) -> str:
        return to_markdown(
            self.table, self.keys, self.runs, self.name, self.options.alpha, self.damaged
        )

    def warnings(self) -> list[str]:
        """One line per run folder left out of the table, with how to repair it."""
        return [damaged.describe() for damaged in self.damaged]

    def hints(self) -> list[str]:
        return power_hints(self.table, self.keys, self.options.alpha, self.options.ci)


@dataclass
class Reports:
    """Several experiments: separate tables; CSV and JSON carry an ``experiment`` column."""

    reports: list[Report]

    def _frame(self, attribute: str) -> pd.DataFrame:
        frames = []
        for report in self.reports:
            frame = getattr(report, attribute)
            if len(self.reports) > 1 and "experiment" not in frame:
                frame = frame.assign(experiment=report.name)[["experiment", *frame.columns]]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def markdown(self) -> str:
        return "\n".join(report.markdown() for report in self.reports)

    def csv(self) -> str:
        return to_csv(self._frame("table"))

    def warnings(self) -> list[str]:
        return [line for report in self.reports for line in report.warnings()]

    def json(self) -> str:
        left_out = [
            {"experiment": report.name, "run_dir": str(d.run.path), "problem": d.problem}
            for report in self.reports
            for d in report.damaged
        ]
        return json.dumps(
            {
                "summary": json.loads(self._frame("table").to_json(orient="records")),
                "runs": json.loads(self._frame("runs").to_json(orient="records")),
                "left_out": left_out,
            },
            indent=2,
        )


def build_report(
    folder: Path, by: str | None = None, options: StatsOptions = StatsOptions()
) -> Report:
    """One experiment's table from its run folders alone."""
    options.check()
    runs = collect_runs([folder], options.protocol)
    damaged = damaged_runs(folder)
    if runs.empty and damaged:
        raise ResultsError(
            f"No run of {folder} can be read: " + " ".join(d.describe() for d in damaged)
        )
    if runs.empty:
        raise ResultsError(f"No runs in {folder} yet.")
    check_one_protocol(runs, folder.name)
    keys = group_keys(runs, [folder])
    if by is not None:
        if by not in keys:
            raise SaganError(
                f"--by '{by}' is not an axis of {folder.name}; axes: {', '.join(keys)}."
            )
        keys = [by]
    return Report(folder.name, runs, summarize(runs, keys, options), keys, options, damaged)


def build_reports(
    folders: list[Path], by: str | None = None, options: StatsOptions = StatsOptions()
) -> Reports:
    return Reports([build_report(folder, by, options) for folder in folders])


def write_summary(
    folder: Path, options: StatsOptions = StatsOptions()
) -> tuple[Report, list[Path]]:
    """summary.csv, summary.md and the plots of one experiment, rebuilt from its run folders."""
    report = build_report(folder, None, options)
    atomic_write_text(folder / "summary.csv", to_csv(report.table))
    atomic_write_text(folder / "summary.md", report.markdown())
    folders = {folder.name: folder}
    written = [folder / "summary.csv", folder / "summary.md"]
    written += plot_curves(report.runs, report.keys, folders, folder)
    written += plot_layer_curves(report.runs, report.keys, folders, folder)
    samples = plot_samples(report.runs, report.keys, folders, folder)
    return report, written + ([samples] if samples else [])
