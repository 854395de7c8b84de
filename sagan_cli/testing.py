"""The plugin contract for plugin authors' own test suites: ``sagan plugins check`` in-process.

    from sagan_cli.testing import check_plugin

    def test_my_attention_keeps_the_sagan_contract():
        check_plugin("my_attention", params={"heads": 2})            # every shipped place
        check_plugin("my_attention", placements=["g16", "d32@64"])   # just these

``check_plugin`` runs the same checks as ``sagan plugins check`` (sizes, tensor
layout and precision exactly as training uses them; ``precision="bf16"`` or
``"fp16"`` exercises mixed precision) and returns one ``CheckRow`` per place
(``row.place`` reads "G 16x16, 256 ch (32px)": network, feature size, channels,
image size), or raises ``ContractViolation`` (an ``AssertionError``, so pytest
shows it as a failure) listing every place that failed. Places are chosen with
specs: ``"g16"`` (the generator at 16x16 of every image size) or ``"d8@64"`` (the
discriminator at 8x8 of 64px images). ``modules=["my_package.plugin"]`` checks a
plugin module that is not installed (as ``SAGAN_PLUGINS`` does; a module already
loaded is used once). ``PlacementUnsupported`` (a place the plugin declines) is
not a ``PluginError``: such rows say "not supported" and are no failure; a
``PluginError`` the plugin raises itself is a refusal of its parameters
(``row.refused``). Installed with pytest, this module is also a pytest plugin:
the ``sagan_check`` fixture is ``check_plugin``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagan_cli.plugin_check import CheckRow, Placement

__all__ = ["CheckRow", "ContractViolation", "Placement", "check_plugin"]


def __getattr__(name: str) -> Any:
    """``CheckRow`` and ``Placement`` on first use: importing this module (a pytest plugin,
    loaded by every pytest run) must not import torch."""
    if name in ("CheckRow", "Placement"):
        from sagan_cli import plugin_check

        return getattr(plugin_check, name)
    raise AttributeError(f"module 'sagan_cli.testing' has no attribute '{name}'")


class ContractViolation(AssertionError):
    """A plugin broke the contract at one or more places (the message lists them)."""


@contextmanager
def _plugin_modules(modules: Iterable[str]) -> Iterator[None]:
    """``SAGAN_PLUGINS`` extended by ``modules`` for the duration (a fresh registry inside)."""
    from sagan_cli.plugins import get_registry

    previous = os.environ.get("SAGAN_PLUGINS")
    listed = set(re.split(r"[,;]", previous or ""))
    added = [m for m in dict.fromkeys(modules) if m and m not in listed]
    if added:
        os.environ["SAGAN_PLUGINS"] = ",".join([*added, *([previous] if previous else [])])
    get_registry.cache_clear()
    try:
        yield
    finally:
        if added:
            if previous is None:
                os.environ.pop("SAGAN_PLUGINS", None)
            else:
                os.environ["SAGAN_PLUGINS"] = previous
            get_registry.cache_clear()


def check_plugin(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    placements: Iterable[str | Placement] | None = None,
    kind: str | None = None,
    modules: Iterable[str] = (),
    device: str = "cpu",
    precision: str | None = None,
) -> list[CheckRow]:
    """Check the plugin ``name`` against the contract; return its rows, or raise
    ``ContractViolation`` naming every failed place.

    ``placements``: specs such as ``"g16"`` or ``"d8@64"`` (or ``Placement`` objects);
    default every place the shipped recipes use. ``kind`` picks one when several
    kinds share the name. Places the plugin declines (``PlacementUnsupported``) are
    rows with outcome "not supported", not failures. ``precision``: fp32, bf16 or
    fp16 (default: what training runs on ``device``).
    """
    from sagan_cli.device import select_device
    from sagan_cli.errors import PluginError
    from sagan_cli.plugin_check import (
        Placement,
        group_rows,
        select_placements,
        shipped_placements,
    )
    from sagan_cli.plugin_check import (
        check_plugin as run_check,
    )
    from sagan_cli.plugins import get_registry

    with _plugin_modules(modules):
        registry = get_registry()
        entries = [e for e in registry.find(name) if kind is None or e.kind == kind]
        if not entries:
            loaded = "".join(f" {failure.describe()}." for failure in registry.failures)
            raise PluginError(
                f"No {kind or ''} plugin is registered as '{name}'.{loaded} Is its package "
                f"installed (or its module passed as modules=[...])?"
            )
        wanted = list(placements or [])
        objects = [p for p in wanted if isinstance(p, Placement)]
        specs = [p for p in wanted if isinstance(p, str)]
        chosen = objects + (
            select_placements(shipped_placements(registry), specs) if specs or not objects else []
        )
        rows = [
            row
            for entry in entries
            for row in run_check(
                entry, registry, chosen, params, select_device(device), precision=precision
            )
        ]
    failed = [row for row in rows if row.outcome == "failed"]
    if failed:
        refused = all(row.refused for row in failed)
        raise ContractViolation(
            f"{len(failed)} of {len(rows)} contract checks of '{name}' failed"
            + (" (the plugin refused the parameters it was given)" if refused else "")
            + ":\n"
            + "\n".join(f"  {group.first.kind} {group.describe()}" for group in group_rows(failed))
        )
    return rows


try:  # a pytest plugin too (entry point pytest11), when pytest is there
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed to use the fixture
    pass
else:

    @pytest.fixture
    def sagan_check() -> Any:
        """``check_plugin`` as a fixture: ``sagan_check("my_attention", placements=["g16"])``."""
        return check_plugin
