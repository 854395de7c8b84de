"""``sagan bench``: measurements written to CSV and Markdown under results/bench/."""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sagan_cli.commands.common import int_list, print_report, registry, set_threads
from sagan_cli.commands.options import (
    DEFAULT_RESULTS,
    AlphaOption,
    AttentionPrecision,
    Both,
    DeviceOption,
    DinoV2Option,
    InceptionOption,
    Layout,
    NumClassesOption,
    OutOption,
    ResultsOption,
    SetOption,
    ThreadsOption,
    TrainPrecision,
)
from sagan_cli.console import console, err_console, progress_bar
from sagan_cli.errors import SaganError
from sagan_cli.recipe import split_list

app = typer.Typer(help="Benchmarks written to results/bench/.", no_args_is_help=True)
BENCH_OUT = Path("results/bench")
COMPILED = {Both.off: [False], Both.on: [True], Both.both: [False, True]}
LAYOUTS: dict[Layout, list[str | None]] = {
    Layout.auto: [None],
    Layout.off: ["contiguous"],
    Layout.on: ["channels_last"],
    Layout.both: ["contiguous", "channels_last"],
}
PRECISIONS = {
    TrainPrecision.fp32: ["fp32"],
    TrainPrecision.bf16: ["bf16"],
    TrainPrecision.both: ["fp32", "bf16"],
}


@app.command("attention")
def bench_attention_command(
    device: DeviceOption = "auto",
    precision: Annotated[
        AttentionPrecision | None,
        typer.Option(
            help="Default: bf16 on CUDA, fp32 elsewhere; bf16 given here also runs on CPUs with "
            "native bf16."
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
    out: OutOption = BENCH_OUT,
) -> None:
    """Forward + backward time and memory of every attention variant, fused vs explicit."""
    from sagan_cli.bench.attention import attention_markdown, bench_attention
    from sagan_cli.bench.output import check_output_folder, write_results
    from sagan_cli.device import available_memory, effective_precision, select_device

    check_output_folder(out)
    found = registry()
    chosen = select_device(device)
    asked = None if precision is None else str(precision)
    effective = effective_precision(chosen, asked or "bf16", on_cpu=asked == "bf16")
    size_list = int_list(sizes, "--sizes")
    batch = batch or (16 if chosen.type == "cuda" else 4)
    variants = [n for n in found.names("attention") if n != "none"]
    total = (len(variants) + sum(v in ("sagan", "sagan_pooled") for v in variants)) * len(size_list)
    with progress_bar() as progress:
        task = progress.add_task("attention", total=total, info="")

        def report(row: Any) -> None:
            timing = f"{row.ms:.2f} ms" if row.ms is not None else row.status
            progress.console.print(f"{row.variant:>24} {row.size:>4}x{row.size:<4} {timing}")
            progress.advance(task)

        frame = bench_attention(
            found,
            chosen,
            effective,
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
        effective,
        frame,
        attention_markdown(frame, chosen.type, effective) + "\n",
    )
    console.print(f"wrote {paths[0]} and {paths[1]}")


@app.command("train")
def bench_train_command(
    recipes: Annotated[list[str], typer.Argument(help="Recipes to time (files or shipped names).")],
    set_: SetOption = None,
    device: DeviceOption = "auto",
    compile_: Annotated[
        Both, typer.Option("--compile", help="Time without torch.compile, with it, or both.")
    ] = Both.off,
    channels_last: Annotated[
        Layout,
        typer.Option(
            "--channels-last",
            help="auto (the layout training uses: the recipe's train.memory_format), off, on, "
            "or both (tensor layout).",
        ),
    ] = Layout.auto,
    precision: Annotated[
        TrainPrecision,
        typer.Option(help="fp32, bf16, or both (bf16 autocast; on CPU needs native bf16)."),
    ] = TrainPrecision.fp32,
    steps: Annotated[int, typer.Option(min=1, help="Timed iterations (median reported).")] = 20,
    warmup: Annotated[
        int, typer.Option(min=1, help="Untimed iterations first (compilation happens here).")
    ] = 5,
    num_classes: NumClassesOption = None,
    threads: ThreadsOption = None,
    out: OutOption = BENCH_OUT,
) -> None:
    """Images/s of the full training iteration (D, G, EMA) on synthetic data of the recipe's
    shape, its GFLOP and the fraction of this device's measured matmul rate it reaches."""
    import pandas as pd

    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.bench.train import bench_train_step, classes_for_bench
    from sagan_cli.device import default_memory_format, select_device
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    set_threads(threads)
    found = registry()
    chosen = select_device(device)
    loaded = [load_recipe(r, set_ or [], registry=found) for r in recipes]
    rates: dict[str, float] = {}
    rows = []
    for recipe in loaded:
        classes = classes_for_bench(recipe, found, num_classes)
        trained = recipe.train.memory_format
        for compiled, layout, wanted in itertools.product(
            COMPILED[compile_], LAYOUTS[channels_last], PRECISIONS[precision]
        ):
            result = bench_train_step(
                recipe,
                found,
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


@app.command("data")
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
    num_classes: NumClassesOption = None,
    threads: ThreadsOption = None,
    out: OutOption = BENCH_OUT,
) -> None:
    """Images/s the data path delivers (decoding with 0..N workers, decoding alone, preparing,
    prepared shards) beside the images/s a training step consumes: does the loader keep up?"""
    import pandas as pd

    from sagan_cli.bench.data import bench_data, verdict
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.bench.train import bench_train_step, classes_for_bench
    from sagan_cli.device import default_memory_format, select_device
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    set_threads(threads)
    found = registry()
    chosen = select_device(device)
    loaded = load_recipe(recipe, set_ or [], registry=found)
    try:
        counts = sorted({int(part) for part in split_list(workers)})
    except ValueError:
        counts = []
    if not counts or counts[0] < 0:
        raise SaganError(f"--workers '{workers}' must list worker counts, e.g. 0,1,2.")

    def train_step_s() -> float:
        result = bench_train_step(
            loaded,
            found,
            chosen,
            False,
            classes_for_bench(loaded, found, num_classes),
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
    rows = bench_data(loaded, found, counts, batches, prepare_limit, measure_training, report)
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


@app.command("fid")
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
    dinov2_weights: DinoV2Option = None,
    device: DeviceOption = "auto",
    out: OutOption = BENCH_OUT,
) -> None:
    """Seconds for FID: reference features (cold), generation, generated features + FID (warm),
    and images/s of each feature extractor."""
    import tempfile

    import pandas as pd

    from sagan_cli.bench.fid import bench_fid
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results
    from sagan_cli.device import select_device
    from sagan_cli.evaluate.service import EvalRequest
    from sagan_cli.recipe import load_recipe

    check_output_folder(out)
    found = registry()
    resolved = load_recipe(recipe, set_ or [], registry=found)
    chosen = select_device(device)
    request = EvalRequest(
        extractors=feature_extractor,
        inception_weights=inception_weights,
        dinov2_weights=dinov2_weights,
    )
    weights = request.evaluation(None, None, chosen).weights
    with (
        tempfile.TemporaryDirectory() as cache,
        err_console.status("timing FID") if err_console.is_terminal else nullcontext(),
    ):
        row = bench_fid(
            resolved,
            found,
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


METRIC_TITLE = "structure (lower is better)"


@app.command("known-answer")
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
    results: ResultsOption = DEFAULT_RESULTS,
    out: OutOption = BENCH_OUT,
) -> None:
    """The known-answer benchmark: the grid's verdicts (the oracle must come out better than no
    attention, the residual block not) and the A/A false-positive rate of the same statistics.

    Exit code 0 when the known answer was reproduced (always with --quick), 1 when not.
    """
    from datetime import date

    import torch

    from sagan_cli.bench.known_answer import ROWS, machine, null_frame, run_known_answer
    from sagan_cli.bench.output import check_output_folder, rows_markdown, write_results

    check_output_folder(out)
    registry()  # an unknown recipe or a missing plugin fails here, before any run starts
    if not 0 < alpha < 1:
        raise SaganError(f"--alpha {alpha}: a significance level lies strictly between 0 and 1.")
    result = run_known_answer(
        recipe, seeds, null_seeds, null_group, null_experiments, jobs, results, alpha, quick
    )
    print_report(result.grid, title=f"{result.grid.name}: {METRIC_TITLE}")
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
