"""Plugin hooks, descriptors and the registry.

Built-ins and third-party packages register through the same four hooks. A
third-party package exposes a module with ``@hookimpl`` functions under the
entry-point group ``sagan_cli``::

    [project.entry-points.sagan_cli]
    my_attention = "my_package.plugin"

Loading order: hookspecs, the ``SAGAN_DISABLED_PLUGINS`` block list, built-ins,
entry points (each isolated: one that fails to import is reported and the rest
still load), modules named in ``SAGAN_PLUGINS`` (local plugins under
development, like ``PYTEST_PLUGINS``), then ``check_pending`` so a misspelled
hook name fails loudly.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal

import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError

from sagan_cli import __version__
from sagan_cli.errors import PluginError, did_you_mean

PROJECT = "sagan_cli"
DISTRIBUTION = "sagan-cli"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[["Plugin"], None]
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*$")


class PluginParams(BaseModel):
    """Base for plugin parameter models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(PluginParams):
    """Parameter model for plugins that take none."""


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """What a hook registers: a name, a one-line summary, a parameter model and a factory."""

    kind: ClassVar[str]
    name: str
    summary: str
    factory: Callable[..., Any]
    params: type[BaseModel] = NoParams


@dataclass(frozen=True, kw_only=True)
class AttentionPlugin(Plugin):
    """``factory(channels, params, weight_norm) -> nn.Module`` mapping (B, C, H, W) to itself."""

    kind: ClassVar[str] = "attention"


@dataclass(frozen=True, kw_only=True)
class NormalizationPlugin(Plugin):
    """Weight or feature normalization.

    ``target="weight"``: ``factory(params) -> (nn.Module -> nn.Module)``, wrapping
    every conv/linear/embedding layer of a network (spectral norm).
    ``target="feature"``: ``factory(params, num_features, num_classes) -> nn.Module``
    whose forward is ``(x, labels)``; ``num_classes == 0`` means unconditional.
    ``conditional`` says whether the feature norm uses the labels.
    """

    kind: ClassVar[str] = "normalization"
    target: Literal["weight", "feature"]
    conditional: bool = False


@dataclass(frozen=True, kw_only=True)
class LossPlugin(Plugin):
    """``factory(params) -> GANLoss`` (see ``sagan_cli.builtins.losses.GANLoss``)."""

    kind: ClassVar[str] = "loss"


@dataclass(frozen=True, kw_only=True)
class DataPlugin(Plugin):
    """``factory(params, resolution) -> DataSource`` (see ``sagan_cli.builtins.data``)."""

    kind: ClassVar[str] = "data"


PLUGIN_CLASSES: dict[str, type[Plugin]] = {
    cls.kind: cls for cls in (AttentionPlugin, NormalizationPlugin, LossPlugin, DataPlugin)
}
KINDS = tuple(PLUGIN_CLASSES)


class _Hookspecs:
    @hookspec
    def sagan_register_attention(self, register: Register) -> None:
        """Register attention modules with ``register(AttentionPlugin(...))``.

        The factory is called as ``factory(channels, params, weight_norm)`` and
        returns an ``nn.Module`` whose forward maps a (B, C, H, W) tensor to the
        same shape. ``weight_norm`` wraps a layer with the network's weight
        normalization (spectral norm in SAGAN); apply it to every conv you make.
        """

    @hookspec
    def sagan_register_normalization(self, register: Register) -> None:
        """Register weight or feature normalizations with ``register(NormalizationPlugin(...))``.

        See ``NormalizationPlugin`` for the two factory signatures.
        """

    @hookspec
    def sagan_register_loss(self, register: Register) -> None:
        """Register adversarial losses with ``register(LossPlugin(...))``.

        The factory returns a ``GANLoss``: ``d_loss(real_logits, fake_logits)``,
        ``g_loss(fake_logits)`` and optionally ``penalty(critic, real, fake)``.
        """

    @hookspec
    def sagan_register_data(self, register: Register) -> None:
        """Register data sources with ``register(DataPlugin(...))``.

        The factory is called as ``factory(params, resolution)`` and returns a
        ``DataSource`` yielding uint8 (3, R, R) images and integer labels.
        """


HOOK_FOR_KIND = {
    "attention": "sagan_register_attention",
    "normalization": "sagan_register_normalization",
    "loss": "sagan_register_loss",
    "data": "sagan_register_data",
}


@dataclass(frozen=True)
class Entry:
    """A registered plugin and the distribution that provided it."""

    plugin: Plugin
    provider: str
    version: str

    @property
    def kind(self) -> str:
        return self.plugin.kind

    @property
    def name(self) -> str:
        return self.plugin.name


@dataclass(frozen=True)
class LoadFailure:
    """A plugin module that could not be imported or whose hook raised."""

    source: str
    provider: str
    error: str

    def describe(self) -> str:
        return f"plugin '{self.source}' from {self.provider} failed to load: {self.error}"


@dataclass
class Registry:
    """Every plugin by kind and name, plus the modules that failed to load."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[LoadFailure] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        existing = self.entries[entry.kind].get(entry.name)
        if existing is not None:
            raise PluginError(
                f"Two plugins register the {entry.kind} '{entry.name}': one from "
                f"{existing.provider} {existing.version} and one from {entry.provider} "
                f"{entry.version}. Uninstall one of them, or block one with "
                f"SAGAN_DISABLED_PLUGINS=<entry point or distribution name>."
            )
        self.entries[entry.kind][entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def all(self, kind: str | None = None) -> list[Entry]:
        kinds = KINDS if kind is None else (kind,)
        return [self.entries[k][n] for k in kinds for n in self.names(k)]

    def get(self, kind: str, name: str, *, key: str) -> Entry:
        """The plugin ``name`` of ``kind``; ``key`` is the recipe key that named it."""
        entry = self.entries[kind].get(name)
        if entry is None:
            available = ", ".join(self.names(kind)) or "none"
            broken = "".join(f" Note: {f.describe()}." for f in self.failures)
            raise PluginError(
                f"{key} = '{name}' is not a registered {kind} plugin.{did_you_mean(name, self.names(kind))} "
                f"Available: {available}. `sagan plugins --kind {kind}` lists them with their "
                f"providers.{broken}"
            )
        return entry

    def validate_params(
        self,
        kind: str,
        name: str,
        values: Mapping[str, Any],
        *,
        key: str,
        table_keys: Iterable[str] = (),
    ) -> BaseModel:
        """Validate ``values`` with the plugin's own model; errors point at ``key.<param>``.

        ``table_keys`` are the host's keys in the same table, offered as suggestions too.
        """
        model = self.get(kind, name, key=key).plugin.params
        unknown = sorted(set(values) - set(model.model_fields))
        problems = []
        for param in unknown:
            allowed = ", ".join(model.model_fields) or "none"
            suggestions = [*model.model_fields, *table_keys]
            problems.append(
                f"{key}.{param}: '{name}' has no parameter '{param}'."
                f"{did_you_mean(param, suggestions)} Its parameters: {allowed}."
            )
        if not problems:
            try:
                return model.model_validate(dict(values))
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(part) for part in (key, *err["loc"]))
                    problems.append(
                        f"{where} = {err.get('input')!r} is not valid for {kind} '{name}': {err['msg']}."
                    )
        raise PluginError(" ".join(problems))


def _disabled_names() -> set[str]:
    raw = os.environ.get("SAGAN_DISABLED_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _builtin_modules() -> list[Any]:
    from sagan_cli.builtins import attention, data, losses, norms

    return [attention, norms, losses, data]


def load_registry() -> Registry:
    """Build a fresh registry from built-ins, entry points and ``SAGAN_PLUGINS``."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(_Hookspecs)
    disabled = _disabled_names()
    registry = Registry()
    providers: dict[str, tuple[str, str]] = {}

    def add_module(module: Any, name: str, provider: tuple[str, str]) -> None:
        if name in disabled or provider[0] in disabled:
            return
        manager.register(module, name=name)
        providers[name] = provider

    for module in _builtin_modules():
        add_module(module, module.__name__, (DISTRIBUTION, __version__))

    for ep in importlib.metadata.entry_points(group=PROJECT):
        dist = (ep.dist.name, ep.dist.version) if ep.dist else (ep.value, "unknown")
        if ep.name in disabled or dist[0] in disabled:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            registry.failures.append(
                LoadFailure(ep.name, f"{dist[0]} {dist[1]}", f"{type(exc).__name__}: {exc}")
            )
            continue
        add_module(module, ep.name, dist)

    local = [m.strip() for m in os.environ.get("SAGAN_PLUGINS", "").split(",") if m.strip()]
    for module_name in local:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            registry.failures.append(
                LoadFailure(module_name, "SAGAN_PLUGINS", f"{type(exc).__name__}: {exc}")
            )
            continue
        add_module(module, module_name, (module_name, "local"))

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"Plugin '{manager.get_name(exc.plugin)}' implements a hook that does not exist ({exc}). Hook names are: "
            f"{', '.join(HOOK_FOR_KIND.values())}."
        ) from exc

    for kind, hook_name in HOOK_FOR_KIND.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            provider, version = providers[impl.plugin_name]
            collected: list[Plugin] = []
            try:
                impl.function(register=collected.append)
            except Exception as exc:
                registry.failures.append(
                    LoadFailure(
                        impl.plugin_name, f"{provider} {version}", f"{hook_name} raised {exc!r}"
                    )
                )
                continue
            for plugin in collected:
                _check_descriptor(plugin, kind, impl.plugin_name)
                if plugin.name in disabled or f"{kind}:{plugin.name}" in disabled:
                    continue
                registry.add(Entry(plugin, provider, version))
    return registry


def _check_descriptor(plugin: Any, kind: str, source: str) -> None:
    expected = PLUGIN_CLASSES[kind]
    if not isinstance(plugin, expected):
        raise PluginError(
            f"Plugin module '{source}' registered {plugin!r} through {HOOK_FOR_KIND[kind]}; "
            f"that hook takes {expected.__name__} descriptors."
        )
    if not NAME_PATTERN.match(plugin.name):
        raise PluginError(
            f"Plugin module '{source}' registered the {kind} name '{plugin.name}'; names are "
            f"lower-case letters, digits, '_' and '-', starting with a letter."
        )
    if not (isinstance(plugin.params, type) and issubclass(plugin.params, BaseModel)):
        raise PluginError(
            f"{kind} '{plugin.name}' from '{source}' gives params={plugin.params!r}; it must be "
            f"a pydantic BaseModel subclass."
        )


@cache
def get_registry() -> Registry:
    """The process-wide registry (``get_registry.cache_clear()`` reloads it)."""
    return load_registry()


def describe(entry: Entry) -> dict[str, Any]:
    """A JSON-friendly description of a registered plugin."""
    params = {
        name: {
            "type": getattr(f.annotation, "__name__", str(f.annotation)),
            "default": None if f.is_required() else f.get_default(call_default_factory=True),
            "description": f.description or "",
        }
        for name, f in entry.plugin.params.model_fields.items()
    }
    extra = {
        f.name: getattr(entry.plugin, f.name)
        for f in dataclasses.fields(entry.plugin)
        if f.name not in {"name", "summary", "factory", "params"}
    }
    return {
        "kind": entry.kind,
        "name": entry.name,
        "summary": entry.plugin.summary,
        "provider": entry.provider,
        "version": entry.version,
        "params": params,
        **extra,
    }
