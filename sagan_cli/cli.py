"""The ``sagan`` command line: parse, call a service, render with rich.

Errors the user can fix (``SaganError``) become one paragraph on stderr and exit
code 2; ``SAGAN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from sagan_cli import __version__
from sagan_cli.console import TrainProgress, console, err_console, progress_bar
from sagan_cli.errors import SaganError


class _ErrorHandlingGroup(TyperGroup):
    """Turns ``SaganError`` anywhere below into one clear paragraph and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SaganError as exc:
            if os.environ.get("SAGAN_DEBUG"):
                raise
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_ErrorHandlingGroup,
    help="Self-Attention GAN ablation toolkit: train, evaluate and ablate SAGAN from TOML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
recipe_app = typer.Typer(help="Show and validate recipes.", no_args_is_help=True)
model_app = typer.Typer(help="Inspect the networks a recipe builds.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks written to results/bench/.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe key, e.g. --set train.steps=200 (value parsed as TOML). Repeatable.",
        rich_help_panel="Recipe",
    ),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"sagan-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Self-Attention GAN ablation toolkit."""


def _registry() -> Any:
    """The plugin registry; modules that failed to load are reported, the rest still work."""
    from sagan_cli.plugins import get_registry

    registry = get_registry()
    for failure in registry.failures:
        err_console.print(f"[yellow]Warning:[/] {escape(failure.describe())}")
    return registry


def _fail_on_plugin_failures(registry: Any) -> None:
    if registry.failures:
        names = ", ".join(f.source for f in registry.failures)
        raise SaganError(
            f"{len(registry.failures)} plugin module(s) failed to load: {names} (details above). "
            f"Fix or uninstall them, or block them with SAGAN_DISABLED_PLUGINS={names}."
        )


@app.command("plugins")
def plugins_command(
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: attention, normalization, loss, data.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every registered plugin with its kind, provider package and version."""
    from sagan_cli.plugins import KINDS, describe

    if kind is not None and kind not in KINDS:
        raise SaganError(f"--kind '{kind}' is not a plugin kind; kinds are {', '.join(KINDS)}.")
    registry = _registry()
    entries = registry.all(kind)
    if as_json:
        sys.stdout.write(json.dumps([describe(e) for e in entries], indent=2, default=str) + "\n")
    else:
        table = Table("kind", "name", "summary", "provider", "version")
        for entry in entries:
            table.add_row(
                entry.kind, entry.name, entry.plugin.summary, entry.provider, entry.version
            )
        console.print(table)
    _fail_on_plugin_failures(registry)


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or the name of a shipped recipe.")],
    set_: SetOption = None,
) -> None:
    """Print the resolved recipe (defaults and plugin parameters filled in) as TOML."""
    from sagan_cli.recipe import load_recipe, recipe_toml

    resolved = load_recipe(recipe, set_ or [], registry=_registry())
    sys.stdout.write(recipe_toml(resolved))


@recipe_app.command("validate")
def recipe_validate(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files or shipped recipe names.")],
    set_: SetOption = None,
) -> None:
    """Check recipes fully: keys, values, plugin names, plugin parameters and data availability."""
    from sagan_cli.components import build_data_source
    from sagan_cli.recipe import load_recipe

    registry = _registry()
    failed = 0
    for ref in recipes:
        try:
            resolved = load_recipe(ref, set_ or [], registry=registry)
            build_data_source(resolved, registry).check()
        except SaganError as exc:
            failed += 1
            err_console.print(f"[bold red]✗[/] {escape(ref)}: {escape(str(exc))}")
            continue
        console.print(f"[green]✓[/] {escape(ref)}")
    _fail_on_plugin_failures(registry)
    if failed:
        raise SaganError(f"{failed} of {len(recipes)} recipe(s) are invalid (reasons above).")


@model_app.command("summary")
def model_summary(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or the name of a shipped recipe.")],
    set_: SetOption = None,
    num_classes: Annotated[
        int | None,
        typer.Option(help="Classes for a conditional model (default: ask the data source)."),
    ] = None,
) -> None:
    """Parameter counts of G and D, block by block, and where attention sits."""
    from sagan_cli.components import build_data_source, num_classes_for, summarize_networks
    from sagan_cli.recipe import load_recipe

    registry = _registry()
    resolved = load_recipe(recipe, set_ or [], registry=registry)
    if num_classes is None:
        num_classes = (
            num_classes_for(resolved, build_data_source(resolved, registry))
            if resolved.model.conditional
            else 0
        )
    summary = summarize_networks(resolved, num_classes, registry)
    for title, rows, total in (
        ("Generator", summary.generator_rows, summary.generator_total),
        ("Discriminator", summary.discriminator_rows, summary.discriminator_total),
    ):
        table = Table("module", "output", "parameters", title=title)
        for name, shape, count in rows:
            table.add_row(name, shape, f"{count:,}")
        table.add_row("[bold]total[/]", "", f"[bold]{total:,}[/]")
        console.print(table)
    console.print(
        f"attention '{summary.attention}' in G at {summary.g_attention or 'no'} and in D at "
        f"{summary.d_attention or 'no'} feature sizes; {summary.num_classes or 'no'} classes."
    )


InceptionOption = Annotated[
    Path | None,
    typer.Option(
        help="Local Inception weights (.pth) for FID/IS/KID; else $SAGAN_INCEPTION_WEIGHTS, else "
        "torch-fidelity's download cache.",
        rich_help_panel="Evaluation",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
]


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SaganError(
            f"{option} '{text}' must be comma-separated integers, e.g. 8,16,32."
        ) from None
    if not values or min(values) < 1:
        raise SaganError(f"{option} '{text}' must list positive integers, e.g. 8,16,32.")
    return values


@bench_app.command("attention")
def bench_attention_command(
    device: DeviceOption = "auto",
    precision: Annotated[
        str | None, typer.Option(help="bf16 or fp32 (default: bf16 on CUDA, fp32 elsewhere).")
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="Feature-map sizes (square), comma-separated.")
    ] = "8,16,32,64,128",
    channels: Annotated[
        int, typer.Option(min=8, help="Feature-map channels (256: G at 32x32).")
    ] = 256,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default 16 on CUDA, 4 on CPU).")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions (median reported).")] = 10,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Forward + backward time and memory of every attention variant, fused vs explicit."""
    from sagan_cli.bench import attention_markdown, bench_attention, write_results
    from sagan_cli.device import available_memory, effective_precision, select_device

    registry = _registry()
    chosen = select_device(device)
    precision = effective_precision(chosen, precision or "bf16")
    size_list = _int_list(sizes, "--sizes")
    batch = batch or (16 if chosen.type == "cuda" else 4)
    variants = [n for n in registry.names("attention") if n != "none"]
    total = (len(variants) + sum(v in ("sagan", "sagan_pooled") for v in variants)) * len(size_list)
    with progress_bar() as progress:
        task = progress.add_task("attention", total=total, info="")

        def report(row: Any) -> None:
            timing = f"{row.ms:.2f} ms" if row.ms is not None else row.status
            progress.console.print(f"{row.variant:>24} {row.size:>4}x{row.size:<4} {timing}")
            progress.advance(task)

        frame = bench_attention(
            registry,
            chosen,
            precision,
            size_list,
            channels,
            batch,
            repeats,
            memory_budget=available_memory(chosen) // 2,
            on_result=report,
        )
    paths = write_results(
        out,
        "attention",
        chosen.type,
        precision,
        frame,
        attention_markdown(frame, chosen.type, precision) + "\n",
    )
    console.print(f"wrote {paths[0]} and {paths[1]}")


@bench_app.command("train")
def bench_train_command(
    recipes: Annotated[list[str], typer.Argument(help="Recipes to time (files or shipped names).")],
    set_: SetOption = None,
    device: DeviceOption = "auto",
    compile_: Annotated[
        str,
        typer.Option("--compile", help="off, on, or both (time with and without torch.compile)."),
    ] = "off",
    steps: Annotated[int, typer.Option(min=1, help="Timed iterations.")] = 20,
    warmup: Annotated[
        int, typer.Option(min=1, help="Untimed iterations first (compilation happens here).")
    ] = 5,
    num_classes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Classes for conditional recipes (default: the data source's count, or 1000 "
            "when its files are not here).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Images/s of the full training iteration (D, G, EMA) on synthetic data of the recipe's shape."""
    from dataclasses import asdict

    import pandas as pd

    from sagan_cli.bench import bench_train_step, rows_markdown, write_results
    from sagan_cli.device import select_device
    from sagan_cli.recipe import load_recipe

    if compile_ not in ("off", "on", "both"):
        raise SaganError(f"--compile '{compile_}': choose off, on or both.")
    registry = _registry()
    chosen = select_device(device)
    loaded = [load_recipe(r, set_ or [], registry=registry) for r in recipes]
    modes = {"off": [False], "on": [True], "both": [False, True]}[compile_]
    rows = []
    for recipe in loaded:
        for compiled in modes:
            result = bench_train_step(
                recipe, registry, chosen, compiled, num_classes, steps, warmup
            )
            console.print(
                f"{recipe.name} batch {result.batch} {result.precision} compile={compiled}: "
                f"{result.img_per_s:.1f} img/s ({result.it_per_s:.2f} it/s)"
            )
            rows.append(asdict(result))
    paths = write_results(
        out,
        "train",
        chosen.type,
        str(rows[0]["precision"]),
        pd.DataFrame(rows),
        rows_markdown(f"Training iteration ({chosen.type})", rows),
    )
    console.print(f"wrote {paths[0]} and {paths[1]}")


@bench_app.command("fid")
def bench_fid_command(
    recipe: Annotated[
        str, typer.Argument(help="Recipe whose data is the reference and whose G samples.")
    ] = "smoke",
    set_: SetOption = None,
    num_samples: Annotated[int, typer.Option(min=2, help="Generated samples.")] = 1000,
    reference_samples: Annotated[
        int, typer.Option(min=2, help="Real images in the reference.")
    ] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 100,
    inception_weights: InceptionOption = None,
    device: DeviceOption = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Seconds for FID: reference features (cold), generation, generated features + FID (warm)."""
    import tempfile

    import pandas as pd

    from sagan_cli.bench import bench_fid, rows_markdown, write_results
    from sagan_cli.device import select_device
    from sagan_cli.evaluate.weights import resolve_inception_weights
    from sagan_cli.recipe import load_recipe

    registry = _registry()
    resolved = load_recipe(recipe, set_ or [], registry=registry)
    chosen = select_device(device)
    weights = resolve_inception_weights(inception_weights)
    with (
        tempfile.TemporaryDirectory() as cache,
        err_console.status("timing FID") if err_console.is_terminal else nullcontext(),
    ):
        row = bench_fid(
            resolved,
            registry,
            chosen,
            weights,
            num_samples,
            reference_samples,
            batch_size,
            Path(cache),
        )
    for key, value in row.items():
        console.print(f"{key}: {value}")
    paths = write_results(
        out,
        "fid",
        chosen.type,
        str(row["precision"]),
        pd.DataFrame([row]),
        rows_markdown(f"FID timing ({chosen.type})", [row]),
    )
    console.print(f"wrote {paths[0]} and {paths[1]}")


@app.command("train")
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
    results: Annotated[
        Path, typer.Option(help="Results root folder.", rich_help_panel="Output")
    ] = Path("results"),
    name: Annotated[
        str | None,
        typer.Option(
            help="Experiment folder (default: the recipe's name).", rich_help_panel="Output"
        ),
    ] = None,
    inception_weights: InceptionOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a SAGAN from a recipe into results/<experiment>/runs/<run_id>/ (resumes if it exists).

    Exit codes: 0 done, 2 bad input, 3 diverged, 130 interrupted.
    """
    from sagan_cli.train.service import open_training

    registry = _registry()
    job = open_training(
        recipe, set_ or [], resume, checkpoint, results, name, device, inception_weights, registry
    )
    observer = TrainProgress(quiet=quiet)
    with progress_bar() if not quiet else nullcontext() as progress:
        observer.progress = progress
        result = job.start(observer)
    summary = (
        f"{result.status} at step {result.step}: {result.message}\nrun folder: {result.run.path}"
    )
    (console if result.status == "done" else err_console).print(escape(summary))
    raise typer.Exit(result.exit_code)


@app.command("eval")
def eval_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run folder to evaluate (or use --images).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="last, best, or a checkpoint path.")] = "last",
    metrics: Annotated[str, typer.Option(help="Comma-separated: fid, is, kid.")] = "fid,is,kid",
    num_samples: Annotated[
        int | None, typer.Option(min=2, help="Generated samples (default: eval.num_samples).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="train, test, or a folder/.npz of real images (default: eval.reference)."
        ),
    ] = None,
    reference_samples: Annotated[
        int | None,
        typer.Option(min=2, help="Real images in the reference (default: eval.reference_samples)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Sampling and feature batch size.")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Score this folder of samples instead of a run.", rich_help_panel="Image folders"
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="With --images and --reference train|test: the recipe whose data is the reference.",
            rich_help_panel="Image folders",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
    inception_weights: InceptionOption = None,
    device: DeviceOption = "auto",
) -> None:
    """FID, IS and KID (torch-fidelity) of a run's EMA generator, or of a folder of images."""
    from sagan_cli.evaluate.service import evaluate_folder, open_run_evaluation, parse_metrics

    registry = _registry()
    chosen_metrics = parse_metrics(metrics)
    if (run_dir is None) == (images is None):
        raise SaganError("Give a run folder to evaluate, or --images DIR, but not both.")
    with (
        err_console.status("evaluating", spinner="dots")
        if err_console.is_terminal
        else nullcontext()
    ):
        if images is not None:
            record = evaluate_folder(
                images,
                chosen_metrics,
                reference,
                recipe,
                reference_samples or 10_000,
                batch_size or 64,
                inception_weights,
                device,
                registry,
            )
        else:
            assert run_dir is not None
            job = open_run_evaluation(
                run_dir,
                checkpoint,
                chosen_metrics,
                num_samples,
                reference,
                reference_samples,
                batch_size,
                inception_weights,
                device,
                registry,
            )
            record = job.start()
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    table = Table("metric", "value")
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std"):
        if record.get(key) is not None:
            table.add_row(key, f"{record[key]:.4f}")
    console.print(table)
    ref = record.get("reference") or {}
    console.print(
        f"{record['num_samples']} samples vs {ref.get('size', '-')} reference images "
        f"({ref.get('source', '-')} {ref.get('split', '')}); {record['feature_extractor']['extractor']} "
        f"weights {record['feature_extractor']['sha256'][:12]}; torch-fidelity {record['torch_fidelity']}"
    )
    if run_dir is not None:
        console.print(f"recorded in {job.run.eval_path} and {job.run.metrics_path}")


def _summary_table(header: list[str], rows: list[list[str]], title: str) -> Table:
    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    return table


@app.command("ablate")
def ablate_command(
    recipe: Annotated[
        str, typer.Argument(help="Base recipe (default: the shipped sagan_full).")
    ] = "sagan_full",
    vary: Annotated[
        list[str] | None,
        typer.Option(
            help="AXIS or AXIS=v1,v2 (values parsed as TOML, e.g. attention_layer=[],[16]). Repeat for a "
            "cartesian product. Without values: the recipe's [ablate.axes], else built-in candidates.",
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
    jobs: Annotated[
        int, typer.Option(min=1, help="Runs at once (one per GPU, or processes on CPU).")
    ] = 1,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also re-run failed and diverged runs.")
    ] = False,
    results: Annotated[
        Path, typer.Option(help="Results root folder.", rich_help_panel="Output")
    ] = Path("results"),
    device: DeviceOption = "auto",
    inception_weights: InceptionOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train and evaluate a grid of recipe variants x seeds; write summary.csv/md and plots.

    Re-running the same command skips finished runs and resumes interrupted ones.
    Exit code: the number of runs that failed or diverged (0: all done).
    """
    from sagan_cli.ablate.grid import format_value
    from sagan_cli.ablate.runner import create_runs, prepare_experiment, run_grid
    from sagan_cli.ablate.service import plan_ablation, write_summary
    from sagan_cli.ablate.summary import display_rows
    from sagan_cli.results import RunDir

    registry = _registry()
    plan = plan_ablation(
        recipe,
        set_ or [],
        vary or [],
        seeds,
        name,
        results,
        device,
        jobs,
        inception_weights,
        registry,
        dry_run,
    )
    if dry_run:
        table = Table(
            "#", *(a.label for a in plan.axes), "seed", "run id", "status", title=str(plan.folder)
        )
        for number, point in enumerate(plan.points, 1):
            existing = (
                RunDir(plan.folder / "runs" / point.run_id).read_status().get("status", "new")
            )
            table.add_row(
                str(number),
                *(escape(format_value(point.settings[a.label])) for a in plan.axes),
                str(point.seed),
                point.run_id,
                existing,
            )
        console.print(table)
        console.print(
            f"{len(plan.points)} runs ({len({p.index for p in plan.points})} grid points); nothing was run."
        )
        return
    prepare_experiment(plan.folder, plan.base, plan.axes)
    runs = create_runs(plan.folder, plan.points)
    with progress_bar() as progress:
        grid_task = progress.add_task("grid", total=len(runs), info="")
        tasks: dict[Path, Any] = {}

        def observer_for(point: Any, run: Any) -> TrainProgress:
            # Off a terminal, one line per finished run says enough for a whole grid.
            return TrainProgress(
                quiet=quiet or progress.disable,
                progress=progress,
                label=f"#{point.index + 1} seed {point.seed}",
            )

        def poll(running: list[Any]) -> None:
            for run in running:
                status = run.read_status()
                if run.path not in tasks:
                    tasks[run.path] = progress.add_task(
                        run.id, total=status.get("steps") or 1, info=""
                    )
                progress.update(tasks[run.path], completed=status.get("step", 0))

        def on_outcome(outcome: Any) -> None:
            progress.advance(grid_task)
            mark = {"done": "[green]✓[/]", "interrupted": "[yellow]…[/]"}.get(
                outcome.status, "[red]✗[/]"
            )
            note = " (already there)" if outcome.skipped else ""
            detail = (
                f": {outcome.message}"
                if outcome.status not in ("done",) and outcome.message
                else ""
            )
            if not quiet or outcome.status not in ("done",):
                progress.console.print(
                    f"{mark} #{outcome.point.index + 1} {escape(outcome.point.describe())} seed "
                    f"{outcome.point.seed}: {outcome.status}{note}{escape(detail)}"
                )

        outcomes = run_grid(
            plan.points,
            runs,
            plan.device,
            registry,
            plan.weights,
            jobs,
            retry_failed,
            observer_for,
            on_outcome,
            poll,
        )
    report, written = write_summary(plan.folder)
    header, rows = display_rows(report.table, report.keys)
    console.print(_summary_table(header, rows, title=f"{plan.name} ({len(runs)} runs)"))
    console.print("wrote " + ", ".join(str(p) for p in written))
    if any(o.status == "interrupted" for o in outcomes):
        err_console.print("interrupted: re-run the same command to resume.")
        raise typer.Exit(130)
    failed = sum(o.status in ("failed", "diverged") for o in outcomes)
    if failed:
        err_console.print(
            f"{failed} run(s) failed or diverged (see the table); --retry-failed re-runs them."
        )
    raise typer.Exit(min(failed, 100))


@app.command("report")
def report_command(
    experiments: Annotated[
        list[str] | None,
        typer.Argument(help="Experiment names (under --results) or folders; default: all."),
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table, md, csv or json.")] = "table",
    by: Annotated[
        str | None, typer.Option(help="Group by this axis only (others are pooled).")
    ] = None,
    results: Annotated[Path, typer.Option(help="Results root folder.")] = Path("results"),
) -> None:
    """Rebuild ablation tables from run folders alone; several experiments are merged."""
    from sagan_cli.ablate.service import build_report, experiment_folders
    from sagan_cli.ablate.summary import display_rows

    if format_ not in ("table", "md", "csv", "json"):
        raise SaganError(f"--format '{format_}': choose table, md, csv or json.")
    report = build_report(experiment_folders(experiments or [], results), by)
    if format_ == "table":
        header, rows = display_rows(report.table, report.keys)
        console.print(_summary_table(header, rows, title=report.title))
    else:
        sys.stdout.write({"md": report.markdown, "csv": report.csv, "json": report.json}[format_]())


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sagan")
