"""The ``sagan`` command line: parse, call a service, render with rich.

Errors the user can fix (``SaganError``) become one paragraph on stderr and exit
code 2; ``SAGAN_DEBUG=1`` shows the traceback instead. Importing this module
loads neither torch nor pandas: commands import the services they run.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup, TyperOption

from sagan_cli import __version__
from sagan_cli.console import TrainProgress, console, err_console, progress_bar
from sagan_cli.errors import DataMissing, SaganError
from sagan_cli.recipe import EvalConfig, split_list

if TYPE_CHECKING:
    from sagan_cli.plugins import Registry


def debugging() -> bool:
    """``SAGAN_DEBUG`` is on unless unset, empty, 0, false, no or off."""
    return os.environ.get("SAGAN_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _flags_without_type() -> None:
    """typer 0.29 prints ``<bool>`` after every flag in --help; a flag takes no value."""
    show_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else show_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


class _ErrorHandlingGroup(TyperGroup):
    """Every failure below becomes one paragraph and a documented exit code, never a traceback
    (``SAGAN_DEBUG=1`` shows it): ``SaganError`` its own code, Ctrl-C 130, a full disk or an
    unwritable file 2, anything else 1 with the traceback saved to a file."""

    def invoke(self, ctx: Any) -> Any:
        scans = sys.modules.get("sagan_cli.datasets.files")  # loaded by an earlier command
        if scans is not None:
            scans.forget_scans()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except KeyboardInterrupt:
            if debugging():
                raise
            err_console.print(
                "[bold yellow]Interrupted[/] (Ctrl-C). Whatever was already saved is kept; "
                "re-run the same command to continue."
            )
            raise typer.Exit(130) from None
        except Exception as exc:
            if debugging():
                raise
            error = _explained(exc)
            err_console.print(f"[bold red]Error:[/] {escape(str(error))}")
            raise typer.Exit(error.exit_code) from None


def _explained(exc: Exception) -> SaganError:
    """A paragraph for an exception that reached the command line."""
    import errno
    import traceback

    from sagan_cli.errors import RunFailed, describe_exception

    if isinstance(exc, SaganError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    ):
        where = f" {exc.filename}" if exc.filename else ""
        return SaganError(
            f"Could not write{where}: {exc.strerror}. Free space, raise the file-size limit or "
            f"choose a writable folder (--results, --out), then re-run the same command; "
            f"files written completely before are kept."
        )
    if isinstance(exc, MemoryError):
        return SaganError(
            "Ran out of memory. Ask for less at once (a smaller --num, batch size or model "
            "width), or free memory, then re-run the same command."
        )
    log = _crash_log(traceback.format_exc())
    return RunFailed(
        f"sagan-cli {__version__} hit an internal error: {describe_exception(exc)}. This is a bug, "
        f"not a problem in your input; the traceback is in {log} (please include it when "
        f"reporting it), and SAGAN_DEBUG=1 shows it here."
    )


def _crash_log(text: str) -> str:
    """Keep a traceback in the cache folder; its path (or a note) for the error paragraph."""
    import time

    from sagan_cli.fileio import cache_dir

    folder = cache_dir()
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return "nowhere (the cache folder is not writable): run with SAGAN_DEBUG=1 to see it"
    return str(path)


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
data_app = typer.Typer(help="Prepare data sets once for fast training.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
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


def _registry() -> Registry:
    """The plugin registry; what failed to load is reported as a warning, the rest still work."""
    from sagan_cli.plugins import get_registry

    registry = get_registry()
    for failure in registry.failures:
        err_console.print(f"[yellow]Warning:[/] {escape(failure.describe())}")
    for warning in registry.warnings:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}")
    return registry


def _fail_on_plugin_failures(registry: Registry) -> None:
    if registry.failures:
        names = ", ".join(f.source for f in registry.failures)
        raise SaganError(
            f"{len(registry.failures)} plugin module(s) failed to load: {names} (details above). "
            f"Fix or uninstall them, or block them with SAGAN_DISABLED_PLUGINS={names}."
        )


plugins_app = typer.Typer(
    help="List the registered plugins, or check plugins against the contract.",
    invoke_without_command=True,
)
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback()
def plugins_command(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: attention, normalization, loss, data, launcher."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every registered plugin with its kind, provider package and version."""
    if ctx.invoked_subcommand is not None:
        return
    from sagan_cli.api import KINDS
    from sagan_cli.plugins import describe

    if kind is not None and kind not in KINDS:
        raise SaganError(f"--kind '{kind}' is not a plugin kind; kinds are {', '.join(KINDS)}.")
    registry = _registry()
    for note in registry.packages_without_entry_point:
        err_console.print(f"[yellow]Warning:[/] {escape(note)}")
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


@plugins_app.command("check")
def plugins_check(
    names: Annotated[list[str], typer.Argument(help="Plugin names (any kind).")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="A plugin parameter, KEY=VALUE (value parsed as TOML). Repeatable."
        ),
    ] = None,
    at: Annotated[
        list[str] | None,
        typer.Option(
            "--at",
            help="Only these places: g16 (G at 16x16, every image size), d8@64 (D at 8x8 of "
            "64px images). Repeatable or comma-separated; default: every shipped place.",
        ),
    ] = None,
    device: DeviceOption = "cpu",
) -> None:
    """Build each plugin at every place the shipped recipes use, in G and D, and exercise it
    as training would (same sizes, tensor layout and precision on --device).

    Reports per place what failed: exceptions, output shape, channels, non-finite values,
    missing second derivatives, identity at init when claimed; places the plugin declines
    are "not supported". Exit 2 if anything failed. In a plugin's own tests, call
    sagan_cli.testing.check_plugin instead: the same checks, in-process.
    """
    from sagan_cli.device import select_device
    from sagan_cli.errors import did_you_mean
    from sagan_cli.plugin_check import (
        check_plugin,
        explain_outcomes,
        select_placements,
        shipped_placements,
    )
    from sagan_cli.recipe import parse_value

    registry = _registry()
    params: dict[str, Any] = {}
    for text in param or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise SaganError(f"--param '{text}' is not KEY=VALUE, e.g. --param heads=2.")
        params[key.strip()] = parse_value(value, f"--param '{text}'")
    everything = {e.name for e in registry.all()}
    unknown = [n for n in names if n not in everything]
    if unknown:
        raise SaganError(
            f"'{unknown[0]}' is not a registered plugin.{did_you_mean(unknown[0], everything)} "
            f"`sagan plugins` lists them."
        )
    placements = select_placements(
        shipped_placements(registry), [s for text in at or [] for s in split_list(text)]
    )
    chosen = select_device(device)
    rows = []
    with progress_bar() as progress:
        for name in names:
            for entry in registry.find(name):
                task = progress.add_task(f"{entry.kind} {name}", total=None, info="")

                def report(row: Any, task: Any = task) -> None:
                    progress.advance(task)
                    if progress.disable:  # off a terminal: a plain line per place
                        err_console.print(
                            escape(f"{row.kind} {row.name} at {row.place}: {row.outcome}")
                        )

                rows.extend(check_plugin(entry, registry, placements, params, chosen, report))
                progress.remove_task(task)
    table = Table("kind", "plugin", "place", "result", "seconds")
    for row in rows:
        mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(
            row.outcome, f"[yellow]{row.outcome}[/]"
        )
        table.add_row(row.kind, row.name, row.place, mark, f"{row.seconds:.2f}")
    console.print(table)
    for row in rows:
        if row.outcome != "ok":
            err_console.print(
                f"{escape(row.name)} at {escape(row.place)} ({row.outcome}): {escape(row.detail)}"
            )
    for line in explain_outcomes(rows):
        err_console.print(escape(line))
    failed = [r for r in rows if r.outcome == "failed"]
    if failed:
        first = failed[0]
        raise SaganError(
            f"{len(failed)} of {len(rows)} checks failed; first, {first.kind} plugin "
            f"'{first.name}' ({first.provider}) at {first.place}: {first.detail.rstrip('.')}. "
            f"This is a problem in the plugin: fix it and check again (per-place details above)."
        )
    counts = ", ".join(
        f"{sum(r.outcome == outcome for r in rows)} {outcome}"
        for outcome in ("ok", "not supported", "not checked")
        if any(r.outcome == outcome for r in rows) or outcome == "ok"
    )
    console.print(f"{len(rows)} checks: {counts}.")


@data_app.command("prepare")
def data_prepare_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A recipe (its data table), a folder of images, or an .npz file.",
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Folder for the prepared data set (new or empty).")],
    set_: SetOption = None,
    resolution: Annotated[
        int | None, typer.Option(help="Image size (default: the recipe's data.resolution).")
    ] = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="A folder's sub-folders are its classes.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Decoding processes (default: every core).")
    ] = None,
    shard_images: Annotated[int, typer.Option(min=1, help="Images per shard file.")] = 4096,
) -> None:
    """Decode a data source once (resized and cropped as training does) into memory-mappable
    uint8 shards; train on them with data.source = "prepared", data.path = OUT.

    Parallel, resumable after a kill (finished shards are kept), complete only when
    prepared.json appears; a folder holding another data set is refused.
    """
    import time

    from sagan_cli.prepare import prepare_command

    registry = _registry()
    with progress_bar() as progress:
        tasks: dict[str, Any] = {}
        last_line = [0.0]

        def report(split: str, done: int, total: int) -> None:
            if split not in tasks:
                tasks[split] = progress.add_task(f"prepare {split}", total=total, info="")
            progress.update(tasks[split], completed=done)
            now = time.monotonic()
            if progress.disable and (now - last_line[0] >= 10 or done == total):
                last_line[0] = now
                err_console.print(f"prepare {split}: {done:,}/{total:,} images")

        result = prepare_command(
            source,
            out,
            set_ or [],
            resolution,
            labels,
            shard_images,
            workers,
            registry,
            report,
        )
    manifest = result.manifest
    counts = ", ".join(f"{name} {split['count']:,}" for name, split in manifest["splits"].items())
    verb = "was already prepared" if result.already else "prepared"
    console.print(
        f"{escape(str(result.folder))} {verb}: {counts} images at {manifest['resolution']}px, "
        f"{manifest['num_classes'] or 'no'} classes. Train on it with --set data.source=prepared "
        f"--set data.path={escape(str(result.folder))}"
    )


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
    """Check recipes fully: keys, values, plugin names and parameters, ablation axes, data."""
    from sagan_cli.ablate.axes import build_axes
    from sagan_cli.components import build_data_source, check_data, placement_problem
    from sagan_cli.recipe import load_recipe

    registry = _registry()
    failed = absent = 0
    for ref in recipes:
        try:
            resolved = load_recipe(ref, set_ or [], registry=registry)
            if resolved.ablate.axes:
                build_axes([], resolved, registry)
            problem = placement_problem(resolved, registry)
            if problem is not None:
                raise problem
            check_data(build_data_source(resolved, registry), registry)
        except DataMissing as exc:  # the recipe is fine; its data is elsewhere or not yet here
            absent += 1
            console.print(
                f"[green]✓[/] {escape(ref)} [yellow](its data is not here yet: {escape(str(exc))})[/]"
            )
            continue
        except SaganError as exc:
            failed += 1
            err_console.print(f"[bold red]✗[/] {escape(ref)}: {escape(str(exc))}")
            continue
        console.print(f"[green]✓[/] {escape(ref)}")
    if failed:
        raise SaganError(f"{failed} of {len(recipes)} recipe(s) are invalid (reasons above).")
    if absent:
        console.print(
            f"{len(recipes)} recipe(s) valid; {absent} of them name data that is not on this "
            f"machine yet (what to fetch is said above)."
        )


@model_app.command("summary")
def model_summary(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or the name of a shipped recipe.")],
    set_: SetOption = None,
    num_classes: Annotated[
        int | None,
        typer.Option(min=1, help="Classes for a conditional model (default: ask the data source)."),
    ] = None,
) -> None:
    """Parameter counts of G and D, block by block, and where attention sits."""
    from sagan_cli.bench.train import classes_for_bench
    from sagan_cli.components import summarize_networks
    from sagan_cli.recipe import load_recipe

    registry = _registry()
    resolved = load_recipe(recipe, set_ or [], registry=registry)
    classes = classes_for_bench(resolved, registry, num_classes)
    summary = summarize_networks(resolved, classes, registry)
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
TensorBoardOption = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        help="Also write TensorBoard events into each run folder (logging.tensorboard = true).",
        rich_help_panel="Output",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=4096,
        envvar="SAGAN_THREADS",
        help="Torch CPU threads per process (default: $SAGAN_THREADS, else torch's: all cores). "
        "On a busy machine fewer threads are often much faster.",
        rich_help_panel="Execution",
    ),
]


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
]


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in split_list(text)]
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
        str | None,
        typer.Option(
            help="bf16 or fp32 (default: bf16 on CUDA, fp32 elsewhere; bf16 given here also "
            "runs on CPUs with native bf16)."
        ),
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
    from sagan_cli.bench.attention import attention_markdown, bench_attention
    from sagan_cli.bench.output import check_output_folder, write_results
    from sagan_cli.device import available_memory, effective_precision, select_device

    check_output_folder(out)
    registry = _registry()
    chosen = select_device(device)
    if precision not in (None, "bf16", "fp32"):
        raise SaganError(f"--precision '{precision}': choose bf16 or fp32.")
    precision = effective_precision(chosen, precision or "bf16", on_cpu=precision == "bf16")
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
    channels_last: Annotated[
        str,
        typer.Option(
            "--channels-last",
            help="auto (the layout training uses: the recipe's train.memory_format), off, on, "
            "or both (tensor layout).",
        ),
    ] = "auto",
    precision: Annotated[
        str, typer.Option(help="fp32, bf16, or both (bf16 autocast; on CPU needs native bf16).")
    ] = "fp32",
    steps: Annotated[int, typer.Option(min=1, help="Timed iterations (median reported).")] = 20,
    warmup: Annotated[
        int, typer.Option(min=1, help="Untimed iterations first (compilation happens here).")
    ] = 5,
    num_classes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Classes for conditional recipes (default: the data source's count; needed "
            "when its files are not here, e.g. 1000 for ImageNet).",
        ),
    ] = None,
    threads: ThreadsOption = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Images/s of the full training iteration (D, G, EMA) on synthetic data of the recipe's
    shape, its GFLOP and the fraction of this device's measured matmul rate it reaches."""
    import itertools
    from dataclasses import asdict

    import pandas as pd

    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.bench.train import bench_train_step, classes_for_bench
    from sagan_cli.device import default_memory_format, select_device
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    choices = {"off": [False], "on": [True], "both": [False, True]}
    if compile_ not in choices:
        raise SaganError(f"--compile '{compile_}': choose off, on or both.")
    layouts: dict[str, list[str | None]] = {
        "auto": [None],
        "off": ["contiguous"],
        "on": ["channels_last"],
    }
    layouts["both"] = layouts["off"] + layouts["on"]
    if channels_last not in layouts:
        raise SaganError(f"--channels-last '{channels_last}': choose auto, off, on or both.")
    precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"]}
    if precision not in precisions:
        raise SaganError(f"--precision '{precision}': choose fp32, bf16 or both.")
    _set_threads(threads)
    registry = _registry()
    chosen = select_device(device)
    loaded = [load_recipe(r, set_ or [], registry=registry) for r in recipes]
    rates: dict[str, float] = {}
    rows = []
    for recipe in loaded:
        classes = classes_for_bench(recipe, registry, num_classes)
        trained = recipe.train.memory_format
        for compiled, layout, wanted in itertools.product(
            choices[compile_], layouts[channels_last], precisions[precision]
        ):
            result = bench_train_step(
                recipe,
                registry,
                chosen,
                compiled,
                classes,
                steps,
                warmup,
                memory_format=layout
                or (default_memory_format(chosen) if trained == "auto" else trained),
                precision=wanted,
                rates=rates,
            )
            console.print(
                f"{recipe.name} batch {result.batch} {result.precision} compile={compiled} "
                f"{result.memory_format}: {result.img_per_s:.1f} img/s, {result.gflop_per_step:.1f} "
                f"GFLOP/step, {100 * result.fraction_of_matmul:.0f}% of the measured "
                f"{result.matmul_tflops:.2f} TFLOP/s matmul rate"
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


@bench_app.command("data")
def bench_data_command(
    recipe: Annotated[str, typer.Argument(help="Recipe whose data and batch are measured.")],
    set_: SetOption = None,
    workers: Annotated[
        str, typer.Option(help="Decode worker counts to time, comma-separated (0: in-process).")
    ] = "0,1,2",
    batches: Annotated[int, typer.Option(min=1, help="Timed batches per measurement.")] = 20,
    device_rate: Annotated[
        float | None,
        typer.Option(
            help="Images/s the training device consumes (e.g. 1280 for batch 256 at 5 it/s); "
            "default: the recipe's training iteration measured on --device."
        ),
    ] = None,
    prepare_limit: Annotated[
        int,
        typer.Option(
            help="Prepare the data into a temporary folder when it has at most this many images."
        ),
    ] = 25_000,
    device: DeviceOption = "auto",
    num_classes: Annotated[
        int | None, typer.Option(min=1, help="Classes for conditional recipes.")
    ] = None,
    threads: ThreadsOption = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Images/s the data path delivers (decoding with 0..N workers, decoding alone, preparing,
    prepared shards) beside the images/s a training step consumes: does the loader keep up?"""
    from dataclasses import asdict

    import pandas as pd

    from sagan_cli.bench.data import bench_data, verdict
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.bench.train import bench_train_step, classes_for_bench
    from sagan_cli.device import default_memory_format, select_device
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    _set_threads(threads)
    registry = _registry()
    chosen = select_device(device)
    loaded = load_recipe(recipe, set_ or [], registry=registry)
    try:
        counts = sorted({int(part) for part in split_list(workers)})
    except ValueError:
        counts = []
    if not counts or counts[0] < 0:
        raise SaganError(f"--workers '{workers}' must list worker counts, e.g. 0,1,2.")

    def train_step_s() -> float:
        result = bench_train_step(
            loaded,
            registry,
            chosen,
            False,
            classes_for_bench(loaded, registry, num_classes),
            steps=5,
            warmup=2,
            memory_format=default_memory_format(chosen),
        )
        return result.ms_per_step / 1000

    def report(row: Any) -> None:
        where = f"on {chosen.type}" if row.path == "train" else f"{row.workers} worker(s)"
        console.print(
            f"{row.path:>8} {where}: {row.img_per_s:,.0f} images/s "
            f"({row.images:,} images in {row.seconds:.2f} s)"
        )

    measure_training = train_step_s if device_rate is None else None
    rows = bench_data(loaded, registry, counts, batches, prepare_limit, measure_training, report)
    lines = verdict(rows, device_rate)
    for line in lines:
        console.print(line)
    table = [asdict(r) for r in rows]
    paths = write_results(
        out,
        "data",
        chosen.type,
        loaded.data.source,
        pd.DataFrame(table),
        rows_markdown(f"Data path of {loaded.name} (train on {chosen.type})", table)
        + "\n"
        + "\n".join(lines)
        + "\n",
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
    feature_extractor: Annotated[
        str,
        typer.Option(
            "--feature-extractor", help="Extractors to time, comma-separated (each one pass)."
        ),
    ] = "inception-v3-compat",
    inception_weights: InceptionOption = None,
    dinov2_weights: Annotated[
        Path | None, typer.Option(help="Local DINOv2 weights (see sagan eval --help).")
    ] = None,
    device: DeviceOption = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """Seconds for FID: reference features (cold), generation, generated features + FID (warm),
    and images/s of each feature extractor."""
    import tempfile

    import pandas as pd

    from sagan_cli.bench.fid import bench_fid
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.device import select_device
    from sagan_cli.evaluate.service import extractor_weights, parse_extractors
    from sagan_cli.evaluate.weights import EXTRACTOR, resolve_inception_weights
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    registry = _registry()
    resolved = load_recipe(recipe, set_ or [], registry=registry)
    chosen = select_device(device)
    names = parse_extractors(feature_extractor, [])
    inception = resolve_inception_weights(inception_weights) if EXTRACTOR in names else None
    weights = extractor_weights(names, inception, dinov2_weights)
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


@bench_app.command("known-answer")
def bench_known_answer_command(
    recipe: Annotated[
        str, typer.Argument(help="The benchmark recipe (rows none/residual/sagan/oracle).")
    ] = "attention_known_answer",
    seeds: Annotated[int, typer.Option(min=2, help="Seeds per row of the grid.")] = 5,
    null_seeds: Annotated[
        int, typer.Option(min=4, help="Runs of the baseline for the A/A experiments.")
    ] = 20,
    null_group: Annotated[
        int, typer.Option(min=2, help="Runs per side of one A/A experiment.")
    ] = 5,
    null_experiments: Annotated[
        int, typer.Option(min=1, help="A/A experiments drawn from the pool.")
    ] = 40,
    jobs: Annotated[str, typer.Option(help="Runs at once (as sagan ablate --jobs).")] = "auto",
    alpha: AlphaOption = 0.05,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A few steps on tiny data: checks the machinery, not the effect."
        ),
    ] = False,
    results: Annotated[Path, typer.Option(help="Results root folder.")] = Path("results"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/bench"),
) -> None:
    """The known-answer benchmark: the grid's verdicts (the oracle must come out better than no
    attention, the residual block not) and the A/A false-positive rate of the same statistics.

    Exit code 0 when the known answer was reproduced (always with --quick), 1 when not.
    """
    from datetime import date

    import torch

    from sagan_cli.bench.known_answer import (
        ROWS,
        machine,
        null_frame,
        run_known_answer,
    )
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results

    check_output_folder(out)
    _registry()  # an unknown recipe or a missing plugin fails here, before any run starts
    if not 0 < alpha < 1:
        raise SaganError(f"--alpha {alpha}: a significance level lies strictly between 0 and 1.")
    result = run_known_answer(
        recipe, seeds, null_seeds, null_group, null_experiments, jobs, results, alpha, quick
    )
    _print_report(result.grid, title=f"{result.grid.name}: {METRIC_TITLE}")
    null_rows = result.null.rows()
    table = Table("A/A test", "experiments", "runs per side", "false positives", "rate [95% CI]")
    for row in null_rows:
        table.add_row(
            str(row["test"]),
            str(row["experiments"]),
            str(row["runs_per_side"]),
            str(row["false_positives"]),
            f"{row['rate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]",
        )
    console.print(table)
    console.print(
        f"A/A pool: {result.null.pool} runs of the baseline; experiments share runs (at most "
        f"{result.null.disjoint} without sharing), so the intervals are optimistic."
    )
    answers = [f"{variant}: {result.verdict_of(variant)}" for variant in ROWS]
    reproduced = "yes" if result.answered else "no"
    console.print(
        f"known answer (oracle better, residual not): {reproduced}; " + ", ".join(answers)
    )
    seconds = {phase.name: phase.seconds for phase in result.phases}
    text = "\n".join(
        [
            f"# Known-answer benchmark{' (quick)' if quick else ''}, {date.today()}",
            "",
            f"Machine: {machine()}; torch {torch.__version__}; jobs {jobs}.",
            "",
            *(f"- {name}: {value / 60:.1f} min" for name, value in seconds.items()),
            "",
            result.grid.markdown(),
            "",
            rows_markdown("A/A false positives", null_rows),
            f"Known answer reproduced: {reproduced} ({', '.join(answers)}).",
            "",
        ]
    )
    paths = write_results(out, "known-answer", "cpu", "fp32", null_frame(result), text)
    console.print(f"wrote {paths[0]} and {paths[1]}")
    if not quick and not result.answered:
        err_console.print(
            "The known answer was not reproduced: the oracle must come out better than no "
            "attention and the residual block not. Either the budget is too small for this "
            "machine or the score or statistics are broken; see the table above."
        )
        raise typer.Exit(1)


METRIC_TITLE = "structure (lower is better)"


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
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes for this one run (one GPU each on CUDA): data-parallel through "
            "torchrun. train.batch_size stays the global batch.",
            rich_help_panel="Execution",
        ),
    ] = 1,
    threads: ThreadsOption = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Also continue a run that diverged (from its last checkpoint)."
        ),
    ] = False,
    tensorboard: TensorBoardOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a SAGAN from a recipe into results/<experiment>/runs/<run_id>/ (resumes if it exists).

    Exit codes: 0 done, 1 a crash (error.log in the run folder), 2 bad input, 3 diverged,
    128+N stopped by signal N after saving a checkpoint (130 Ctrl-C, 143 SIGTERM, 138/140
    SIGUSR1/SIGUSR2: a scheduler's time-limit warning).
    """
    from sagan_cli.train.distributed import join_process_group, launched_by_torchrun
    from sagan_cli.train.service import PARENT_ENV, open_training, train_with_torchrun
    from sagan_cli.train.signals import hold_warning_signals

    hold_warning_signals()

    _set_threads(threads)
    registry = _registry()
    world = join_process_group(device) if launched_by_torchrun() else None
    job = open_training(
        recipe_ref=recipe,
        overrides=set_ or [],
        resume=resume,
        checkpoint=checkpoint,
        results_root=results,
        experiment=name,
        device=device,
        inception_weights=inception_weights,
        registry=registry,
        retry=retry_failed,
        world=world,
        nproc=nproc,
        tensorboard=tensorboard,
    )
    if nproc > 1 and world is None:
        result = train_with_torchrun(job, nproc, sys.argv[1:], quiet)
        (console if result.status == "done" else err_console).print(
            escape(f"{result.describe()}\nrun folder: {result.run.path}")
        )
        raise typer.Exit(result.exit_code)
    quiet = quiet or not job.world.is_main
    observer = TrainProgress(quiet=quiet)
    try:
        with progress_bar() if not quiet else nullcontext() as progress:
            observer.progress = progress
            result = job.start(observer)
    finally:
        if job.world.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if job.world.is_main and not os.environ.get(PARENT_ENV):
        summary = f"{result.describe()}\nrun folder: {result.run.path}"
        (console if result.status == "done" else err_console).print(escape(summary))
    raise typer.Exit(result.exit_code)


@app.command("eval")
def eval_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run folder to evaluate (or use --images).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="last, best, or a checkpoint path.")] = "last",
    metrics: Annotated[
        str,
        typer.Option(
            help="Comma-separated: fid, is, kid, prc (precision/recall), dc (density/coverage)."
        ),
    ] = ",".join(EvalConfig.model_fields["metrics"].default),
    feature_extractor: Annotated[
        str | None,
        typer.Option(
            "--feature-extractor",
            help="Feature spaces, comma-separated: inception-v3-compat, dinov2-vit-s-14, "
            "dinov2-vit-b-14, dinov2-vit-l-14, dinov2-vit-g-14 (default: eval.feature_extractor).",
        ),
    ] = None,
    num_samples: Annotated[
        int | None, typer.Option(min=2, help="Generated samples (default: eval.num_samples).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="train, test, a folder/.npz of real images, or a statistics .npz (mu, sigma) "
            "(default: eval.reference)."
        ),
    ] = None,
    reference_samples: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"Real images in the reference, 0 for the whole split (default: "
            f"eval.reference_samples, {EvalConfig.model_fields['reference_samples'].default}).",
        ),
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
            help="With --images or --export-stats and --reference train|test: the recipe whose "
            "data is the reference.",
            rich_help_panel="Image folders",
        ),
    ] = None,
    export_stats: Annotated[
        Path | None,
        typer.Option(
            help="Write the reference's statistics (mu, sigma, features) to this .npz and stop: "
            "others can compare against the same reference.",
            rich_help_panel="Reference statistics",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
    inception_weights: InceptionOption = None,
    dinov2_weights: Annotated[
        Path | None,
        typer.Option(
            help="Local DINOv2 weights (the official *_pretrain.pth); else $SAGAN_DINOV2_WEIGHTS, "
            "else torch hub's cache or a download.",
            rich_help_panel="Evaluation",
        ),
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """FID, IS, KID, precision/recall and density/coverage of a run's EMA generator, or of a
    folder of images, in Inception's or DINOv2's feature space (FD in DINOv2 space: fd_dinov2)."""
    from sagan_cli.evaluate.service import (
        evaluate_folder,
        export_reference_stats,
        open_run_evaluation,
        parse_extractors,
        parse_metrics,
    )

    registry = _registry()
    chosen_metrics = parse_metrics(metrics)
    parse_extractors(feature_extractor, [])  # a typo is named before anything else
    # each phase: the spinner's text on a terminal, a plain line off one (CI, cluster logs)
    spinner = err_console.status("evaluating", spinner="dots") if err_console.is_terminal else None

    def report(text: str) -> None:
        if spinner is not None:
            spinner.update(escape(text))
        else:
            err_console.print(escape(text))

    if export_stats is not None:
        if run_dir is not None or images is not None or recipe is None or reference is None:
            raise SaganError(
                "--export-stats writes a reference's statistics: give --recipe RECIPE and "
                "--reference (train, test, a folder or an .npz of images), without a run or --images."
            )
        with spinner or nullcontext():
            written = export_reference_stats(
                out=export_stats,
                reference=reference,
                recipe_ref=recipe,
                reference_samples=reference_samples,
                batch_size=batch_size,
                inception_weights=inception_weights,
                device=device,
                registry=registry,
                extractors=feature_extractor,
                dinov2_weights=dinov2_weights,
                report=report,
            )
        console.print(f"wrote {written}")
        return
    if (run_dir is None) == (images is None):
        raise SaganError("Give a run folder to evaluate, or --images DIR, but not both.")
    with spinner or nullcontext():
        if images is not None:
            record = evaluate_folder(
                images_dir=images,
                metrics=chosen_metrics,
                reference=reference,
                recipe_ref=recipe,
                reference_samples=reference_samples,
                batch_size=batch_size,
                inception_weights=inception_weights,
                device=device,
                registry=registry,
                notify=lambda text: err_console.print(f"[yellow]Warning:[/] {escape(text)}"),
                report=report,
                extractors=feature_extractor,
                dinov2_weights=dinov2_weights,
            )
        else:
            assert run_dir is not None
            job = open_run_evaluation(
                run_path=run_dir,
                checkpoint=checkpoint,
                metrics=chosen_metrics,
                num_samples=num_samples,
                reference=reference,
                reference_samples=reference_samples,
                batch_size=batch_size,
                inception_weights=inception_weights,
                device=device,
                registry=registry,
                extractors=feature_extractor,
                dinov2_weights=dinov2_weights,
            )
            record = job.start(report)
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    table = Table("metric", "value")
    for key, value in record.items():
        if isinstance(value, float) and not key.startswith("seconds"):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    protocol = record["protocol"]
    console.print(
        f"protocol {protocol['id']}: {protocol['label']}; weights "
        + ", ".join(f"{w['extractor']} {w['sha256'][:12]}" for w in record["feature_extractors"])
        + f"; torch-fidelity {record['torch_fidelity']}"
    )
    if run_dir is not None:
        console.print(f"recorded in {job.run.eval_path} and {job.run.metrics_path}")


CheckpointOption = Annotated[
    str, typer.Option(help="last, best, or a checkpoint path (or a file in checkpoints/).")
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="Replace what an earlier export wrote at --out (other files are kept)."
    ),
]


@app.command("attention")
def attention_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    checkpoint: CheckpointOption = "last",
    net: Annotated[str, typer.Option(help="g (generated images) or d (real images).")] = "g",
    layer: Annotated[
        int | None, typer.Option(help="Only this attention layer (feature size); default: all.")
    ] = None,
    queries: Annotated[
        str,
        typer.Option(
            help="auto (points spread over each image's foreground) or x,y;x,y in pixels."
        ),
    ] = "auto",
    num_images: Annotated[int, typer.Option(help="Images, one row each.")] = 4,
    seed: Annotated[int, typer.Option(help="Latents (G) or the choice of real images (D).")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (default: RUN_DIR/attention/<net>-<checkpoint>.png|npz)."),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="png (the figure) or npz (the raw maps).")
    ] = "png",
    force: ForceOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Where attention looks (the paper's Figure 5): per query point, its map over the image.

    For G on generated images of the EMA generator, for D on real images of the run's data.
    Variants without query-key maps (residual, none, linear attention) have nothing to show.
    """
    from sagan_cli.inspect.service import attention_maps

    registry = _registry()
    path, stats = attention_maps(
        run_path=run_dir,
        checkpoint=checkpoint,
        net=net,
        layer=layer,
        queries=queries,
        num_images=num_images,
        seed=seed,
        out=out,
        output_format=output_format,
        force=force,
        device=device,
        registry=registry,
    )
    table = Table("layer", "mean distance (image widths)", "entropy", "partner share")
    for name, values in stats.items():
        partner = values.get("partner")
        table.add_row(
            name,
            f"{values['distance']:.3f}",
            f"{values['entropy']:.3f}",
            "-" if partner is None else f"{partner:.3f}",
        )
    console.print(table)
    console.print(f"wrote {path}")


@app.command("sample")
def sample_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    num: Annotated[int, typer.Option(help="Samples to write.")] = 1000,
    out: Annotated[
        Path, typer.Option(help="A folder (PNG files) or a file.npz (uint8 N x H x W x 3).")
    ] = Path("samples"),
    checkpoint: CheckpointOption = "last",
    class_: Annotated[
        int | None,
        typer.Option("--class", help="Only this class (conditional runs); default: balanced."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Latent seed: the same seed gives the same images.")
    ] = 0,
    truncation: Annotated[
        float | None, typer.Option(help="Truncation trick: redraw latents beyond this |z|.")
    ] = None,
    force: ForceOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Export samples of a run's EMA generator for any external metric (clean-fid, ...)."""
    from sagan_cli.inspect.service import export_samples

    registry = _registry()
    path = export_samples(
        run_path=run_dir,
        checkpoint=checkpoint,
        num=num,
        out=out,
        label=class_,
        seed=seed,
        truncation=truncation,
        force=force,
        device=device,
        registry=registry,
    )
    console.print(f"wrote {num} samples to {path}")


AlphaOption = Annotated[
    float, typer.Option(help="Significance level of the verdicts.", rich_help_panel="Statistics")
]
CiOption = Annotated[
    str,
    typer.Option(
        "--ci", help="welch (t interval) or bootstrap (percentile).", rich_help_panel="Statistics"
    ),
]
PairedOption = Annotated[
    bool | None,
    typer.Option(
        "--paired/--unpaired",
        help="Pair runs by seed (default: paired when both rows ran the same seeds).",
        rich_help_panel="Statistics",
    ),
]
BaselineOption = Annotated[
    str | None,
    typer.Option(
        help="The row deltas are taken against, AXIS=VALUE (default: the none/[] row, else the first).",
        rich_help_panel="Statistics",
    ),
]


def _summary_table(header: list[str], rows: list[list[str]], title: str) -> Table:
    """A results table whose cells fold onto more lines instead of being cut (``timm_n…``)."""
    table = Table(title=title)
    for name in header:
        table.add_column(name, overflow="fold")
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
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also re-run failed and diverged runs.")
    ] = False,
    tensorboard: TensorBoardOption = False,
    results: Annotated[
        Path, typer.Option(help="Results root folder.", rich_help_panel="Output")
    ] = Path("results"),
    device: DeviceOption = "auto",
    inception_weights: InceptionOption = None,
    alpha: AlphaOption = 0.05,
    ci: CiOption = "welch",
    paired: PairedOption = None,
    baseline: BaselineOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
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
    to runs still queued on a cluster. Exit code: 0 when every run is done (or skipped as
    unsupported), else the number of runs that did not finish (failed, diverged,
    interrupted, lost or never started; at most 100); 130 when Ctrl-C stopped it.
    """
    from sagan_cli.ablate.axes import format_value
    from sagan_cli.ablate.runner import create_runs, prepare_experiment, run_grid
    from sagan_cli.ablate.service import plan_ablation, record_launcher, write_summary
    from sagan_cli.ablate.stats import StatsOptions
    from sagan_cli.results import run_dir_in
    from sagan_cli.train.signals import hold_warning_signals

    hold_warning_signals()
    options = StatsOptions(alpha=alpha, ci=ci, paired=paired, baseline=baseline)
    options.check()
    registry = _registry()
    plan = plan_ablation(
        recipe_ref=recipe,
        overrides=[*(set_ or []), *(["logging.tensorboard=true"] if tensorboard else [])],
        varies=vary or [],
        seeds=seeds,
        name=name,
        results_root=results,
        device=device,
        jobs=jobs,
        inception_weights=inception_weights,
        registry=registry,
        dry_run=dry_run,
        launcher=launcher,
        nproc=nproc,
        threads=threads,
        retry_failed=retry_failed,
        quiet=quiet,
        detach=detach,
    )
    if baseline is not None:  # checked against the grid before anything runs
        axis, _, value = baseline.partition("=")
        labels = {a.label: [format_value(v).replace(" ", "") for v in a.values] for a in plan.axes}
        if axis.strip() not in labels or value.strip().replace(" ", "") not in labels[axis.strip()]:
            raise SaganError(
                f"--baseline {baseline}: the grid has "
                + "; ".join(f"{k} = {', '.join(v)}" for k, v in labels.items())
                + ". Name one of those values."
            )
    if dry_run:
        table = Table(
            "#", *(a.label for a in plan.axes), "seed", "run id", "status", title=str(plan.folder)
        )
        for number, point in enumerate(plan.points, 1):
            existing_run = run_dir_in(plan.folder / "runs", point.recipe)
            existing = existing_run.read_status().get("status", "new")
            if point.index in plan.unsupported:
                existing = "skipped (placement not supported)"
            table.add_row(
                str(number),
                *(escape(format_value(point.settings[a.label])) for a in plan.axes),
                str(point.seed),
                existing_run.id,
                existing,
            )
        console.print(table)
        console.print(
            f"{len(plan.points)} runs ({len({p.index for p in plan.points})} grid points); nothing was run."
        )
        return
    assert plan.launcher is not None
    prepare_experiment(plan.folder, plan.base, plan.axes)
    runs = create_runs(plan.folder, plan.points, plan.unsupported)
    record_launcher(plan)
    with progress_bar() as progress:
        grid_task = progress.add_task("grid", total=len(runs), info="")
        tasks: dict[Path, Any] = {}

        def run_here(task: Any, point: Any) -> str:
            from sagan_cli.ablate.runner import execute_task

            observer = TrainProgress(
                quiet=quiet, progress=progress, label=f"#{point.index + 1} seed {point.seed}"
            )
            try:
                return execute_task(task, observer)
            finally:
                observer.finished()

        def poll(running: list[Any]) -> None:
            if progress.disable:
                return
            for run in running:
                status = run.read_status()
                if status.get("status") != "running":
                    continue
                if run.path not in tasks:
                    tasks[run.path] = progress.add_task(
                        run.id, total=status.get("steps") or 1, info=""
                    )
                progress.update(tasks[run.path], completed=status.get("step", 0))

        def on_outcome(outcome: Any) -> None:
            progress.advance(grid_task)
            if outcome.run.path in tasks:
                progress.remove_task(tasks.pop(outcome.run.path))
            mark = {
                "done": "[green]✓[/]",
                "interrupted": "[yellow]…[/]",
                "running": "[yellow]…[/]",
                "skipped": "[yellow]–[/]",
            }.get(outcome.status, "[red]✗[/]")
            note = " (already there)" if outcome.existing and outcome.status != "skipped" else ""
            if outcome.status == "running":
                note = " (being trained by another process)"
            detail = (
                f": {outcome.message}"
                if outcome.status not in ("done", "running") and outcome.message
                else ""
            )
            if not quiet or outcome.status != "done":
                progress.console.print(
                    f"{mark} #{outcome.point.index + 1} {escape(outcome.point.describe())} seed "
                    f"{outcome.point.seed}: {outcome.status}{note}{escape(detail)}"
                )

        outcomes = run_grid(
            plan.points,
            runs,
            plan.device,
            plan.weights,
            plan.launcher,
            plan.options,
            run_here,
            on_outcome,
            poll,
            report=lambda text: progress.console.print(escape(text)),
            experiment=plan.name,
        )
    if detach:
        console.print(
            f"submitted; `sagan status {plan.name}` shows where each run stands, and re-running "
            f"this command waits for them and writes the summary."
        )
        return
    report, written = write_summary(plan.folder, options)
    _print_report(report, title=f"{plan.name} ({len(runs)} runs)")
    console.print("wrote " + ", ".join(str(p) for p in written))
    ran = [o for o in outcomes if not o.existing]
    if any(o.status == "interrupted" and "SIGINT" in o.message for o in ran):
        err_console.print("interrupted (Ctrl-C): re-run the same command to resume.")
        raise typer.Exit(130)
    busy = [o for o in outcomes if o.status == "running"]
    if busy:
        err_console.print(
            f"{len(busy)} run(s) are being trained by another process right now; they were left "
            f"to it. Re-run this command when it has finished to complete the summary."
        )
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped:
        err_console.print(
            f"{len(skipped)} run(s) skipped: their attention plugin does not support the "
            f"placement ({escape(skipped[0].message)})"
        )
    interrupted = sum(o.status == "interrupted" for o in outcomes)
    if interrupted:
        err_console.print(
            f"{interrupted} run(s) were interrupted (a signal, a time limit, or a worker or job "
            f"that died: see the table); re-run the same command to resume them."
        )
    never_started = sum(o.status == "queued" for o in outcomes)
    if never_started:
        err_console.print(
            f"{never_started} run(s) were never started: the launcher's task for them failed "
            f"before training (see the lines above and the launcher's logs). Re-run the same "
            f"command to start them."
        )
    failed = sum(o.status in ("failed", "diverged") for o in outcomes)
    if failed:
        err_console.print(
            f"{failed} run(s) failed or diverged (see the table); --retry-failed re-runs them."
        )
    raise typer.Exit(min(failed + interrupted + never_started, 100))


@app.command("status")
def status_command(
    experiment: Annotated[str, typer.Argument(help="Experiment name (under --results) or folder.")],
    results: Annotated[Path, typer.Option(help="Results root folder.")] = Path("results"),
) -> None:
    """Where each run of an experiment stands: its folder's status and step, and for SLURM
    the scheduler's state of its job (pending, running, requeued, ...)."""
    from sagan_cli.ablate.service import experiment_folders, experiment_status

    (folder,) = experiment_folders([experiment], results)
    states = experiment_status(folder, _registry())
    table = _summary_table(
        ["run", "grid point", "seed", "status", "step", "scheduler", "note"],
        [[s.run, s.point, str(s.seed), s.status, s.step, s.scheduler, s.note] for s in states],
        title=folder.name,
    )
    console.print(table)
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()) or "no runs")


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
    alpha: AlphaOption = 0.05,
    ci: CiOption = "welch",
    paired: PairedOption = None,
    baseline: BaselineOption = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Only evaluations of this protocol (its id or label, as `sagan eval` prints) "
            "count; needed when runs were evaluated in several ways.",
            rich_help_panel="Statistics",
        ),
    ] = None,
) -> None:
    """Rebuild tables from run folders alone: one per experiment, statistics within each."""
    from sagan_cli.ablate.service import build_reports, experiment_folders
    from sagan_cli.ablate.stats import StatsOptions

    if format_ not in ("table", "md", "csv", "json"):
        raise SaganError(f"--format '{format_}': choose table, md, csv or json.")
    options = StatsOptions(alpha=alpha, ci=ci, paired=paired, baseline=baseline, protocol=protocol)
    options.check()
    reports = build_reports(experiment_folders(experiments or [], results), by, options)
    if format_ == "table":
        for report in reports.reports:
            _print_report(report)
    else:
        sys.stdout.write(
            {"md": reports.markdown, "csv": reports.csv, "json": reports.json}[format_]()
        )


def _print_report(report: Any, title: str | None = None) -> None:
    from sagan_cli.ablate.summary import display_rows

    header, rows = display_rows(report.table, report.keys)
    console.print(_summary_table(header, rows, title=title or report.name))
    for hint in report.hints():
        console.print(escape(hint))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sagan")
