"""The ``sagan`` command line: the app, its commands (one module per group in
``sagan_cli.commands``) and what becomes of every failure.

Errors the user can fix (``SaganError``) become one paragraph on stderr and exit
code 2; ``SAGAN_DEBUG=1`` shows the traceback instead. Importing this module
loads neither torch nor pandas: commands import the services they run.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup, TyperOption

from sagan_cli import __version__
from sagan_cli.commands import ablate, bench, data, eval, inspect, model, plugins, recipe, train
from sagan_cli.console import console, err_console
from sagan_cli.errors import SaganError, did_you_mean
from sagan_cli.outcomes import INTERRUPTED_BY_CTRL_C, ExitCode


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
        except typer.BadParameter as exc:  # a value outside an option's choices or range
            err_console.print(f"[bold red]Error:[/] {escape(_bad_parameter(exc))}")
            raise typer.Exit(ExitCode.BAD_INPUT) from None
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except KeyboardInterrupt:
            if debugging():
                raise
            err_console.print(
                "[bold yellow]Interrupted[/] (Ctrl-C). Whatever was already saved is kept; "
                "re-run the same command to continue."
            )
            raise typer.Exit(INTERRUPTED_BY_CTRL_C) from None
        except Exception as exc:
            if debugging():
                raise
            error = _explained(exc)
            err_console.print(f"[bold red]Error:[/] {escape(str(error))}")
            raise typer.Exit(error.exit_code) from None


def _bad_parameter(exc: typer.BadParameter) -> str:
    """``--ci 'boot': choose welch or bootstrap. Did you mean 'bootstrap'?``, or the option (and
    the environment variable that gave the value) with what is wrong."""
    text = exc.message.removeprefix("Value error, ")
    found = re.fullmatch(r"'([^']*)' is not one of (.*)\.", text)
    if found is None:
        where = exc.format_message().removeprefix("Invalid value for ").removesuffix(exc.message)
        return f"{where.rstrip(': ')}: {text}"
    name = (getattr(exc.param, "opts", None) or [exc.param_hint or "a value"])[0]
    given, choices = found.group(1), re.findall(r"'([^']*)'", found.group(2))
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return f"{name} '{given}': choose {listed}.{did_you_mean(given, choices)}"


def _explained(exc: Exception) -> SaganError:
    """A paragraph for an exception that reached the command line."""
    import errno
    import traceback

    from sagan_cli.environment import environment_problem
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
    broken = environment_problem(exc)
    if broken is not None:
        return broken
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
app.command("train")(train.train_command)
app.command("eval")(eval.eval_command)
app.command("ablate")(ablate.ablate_command)
app.command("status")(ablate.status_command)
app.command("report")(ablate.report_command)
app.command("attention")(inspect.attention_command)
app.command("sample")(inspect.sample_command)
app.add_typer(recipe.app, name="recipe")
app.add_typer(data.app, name="data")
app.add_typer(model.app, name="model")
app.add_typer(bench.app, name="bench")
app.add_typer(plugins.app, name="plugins")


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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sagan")
