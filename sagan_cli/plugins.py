"""The plugin registry: built-ins and installed packages, loaded the same way.

Loading order (as tox and llm do): hookspecs, the ``SAGAN_DISABLED_PLUGINS``
block list, built-in modules, entry points of the group ``sagan_cli`` (each
isolated: one that fails to import is reported and the rest still load),
modules named in ``SAGAN_PLUGINS`` (local plugins under development, like
``PYTEST_PLUGINS``), then ``check_pending`` so a misspelled hook name fails
loudly. The contract plugins implement is ``sagan_cli.api``.

Code that is not ours runs inside ``plugin_code(...)``: any exception it raises
becomes a ``PluginError`` naming the plugin, its provider, the recipe key and
where it was being built or run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from types import ModuleType
from typing import Any, TypeVar

import pluggy
from pydantic import BaseModel, ValidationError

from sagan_cli import __version__, api
from sagan_cli.api import API_VERSION, HOOKS, KINDS, PLUGIN_CLASSES, PROJECT, Hookspecs, Plugin
from sagan_cli.errors import (
    PlacementUnsupported,
    PluginError,
    SaganError,
    describe_exception,
    did_you_mean,
)

DISTRIBUTION = "sagan-cli"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*$")
ModelT = TypeVar("ModelT", bound=BaseModel)
GUIDE = (
    "the plugin guide: README.md, section 'Writing a plugin', and "
    "plugins/sagan-extra-attention/README.md"
)


CHECKED = ("cpu", "fp32")  # what `sagan plugins check` runs by default: a CPU, fp32


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

    def describe(self) -> str:
        return f"{self.kind} plugin '{self.name}' ({self.provider} {self.version})"


@dataclass(frozen=True)
class LoadFailure:
    """A plugin module that could not be imported or whose hook raised."""

    source: str
    provider: str
    error: str

    def describe(self) -> str:
        return f"plugin '{self.source}' from {self.provider} failed to load: {self.error}"


class DisabledPlugin(PluginError):
    """Recipe keys name plugins that ``SAGAN_DISABLED_PLUGINS`` left out (through ``entry``)."""

    def __init__(self, entry: str, uses: list[str]) -> None:
        self.entry = entry  # the variable's entry that disabled them
        self.uses = uses  # "model.attention.name = 'sagan'", ...
        them = "that plugin is" if len(uses) == 1 else f"these {len(uses)} plugins are"
        super().__init__(
            f"{', '.join(uses)}: {them} disabled by the environment variable "
            f"SAGAN_DISABLED_PLUGINS, which names '{entry}'. Remove '{entry}' from it, or "
            f"unset it (unset SAGAN_DISABLED_PLUGINS)."
        )


@dataclass
class Registry:
    """Every plugin by kind and name, plus what went wrong while loading them."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[LoadFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # (kind, name) -> the SAGAN_DISABLED_PLUGINS entry that left the plugin out, and the
    # disabled entry points, which are never imported (so what they hold is unknown)
    disabled: dict[tuple[str, str], str] = field(default_factory=dict)
    disabled_entry_points: list[str] = field(default_factory=list)

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

    def find(self, name: str) -> list[Entry]:
        """Every plugin called ``name``, of any kind."""
        return [e for e in self.all() if e.name == name]

    def get(self, kind: str, name: str, *, key: str) -> Entry:
        """The plugin ``name`` of ``kind``; ``key`` is the recipe key that named it."""
        entry = self.entries[kind].get(name)
        if entry is None and (kind, name) in self.disabled:
            raise DisabledPlugin(self.disabled[(kind, name)], [f"{key} = '{name}'"])
        if entry is None:
            available = ", ".join(self.names(kind)) or "none"
            notes = "".join(f" Note: {f.describe()}." for f in self.failures)
            notes += "".join(f" Note: {text}" for text in self.packages_without_entry_point)
            notes += "".join(
                f" Note: SAGAN_DISABLED_PLUGINS leaves out the entry point {point}, which may "
                f"provide it."
                for point in self.disabled_entry_points
            )
            raise PluginError(
                f"{key} = '{name}' is not a registered {kind} plugin.{did_you_mean(name, self.names(kind))} "
                f"Available: {available}. `sagan plugins --kind {kind}` lists them with their "
                f"providers.{notes}"
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
        joiner: str = ".",
    ) -> BaseModel:
        """Validate ``values`` with the plugin's own model; errors point at ``key<joiner><param>``.

        ``table_keys`` are the host's keys in the same table, offered as suggestions too.
        ``joiner`` is "_" where a recipe writes the parameters flat (``track.mlflow_uri``).
        """
        model = self.get(kind, name, key=key).plugin.params
        unknown = sorted(set(values) - set(model.model_fields))
        problems: list[tuple[str, str]] = []  # (the full key, what is wrong with it)
        for param in unknown:
            allowed = ", ".join(model.model_fields) or "none"
            suggestions = [*model.model_fields, *table_keys]
            problems.append(
                (
                    f"{key}{joiner}{param}",
                    f"{key}{joiner}{param}: '{name}' has no parameter '{param}'."
                    f"{did_you_mean(param, suggestions)} Its parameters: {allowed}.",
                )
            )
        if not problems:
            try:
                return validate_toml_values(model, values)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = [str(part) for part in err["loc"]]
                    where = f"{key}{joiner}{loc[0]}" if loc else key
                    full = f"{key}{joiner}{'.'.join(loc)}" if loc else key
                    problems.append(
                        (
                            where,
                            f"{full} = {err.get('input')!r} is not valid for {kind} '{name}': "
                            f"{err['msg']}.",
                        )
                    )
        error = PluginError(" ".join(text for _, text in problems))
        error.keys = [where for where, _ in problems]  # type: ignore[attr-defined]
        raise error

    @cached_property
    def packages_without_entry_point(self) -> list[str]:
        """Installed packages that depend on sagan-cli but declare no ``sagan_cli`` entry point."""
        found = []
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"] or ""
            if _normalise(name) == _normalise(DISTRIBUTION):
                continue
            requires = [
                _normalise(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0])
                for r in dist.requires or []
            ]
            if _normalise(DISTRIBUTION) in requires and not any(
                ep.group == PROJECT for ep in dist.entry_points
            ):
                found.append(
                    f"the installed package {name} {dist.version} depends on sagan-cli but declares "
                    f"no [project.entry-points.sagan_cli] entry point, so none of its plugins are "
                    f"loaded; add one to its pyproject.toml and reinstall it."
                )
        return found


def api_migration(found: str) -> str:
    """The paragraph for a package written for plugin API 0.1 (or another version)."""
    return (
        f"{found}. This sagan-cli ({__version__}) speaks plugin API v{API_VERSION}: a plugin imports "
        f"everything from `sagan_cli.api` (0.1 packages imported from `sagan_cli.plugins`, which "
        f"is no longer part of the contract), and every factory is called with the place it "
        f"builds for: attention, normalization and data factories as `factory(params, context)`, "
        f"loss and launcher factories as `factory(params)`. Update the package's imports and "
        f"factory signatures as {GUIDE} show"
    )


def __getattr__(name: str) -> Any:
    """``from sagan_cli.plugins import AttentionPlugin`` (API 0.1): say where it moved."""
    if name in api.__all__:
        raise ImportError(
            api_migration(
                f"`from sagan_cli.plugins import {name}` is the plugin API 0.1 spelling; import "
                f"it from `sagan_cli.api`"
            )
            + "."
        )
    raise AttributeError(f"module 'sagan_cli.plugins' has no attribute '{name}'")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def validate_toml_values(model: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """Validate values parsed from TOML strictly: TOML has real types, so "10" is no integer
    and "yes" no boolean. JSON mode lets arrays fill tuples and integers fill floats.

    A model that sets ``strict=False`` in its config is validated leniently.
    """
    strict = model.model_config.get("strict") is not False
    return model.model_validate_json(json.dumps(dict(values), default=str), strict=strict)


def _names_in(variable: str) -> list[str]:
    """The names in environment variable ``variable`` (SAGAN_PLUGINS, ...), separated by commas
    (or semicolons); empty entries are ignored."""
    return [
        part.strip() for part in re.split(r"[,;]", os.environ.get(variable, "")) if part.strip()
    ]


def _disabled_names() -> set[str]:
    return set(_names_in("SAGAN_DISABLED_PLUGINS"))


def unmarked_hooks(module: ModuleType) -> list[str]:
    """Functions named like a hook but without ``@hookimpl``: they would register nothing."""
    marker = f"{PROJECT}_impl"
    return sorted(
        name
        for name, value in vars(module).items()
        if name.startswith("sagan_") and inspect.isfunction(value) and not hasattr(value, marker)
    )


def builtin_modules() -> list[str]:
    """The first-party plugin modules: every module of the ``sagan_cli.builtins`` package
    (discovered, so a new one needs no list; loaded by name like entry points)."""
    package = f"{PROJECT}.builtins"
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    return [
        f"{package}.{info.name}"
        for info in sorted(
            pkgutil.iter_modules(spec.submodule_search_locations), key=lambda i: i.name
        )
        if not info.name.startswith("_")
    ]


def load_registry() -> Registry:
    """Build a fresh registry from built-ins, entry points and ``SAGAN_PLUGINS``."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(Hookspecs)
    disabled = _disabled_names()
    registry = Registry()
    providers: dict[str, tuple[str, str]] = {}
    known_names: set[str] = set()
    undeclared: dict[str, list[str]] = {}  # provider -> plugins without api_version

    def add_module(module: ModuleType, name: str, provider: tuple[str, str]) -> None:
        known_names.update((name, provider[0]))
        if name in disabled or provider[0] in disabled:
            entry = name if name in disabled else provider[0]
            for kind, plugin in _registered_by(module):
                registry.disabled[(kind, plugin.name)] = entry
            return
        if manager.is_registered(module):  # one module named twice (an entry point and
            return  # SAGAN_PLUGINS, say) registers once
        for function in unmarked_hooks(module):
            registry.warnings.append(
                f"{module.__name__}.{function} looks like a hook but has no @hookimpl decorator, "
                f"so it registers nothing. Decorate it with `@hookimpl` from sagan_cli.api."
            )
        manager.register(module, name=name)
        providers[name] = provider

    for module_name in builtin_modules():
        add_module(importlib.import_module(module_name), module_name, (DISTRIBUTION, __version__))

    for ep in importlib.metadata.entry_points(group=PROJECT):
        dist = (ep.dist.name, ep.dist.version) if ep.dist else (ep.value, "unknown")
        known_names.update((ep.name, dist[0]))
        if ep.name in disabled or dist[0] in disabled:
            registry.disabled_entry_points.append(f"'{ep.name}' of {dist[0]} {dist[1]}")
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            registry.failures.append(
                LoadFailure(ep.name, f"{dist[0]} {dist[1]}", f"{type(exc).__name__}: {exc}")
            )
            continue
        add_module(module, ep.name, dist)

    for module_name in _names_in("SAGAN_PLUGINS"):
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
            f"{', '.join(HOOKS.values())}."
        ) from exc

    for kind, hook_name in HOOKS.items():
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
            refused: dict[str, list[str]] = {}  # one failure per reason, naming its plugins
            for plugin in collected:
                problem = descriptor_problem(plugin, kind, impl.plugin_name)
                if problem is not None:
                    refused.setdefault(problem, []).append(str(getattr(plugin, "name", plugin)))
                    continue
                known_names.update((plugin.name, f"{kind}:{plugin.name}"))
                if plugin.name in disabled or f"{kind}:{plugin.name}" in disabled:
                    by = plugin.name if plugin.name in disabled else f"{kind}:{plugin.name}"
                    registry.disabled[(kind, plugin.name)] = by
                    continue
                if plugin.api_version is None:
                    undeclared.setdefault(f"{provider} {version}", []).append(plugin.name)
                registry.add(Entry(plugin, provider, version))
            for problem, names in refused.items():
                registry.failures.append(
                    LoadFailure(
                        impl.plugin_name,
                        f"{provider} {version}",
                        f"{problem} (refused: {', '.join(names)})",
                    )
                )

    for provider, names in undeclared.items():
        registry.warnings.append(
            f"{provider} registers {', '.join(names)} without api_version; taken as plugin API "
            f"v{API_VERSION}. Declare it (api_version={API_VERSION} in each descriptor) so that a "
            f"sagan-cli speaking another API refuses the package clearly."
        )
    for name in sorted(disabled - known_names):
        registry.warnings.append(
            f"SAGAN_DISABLED_PLUGINS names '{name}', which is no installed entry point, "
            f"distribution or plugin name{did_you_mean(name, known_names).rstrip('?') + '?' if did_you_mean(name, known_names) else ''}; "
            f"nothing was disabled by it."
        )
    return registry


def _registered_by(module: ModuleType) -> list[tuple[str, Plugin]]:
    """What a module's hooks would register (kind, descriptor), asked without registering it:
    so that a plugin left out by SAGAN_DISABLED_PLUGINS can be named as such."""
    found: list[tuple[str, Plugin]] = []
    for kind, hook_name in HOOKS.items():
        hook = getattr(module, hook_name, None)
        if hook is None or not hasattr(hook, f"{PROJECT}_impl"):
            continue
        collected: list[Plugin] = []
        with contextlib.suppress(Exception):  # it is disabled: its failures are not reported
            hook(register=collected.append)
        found += [(kind, p) for p in collected if descriptor_problem(p, kind, "") is None]
    return found


def descriptor_problem(plugin: Any, kind: str, source: str) -> str | None:
    """Why a registered descriptor cannot be used (None: it can); the plugin is then refused
    and reported as a load failure, and every other plugin still loads."""
    expected = PLUGIN_CLASSES[kind]
    if not isinstance(plugin, expected):
        return (
            f"{HOOKS[kind]} registered {type(plugin).__name__} objects; that hook takes "
            f"{expected.__name__} descriptors from sagan_cli.api"
        )
    if isinstance(plugin.api_version, int) and plugin.api_version > API_VERSION:
        return (
            f"its {kind} descriptors say api_version = {plugin.api_version}, a newer plugin API "
            f"than this sagan-cli ({__version__}) speaks (v{API_VERSION}). Upgrade sagan-cli: "
            f'pip install -U "sagan-cli" (or install an older release of the plugin package)'
        )
    if plugin.api_version is not None and plugin.api_version != API_VERSION:
        return api_migration(f"its {kind} descriptors say api_version = {plugin.api_version!r}")
    if not NAME_PATTERN.match(plugin.name):
        return (
            f"the {kind} name '{plugin.name}' is not lower-case letters, digits, '_' and '-' "
            f"starting with a letter"
        )
    if not (isinstance(plugin.params, type) and issubclass(plugin.params, BaseModel)):
        return (
            f"params={plugin.params!r} is not a pydantic BaseModel subclass "
            f"(sagan_cli.api.PluginParams)"
        )
    if not callable(plugin.factory):
        return f"factory={plugin.factory!r} is not callable"
    try:
        inspect.signature(plugin.factory).bind(*[None] * expected.factory_arguments())
    except TypeError:
        return api_migration(
            f"its {kind} factories take {_signature(plugin.factory)}, but are called as "
            f"{expected.calls}"
        )
    except ValueError:  # a builtin without a signature: trust it
        pass
    return None


def _signature(function: Any) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return "(?)"


@cache
def get_registry() -> Registry:
    """The process-wide registry (``get_registry.cache_clear()`` reloads it)."""
    return load_registry()


@contextlib.contextmanager
def plugin_code(
    entry: Entry, key: str, where: str, *, fix: str | None = None, mode: tuple[str, str] = CHECKED
) -> Iterator[None]:
    """Run code of ``entry``'s plugin; whatever it raises becomes one clear ``PluginError``.

    ``key`` is the recipe key that chose the plugin, ``where`` what it was doing
    (``building it for the generator at 16x16 ...``). A ``PluginError`` the plugin
    raised on purpose keeps its text as the reason; ``fix`` replaces the default
    advice after it (its own message may already say what to do). ``mode`` is the
    (device type, precision) the code ran in, for the command that reproduces a
    failure. ``PlacementUnsupported`` passes through for the caller to name the place.
    """
    try:
        yield
    except PluginError as exc:
        if getattr(exc, "attributed", False):
            raise
        raise attributed(entry, key, where, str(exc), deliberate=True, fix=fix) from exc
    except (SaganError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise attributed(entry, key, where, describe_exception(exc), mode=mode) from exc


def check_command(name: str, mode: tuple[str, str] = CHECKED) -> str | None:
    """The ``sagan plugins check`` command that runs plugin ``name`` as it ran: on that device
    type and in that precision (None: no check runs that mode, e.g. fp64)."""
    device, precision = mode
    if precision == "fp64":
        return None
    options = "" if device == "cpu" else f" --device {device}"
    default = "bf16" if device == "cuda" else "fp32"  # what the check runs there by default
    if precision != default:
        options += f" --precision {precision}"
    return f"sagan plugins check {name}{options}"


def attributed(
    entry: Entry,
    key: str,
    where: str,
    detail: str,
    *,
    deliberate: bool = False,
    fix: str | None = None,
    mode: tuple[str, str] = CHECKED,
) -> PluginError:
    """A ``PluginError`` that says which plugin failed, chosen by which key, doing what.

    ``deliberate``: the plugin raised ``PluginError`` itself, so its text is the reason,
    followed by ``fix`` (default: change its parameters or choose another plugin);
    otherwise the plugin's code broke, and the paragraph names the command that
    reproduces it in the ``mode`` (device type, precision) it failed in.
    """
    if deliberate:
        advice = fix or f"Change its parameters or choose another {key}."
        text = f"The {entry.describe()}, chosen by {key}, refused {where}: {detail.rstrip('.')}. {advice}"
    else:
        command = check_command(entry.name, mode)
        reproduce = (
            f"`{command}` reproduces it"
            if command is not None
            else f"`sagan plugins check {entry.name}` checks it in fp32 and bf16 (this ran in {mode[1]})"
        )
        text = (
            f"The {entry.describe()}, chosen by {key}, failed {where}: {detail.rstrip('.')}. This "
            f"is a problem in the plugin, not in your recipe: {reproduce}; fix the plugin or "
            f"choose another {key} (SAGAN_DEBUG=1 shows the traceback)."
        )
    error = PluginError(text)
    error.attributed = True  # type: ignore[attr-defined]
    error.deliberate = deliberate  # type: ignore[attr-defined]
    return error


def unsupported(entry: Entry, key: str, where: str, reason: str) -> PlacementUnsupported:
    """The paragraph for a place a plugin declined (``PlacementUnsupported`` from its factory)."""
    return PlacementUnsupported(
        f"The {entry.describe()}, chosen by {key}, does not support {where}: "
        f"{reason.rstrip('.')}. Choose other attention sizes (model.attention_layer) or another "
        f"{key}."
    )


def _shown(value: Any) -> Any:
    """A descriptor field as JSON shows it: a function by its name (``identity_at_init`` may be
    one), never ``<function <lambda> at 0x...>``."""
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__qualname__", type(value).__name__)
        return f"function {getattr(value, '__module__', '?')}.{name} (of the parameters)"
    return value


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
        f.name: _shown(getattr(entry.plugin, f.name))
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
