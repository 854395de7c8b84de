"""``sagan plugins``: list the registered plugins; ``sagan plugins check``: the contract."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sagan_cli.commands.common import fail_on_plugin_failures, registry
from sagan_cli.commands.options import CheckPrecision, DeviceOption, PluginKind
from sagan_cli.console import console, err_console, progress_bar
from sagan_cli.errors import SaganError
from sagan_cli.recipe import split_list

app = typer.Typer(
    help="List the registered plugins, or check plugins against the contract.",
    invoke_without_command=True,
)


@app.callback()
def plugins_command(
    ctx: typer.Context,
    kind: Annotated[PluginKind | None, typer.Option(help="Only plugins of this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every registered plugin with its kind, provider package and version."""
    if ctx.invoked_subcommand is not None:
        return
    from sagan_cli.plugins import describe

    found = registry()
    for note in found.packages_without_entry_point:
        err_console.print(f"[yellow]Warning:[/] {escape(note)}")
    entries = found.all(None if kind is None else str(kind))
    if as_json:
        sys.stdout.write(json.dumps([describe(e) for e in entries], indent=2, default=str) + "\n")
    else:
        table = Table("kind", "name", "summary", "provider", "version")
        for entry in entries:
            table.add_row(
                entry.kind, entry.name, entry.plugin.summary, entry.provider, entry.version
            )
        console.print(table)
    fail_on_plugin_failures(found)


@app.command("check")
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
    precision: Annotated[
        CheckPrecision | None,
        typer.Option(
            help="Mixed precision to exercise: fp32, bf16 (on a CPU with native bf16, as "
            "train.bf16_on_cpu runs it), fp16 (CUDA). Default: what training runs on --device "
            "(bf16 on CUDA, fp32 on CPU)."
        ),
    ] = None,
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
        failure_summary,
        group_rows,
        select_placements,
        shipped_placements,
    )
    from sagan_cli.recipe import parse_value

    found = registry()
    params: dict[str, Any] = {}
    for text in param or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise SaganError(f"--param '{text}' is not KEY=VALUE, e.g. --param heads=2.")
        params[key.strip()] = parse_value(value, f"--param '{text}'")
    everything = {e.name for e in found.all()}
    unknown = [n for n in names if n not in everything]
    disabled = {name: entry for (_, name), entry in found.disabled.items()}
    if unknown and unknown[0] in disabled:
        by = disabled[unknown[0]]
        raise SaganError(
            f"'{unknown[0]}' is disabled by the environment variable SAGAN_DISABLED_PLUGINS, "
            f"which names '{by}'. Remove '{by}' from it, or unset it."
        )
    if unknown:
        raise SaganError(
            f"'{unknown[0]}' is not a registered plugin.{did_you_mean(unknown[0], everything)} "
            f"`sagan plugins` lists them."
        )
    placements = select_placements(
        shipped_placements(found), [s for text in at or [] for s in split_list(text)]
    )
    chosen = select_device(device)
    rows = []
    with progress_bar() as progress:
        for name in names:
            for entry in found.find(name):
                task = progress.add_task(f"{entry.kind} {name}", total=None, info="")

                def advance(row: Any, task: Any = task) -> None:
                    progress.advance(task)

                if progress.disable:  # off a terminal: one plain line per plugin
                    err_console.print(escape(f"checking {entry.kind} {name}..."))
                rows.extend(
                    check_plugin(
                        entry,
                        found,
                        placements,
                        params,
                        chosen,
                        advance,
                        None if precision is None else str(precision),
                    )
                )
                progress.remove_task(task)
    # a place per row where it went well; what went wrong once per distinct error, with
    # its places (a plugin that raises everywhere is one row and one line, not 38)
    groups = group_rows(rows)
    table = Table("kind", "plugin", "place", "result", "seconds")
    for group in groups:
        mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(
            group.first.outcome, f"[yellow]{group.first.outcome}[/]"
        )
        first = group.first
        if first.outcome == "ok":
            for row in group.rows:
                table.add_row(row.kind, row.name, row.place, mark, f"{row.seconds:.2f}")
            continue
        place = first.place if len(group.rows) == 1 else group.places.partition(":")[0]
        seconds = sum(r.seconds for r in group.rows)
        table.add_row(first.kind, first.name, place, mark, f"{seconds:.2f}")
    console.print(table)
    for group in groups:
        if group.first.outcome != "ok":
            err_console.print(escape(group.describe()))
    for line in explain_outcomes(rows):
        err_console.print(escape(line))
    summary = failure_summary(rows)
    if summary is not None:
        raise SaganError(summary)
    counts = ", ".join(
        f"{sum(r.outcome == outcome for r in rows)} {outcome}"
        for outcome in ("ok", "not supported", "not checked")
        if any(r.outcome == outcome for r in rows) or outcome == "ok"
    )
    console.print(f"{len(rows)} checks: {counts}.")
