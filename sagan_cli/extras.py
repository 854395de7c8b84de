"""Optional extras: a feature whose package is not installed is one paragraph with its pip command.

A missing optional package is the user's to fix with pip (exit code 2), never a plugin's
fault; every feature behind an extra imports its package through ``optional`` (or checks
it with ``require`` before any work), so the paragraph is the same everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from sagan_cli.errors import SaganError

# (module, package, extra, what needs it, the alternative)
TENSORBOARD = (
    "tensorboard",
    "tensorboard",
    "tensorboard",
    "logging.tensorboard = true (or --tensorboard)",
    "drop the option",
)


def missing(package: str, extra: str, needed_by: str, instead: str = "") -> SaganError:
    """The paragraph for ``needed_by`` (e.g. "--launcher ray") without ``package``."""
    return SaganError(
        f"{needed_by} needs {package}, which is not installed. Install it with "
        f'`pip install "sagan-cli[{extra}]"` (or `pip install {package}`)'
        + (f", or {instead}" if instead else "")
        + "."
    )


def require(module: str, package: str, extra: str, needed_by: str, instead: str = "") -> None:
    """Refuse before any work when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise missing(package, extra, needed_by, instead)


def optional(
    module: str, package: str, extra: str, needed_by: str, instead: str = ""
) -> ModuleType:
    """``import module``, or the paragraph naming the extra that installs it."""
    try:
        __import__(module)  # the import statement's path, as a plain `import module` takes
    except ImportError:
        raise missing(package, extra, needed_by, instead) from None
    return sys.modules[module]
