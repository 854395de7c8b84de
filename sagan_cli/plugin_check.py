"""The plugin contract: a plugin built and exercised at every place sagan-cli uses it.

``sagan plugins check`` and ``sagan_cli.testing.check_plugin`` (for plugin
authors' own test suites) both run ``check_plugin`` here. The rules (the plugin
guide states them too) mirror training exactly:

* attention: built for G and D at every feature size and width the shipped
  recipes use (any of them can be an ablation's placement), with spectral norm
  as the weight norm, and fed inputs of exactly the context's size. Run twice:
  as written (contiguous, fp32) and as training runs it on this device (its
  tensor layout, channels_last by default, and precision, through the same
  conversion training uses). The output keeps the input's shape and is finite;
  gradients reach the input and the parameters and are finite (parameters may
  have none: a block that starts as the identity gives some none). A second
  derivative exists (gradient penalties need one), checked at the context's
  size up to 16x16 and on a 16x16 build of the same block above it (the maths
  attention path's N x N maps grow as N^2). A plugin claiming
  ``identity_at_init`` returns its input unchanged; blocks are given the
  mirror image as the data's declared partners (``LayerContext.partners``); ``AttentionMaps`` modules
  return (B, N, M) rows summing to 1. A factory raising ``PlacementUnsupported``
  marks that place "not supported", with its reason.
* weight norm: wraps a conv, a linear and an embedding into working modules of
  the same output shape, for G and D.
* feature norm: ``forward(x, labels)`` keeps the shape at every G place, with
  labels when ``conditional``, in both layouts.
* loss: ``d_loss``/``g_loss`` give finite scalars with gradients; a ``penalty``
  is None or a finite scalar.
* augment: at every image size, keeps the shape, stays finite, lets gradients
  through to the images and repeats itself for the same generator seed.
* data: at 32x32, ``check()`` passes or names the missing data (reported as
  not checked), and items are uint8 (3, R, R) with an int label.
* launcher: the factory returns a ``Launcher`` (a missing extra is reported as
  not checked, with its install command).
* tracker: the factory returns a ``Tracker`` that goes through a run's life in a
  temporary folder (start, metrics, an image, a file, finish); a backend its ``check``
  finds unusable (a server down, an extra missing) is reported as not checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
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
from sagan_cli.components import augment_problem
from sagan_cli.datasets.shapes import mirror_partners
from sagan_cli.device import (
    autocast,
    check_precision,
    convert_memory_format,
    default_memory_format,
    effective_precision,
    torch_memory_format,
)
from sagan_cli.errors import (
    DataError,
    PlacementUnsupported,
    PluginError,
    SaganError,
    describe_exception,
)
from sagan_cli.model import arch
from sagan_cli.plugins import Entry, Registry
from sagan_cli.recipe import load_recipe, shipped_recipe_names

SECOND_ORDER_MAX = 16  # feature size up to which second derivatives are checked in place
OUTCOMES = ("ok", "failed", "not supported", "not checked")
EXPLAINED = {
    "not supported": "the plugin declines these places (PlacementUnsupported, its reason "
    "above): training and recipe validate refuse them, ablations skip them",
    "not checked": "nothing could be exercised there (data files or an optional extra are "
    "missing here; the reason is above): install or point at them and check again",
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

    def context(
        self, weight_norm: Callable[[nn.Module], nn.Module], classes: int = 0
    ) -> LayerContext:
        # Blocks that need the data's declared dependency get the mirror image (``shapes``').
        return LayerContext(
            self.network,
            self.resolution,
            classes,
            self.channels,
            self.feature_size,
            weight_norm,
            mirror_partners(self.feature_size),
        )


@dataclass
class CheckRow:
    """One place a plugin was checked at, and what came of it."""

    kind: str
    name: str
    provider: str
    place: str  # "G 16x16, 256 ch (32px)", "D layers", "logits", ...
    outcome: str  # one of OUTCOMES
    detail: str
    seconds: float
    refused: bool = False  # failed because the plugin itself refused the parameters it was given


class Refused(PluginError):
    """The plugin's factory raised ``PluginError`` itself: it refuses the parameters (or the
    place) it was given, which is the caller's to change, not a broken contract."""


def _build(entry: Entry, *arguments: Any) -> Any:
    """The plugin's factory, with its own ``PluginError`` marked as a refusal."""
    try:
        return entry.plugin.factory(*arguments)
    except PluginError as exc:
        raise Refused(str(exc)) from exc


@dataclass(frozen=True)
class TrainingLayout:
    """How training runs a module on a device: where, in which tensor layout and precision."""

    device: torch.device
    memory_format: str
    precision: str

    @classmethod
    def on(cls, device: torch.device, precision: str | None = None) -> TrainingLayout:
        """What training runs there: the default tensor layout, and ``precision`` as training
        would run it (bf16 on a CPU with native bf16, as train.bf16_on_cpu allows); without
        one, what a recipe with the defaults runs (bf16 on CUDA, fp32 elsewhere)."""
        effective = (
            effective_precision(device, "bf16", on_cpu=False)
            if precision is None
            else check_precision(device, precision)
        )
        return cls(device, default_memory_format(device), effective)

    def describe(self) -> str:
        return f"{self.memory_format}, {self.precision}: how training runs it on {self.device.type}"


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


PLACE_SPEC = re.compile(r"^([gd])(\d+)(?:@(\d+))?$")


def select_placements(available: list[Placement], specs: Iterable[str]) -> list[Placement]:
    """The places named by ``g16`` (G at 16x16, every resolution) or ``d8@64`` (D at 8x8 of
    64px images); an empty list of specs means all of ``available``."""
    specs = [s.strip().lower() for s in specs if s.strip()]
    if not specs:
        return available
    chosen: dict[Placement, None] = {}
    for spec in specs:
        match = PLACE_SPEC.match(spec)
        if match is None:
            raise SaganError(
                f"Placement '{spec}' is not NETWORK SIZE[@RESOLUTION]: write g16 (the generator at "
                f"16x16, every image size) or d8@64 (the discriminator at 8x8 of 64px images)."
            )
        network, size, resolution = match.group(1), int(match.group(2)), match.group(3)
        found = [
            p
            for p in available
            if p.network == network
            and p.feature_size == size
            and (resolution is None or p.resolution == int(resolution))
        ]
        if not found:
            offered = sorted(
                {f"{p.network}{p.feature_size}@{p.resolution}" for p in available},
                key=lambda text: (text[0], int(text[1:].split("@")[0]), text),
            )
            raise SaganError(
                f"Placement '{spec}' is not a place the shipped recipes build attention at; "
                f"they use {', '.join(offered)}."
            )
        chosen.update(dict.fromkeys(found))
    return list(chosen)


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


def _in_phase(label: str, run: Callable[[], Any]) -> Any:
    """``run()``; what it raises names the phase (``as written``, ``as training runs it``)."""
    try:
        return run()
    except PlacementUnsupported:
        raise
    except SaganError as exc:
        raise PluginError(f"{label}: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"{label}: {describe_exception(exc)}") from exc


def _forward_backward(module: nn.Module, x: torch.Tensor, precision: str) -> None:
    """Training's use of a block: forward in train mode, backward to input and parameters."""
    module.train()
    x = x.detach().requires_grad_(True)
    with autocast(x.device, precision):
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
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device)
    (y.float() * weights).sum().backward()
    if not _finite(x.grad):
        raise PluginError("the gradient with respect to its input is not finite")
    for name, param in module.named_parameters():
        if not _finite(param.grad):
            raise PluginError(f"the gradient of its parameter '{name}' is not finite")
    module.zero_grad(set_to_none=True)


def _second_derivative(module: nn.Module, x: torch.Tensor) -> None:
    """What a gradient penalty does: a gradient of a function of the input's gradient."""
    module.train()
    small = x.detach().requires_grad_(True)
    with sdpa_kernel([SDPBackend.MATH]):
        y = module(small)
        (grad,) = torch.autograd.grad((y * y.detach()).sum(), small, create_graph=True)
        try:
            if grad.requires_grad:  # else the block is linear in x: a zero second derivative
                grad.square().sum().backward()
        except RuntimeError as exc:
            raise PluginError(
                f"it has no second derivative, which gradient penalties (loss.name = "
                f"'wasserstein') need: {str(exc).splitlines()[0]}"
            ) from None
    module.zero_grad(set_to_none=True)


def _check_maps(module: nn.Module, x: torch.Tensor, place: Placement) -> None:
    with torch.no_grad():
        beta = module.attention_maps(x)  # type: ignore[operator]
    h, w = module.key_grid(place.feature_size, place.feature_size)  # type: ignore[operator]
    expected = (x.shape[0], place.feature_size**2, h * w)
    if tuple(beta.shape) != expected:
        raise PluginError(
            f"attention_maps returned {tuple(beta.shape)}; expected (B, N, M) = {expected} "
            f"with M from key_grid"
        )
    if not torch.allclose(beta.sum(-1).float().cpu(), torch.ones(expected[:2]), atol=1e-3):
        raise PluginError("the rows of attention_maps do not sum to 1")


def _build_attention(entry: Entry, params: Any, place: Placement, registry: Registry) -> nn.Module:
    module = _build(
        entry, params, place.context(_spectral(registry, place.network, place.resolution))
    )
    if not isinstance(module, nn.Module):
        raise PluginError(f"its factory returned {type(module).__name__}, not an nn.Module")
    return module


def _check_attention(
    entry: Entry, params: Any, place: Placement, registry: Registry, layout: TrainingLayout
) -> None:
    plugin = entry.plugin
    assert isinstance(plugin, AttentionPlugin)
    module = _build_attention(entry, params, place, registry).to(layout.device)
    size, channels = place.feature_size, place.channels
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, size, size, generator=generator).to(layout.device)
    if plugin.starts_as_identity(params):
        module.eval()
        with torch.no_grad():
            y = module(x)
        if not (
            isinstance(y, torch.Tensor) and y.shape == x.shape and torch.allclose(y, x, atol=1e-6)
        ):
            raise PluginError(
                "it claims identity_at_init but does not return its input unchanged when built"
            )
    _in_phase("as written (contiguous, fp32)", partial(_forward_backward, module, x, "fp32"))
    if isinstance(module, AttentionMaps):
        _in_phase("attention_maps", partial(_check_maps, module, x, place))
    converted = convert_memory_format(module, layout.memory_format)
    trained = x.contiguous(memory_format=torch_memory_format(layout.memory_format))
    _in_phase(
        f"as training runs it ({layout.describe()})",
        partial(_forward_backward, converted, trained, layout.precision),
    )
    probe, probe_place = converted, place
    if size > SECOND_ORDER_MAX:
        probe_place = Placement(place.network, place.resolution, SECOND_ORDER_MAX, channels)
        try:
            probe = convert_memory_format(
                _build_attention(entry, params, probe_place, registry).to(layout.device),
                layout.memory_format,
            )
        except PlacementUnsupported:
            return  # it declines the small size: second derivatives are checked where it builds
    small = torch.randn(1, channels, probe_place.feature_size, probe_place.feature_size)
    small = small.to(layout.device).contiguous(
        memory_format=torch_memory_format(layout.memory_format)
    )
    where = "" if probe is converted else f" (a {SECOND_ORDER_MAX}x{SECOND_ORDER_MAX} build)"
    _in_phase(f"second derivative{where}", partial(_second_derivative, probe, small))


def _check_weight_norm(entry: Entry, params: Any, network: str, resolution: int) -> None:
    wrap = _build(entry, params, NetworkContext(network, resolution, 0))  # type: ignore[arg-type]
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


def _check_feature_norm(
    entry: Entry, params: Any, place: Placement, classes: int, layout: TrainingLayout
) -> None:
    module = _build(entry, params, place.context(lambda m: m, classes))
    if not isinstance(module, nn.Module):
        raise PluginError(f"its factory returned {type(module).__name__}, not an nn.Module")
    module = module.to(layout.device)
    size = place.feature_size
    labels = torch.arange(4, device=layout.device) % classes if classes else None

    def run(net: nn.Module, memory_format: str, precision: str) -> None:
        x = torch.randn(4, place.channels, size, size, device=layout.device)
        x = x.contiguous(memory_format=torch_memory_format(memory_format)).requires_grad_(True)
        with autocast(layout.device, precision):
            y = net(x, labels)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or not _finite(y):
            raise PluginError(
                f"forward(x, labels) returned {tuple(getattr(y, 'shape', ()))} for a "
                f"{tuple(x.shape)} input, or non-finite values; it must keep the shape"
            )
        y.float().sum().backward()

    _in_phase("as written (contiguous, fp32)", partial(run, module, "contiguous", "fp32"))
    converted = convert_memory_format(module, layout.memory_format)
    _in_phase(
        f"as training runs it ({layout.describe()})",
        partial(run, converted, layout.memory_format, layout.precision),
    )


def _check_augment(entry: Entry, params: Any, layout: TrainingLayout) -> None:
    for resolution in arch.RESOLUTIONS:
        module = _build(entry, params, NetworkContext("d", resolution, 0))
        if not isinstance(module, nn.Module):
            raise PluginError(f"its factory returned {type(module).__name__}, not an nn.Module")
        problem = augment_problem(module.to(layout.device), resolution, layout.device)
        if problem:
            raise PluginError(f"at {resolution}px: {problem}")


def _check_loss(entry: Entry, params: Any) -> None:
    loss = _build(entry, params)
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
    source = _build(entry, params, DataContext(entry.name, resolution))
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


def _check_launcher(entry: Entry, params: Any) -> str:
    try:
        launcher = _build(entry, params)
    except Refused:
        raise
    except SaganError as exc:  # a missing optional extra: nothing to exercise here
        return f"not checked: {exc}"
    if not isinstance(launcher, Launcher):
        raise PluginError(f"its factory returned {type(launcher).__name__}, not a Launcher")
    return ""


def _check_tracker(entry: Entry, params: Any) -> str:
    import tempfile

    import numpy as np

    from sagan_cli.api import TrackContext, TrackedRun, Tracker

    with tempfile.TemporaryDirectory(prefix="sagan-tracker-check-") as folder:
        tracker = _build(entry, params, TrackContext("sagan-plugins-check", folder))
        if not isinstance(tracker, Tracker):
            raise PluginError(f"its factory returned {type(tracker).__name__}, not a Tracker")
        try:
            tracker.check()
        except SaganError as exc:  # the backend, not the contract: nothing to exercise here
            return f"not checked: {exc}"
        note = Path(folder) / "note.txt"
        note.write_text("a file for log_file\n")
        run = TrackedRun("0123456789ab", "check", folder, {"model.attention_layer": "[16]"})
        tracker.start(run)
        tracker.log_metrics(1, {"train/d_loss": 1.0, "train/g_loss": -0.5}, {})
        tracker.log_metrics(2, {"eval/fid": 41.0}, {"protocol": "check"})
        tracker.log_image("samples", 2, np.zeros((3, 8, 8), dtype=np.uint8))
        tracker.log_file(str(note))
        tracker.finish("done")
    return ""


Check = Callable[[], "str | None"]
KindCheck = Callable[
    [Entry, Any, list[Placement], Registry, TrainingLayout], list[tuple[str, Check]]
]


def _attention_places(
    entry: Entry,
    params: Any,
    placements: list[Placement],
    registry: Registry,
    layout: TrainingLayout,
) -> list[tuple[str, Check]]:
    return [
        (p.describe(), partial(_check_attention, entry, params, p, registry, layout))
        for p in placements
    ]


def _normalization_places(
    entry: Entry,
    params: Any,
    placements: list[Placement],
    registry: Registry,
    layout: TrainingLayout,
) -> list[tuple[str, Check]]:
    plugin = entry.plugin
    assert isinstance(plugin, NormalizationPlugin)
    if plugin.target == "weight":
        return [
            (f"{net.upper()} layers", partial(_check_weight_norm, entry, params, net, 32))
            for net in ("g", "d")
        ]
    classes = 10 if plugin.conditional else 0
    return [
        (p.describe(), partial(_check_feature_norm, entry, params, p, classes, layout))
        for p in placements
        if p.network == "g"
    ]


# Every plugin kind's contract check: the places it is exercised at, and how. A new kind adds
# its row here (tests/test_plugins.py fails for a kind without one).
CHECKS: dict[str, KindCheck] = {
    "attention": _attention_places,
    "normalization": _normalization_places,
    "loss": lambda entry, params, *_: [("logits", partial(_check_loss, entry, params))],
    "augment": lambda entry, params, _places, _registry, layout: [
        ("images", partial(_check_augment, entry, params, layout))
    ],
    # decoding a whole split at every size costs minutes: the smallest size only
    "data": lambda entry, params, *_: [
        (f"{arch.RESOLUTIONS[0]}px", partial(_check_data, entry, params, arch.RESOLUTIONS[0]))
    ],
    "launcher": lambda entry, params, *_: [("factory", partial(_check_launcher, entry, params))],
    "tracker": lambda entry, params, *_: [("a run's life", partial(_check_tracker, entry, params))],
}


def validated_params(entry: Entry, registry: Registry, params: dict[str, Any]) -> BaseModel:
    """The plugin's parameters from ``--param`` values; missing or bad ones are exit-2 errors."""
    model = entry.plugin.params
    missing = [
        name
        for name, field in model.model_fields.items()
        if field.is_required() and name not in params
    ]
    if missing:
        raise PluginError(
            f"The {entry.describe()} needs values for {', '.join(missing)}: pass them with "
            + " ".join(f"--param {name}=VALUE" for name in missing)
            + "."
        )
    return registry.validate_params(entry.kind, entry.name, params, key="--param")


def check_plugin(
    entry: Entry,
    registry: Registry,
    placements: Iterable[Placement],
    params: dict[str, Any] | None = None,
    device: torch.device | None = None,
    on_row: Callable[[CheckRow], None] = lambda row: None,
    precision: str | None = None,
) -> list[CheckRow]:
    """Build and exercise ``entry`` at every place it can be used; one row per place.

    ``params`` are validated first (a ``PluginError`` for missing or bad values);
    ``device`` (default CPU) decides the layout training would use, ``precision``
    (fp32, bf16, fp16) the mixed precision (default: training's on that device).
    """
    validated = validated_params(entry, registry, params or {})
    layout = TrainingLayout.on(device or torch.device("cpu"), precision)
    rows: list[CheckRow] = []

    def run(place: str, check: Callable[[], str | None]) -> None:
        started = time.perf_counter()
        outcome, detail, refused = "ok", "", False
        try:
            note = check()
            if note:
                outcome, detail = "not checked", note.removeprefix("not checked: ")
        except PlacementUnsupported as exc:
            outcome, detail = "not supported", str(exc)
        except Refused as exc:
            outcome, detail, refused = "failed", f"it refused its parameters: {exc}", True
        except SaganError as exc:
            outcome, detail = "failed", str(exc)
        except Exception as exc:
            outcome, detail = "failed", describe_exception(exc)
        row = CheckRow(
            entry.kind,
            entry.name,
            f"{entry.provider} {entry.version}",
            place,
            outcome,
            detail,
            time.perf_counter() - started,
            refused,
        )
        rows.append(row)
        on_row(row)

    for place, check in CHECKS[entry.kind](entry, validated, list(placements), registry, layout):
        run(place, check)
    return rows


def explain_outcomes(rows: list[CheckRow]) -> list[str]:
    """What each outcome other than ok and failed means, for the rows that have it."""
    return [
        f"{sum(r.outcome == outcome for r in rows)} {outcome}: {text}."
        for outcome, text in EXPLAINED.items()
        if any(r.outcome == outcome for r in rows)
    ]


LISTED_PLACES = 6  # more places than this, all failing alike, are "all N places"


@dataclass(frozen=True)
class CheckGroup:
    """Rows of one plugin that came out the same way (same outcome, same detail): a plugin
    that raises everywhere is one line naming its places, not one per place."""

    rows: tuple[CheckRow, ...]
    of: int  # how many places this plugin was checked at

    @property
    def first(self) -> CheckRow:
        return self.rows[0]

    @property
    def places(self) -> str:
        """Where: the place itself, "all N places", or "N places: A; B; ..."."""
        if len(self.rows) == 1:
            return self.first.place
        if len(self.rows) == self.of and self.of > LISTED_PLACES:
            return f"all {self.of} places"
        return f"{len(self.rows)} places: " + "; ".join(r.place for r in self.rows)

    def describe(self) -> str:
        return f"{self.first.name} ({self.first.outcome}) at {self.places}: {self.first.detail}"


def group_rows(rows: list[CheckRow]) -> list[CheckGroup]:
    """``rows`` grouped by plugin, outcome and detail, in the order they first appear."""
    keys = [(r.kind, r.name, r.provider, r.outcome, r.detail) for r in rows]
    places_of = {(k, n): sum(1 for r in rows if (r.kind, r.name) == (k, n)) for k, n, *_ in keys}
    grouped: dict[tuple[str, ...], list[CheckRow]] = {}
    for key, row in zip(keys, rows, strict=True):
        grouped.setdefault(key, []).append(row)
    return [CheckGroup(tuple(g), places_of[(g[0].kind, g[0].name)]) for g in grouped.values()]


def failure_summary(rows: list[CheckRow]) -> str | None:
    """One paragraph for the failed rows, naming whose fix it is (None: nothing failed)."""
    failed = [r for r in rows if r.outcome == "failed"]
    if not failed:
        return None
    groups = group_rows(failed)
    first = groups[0].first
    how_many = "one error" if len(groups) == 1 else f"{len(groups)} different errors; first"
    head = (
        f"{len(failed)} of {len(rows)} checks failed, with {how_many}: {first.kind} plugin "
        f"'{first.name}' ({first.provider}) at {groups[0].places}: {first.detail.rstrip('.')}."
    )
    if all(r.refused for r in failed):
        return (
            f"{head} The plugin refused the parameters it was given (its own message above): "
            f"that is the parameters' problem, not the plugin's. Change them (--param, or the "
            f"recipe's table of the plugin) and check again."
        )
    return f"{head} This is a problem in the plugin: fix it and check again (details above)."
