"""Errors that are the user's to fix.

Each becomes one paragraph on stderr and exit code 2 (see ``cli.main``); anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SaganError(Exception):
    """Bad input or environment: a recipe, a plugin, data, weights or an output folder."""

    exit_code = 2


class RecipeError(SaganError):
    """A recipe file, a ``--set`` override or a value in them is wrong."""


class PluginError(SaganError):
    """A plugin is unknown, duplicated, broken or given bad parameters."""


class DataError(SaganError):
    """A data source cannot deliver what the recipe asks for."""


class WeightsError(SaganError):
    """Feature-extractor weights are missing, unreachable or unusable."""


class ResultsError(SaganError):
    """An output folder conflicts with what is already there, or a run folder is unusable."""


class CheckpointError(SaganError):
    """A checkpoint is missing, truncated or does not match the run."""


class DataMissing(DataError):
    """The data a recipe names is not on this machine (files or folders absent): the recipe
    itself may be fine (``sagan recipe validate`` says so)."""


class PlacementUnsupported(SaganError):
    """A plugin declines a place it cannot be built at (raised by its factory, with the reason).

    Not a failure of the plugin: ``sagan plugins check`` reports the place as "not
    supported", training and ``recipe validate`` refuse it before any work, and an
    ablation marks its grid points ``skipped``.
    """


class RunFailed(SaganError):
    """A run stopped on an error that is not the user's input (a crash in training code);
    its status says ``failed`` and error.log holds the traceback."""

    exit_code = 1


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """``Type: first sentence`` of an exception, never cut mid-sentence (for error paragraphs)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        cut = text.rfind(". ", 0, limit)
        text = text[: cut + 1] if cut > 0 else text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
