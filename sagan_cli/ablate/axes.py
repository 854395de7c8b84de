"""Ablation axes: what ``--vary`` and ``[ablate.axes]`` name, and their values.

An axis is a recipe field path (``train.lr_d``), its last part when unambiguous
(``lr_d``), or an alias (``attention``); its values come from ``--vary
AXIS=v1,v2``, else the recipe's ``[ablate.axes]``, else built-in candidates. In
``[ablate.axes]`` an axis may instead list tables of overrides, one per row
(``{ "model.attention.variant" = "residual", "model.attention.kernel_size" = 1 }``):
a row may set the parameters of the plugin it selects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from sagan_cli.errors import RecipeError, did_you_mean
from sagan_cli.model import arch
from sagan_cli.plugins import Registry
from sagan_cli.recipe import (
    AXIS_ALIASES,
    PLUGIN_SLOTS,
    Override,
    Recipe,
    field_at,
    host_field_paths,
    normalization_plugin,
    parse_value,
    plugin_slot_at,
    split_list,
    table_at,
)


def resolve_axis(name: str, recipe: Recipe) -> str:
    """An axis name -> the field path it varies: an alias, a path, or an unambiguous last part."""
    if name in AXIS_ALIASES:
        return AXIS_ALIASES[name]
    fields = host_field_paths()
    plugin_params = [
        f"{slot.path}.{key}"
        for slot in PLUGIN_SLOTS
        for key in (table_at(recipe, slot.path).model_extra or {})
    ]
    known = fields + plugin_params
    if name in known or plugin_slot_at(tuple(name.split("."))):
        return name
    matches = [
        path for path in known if path.split(".")[-len(name.split(".")) :] == name.split(".")
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RecipeError(
            f"Axis '{name}' is ambiguous: it could be {', '.join(matches)}. Use the full path."
        )
    short = sorted(set(AXIS_ALIASES) | {p.split(".")[-1] for p in known} | set(known))
    raise RecipeError(
        f"Unknown axis '{name}'.{did_you_mean(name, short)} An axis is a recipe field path "
        f"(train.lr_d, model.attention.reduction), its last part when unambiguous (lr_d), or an "
        f"alias: {', '.join(AXIS_ALIASES)}."
    )


def axis_candidates(path: str, recipe: Recipe, registry: Registry) -> list[Any]:
    """Built-in values for an axis given without values (``--vary attention_layer``)."""
    res = recipe.data.resolution
    sizes = {
        "model.attention_layer": arch.shared_sizes(res),
        "model.g_attention_layer": arch.generator_sizes(res),
        "model.d_attention_layer": arch.discriminator_sizes(res),
    }
    if path in sizes:
        return [[]] + [[size] for size in sizes[path]]
    slot = plugin_slot_at(tuple(path.split("."))) or next(
        (s for s in PLUGIN_SLOTS if path == f"{s.path}.{s.name_key}"), None
    )
    if slot is not None:
        entries = registry.all(slot.kind)
        if slot.target:
            entries = [e for e in entries if normalization_plugin(e.plugin).target == slot.target]
            if slot.target == "feature":
                entries = [
                    e
                    for e in entries
                    if normalization_plugin(e.plugin).conditional == recipe.model.conditional
                ]
        names = [e.name for e in entries]
        if "none" in names:  # the baseline first
            names.insert(0, names.pop(names.index("none")))
        return names
    field = field_at(path)
    if field is not None:
        if field.annotation is bool:
            return [False, True]
        literal = getattr(field.annotation, "__args__", None)
        if getattr(field.annotation, "__origin__", None) is Literal and literal:
            return list(literal)
    raise RecipeError(
        f"Axis '{path}' has no built-in values; give them: --vary {path.split('.')[-1]}=v1,v2 "
        f"(or list them under [ablate.axes] in the recipe)."
    )


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


def format_value(value: Any) -> str:
    """A compact, stable rendering of an axis value: [16], sagan, 0.0004, {variant=..., ...}."""
    if isinstance(value, dict):
        return " ".join(f"{k.split('.')[-1]}={format_value(v)}" for k, v in value.items())
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ""))


def parse_vary(text: str) -> tuple[str, list[Any] | None]:
    """``attention_layer=[],[16]`` -> ("attention_layer", [[], [16]]); no ``=``: no values."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not name:
        raise RecipeError(
            f"--vary '{text}' has no axis name; write --vary AXIS or --vary AXIS=v1,v2."
        )
    written = re.fullmatch(r"([\w.]+)\s*[:\s]\s*(\S.*)", name)  # AXIS:v1,v2 or "AXIS v1,v2"
    if not sep and written is not None:
        axis, listed = written.groups()
        raise RecipeError(
            f"--vary '{text}': an axis and its values are written AXIS=v1,v2: "
            f"--vary {axis}={listed.strip()} (or --vary {axis} alone for its built-in values)."
        )
    if not sep:
        return name, None
    values = [parse_value(v, f"--vary {name}") for v in split_list(raw) if v != ""]
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
                        # a row may set the parameters of the plugin it selects; those are
                        # validated per row, against that plugin, when the grid expands
                        parent = tuple(key.split(".")[:-1])
                        if plugin_slot_at(parent) is None:
                            resolve_axis(key, base)
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
