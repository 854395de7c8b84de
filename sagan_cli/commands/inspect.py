"""``sagan attention`` (where a run's attention looks) and ``sagan sample`` (export samples)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sagan_cli.commands.common import registry
from sagan_cli.commands.options import (
    CheckpointOption,
    DeviceOption,
    ForceOption,
    MapFormat,
    Network,
)
from sagan_cli.console import console


def attention_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    checkpoint: CheckpointOption = "last",
    net: Annotated[
        Network, typer.Option(help="g (generated images) or d (real images).")
    ] = Network.g,
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
        MapFormat, typer.Option("--format", help="png (the figure) or npz (the raw maps).")
    ] = MapFormat.png,
    force: ForceOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Where attention looks (the paper's Figure 5): per query point, its map over the image.

    For G on generated images of the EMA generator, for D on real images of the run's data.
    Variants without query-key maps (residual, none, linear attention) have nothing to show.
    """
    from sagan_cli.inspect.service import attention_maps

    path, stats = attention_maps(
        run_path=run_dir,
        checkpoint=checkpoint,
        net=str(net),
        layer=layer,
        queries=queries,
        num_images=num_images,
        seed=seed,
        out=out,
        output_format=str(output_format),
        force=force,
        device=device,
        registry=registry(),
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
        registry=registry(),
    )
    console.print(f"wrote {num} samples to {path}")
