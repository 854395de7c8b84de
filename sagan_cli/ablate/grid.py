"""Ablation grids: axes from ``--vary``, the recipe's ``[ablate.axes]`` or built-in candidates,
expanded into one resolved recipe per (grid point, seed).

An axis is a field path (or alias) with values, or, in ``[ablate.axes]``, a free
name whose values are tables of overrides (``{ "model.attention.variant" =
"residual", "model.attention_layer" = [8] }``): a row of the paper's Table 1.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from sagan_cli.errors import RecipeError, SaganError
from sagan_cli.plugins import Registry
from sagan_cli.recipe import (
    Override,
    Recipe,
    axis_candidates,
    parse_value,
    resolve_axis,
    resolve_recipe,
)
from sagan_cli.results import run_id, run_identity


@dataclass(frozen=True)
class Axis:
    label: str  # how the user named it; the summary's column
    path: str | None  # the field it varies; None when each value is a table of overrides
    values: tuple[Any, ...]

    def overrides(self, value: Any) -> list[Override]:
        pairs = value.items() if self.path is None else [(self.path, value)]
        return [
            Override(tuple(path.split(".")), v, f"{path}={format_value(v)}") for path, v in pairs
        ]


@dataclass(frozen=True)
class GridPoint:
    index: int  # position of the grid point (seeds share it)
    seed: int
    settings: dict[str, Any]  # axis label -> value
    recipe: Recipe
    run_id: str

    def describe(self) -> str:
        return ", ".join(f"{label}={format_value(v)}" for label, v in self.settings.items())


def format_value(value: Any) -> str:
    """A compact, stable rendering of an axis value: [16], sagan, 0.0004, {variant=..., ...}."""
    if isinstance(value, dict):
        return " ".join(f"{k.split('.')[-1]}={format_value(v)}" for k, v in value.items())
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ""))


def split_values(text: str) -> list[str]:
    """Split ``[],[8],[16]`` or ``sagan,"a,b"`` at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p.strip() for p in parts]


def parse_vary(text: str) -> tuple[str, list[Any] | None]:
    """``attention_layer=[],[16]`` -> ("attention_layer", [[], [16]]); no ``=``: no values."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not name:
        raise RecipeError(
            f"--vary '{text}' has no axis name; write --vary AXIS or --vary AXIS=v1,v2."
        )
    if not sep:
        return name, None
    values = [parse_value(v, f"--vary {name}") for v in split_values(raw) if v != ""]
    if not values:
        raise RecipeError(
            f"--vary {name}= gives no values: the grid would be empty. List them: --vary {name}=v1,v2."
        )
    return name, values


def build_axes(varies: list[str], base: Recipe, registry: Registry) -> list[Axis]:
    """Axes from the command line, else from the recipe's [ablate.axes]."""
    recipe_axes = base.ablate.axes
    axes = []
    if varies:
        for text in varies:
            name, values = parse_vary(text)
            path = resolve_axis(name, base)
            if values is None:
                listed = recipe_axes.get(name, recipe_axes.get(path))
                values = listed if listed is not None else axis_candidates(path, base, registry)
            axes.append(Axis(name, path, tuple(values)))
    else:
        for name, values in recipe_axes.items():
            if values and all(isinstance(v, dict) for v in values):
                for table in values:
                    for key in table:
                        resolve_axis(key, base)  # every key must be a field
                axes.append(Axis(name, None, tuple(values)))
            else:
                axes.append(Axis(name, resolve_axis(name, base), tuple(values)))
    if not axes:
        raise RecipeError(
            "Nothing to vary: pass --vary AXIS[=v1,v2] (e.g. --vary attention_layer) or list axes "
            "under [ablate.axes] in the recipe."
        )
    for axis in axes:
        if not axis.values:
            raise RecipeError(f"Axis '{axis.label}' has no values: the grid would be empty.")
        rendered = [format_value(v) for v in axis.values]
        if len(set(rendered)) != len(rendered):
            raise RecipeError(f"Axis '{axis.label}' lists a value twice: {', '.join(rendered)}.")
    labels = [a.label for a in axes]
    if len(set(labels)) != len(labels):
        raise RecipeError(f"An axis is given twice: {', '.join(labels)}.")
    return axes


def parse_seeds(text: str | None, base_seed: int) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,4,7`` -> [0, 4, 7]; none -> the recipe's seed."""
    if text is None:
        return [base_seed]
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RecipeError(f"--seeds '{text}' must be a count (3) or a list (0,1,2).") from None
    if "," not in text:
        if not values or values[0] < 1:
            raise RecipeError(f"--seeds {text}: give a positive count or a list of seeds.")
        return list(range(values[0]))
    if min(values, default=0) < 0 or len(set(values)) != len(values):
        raise RecipeError(f"--seeds '{text}': seeds are distinct non-negative integers.")
    return values


def expand(
    raw: dict[str, Any],
    base_overrides: list[Override],
    axes: list[Axis],
    seeds: list[int],
    origin: str,
    registry: Registry,
) -> list[GridPoint]:
    """Every (grid point, seed) as a resolved recipe; a bad combination names its point and value."""
    points = []
    for index, combination in enumerate(itertools.product(*(axis.values for axis in axes))):
        settings = {axis.label: value for axis, value in zip(axes, combination, strict=True)}
        overrides = [
            o for axis, value in zip(axes, combination, strict=True) for o in axis.overrides(value)
        ]
        for seed in seeds:
            seed_override = Override(("seed",), seed, f"seed={seed}")
            try:
                recipe = resolve_recipe(
                    raw,
                    [*base_overrides, *overrides, seed_override],
                    origin=origin,
                    registry=registry,
                )
            except SaganError as exc:
                described = ", ".join(f"{k}={format_value(v)}" for k, v in settings.items())
                raise RecipeError(
                    f"Grid point #{index + 1} ({described}, seed {seed}) is invalid: {exc}"
                ) from None
            points.append(GridPoint(index, seed, settings, recipe, run_id(recipe)))
    first_seed = Override(("seed",), seeds[0], f"seed={seeds[0]}")
    base = resolve_recipe(raw, [*base_overrides, first_seed], origin=origin, registry=registry)
    _check_every_axis_changes_something(
        axes, points, json.dumps(run_identity(base), sort_keys=True)
    )
    return points


def _check_every_axis_changes_something(
    axes: list[Axis], points: list[GridPoint], base: str
) -> None:
    """Each axis must yield distinct recipes, and not only the base recipe itself."""
    first_seed = points[0].seed
    for position, axis in enumerate(axes):
        others = [a for i, a in enumerate(axes) if i != position]
        along = [
            p
            for p in points
            if p.seed == first_seed
            and all(format_value(p.settings[a.label]) == format_value(a.values[0]) for a in others)
        ]
        identities: dict[str, list[str]] = {}
        for point in along:
            key = json.dumps(run_identity(point.recipe), sort_keys=True)
            identities.setdefault(key, []).append(format_value(point.settings[axis.label]))
        if len(identities) == 1 and (len(axis.values) > 1 or base in identities):
            raise RecipeError(
                f"Axis '{axis.label}' changes nothing: every value ({', '.join(format_value(v) for v in axis.values)}) "
                f"resolves to the same recipe{' as the base recipe' if base in identities else ''}. Vary a field "
                f"that differs, or check the values."
            )
        same = [values for values in identities.values() if len(values) > 1]
        if same:
            raise RecipeError(
                f"Axis '{axis.label}': values {', '.join(same[0])} resolve to the same recipe, so they "
                f"would be one run. Keep one of them."
            )
