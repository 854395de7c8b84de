"""``sagan recipe show`` and ``sagan recipe validate``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from sagan_cli.commands.common import registry
from sagan_cli.commands.options import SetOption
from sagan_cli.console import console, err_console
from sagan_cli.errors import DataMissing, SaganError

app = typer.Typer(help="Show and validate recipes.", no_args_is_help=True)


@app.command("show")
def recipe_show(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or the name of a shipped recipe.")],
    set_: SetOption = None,
) -> None:
    """Print the resolved recipe (defaults and plugin parameters filled in) as TOML."""
    from sagan_cli.recipe import load_recipe, recipe_toml

    resolved = load_recipe(recipe, set_ or [], registry=registry())
    sys.stdout.write(recipe_toml(resolved))


@app.command("validate")
def recipe_validate(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files or shipped recipe names.")],
    set_: SetOption = None,
) -> None:
    """Check recipes fully: keys, values, plugin names and parameters, ablation axes, data."""
    from sagan_cli.ablate.axes import build_axes
    from sagan_cli.components import build_data_source, check_data, placement_problem
    from sagan_cli.recipe import load_recipe

    found = registry()
    failed = absent = 0
    for ref in recipes:
        try:
            resolved = load_recipe(ref, set_ or [], registry=found)
            if resolved.ablate.axes:
                build_axes([], resolved, found)
            problem = placement_problem(resolved, found)
            if problem is not None:
                raise problem
            check_data(build_data_source(resolved, found), found)
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
