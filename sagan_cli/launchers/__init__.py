"""The built-in ablation launchers (registered by ``sagan_cli.builtins.launchers``)."""

from __future__ import annotations

from sagan_cli.errors import SaganError


def missing_extra(package: str, extra: str, launcher: str) -> SaganError:
    """The error for a launcher whose optional dependency is not installed: the user's to fix
    with pip, not the plugin's (so not a ``PluginError``, which would blame the plugin)."""
    return SaganError(
        f"--launcher {launcher} needs {package}, which is not installed. Install it with "
        f'`pip install "sagan-cli[{extra}]"` (or `pip install {package}`), or use --launcher local.'
    )
