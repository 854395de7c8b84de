"""``sagan data prepare``: a data source decoded once into memory-mappable shards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sagan_cli.commands.common import registry
from sagan_cli.commands.options import SetOption
from sagan_cli.console import console, err_console, progress_bar

app = typer.Typer(help="Prepare data sets once for fast training.", no_args_is_help=True)


@app.command("prepare")
def data_prepare_command(
    source: Annotated[
        str, typer.Argument(help="A recipe (its data table), a folder of images, or an .npz file.")
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
    from sagan_cli.prepare import prepare_command

    found = registry()
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
            source, out, set_ or [], resolution, labels, shard_images, workers, found, report
        )
    manifest = result.manifest
    counts = ", ".join(f"{name} {split['count']:,}" for name, split in manifest["splits"].items())
    if result.repaired:
        err_console.print(
            f"re-prepared {len(result.repaired)} damaged or missing file(s): "
            + escape(", ".join(result.repaired))
        )
    verb = "was already prepared (every file verified)" if result.already else "prepared"
    console.print(
        f"{escape(str(result.folder))} {verb}: {counts} images at {manifest['resolution']}px, "
        f"{manifest['num_classes'] or 'no'} classes. Train on it with --set data.source=prepared "
        f"--set data.path={escape(str(result.folder))}"
    )
