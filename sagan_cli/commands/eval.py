"""``sagan eval``: a run's EMA generator, a folder of samples, or a reference's statistics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sagan_cli.commands.common import phases, registry
from sagan_cli.commands.options import DeviceOption, DinoV2Option, InceptionOption
from sagan_cli.console import console, err_console
from sagan_cli.errors import SaganError
from sagan_cli.metrics import COMPUTATION_NAMES
from sagan_cli.recipe import EvalConfig


def eval_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run folder to evaluate (or use --images).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="last, best, or a checkpoint path.")] = "last",
    metrics: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated: {', '.join(COMPUTATION_NAMES)} (prc: precision/recall, dc: "
            "density/coverage)."
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
            help="Real images in the reference; 0: all of them. Default: eval.reference_samples "
            f"({EvalConfig.model_fields['reference_samples'].default}) for train/test, every "
            "image of a folder or file.",
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
            "others can compare against the same reference. A folder or .npz needs no recipe.",
            rich_help_panel="Reference statistics",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
    inception_weights: InceptionOption = None,
    dinov2_weights: DinoV2Option = None,
    device: DeviceOption = "auto",
) -> None:
    """FID, IS, KID, precision/recall and density/coverage of a run's EMA generator, or of a
    folder of images, in Inception's or DINOv2's feature space (FD in DINOv2 space: fd_dinov2)."""
    from sagan_cli.evaluate.service import (
        EvalRequest,
        evaluate_folder,
        export_reference_stats,
        open_run_evaluation,
        parse_extractors,
        parse_metrics,
    )

    found = registry()
    request = EvalRequest(
        metrics=tuple(parse_metrics(metrics)),
        extractors=feature_extractor,
        num_samples=num_samples,
        reference=reference,
        reference_samples=reference_samples,
        batch_size=batch_size,
        recipe=recipe,
        inception_weights=inception_weights,
        dinov2_weights=dinov2_weights,
        device=device,
    )
    parse_extractors(feature_extractor, [])  # a typo is named before anything else
    if export_stats is not None:
        if run_dir is not None or images is not None or reference is None:
            raise SaganError(
                "--export-stats writes a reference's statistics: give --reference (a folder or "
                "an .npz of images, or train/test with --recipe RECIPE), without a run or --images."
            )
        with phases("exporting") as report:
            written = export_reference_stats(export_stats, request, found, report)
        console.print(f"wrote {written}")
        return
    if (run_dir is None) == (images is None):
        raise SaganError("Give a run folder to evaluate, or --images DIR, but not both.")
    with phases("evaluating") as report:
        if images is not None:
            record = evaluate_folder(
                images,
                request,
                found,
                notify=lambda text: err_console.print(f"[yellow]Warning:[/] {escape(text)}"),
                report=report,
            )
        else:
            assert run_dir is not None
            job = open_run_evaluation(run_dir, checkpoint, request, found)
            record = job.start(report)
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    _print_record(record)
    if run_dir is not None:
        console.print(f"recorded in {job.run.eval_path} and {job.run.metrics_path}")


def _print_record(record: dict[str, Any]) -> None:
    """The metrics as a table, then the protocol and the extractors' weights that made them."""
    table = Table("metric", "value")
    for key, value in record.items():
        if isinstance(value, float) and not key.startswith("seconds"):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    protocol = record["protocol"]
    weights = ", ".join(
        f"{w['extractor']} {w['sha256'][:12]}" for w in record["feature_extractors"]
    )
    console.print(
        escape(
            f"protocol {protocol['id']}: {protocol['label']}; weights {weights}; "
            f"torch-fidelity {record['torch_fidelity']}"
        )
    )
