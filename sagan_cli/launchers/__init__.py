"""The built-in ablation launchers (registered by ``sagan_cli.builtins.launchers``)."""

from __future__ import annotations

from sagan_cli.errors import PluginError


def missing_extra(package: str, extra: str, launcher: str) -> PluginError:
    """The error for a launcher whose optional dependency is not installed."""
    return PluginError(
        f"--launcher {launcher} needs {package}, which is not installed. Install it with "
        f'`pip install "sagan-cli[{extra}]"` (or `pip install {package}`), or use --launcher local.'
    )
