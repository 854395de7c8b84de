"""A resolved recipe -> its plugin instances: data source, loss, generator and discriminator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from sagan_cli.builtins.losses import GANLoss
from sagan_cli.datasets.base import DataSource
from sagan_cli.errors import DataError
from sagan_cli.model.networks import Discriminator, Generator
from sagan_cli.plugins import Plugin, Registry, get_registry
from sagan_cli.recipe import PLUGIN_SLOTS, Recipe, table_at


def plugin_for(
    recipe: Recipe, path: str, registry: Registry | None = None
) -> tuple[Plugin, BaseModel]:
    """The plugin named at recipe table ``path`` and its validated parameters."""
    slot = next(s for s in PLUGIN_SLOTS if s.path == path)
    table = table_at(recipe, path)
    name = getattr(table, slot.name_key)
    entry = (registry or get_registry()).get(slot.kind, name, key=f"{path}.{slot.name_key}")
    return entry.plugin, entry.plugin.params.model_validate(table.model_extra or {})


def build_data_source(recipe: Recipe, registry: Registry | None = None) -> DataSource:
    plugin, params = plugin_for(recipe, "data", registry)
    return plugin.factory(params, recipe.data.resolution)


def build_loss(recipe: Recipe, registry: Registry | None = None) -> GANLoss:
    plugin, params = plugin_for(recipe, "loss", registry)
    return plugin.factory(params)


def num_classes_for(recipe: Recipe, source: DataSource) -> int:
    """Classes the networks condition on: the data's, when the model is conditional."""
    if not recipe.model.conditional:
        return 0
    if source.num_classes == 0:
        raise DataError(
            f"model.conditional = true but data source '{recipe.data.source}' has no labels "
            f"as configured. Use a labelled source (e.g. image-folder with data.labels = true) "
            f"or set model.conditional = false."
        )
    return source.num_classes


def build_networks(
    recipe: Recipe, num_classes: int, registry: Registry | None = None
) -> tuple[Generator, Discriminator]:
    """G and D with the recipe's norms and attention; ``num_classes`` 0 = unconditional."""
    g_norm_plugin, g_norm_params = plugin_for(recipe, "model.norm.generator", registry)
    d_norm_plugin, d_norm_params = plugin_for(recipe, "model.norm.discriminator", registry)
    feature_plugin, feature_params = plugin_for(recipe, "model.norm.features", registry)
    attention_plugin, attention_params = plugin_for(recipe, "model.attention", registry)
    g_weight_norm = g_norm_plugin.factory(g_norm_params)
    d_weight_norm = d_norm_plugin.factory(d_norm_params)

    def feature_norm(num_features: int, classes: int) -> nn.Module:
        return feature_plugin.factory(feature_params, num_features, classes)

    def attention_with(weight_norm: Any) -> Any:
        return lambda channels: attention_plugin.factory(channels, attention_params, weight_norm)

    model = recipe.model
    generator = Generator(
        recipe.data.resolution,
        model.g_channels,
        model.z_dim,
        num_classes,
        recipe.g_attention,
        g_weight_norm,
        feature_norm,
        attention_with(g_weight_norm),
    )
    discriminator = Discriminator(
        recipe.data.resolution,
        model.d_channels,
        num_classes,
        recipe.d_attention,
        d_weight_norm,
        attention_with(d_weight_norm),
    )
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class NetworkSummary:
    """Per-module output shapes and parameter counts of G and D."""

    generator_rows: list[tuple[str, str, int]]
    discriminator_rows: list[tuple[str, str, int]]
    generator_total: int
    discriminator_total: int
    attention: str
    g_attention: list[int]
    d_attention: list[int]
    num_classes: int


def _rows(network: nn.Module, run: Callable[[], Any]) -> list[tuple[str, str, int]]:
    shapes: dict[str, str] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            shapes.setdefault(name, "x".join(map(str, output.shape[1:])))

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in network.named_modules()
        if name.count(".") <= 1 and name and not isinstance(module, (nn.ModuleList, nn.ModuleDict))
    ]
    with torch.no_grad():
        run()
    for hook in hooks:
        hook.remove()
    modules = dict(network.named_modules())
    return [
        (name, shape, count_parameters(modules[name])) for name, shape in shapes.items()
    ]  # forward order


def summarize_networks(
    recipe: Recipe, num_classes: int, registry: Registry | None = None
) -> NetworkSummary:
    """Build G and D for ``recipe`` and trace one tiny batch to report shapes and counts."""
    generator, discriminator = build_networks(recipe, num_classes, registry)
    generator.eval()
    discriminator.eval()
    z = torch.zeros(2, recipe.model.z_dim)
    labels = torch.zeros(2, dtype=torch.long) if num_classes else None
    images = torch.zeros(2, 3, recipe.data.resolution, recipe.data.resolution)
    return NetworkSummary(
        generator_rows=_rows(generator, lambda: generator(z, labels)),
        discriminator_rows=_rows(discriminator, lambda: discriminator(images, labels)),
        generator_total=count_parameters(generator),
        discriminator_total=count_parameters(discriminator),
        attention=recipe.model.attention.variant,
        g_attention=recipe.g_attention,
        d_attention=recipe.d_attention,
        num_classes=num_classes,
    )
