"""A resolved recipe -> its plugin instances: data source, loss, generator and discriminator.

Every call into plugin code goes through ``plugin_code``, so a plugin that
raises, returns the wrong thing or builds a module of the wrong shape is one
clear error naming it. Modules built by plugins carry their ``Origin``, which
``attribute_errors`` (the dry run) and ``origin_in_traceback`` (training) use to
name the plugin when the module fails while running.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import nn

from sagan_cli.api import (
    DataContext,
    DataSource,
    GANLoss,
    LayerContext,
    NetworkContext,
    WeightNorm,
)
from sagan_cli.device import autocast
from sagan_cli.errors import DataError, PlacementUnsupported, SaganError
from sagan_cli.model import arch
from sagan_cli.model.networks import Discriminator, Generator
from sagan_cli.plugins import (
    CHECKED,
    Entry,
    Registry,
    attributed,
    get_registry,
    plugin_code,
    unsupported,
)
from sagan_cli.recipe import PLUGIN_SLOTS, Recipe, table_at

ORIGIN = "_sagan_origin"


@dataclass(frozen=True)
class Origin:
    """Which plugin built a module, chosen by which recipe key, for which place."""

    entry: Entry
    key: str
    context: NetworkContext

    def where(self) -> str:
        if isinstance(self.context, LayerContext):
            return f"for the {self.context.describe()}"
        net = "generator" if self.context.network == "g" else "discriminator"
        return f"for the {net} ({self.context.resolution}px images)"


def origin_of(module: nn.Module) -> Origin | None:
    return getattr(module, ORIGIN, None)


def plugin_for(
    recipe: Recipe, path: str, registry: Registry | None = None
) -> tuple[Entry, BaseModel]:
    """The plugin named at recipe table ``path`` and its validated parameters."""
    slot = next(s for s in PLUGIN_SLOTS if s.path == path)
    table = table_at(recipe, path)
    name = getattr(table, slot.name_key)
    entry = (registry or get_registry()).get(slot.kind, name, key=f"{path}.{slot.name_key}")
    return entry, entry.plugin.params.model_validate(table.model_extra or {})


def _key(path: str) -> str:
    slot = next(s for s in PLUGIN_SLOTS if s.path == path)
    return f"{path}.{slot.name_key}"


def _checked(
    entry: Entry,
    key: str,
    doing: str,
    call: Callable[[], Any],
    accept: Callable[[Any], bool],
    expected: str,
) -> Any:
    """``call()`` as plugin code; a result ``accept`` refuses is an error naming the plugin."""
    with plugin_code(entry, key, doing):
        result = call()
    if not accept(result):
        raise attributed(entry, key, doing, f"it returned {type(result).__name__}, not {expected}")
    return result


def build_data_source(recipe: Recipe, registry: Registry | None = None) -> DataSource:
    entry, params = plugin_for(recipe, "data", registry)
    context = DataContext(entry.name, recipe.data.resolution)
    source: DataSource = _checked(
        entry,
        "data.source",
        "building the data source",
        lambda: entry.plugin.factory(params, context),
        lambda result: isinstance(result, DataSource),
        "a sagan_cli.api.DataSource",
    )
    return source


def check_data(source: DataSource, registry: Registry | None = None) -> None:
    """``source.check()``, with an unexpected exception blamed on the plugin that built it."""
    entry = (registry or get_registry()).get("data", source.name, key="data.source")
    with plugin_code(entry, "data.source", "checking its data"):
        source.check()


def build_loss(recipe: Recipe, registry: Registry | None = None) -> GANLoss:
    entry, params = plugin_for(recipe, "loss", registry)
    loss: GANLoss = _checked(
        entry,
        "loss.name",
        "building the loss",
        lambda: entry.plugin.factory(params),
        lambda result: all(callable(getattr(result, m, None)) for m in ("d_loss", "g_loss")),
        "a loss with d_loss and g_loss (subclass sagan_cli.api.GANLoss)",
    )
    return loss


def build_augment(
    recipe: Recipe, num_classes: int, registry: Registry | None = None
) -> nn.Module | None:
    """The recipe's augmentation of D's inputs (``train.augment``); None for ``none``."""
    entry, params = plugin_for(recipe, "train.augment", registry)
    if entry.name == "none" and entry.provider == "sagan-cli":
        return None
    context = NetworkContext("d", recipe.data.resolution, num_classes)
    origin = Origin(entry, _key("train.augment"), context)
    module: nn.Module = _checked(
        entry,
        origin.key,
        f"building the augmentation {origin.where()}",
        lambda: entry.plugin.factory(params, context),
        _is_module,
        "an nn.Module with forward(images, generator)",
    )
    object.__setattr__(module, ORIGIN, origin)
    return module


def augment_generator(device: torch.device, *parts: object) -> torch.Generator:
    """The generator an augmentation draws from for one call: seeded by ``parts`` (run seed,
    step, which call, rank), so a resumed run repeats the same augmentations."""
    digest = hashlib.sha256(":".join(map(str, ("augment", *parts))).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return generator


def augment_problem(module: nn.Module, resolution: int, device: torch.device) -> str:
    """What is wrong with an augmentation ("" when nothing): it must keep the shape, stay
    finite, let gradients through to the images (G learns through it) and repeat itself for
    the same generator seed (resumed runs repeat their augmentations)."""
    images = torch.rand(2, 3, resolution, resolution, device=device) * 2 - 1
    images.requires_grad_(True)
    first = module(images, augment_generator(device, "check"))
    again = module(images, augment_generator(device, "check"))
    if not isinstance(first, torch.Tensor) or first.shape != images.shape:
        return f"it returned {tuple(getattr(first, 'shape', ()))} for {tuple(images.shape)} images"
    if not bool(torch.isfinite(first).all()):
        return "its output holds NaN or infinite values"
    if not torch.equal(first, again):
        return (
            "two calls with generators of the same seed gave different images: draw every "
            "random number from the generator argument, so resumed runs repeat them"
        )
    if not first.requires_grad:
        return (
            "it is not differentiable: no gradient reaches the images (G learns through it); "
            "use torch operations on the images, not detached copies or numpy"
        )
    (grad,) = torch.autograd.grad(first.sum(), images)
    if not bool(torch.isfinite(grad).all()) or not bool(grad.abs().sum() > 0):
        return "the gradient it passes back to the images is zero or not finite"
    return ""


def check_augment(module: nn.Module, resolution: int, device: torch.device) -> None:
    """``augment_problem`` before training, as one paragraph naming the plugin."""
    origin = origin_of(module)
    assert origin is not None
    doing = f"augmenting a first batch {origin.where()}"
    with plugin_code(origin.entry, origin.key, doing):
        problem = augment_problem(module, resolution, device)
    if problem:
        raise attributed(origin.entry, origin.key, doing, problem)


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


def _is_module(result: Any) -> bool:
    return isinstance(result, nn.Module)


def _weight_norm(
    recipe: Recipe, path: str, context: NetworkContext, registry: Registry | None
) -> WeightNorm:
    entry, params = plugin_for(recipe, path, registry)
    key = _key(path)
    origin = Origin(entry, key, context)
    wrap = _checked(
        entry,
        key,
        f"building the weight norm {origin.where()}",
        lambda: entry.plugin.factory(params, context),
        callable,
        "a function layer -> layer",
    )

    def guarded(layer: nn.Module) -> nn.Module:
        wrapped: nn.Module = _checked(
            entry,
            key,
            f"wrapping a {type(layer).__name__} {origin.where()}",
            lambda: wrap(layer),
            _is_module,
            "the nn.Module to use",
        )
        return wrapped

    return guarded


def _built_module(origin: Origin, params: BaseModel) -> nn.Module:
    """The module ``origin``'s plugin builds for its place, tagged with that origin."""
    entry = origin.entry
    what = "a block" if entry.kind == "attention" else "a feature norm"
    try:
        module: nn.Module = _checked(
            entry,
            origin.key,
            f"building {what} {origin.where()}",
            lambda: entry.plugin.factory(params, origin.context),
            _is_module,
            "an nn.Module",
        )
    except PlacementUnsupported as exc:
        assert isinstance(origin.context, LayerContext)
        raise unsupported(entry, origin.key, f"the {origin.context.describe()}", str(exc)) from None
    object.__setattr__(module, ORIGIN, origin)  # not a submodule, not in the state dict
    return module


def data_partners(
    source: DataSource, size: int, registry: Registry | None = None
) -> torch.Tensor | None:
    """``source.partners(size)``, checked: (size*size,) int64 positions, or None."""
    registry = registry or get_registry()
    if source.name not in registry.names("data"):
        return None  # not a plugin: the benchmarks' synthetic images, which declare none
    entry = registry.get("data", source.name, key="data.source")
    positions = size * size

    def valid(result: Any) -> bool:
        return result is None or (
            isinstance(result, torch.Tensor)
            and result.shape == (positions,)
            and not result.is_floating_point()
            and not result.is_complex()
            and bool(((result >= 0) & (result < positions)).all())
        )

    with torch.device("cpu"):  # also when networks are built on the meta device
        partners: torch.Tensor | None = _checked(
            entry,
            "data.source",
            f"declaring its partners at {size}x{size}",
            lambda: source.partners(size),
            valid,
            f"None or a ({positions},) integer tensor of positions in [0, {positions})",
        )
    return None if partners is None else partners.to("cpu", torch.int64)


def partners_by_size(
    recipe: Recipe, registry: Registry | None, source: DataSource | None
) -> Callable[[int], torch.Tensor | None]:
    """size -> the data's partners, building the recipe's source (no files read) on first use."""
    sources: list[DataSource] = [source] if source is not None else []

    def partners(size: int) -> torch.Tensor | None:
        if not sources:
            sources.append(build_data_source(recipe, registry))
        return data_partners(sources[0], size, registry)

    return partners


def build_networks(
    recipe: Recipe,
    num_classes: int,
    registry: Registry | None = None,
    source: DataSource | None = None,
) -> tuple[Generator, Discriminator]:
    """G and D with the recipe's norms and attention; ``num_classes`` 0 = unconditional.

    ``source`` declares the data's partners to attention factories; without it the
    recipe's source is built (cheap: no files are read) when an attention place needs it.
    """
    resolution = recipe.data.resolution
    partners = partners_by_size(recipe, registry, source)
    attention_entry, attention_params = plugin_for(recipe, "model.attention", registry)
    feature_entry, feature_params = plugin_for(recipe, "model.norm.features", registry)
    model = recipe.model
    nets: dict[str, nn.Module] = {}
    for network, path in (("g", "model.norm.generator"), ("d", "model.norm.discriminator")):
        network_context = NetworkContext(network, resolution, num_classes)  # type: ignore[arg-type]
        weight_norm = _weight_norm(recipe, path, network_context, registry)

        def attention(
            channels: int, size: int, network: Any = network, weight_norm: WeightNorm = weight_norm
        ) -> nn.Module:
            context = LayerContext(
                network, resolution, num_classes, channels, size, weight_norm, partners(size)
            )
            origin = Origin(attention_entry, _key("model.attention"), context)
            return _built_module(origin, attention_params)

        def feature_norm(
            channels: int, classes: int, size: int, weight_norm: WeightNorm = weight_norm
        ) -> nn.Module:
            context = LayerContext("g", resolution, classes, channels, size, weight_norm)
            origin = Origin(feature_entry, _key("model.norm.features"), context)
            return _built_module(origin, feature_params)

        if network == "g":
            nets[network] = Generator(
                resolution,
                model.g_channels,
                model.z_dim,
                num_classes,
                recipe.g_attention,
                weight_norm,
                feature_norm,
                attention,
            )
        else:
            nets[network] = Discriminator(
                resolution,
                model.d_channels,
                num_classes,
                recipe.d_attention,
                weight_norm,
                attention,
            )
    generator, discriminator = nets["g"], nets["d"]
    assert isinstance(generator, Generator) and isinstance(discriminator, Discriminator)
    return generator, discriminator


def placement_problem(recipe: Recipe, registry: Registry | None = None) -> SaganError | None:
    """The first attention place of ``recipe`` its plugin declines (``PlacementUnsupported``
    or a ``PluginError`` it raises itself), found by calling the factory at each place
    without weight norm: cheap, no network."""
    entry, params = plugin_for(recipe, "model.attention", registry)
    key = _key("model.attention")
    resolution, model = recipe.data.resolution, recipe.model
    partners = partners_by_size(recipe, registry, None)
    placements: tuple[tuple[Literal["g", "d"], list[int], int], ...] = (
        ("g", recipe.g_attention, model.g_channels),
        ("d", recipe.d_attention, model.d_channels),
    )
    for network, sizes, width in placements:
        channels = arch.feature_channels(network, resolution, width)
        for size in sizes:
            try:
                context = LayerContext(
                    network,
                    resolution,
                    0,
                    channels[size],
                    size,
                    lambda m: m,
                    partners(size),
                )
                with plugin_code(entry, key, f"building a block for the {context.describe()}"):
                    entry.plugin.factory(params, context)
            except PlacementUnsupported as exc:
                return unsupported(entry, key, f"the {context.describe()}", str(exc))
            except SaganError as exc:
                if getattr(exc, "deliberate", False):  # the plugin refused this recipe
                    return exc
                return None  # a broken plugin: building the networks reports it in full
    return None


def origin_in_traceback(exc: BaseException) -> Origin | None:
    """The innermost plugin-built module whose code was running when ``exc`` was raised.

    Costs nothing until something fails (no hooks), so training and compiled
    networks use it; exceptions raised in autograd's backward carry no module
    frames and stay unattributed.
    """
    found = None
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frame = error.__traceback__
        while frame is not None:
            module = frame.tb_frame.f_locals.get("self")
            if isinstance(module, nn.Module) and origin_of(module) is not None:
                found = origin_of(module)
            frame = frame.tb_next
        if found is not None:
            return found
        error = error.__cause__ or error.__context__
    return None


def _tensor(value: Any) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) else None


@contextlib.contextmanager
def attribute_errors(*networks: nn.Module, mode: tuple[str, str] = CHECKED) -> Iterator[None]:
    """Inside: a plugin-built module that raises, or returns a tensor of another shape or a
    non-finite one, is a ``PluginError`` naming the plugin, its key and its place (and the
    check that reproduces it in ``mode``: device type, precision)."""
    running: list[Origin] = []
    handles = []

    def before(origin: Origin) -> Callable[..., None]:
        return lambda module, args: running.append(origin)

    def after(origin: Origin) -> Callable[..., None]:
        def check(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            running.pop()
            x, out = _tensor(args[0] if args else None), _tensor(output)
            doing = f"running {origin.where()}"
            if out is None:
                raise attributed(
                    origin.entry,
                    origin.key,
                    doing,
                    mode=mode,
                    detail=f"its forward returned {type(output).__name__}, not a tensor",
                )
            if x is not None and out.shape != x.shape:
                raise attributed(
                    origin.entry,
                    origin.key,
                    doing,
                    mode=mode,
                    detail=f"it maps a {tuple(x.shape)} feature map to {tuple(out.shape)}; the output "
                    f"must keep the input's shape (batch, channels, height, width)",
                )
            if out.is_floating_point() and not out.is_meta and not bool(torch.isfinite(out).all()):
                raise attributed(
                    origin.entry,
                    origin.key,
                    doing,
                    mode=mode,
                    detail="its output holds NaN or infinite values on a finite input",
                )

        return check

    for network in networks:
        for module in network.modules():
            origin = origin_of(module)
            if origin is not None:
                handles.append(module.register_forward_pre_hook(before(origin)))
                handles.append(module.register_forward_hook(after(origin)))
    try:
        yield
    except SaganError:
        raise
    except Exception as exc:
        if not running:
            raise
        origin = running[-1]
        raise attributed(
            origin.entry,
            origin.key,
            f"running {origin.where()}",
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            mode=mode,
        ) from exc
    finally:
        for handle in handles:
            handle.remove()


def verify_networks(
    generator: Generator,
    discriminator: Discriminator,
    z_dim: int,
    num_classes: int,
    loss: tuple[GANLoss, Entry] | None = None,
    precision: str = "fp32",
) -> None:
    """One tiny forward and backward through G and D (and the loss) before any training.

    Plugin mistakes (exceptions, wrong shapes, NaN) surface here as one clear error
    instead of deep inside the first step. Runs in eval mode with the RNG forked
    and gradients cleared, so no weight, buffer or random state changes; the
    networks are used as they are (device and layout) under ``precision``.
    """
    device = next(generator.parameters()).device
    modes = (generator.training, discriminator.training)
    generator.eval()
    discriminator.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        mode = (device.type, precision)
        with (
            torch.random.fork_rng(devices=devices),
            attribute_errors(generator, discriminator, mode=mode),
        ):
            z = torch.randn(2, z_dim, device=device)
            labels = torch.arange(2, device=device) % num_classes if num_classes else None
            with autocast(device, precision):
                logits = discriminator(generator(z, labels), labels).float()
            if loss is not None:
                objective, entry = loss
                with plugin_code(
                    entry, "loss.name", "computing its losses on a first batch", mode=mode
                ):
                    values = [objective.d_loss(logits, logits), objective.g_loss(logits)]
                for value in values:
                    if not isinstance(value, torch.Tensor) or value.numel() != 1:
                        raise attributed(
                            entry,
                            "loss.name",
                            "computing its losses on a first batch",
                            f"it returned {type(value).__name__} {tuple(getattr(value, 'shape', ()))}, "
                            f"not a scalar tensor",
                        )
                logits = values[0] + values[1]
            logits.float().sum().backward()
    finally:
        for network, training in zip((generator, discriminator), modes, strict=True):
            network.train(training)
            network.zero_grad(set_to_none=True)


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
    return [(name, shape, count_parameters(modules[name])) for name, shape in shapes.items()]


def summarize_networks(
    recipe: Recipe, num_classes: int, registry: Registry | None = None
) -> NetworkSummary:
    """Build and verify G and D for ``recipe``; trace one tiny batch to report shapes and counts.

    Built on the CPU (spectral norm's first power iterations are quick there), then run
    on the meta device (shapes only, no arithmetic: the 128x128 paper model in seconds);
    a plugin whose modules cannot run there is run on the CPU instead.
    """
    built = build_networks(recipe, num_classes, registry)
    try:
        generator, discriminator = built
        return _summarize(
            recipe,
            num_classes,
            copy.deepcopy(generator).to("meta"),
            copy.deepcopy(discriminator).to("meta"),
        )
    except SaganError:
        raise
    except Exception:  # noqa: BLE001 - e.g. a plugin reading values (.item()) in forward
        return _summarize(recipe, num_classes, *built)


def _summarize(
    recipe: Recipe, num_classes: int, generator: Generator, discriminator: Discriminator
) -> NetworkSummary:
    verify_networks(generator, discriminator, recipe.model.z_dim, num_classes)
    generator.eval()
    discriminator.eval()
    device = next(generator.parameters()).device
    z = torch.zeros(2, recipe.model.z_dim, device=device)
    labels = torch.zeros(2, dtype=torch.long, device=device) if num_classes else None
    images = torch.zeros(2, 3, recipe.data.resolution, recipe.data.resolution, device=device)
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
