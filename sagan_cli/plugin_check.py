"""``sagan plugins check``: a plugin against the contract, at every place sagan-cli builds it.

The rules (the plugin guide states them too):

* attention: built for G and D at every feature size and width the shipped
  recipes use (any of them can be an ablation's placement), with spectral norm
  as the weight norm; the output keeps the input's shape and is finite; backward
  reaches the input with finite gradients (parameters may have none: a block
  that starts as the identity gives some none); a second derivative exists
  (gradient penalties need one); a plugin claiming ``identity_at_init`` returns
  its input unchanged; ``AttentionMaps`` modules return (B, N, M) rows summing to 1.
* weight norm: wraps a conv, a linear and an embedding into working modules of
  the same output shape, for G and D.
* feature norm: ``forward(x, labels)`` keeps the shape at every G place,
  with labels when ``conditional``.
* loss: ``d_loss``/``g_loss`` give finite scalars with gradients; a ``penalty``
  is None or a finite scalar.
* data: at 32x32, ``check()`` passes or names the missing data (reported as
  not checked), and items are uint8 (3, R, R) with an int label.
* launcher: the factory returns a ``Launcher`` (a missing extra is reported as
  not checked, with its install command).

The repository's own tests run every registered plugin through ``check_plugin``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from sagan_cli.api import (
    AttentionMaps,
    AttentionPlugin,
    DataContext,
    DataSource,
    Launcher,
    LayerContext,
    NetworkContext,
    NormalizationPlugin,
)
from sagan_cli.errors import DataError, PluginError, SaganError
from sagan_cli.model import arch
from sagan_cli.plugins import Entry, Registry, plugin_code
from sagan_cli.recipe import load_recipe, shipped_recipe_names

SECOND_ORDER_MAX = 16  # feature size at which second derivatives are checked
KEY_FOR_KIND = {
    "attention": "model.attention.variant",
    "loss": "loss.name",
    "data": "data.source",
    "launcher": "--launcher",
}


@dataclass(frozen=True)
class Placement:
    """Where a module is built: network, image resolution, feature size and channels."""

    network: Literal["g", "d"]
    resolution: int
    feature_size: int
    channels: int

    def describe(self) -> str:
        net = "G" if self.network == "g" else "D"
        return f"{net} {self.feature_size}x{self.feature_size}, {self.channels} ch ({self.resolution}px)"


@dataclass
class CheckRow:
    kind: str
    name: str
    provider: str
    place: str
    outcome: str  # "ok", "failed" or "not checked"
    detail: str
    seconds: float


def placements_of(resolution: int, g_channels: int, d_channels: int) -> list[Placement]:
    """Every place attention can go in G and D of one configuration."""
    return [
        *(
            Placement("g", resolution, size, channels)
            for size, channels in arch.feature_channels("g", resolution, g_channels).items()
        ),
        *(
            Placement("d", resolution, size, channels)
            for size, channels in arch.feature_channels("d", resolution, d_channels).items()
        ),
    ]


def shipped_placements(registry: Registry) -> list[Placement]:
    """The places the shipped recipes build attention at (any size an ablation may choose)."""
    found: dict[Placement, None] = {}
    for name in shipped_recipe_names():
        recipe = load_recipe(name, registry=registry)
        for placement in placements_of(
            recipe.data.resolution, recipe.model.g_channels, recipe.model.d_channels
        ):
            found[placement] = None
    return list(found)


def _spectral(
    registry: Registry, network: str, resolution: int
) -> Callable[[nn.Module], nn.Module]:
    entry = registry.get("normalization", "spectral", key="model.norm.generator.name")
    return entry.plugin.factory(entry.plugin.params(), NetworkContext(network, resolution, 0))  # type: ignore[arg-type]


def _finite(tensor: torch.Tensor | None) -> bool:
    return tensor is None or bool(torch.isfinite(tensor).all())


def _scalar(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise PluginError(
            f"{what} returned {type(value).__name__} {tuple(getattr(value, 'shape', ()))}, not a scalar tensor"
        )
    if not _finite(value):
        raise PluginError(f"{what} is not finite ({float(value)})")
    return value


def _check_attention_module(module: nn.Module, entry: Entry, place: Placement) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, place.channels, place.feature_size, place.feature_size, generator=generator)
    plugin = entry.plugin
    assert isinstance(plugin, AttentionPlugin)
    if plugin.identity_at_init:
        module.eval()
        with torch.no_grad():
            y = module(x)
        if not (
            isinstance(y, torch.Tensor) and y.shape == x.shape and torch.allclose(y, x, atol=1e-6)
        ):
            raise PluginError(
                "it claims identity_at_init but does not return its input unchanged when built"
            )
    module.train()
    x.requires_grad_(True)
    y = module(x)
    if not isinstance(y, torch.Tensor):
        raise PluginError(f"its forward returned {type(y).__name__}, not a tensor")
    if y.shape != x.shape:
        raise PluginError(
            f"it maps a {tuple(x.shape)} feature map to {tuple(y.shape)}; the output must keep "
            f"the input's shape"
        )
    if not _finite(y):
        raise PluginError("its output holds NaN or infinite values on a finite input")
    weights = torch.randn(y.shape, generator=generator)
    (grad,) = torch.autograd.grad((y * weights).sum(), x, create_graph=True)
    if not _finite(grad):
        raise PluginError("the gradient with respect to its input is not finite")
    # A second derivative is a property of the code, not of the size: check it where the
    # maths path's N x N maps stay small.
    small = x[..., :SECOND_ORDER_MAX, :SECOND_ORDER_MAX].detach().requires_grad_(True)
    with sdpa_kernel([SDPBackend.MATH]):
        y2 = module(small)
        (grad2,) = torch.autograd.grad((y2 * y2.detach()).sum(), small, create_graph=True)
        try:
            if grad2.requires_grad:  # else the block is linear in x: a zero second derivative
                grad2.square().sum().backward()
        except RuntimeError as exc:
            raise PluginError(
                f"it has no second derivative, which gradient penalties (loss.name = "
                f"'wasserstein') need: {str(exc).splitlines()[0]}"
            ) from None
    for name, param in module.named_parameters():
        if not _finite(param.grad):
            raise PluginError(f"the gradient of its parameter '{name}' is not finite")
    if isinstance(module, AttentionMaps):
        with torch.no_grad():
            beta = module.attention_maps(x.detach())
        h, w = module.key_grid(place.feature_size, place.feature_size)
        expected = (2, place.feature_size**2, h * w)
        if tuple(beta.shape) != expected:
            raise PluginError(
                f"attention_maps returned {tuple(beta.shape)}; expected (B, N, M) = {expected} "
                f"with M from key_grid"
            )
        if not torch.allclose(beta.sum(-1), torch.ones(2, place.feature_size**2), atol=1e-4):
            raise PluginError("the rows of attention_maps do not sum to 1")


def _check_attention(entry: Entry, params: Any, place: Placement, registry: Registry) -> None:
    weight_norm = _spectral(registry, place.network, place.resolution)
    context = LayerContext(
        place.network,
        place.resolution,
        0,
        place.channels,
        place.feature_size,
        weight_norm,
    )
    module = entry.plugin.factory(params, context)
    if not isinstance(module, nn.Module):
        raise PluginError(f"its factory returned {type(module).__name__}, not an nn.Module")
    _check_attention_module(module, entry, place)


def _check_weight_norm(entry: Entry, params: Any, network: str, resolution: int) -> None:
    wrap = entry.plugin.factory(params, NetworkContext(network, resolution, 0))  # type: ignore[arg-type]
    if not callable(wrap):
        raise PluginError(
            f"its factory returned {type(wrap).__name__}, not a function layer -> layer"
        )
    for layer, x in (
        (nn.Conv2d(4, 8, 3, padding=1), torch.randn(2, 4, 8, 8)),
        (nn.Linear(8, 4), torch.randn(2, 8)),
        (nn.Embedding(3, 8), torch.tensor([0, 2])),
    ):
        expected = layer(x).shape
        wrapped = wrap(layer)
        if not isinstance(wrapped, nn.Module):
            raise PluginError(
                f"wrapping a {type(layer).__name__} returned {type(wrapped).__name__}, not the module to use"
            )
        out = wrapped(x)
        if out.shape != expected or not _finite(out):
            raise PluginError(
                f"the wrapped {type(layer).__name__} gives {tuple(out.shape)} (expected "
                f"{tuple(expected)}) or non-finite values"
            )
        out.sum().backward()


def _check_feature_norm(entry: Entry, params: Any, place: Placement, classes: int) -> None:
    context = LayerContext(
        "g", place.resolution, classes, place.channels, place.feature_size, lambda m: m
    )
    module = entry.plugin.factory(params, context)
    if not isinstance(module, nn.Module):
        raise PluginError(f"its factory returned {type(module).__name__}, not an nn.Module")
    x = torch.randn(4, place.channels, place.feature_size, place.feature_size, requires_grad=True)
    labels = torch.arange(4) % classes if classes else None
    y = module(x, labels)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or not _finite(y):
        raise PluginError(
            f"forward(x, labels) returned {tuple(getattr(y, 'shape', ()))} for a {tuple(x.shape)} "
            f"input, or non-finite values; it must keep the shape"
        )
    y.sum().backward()


def _check_loss(entry: Entry, params: Any) -> None:
    loss = entry.plugin.factory(params)
    real = torch.randn(8, requires_grad=True)
    fake = torch.randn(8, requires_grad=True)
    _scalar(loss.d_loss(real, fake), "d_loss").backward()
    _scalar(loss.g_loss(fake), "g_loss").backward()
    critic_net = nn.Conv2d(3, 1, 3, padding=1)

    def critic(images: torch.Tensor) -> torch.Tensor:
        return critic_net(images).flatten(1).sum(1)

    with sdpa_kernel([SDPBackend.MATH]):
        penalty = loss.penalty(critic, torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    if penalty is not None:
        _scalar(penalty, "penalty").backward()


def _check_data(entry: Entry, params: Any, resolution: int) -> str:
    source = entry.plugin.factory(params, DataContext(entry.name, resolution))
    if not isinstance(source, DataSource):
        raise PluginError(f"its factory returned {type(source).__name__}, not a DataSource")
    try:
        source.check()
    except DataError as exc:
        return f"not checked: {exc}"
    image, label = source.split("train")[0]
    if (
        not isinstance(image, torch.Tensor)
        or image.dtype != torch.uint8
        or tuple(image.shape) != (3, resolution, resolution)
    ):
        raise PluginError(
            f"split('train')[0] gives {getattr(image, 'dtype', type(image).__name__)} "
            f"{tuple(getattr(image, 'shape', ()))}; items must be uint8 (3, {resolution}, {resolution})"
        )
    if not isinstance(label, int):
        raise PluginError(f"labels must be ints (-1 for none), got {type(label).__name__}")
    return ""


def check_plugin(
    entry: Entry,
    registry: Registry,
    placements: Iterable[Placement],
    params: dict[str, Any] | None = None,
) -> list[CheckRow]:
    """Build and exercise ``entry`` everywhere it can be used; one row per place."""
    from pydantic import ValidationError

    rows: list[CheckRow] = []
    plugin = entry.plugin
    key = KEY_FOR_KIND.get(entry.kind, "model.norm.<network>.name")

    def run(place: str, check: Callable[[], str | None]) -> None:
        started = time.perf_counter()
        outcome, detail = "ok", ""
        try:
            with plugin_code(entry, key, f"at {place}"):
                note = check()
            if note:
                outcome, detail = "not checked", note.removeprefix("not checked: ")
        except SaganError as exc:
            outcome, detail = "failed", str(exc)
        rows.append(
            CheckRow(
                entry.kind,
                entry.name,
                f"{entry.provider} {entry.version}",
                place,
                outcome,
                detail,
                time.perf_counter() - started,
            )
        )

    try:
        validated = plugin.params.model_validate(params or {})
    except ValidationError as exc:
        missing = ", ".join(str(e["loc"][0]) for e in exc.errors())
        rows.append(
            CheckRow(
                entry.kind,
                entry.name,
                f"{entry.provider} {entry.version}",
                "-",
                "not checked",
                f"its parameters need values ({missing}): pass them with --param KEY=VALUE",
                0.0,
            )
        )
        return rows

    if entry.kind == "attention":
        for placement in placements:
            run(
                placement.describe(),
                partial(_check_attention, entry, validated, placement, registry),
            )
    elif entry.kind == "normalization":
        assert isinstance(plugin, NormalizationPlugin)
        if plugin.target == "weight":
            for network in ("g", "d"):
                run(
                    f"{network.upper()} layers",
                    partial(_check_weight_norm, entry, validated, network, 32),
                )
        else:
            classes = 10 if plugin.conditional else 0
            g_places = [p for p in placements if p.network == "g"]
            for placement in g_places:
                run(
                    placement.describe(),
                    partial(_check_feature_norm, entry, validated, placement, classes),
                )
    elif entry.kind == "loss":
        run("logits", lambda: _check_loss(entry, validated))
    elif entry.kind == "data":
        resolution = arch.RESOLUTIONS[0]  # decoding a whole split at every size costs minutes
        run(f"{resolution}px", lambda: _check_data(entry, validated, resolution))
    elif entry.kind == "launcher":

        def build_launcher() -> str:
            try:
                launcher = plugin.factory(validated)
            except PluginError as exc:
                return f"not checked: {exc}"
            if not isinstance(launcher, Launcher):
                raise PluginError(f"its factory returned {type(launcher).__name__}, not a Launcher")
            return ""

        run("factory", build_launcher)
    return rows
