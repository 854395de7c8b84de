"""Experiment trackers (the ``tracker`` plugin kind): building a recipe's, checked before any run
starts, and the ids that tie a run folder (and an ablation folder) to its tracker runs.

A run folder keeps ``tracking.json``: each tracker's id of the run (a resumed run continues
it) and the last step logged (records the resume recomputes are not logged twice). An
ablation folder keeps the parents' ids, so its runs, wherever they train, nest under them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sagan_cli.api import TrackContext, Tracker
from sagan_cli.fileio import atomic_write_text
from sagan_cli.plugins import Registry, attributed, plugin_code
from sagan_cli.recipe import Recipe, recipe_dict, tracker_params

STATE = "tracking.json"


def backends(recipe: Recipe) -> list[str]:
    """The trackers a run of ``recipe`` logs to (``logging.tensorboard`` is ``tensorboard``)."""
    names = list(recipe.track.backends)
    if recipe.logging.tensorboard and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def build_trackers(
    recipe: Recipe, registry: Registry, results: Path, experiment: str, check: bool = True
) -> dict[str, Tracker]:
    """The recipe's trackers, built and (``check``) asked whether their backend is usable:
    an unreachable one is a paragraph here, before any run folder changes."""
    track = recipe.track.model_dump()
    context = TrackContext(recipe.track.experiment or experiment, str(results))
    built: dict[str, Tracker] = {}
    for index, name in enumerate(backends(recipe)):
        key = f"track.backends[{index}]" if name in recipe.track.backends else "logging.tensorboard"
        entry = registry.get("tracker", name, key=key)
        params = registry.validate_params(
            "tracker", name, tracker_params(track, name), key=f"track.{name}"
        )
        with plugin_code(entry, key, "building the tracker"):
            tracker = entry.plugin.factory(params, context)
        if not isinstance(tracker, Tracker):
            raise attributed(
                entry, key, "building the tracker",
                f"its factory returned {type(tracker).__name__}, not a sagan_cli.api.Tracker",
            )  # fmt: skip
        if check:
            fix = f"Do as it says, or drop {name} from [track] backends (--track)."
            with plugin_code(entry, key, "checking its backend", fix=fix):
                tracker.check()
        built[name] = tracker
    return built


def flat_params(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as ``section.key`` -> value (lists and tables as JSON text)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (list, dict)):
            flat[prefix] = json.dumps(value)
        else:
            flat[prefix] = value

    walk("", recipe_dict(recipe))
    return flat


def read_state(folder: Path) -> dict[str, Any]:
    try:
        found = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_text(folder / STATE, json.dumps(state, indent=2) + "\n")
