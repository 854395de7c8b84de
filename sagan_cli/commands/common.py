"""What the commands share: the plugin registry with its warnings shown, tables, phase lines."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from sagan_cli.console import console, err_console
from sagan_cli.errors import SaganError
from sagan_cli.recipe import split_list

if TYPE_CHECKING:
    from sagan_cli.plugins import Registry


def registry() -> Registry:
    """The plugin registry; what failed to load is reported as a warning, the rest still work."""
    from sagan_cli.plugins import get_registry

    found = get_registry()
    for failure in found.failures:
        err_console.print(f"[yellow]Warning:[/] {escape(failure.describe())}")
    for warning in found.warnings:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}")
    return found


def fail_on_plugin_failures(found: Registry) -> None:
    if found.failures:
        names = ", ".join(f.source for f in found.failures)
        raise SaganError(
            f"{len(found.failures)} plugin module(s) failed to load: {names} (details above). "
            f"Fix or uninstall them, or block them with SAGAN_DISABLED_PLUGINS={names}."
        )


def set_threads(
    threads: int | None,
    *,
    free_cores_only: bool = False,
    quiet: bool = False,
    deterministic: bool = False,
) -> None:
    """torch's CPU threads: ``threads`` when given; else, with ``free_cores_only``, the cores
    other work leaves free (every core for a ``deterministic`` run; said when that is fewer
    than all, or when the load is ignored), else torch's default."""
    if threads is None and free_cores_only:
        from sagan_cli.cores import default_threads

        threads, why = default_threads(deterministic=deterministic)
        if why is not None and not quiet:
            err_console.print(escape(why))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in split_list(text)]
    except ValueError:
        raise SaganError(
            f"{option} '{text}' must be comma-separated integers, e.g. 8,16,32."
        ) from None
    if not values or min(values) < 1:
        raise SaganError(f"{option} '{text}' must list positive integers, e.g. 8,16,32.")
    return values


def summary_table(header: list[str], rows: list[list[str]], title: str) -> Table:
    """A results table whose cells fold onto more lines instead of being cut (``timm_n…``)."""
    table = Table(title=title)
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    return table


def plain_table(header: list[str], rows: list[list[str]], title: str) -> str:
    """The table as aligned plain text, one line per row, never wrapped: what a log, a pipe
    or ``grep`` wants (a terminal gets ``summary_table``)."""
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def print_table(header: list[str], rows: list[list[str]], title: str) -> None:
    """A results table on stdout: boxed and folded on a terminal, plain text off one."""
    if console.is_terminal:
        console.print(summary_table(header, rows, title))
    else:
        console.print(escape(plain_table(header, rows, title)), highlight=False, soft_wrap=True)


def print_report(report: Any, title: str | None = None) -> None:
    """An ablation's table (``sagan_cli.ablate.service.Report``) and its hints."""
    from sagan_cli.ablate.summary import display_rows

    header, rows = display_rows(report.table, report.keys)
    print_table(header, rows, title=title or report.name)
    for hint in report.hints():
        console.print(escape(hint))
    if report.damaged:
        console.print(
            f"{len(report.damaged)} run folder(s) left out of this table: their status.json "
            "cannot be read (named in the warnings)."
        )


@contextlib.contextmanager
def phases(start: str) -> Iterator[Callable[[str], None]]:
    """Say each phase of a long piece of work as it begins: the spinner's text on a terminal,
    a plain stderr line off one (CI, cluster logs)."""
    if not err_console.is_terminal:
        yield lambda text: err_console.print(escape(text))
        return
    with err_console.status(start, spinner="dots") as spinner:
        yield lambda text: spinner.update(escape(text))
