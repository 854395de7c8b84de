"""Device choice (cuda > mps > cpu, or forced), and the precision and tensor layout each
device runs at."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import torch

from sagan_cli.errors import SaganError


def select_device(requested: str | None = None) -> torch.device:
    """``auto``/None picks cuda, then mps, then cpu; anything else must be available."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise SaganError(
            f"--device '{requested}' is not a device name; use auto, cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SaganError(f"--device {requested}: CUDA is not available here. Use --device cpu.")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise SaganError(
            f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) are visible."
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise SaganError(f"--device {requested}: MPS is not available here. Use --device cpu.")
    return device


def effective_precision(device: torch.device, requested: str, *, on_cpu: bool) -> str:
    """bf16 autocast on CUDA; on CPUs with native bf16 only when asked for (``on_cpu``, the
    recipe's train.bf16_on_cpu: it changes the results of CPU runs); fp64 where asked for (a
    numerical reference); else fp32 (recorded)."""
    if requested == "fp64":
        return "fp64"
    if requested == "bf16" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if requested == "bf16" and on_cpu and device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """oneDNN's check for bf16 instructions (AVX512-BF16 or AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for ``bf16`` and ``fp16`` (mixed precision); fp32 and fp64 run as they are."""
    if precision in AUTOCAST:
        with torch.autocast(device_type=device.type, dtype=AUTOCAST[precision]):
            yield
    else:
        yield


def check_precision(device: torch.device, precision: str, on_cpu: bool = True) -> str:
    """The precision that runs on ``device`` when ``precision`` is asked for (``on_cpu``: bf16
    on a CPU with native bf16, as train.bf16_on_cpu allows); fp16 only where it is native (CUDA),
    refused elsewhere with the reason."""
    if precision == "fp16":
        if device.type != "cuda":
            raise SaganError(
                f"--precision fp16 needs CUDA (no {device.type} kernel has native fp16 "
                f"autocast here); use --device cuda, or fp32/bf16."
            )
        return "fp16"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise SaganError(
            "--precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so training "
            "runs fp32 here (train.bf16_on_cpu needs one); check bf16 on such a CPU or with "
            "--device cuda."
        )
    return effective_precision(device, precision, on_cpu=on_cpu)


@contextlib.contextmanager
def default_dtype(precision: str) -> Iterator[None]:
    """Inside: tensors and layers are created in float64 for ``fp64`` runs (else unchanged)."""
    if precision != "fp64":
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: bf16 ones in fp32, fp64 ones (the fp64 reference) kept as they are."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def available_memory(device: torch.device) -> int:
    """Bytes free for work on ``device`` (CUDA: free device memory; else available RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


# Tensor layout per device type when ``train.memory_format = "auto"``: channels_last feeds the
# tensor cores on CUDA, and oneDNN's convolutions on CPU (1.76x on smoke, 1.25x on
# sagan_cifar10, fp32, measured: docs/benchmarks.md).
AUTO_MEMORY_FORMAT = {"cuda": "channels_last", "cpu": "channels_last"}


def default_memory_format(device: torch.device) -> str:
    """The layout ``train.memory_format = "auto"`` picks on ``device``."""
    return AUTO_MEMORY_FORMAT.get(device.type, "contiguous")


def torch_memory_format(name: str) -> torch.memory_format:
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def convert_memory_format(module: ModuleT, name: str) -> ModuleT:
    """``module.to(memory_format=...)`` for its 4-D parameters and buffers only.

    ``nn.Module.to(memory_format=channels_last)`` fails on any 5-D weight (a plugin's
    Conv3d); those keep their layout instead, as they would in any 4-D network.
    Training and ``sagan plugins check`` convert through this one function.
    """
    memory_format = torch_memory_format(name)
    return module._apply(
        lambda tensor: (
            tensor.contiguous(memory_format=memory_format) if tensor.dim() == 4 else tensor
        )
    )
