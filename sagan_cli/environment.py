"""Failures of the installed packages, told apart from bugs (standard library only).

A torchvision built for another torch (``operator torchvision::nms does not exist``),
a CUDA library the driver does not have, a compiled extension built for another
Python or NumPy: none is a bug in sagan-cli or a problem in the user's input, and
none is fixed by reading a traceback. Each becomes one paragraph naming the packages
and versions found and the command that reinstalls a matching pair, exit code 2.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import traceback

from sagan_cli.errors import SaganError

# packages whose import or native code fails when the environment is broken
NATIVE = ("torch", "torchvision", "numpy", "scipy", "PIL", "timm", "torch_fidelity", "triton")
SYMPTOMS = re.compile(
    r"operator torchvision::|undefined symbol|cannot open shared object file|DLL load failed|"
    r"libcudart|libcudnn|libnccl|CUDA driver version is insufficient|"
    r"compiled using NumPy 1\.x|numpy\.core\.multiarray failed to import|_ARRAY_API not found|"
    r"partially initialized module 'torch|No module named 'torch|"
    r"Numpy is not available|GLIBC_[0-9.]+' not found|Symbol not found",
)
PIP_NAMES = {"PIL": "pillow", "torch_fidelity": "torch-fidelity"}


class EnvironmentProblem(SaganError):
    """The installed packages do not work together; reinstalling them is the fix."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_on_stack(exc: BaseException) -> str | None:
    """The first of ``NATIVE`` whose code raised (the innermost frame wins)."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        parts = re.split(r"[\\/]", frame.f_code.co_filename)
        for package in NATIVE:
            if package in parts[:-1] or (parts[-1] == f"{package}.py"):
                found = package
    return found


def environment_problem(exc: BaseException) -> EnvironmentProblem | None:
    """The paragraph when ``exc`` comes from broken installed packages (None: it does not)."""
    text = f"{type(exc).__name__}: {exc}"
    package = _package_on_stack(exc)
    symptom = SYMPTOMS.search(text) is not None
    importing = isinstance(exc, ImportError) and package is not None
    if not (symptom or importing):
        return None
    if package is None and isinstance(exc, ModuleNotFoundError) and exc.name:
        package = exc.name.split(".")[0]
    installed = ", ".join(
        f"{name} {version}"
        for name in ("torch", "torchvision", "numpy")
        if (version := _version(name)) is not None
    )
    torch_version = _version("torch") or ""
    cuda = "+cu" in torch_version or any(
        (d.metadata["Name"] or "").startswith("nvidia-cuda-runtime")
        for d in importlib.metadata.distributions()
    )
    build = (
        " (torch is a CUDA build)" if cuda else " (torch is a CPU build)" if torch_version else ""
    )
    where = f" while importing or running {package}" if package else ""
    return EnvironmentProblem(
        f"The installed Python packages do not work together{where}: {text.strip()[:300]}. "
        f"This is the environment, not sagan-cli or your input. Found: Python "
        f"{sys.version.split()[0]}, {installed or 'no torch'}{build}. torchvision "
        f"must be the release made for the installed torch (torch 2.14 goes with torchvision "
        f"0.29, 2.9 with 0.24). Reinstall them as a pair, in this environment ({sys.prefix}): "
        f"CPU only: pip install --force-reinstall torch torchvision --index-url "
        f"https://download.pytorch.org/whl/cpu ; CUDA 12.6: pip install --force-reinstall "
        f"torch torchvision --index-url https://download.pytorch.org/whl/cu126 (pick the "
        f"CUDA release your driver supports: nvidia-smi shows it). A package built for another "
        f"NumPy or Python is fixed the same way: pip install --force-reinstall "
        f"{PIP_NAMES.get(package or 'torch', package or 'torch')}."
    )
