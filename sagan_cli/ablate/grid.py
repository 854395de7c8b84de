"""Ablation grids: axes expanded into one resolved recipe per (grid point, seed)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from sagan_cli.ablate.axes import Axis, format_value
from sagan_cli.errors import RecipeError, SaganError
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Override, Recipe, resolve_recipe, split_list
from sagan_cli.results import run_id, run_identity


@dataclass(frozen=True)
class GridPoint:
    index: int  # position of the grid point (seeds share it)
    seed: int
    settings: dict[str, Any]  # axis label -> value
    recipe: Recipe
    run_id: str

    def describe(self) -> str:
        return ", ".join(f"{label}={format_value(v)}" for label, v in self.settings.items())


def parse_seeds(text: str | None, base_seed: int) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,4,7`` -> [0, 4, 7]; none -> the recipe's seed."""
    if text is None:
        return [base_seed]
    try:
        values = [int(v) for v in split_list(text)]
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
