"""The plugin contract for plugin authors' own test suites: ``sagan plugins check`` in-process.

    from sagan_cli.testing import check_plugin

    def test_my_attention_keeps_the_sagan_contract():
        check_plugin("my_attention", params={"heads": 2})            # every shipped place
        check_plugin("my_attention", placements=["g16", "d32@64"])   # just these

``check_plugin`` runs the same checks as ``sagan plugins check`` (sizes, tensor
layout and precision exactly as training uses them) and raises
``ContractViolation`` (an ``AssertionError``, so pytest shows it as a failure)
listing every place that failed. ``modules=["my_package.plugin"]`` checks a
plugin module that is not installed (as ``SAGAN_PLUGINS`` does). Installed with
pytest, this module is also a pytest plugin: the ``sagan_check`` fixture is
``check_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagan_cli.plugin_check import CheckRow, Placement

__all__ = ["ContractViolation", "check_plugin"]


class ContractViolation(AssertionError):
    """A plugin broke the contract at one or more places (the message lists them)."""


@contextmanager
def _plugin_modules(modules: Iterable[str]) -> Iterator[None]:
    """``SAGAN_PLUGINS`` extended by ``modules`` for the duration (a fresh registry inside)."""
    from sagan_cli.plugins import get_registry

    added = [m for m in modules if m]
    previous = os.environ.get("SAGAN_PLUGINS")
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
) -> list[CheckRow]:
    """Check the plugin ``name`` against the contract; return its rows, or raise
    ``ContractViolation`` naming every failed place.

    ``placements``: specs such as ``"g16"`` or ``"d8@64"`` (or ``Placement`` objects);
    default every place the shipped recipes use. ``kind`` picks one when several
    kinds share the name. Places the plugin declines (``PlacementUnsupported``) are
    rows with outcome "not supported", not failures.
    """
    from sagan_cli.device import select_device
    from sagan_cli.errors import PluginError
    from sagan_cli.plugin_check import (
        Placement,
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
            for row in run_check(entry, registry, chosen, params, select_device(device))
        ]
    failed = [row for row in rows if row.outcome == "failed"]
    if failed:
        raise ContractViolation(
            f"{len(failed)} of {len(rows)} contract checks of '{name}' failed:\n"
            + "\n".join(f"  {row.kind} at {row.place}: {row.detail}" for row in failed)
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
