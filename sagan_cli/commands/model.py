"""``sagan model summary``: the networks a recipe builds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from sagan_cli.commands.common import registry
from sagan_cli.commands.options import SetOption
from sagan_cli.console import console

app = typer.Typer(help="Inspect the networks a recipe builds.", no_args_is_help=True)


@app.command("summary")
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

    found = registry()
    resolved = load_recipe(recipe, set_ or [], registry=found)
    classes = classes_for_bench(resolved, found, num_classes)
    summary = summarize_networks(resolved, classes, found)
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
