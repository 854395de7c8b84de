"""How close to the hardware: FLOPs of a piece of work and the device's measured matmul rate.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of
matmuls, convolutions and attention, forward and backward). The limit is a dense square
matmul timed on the same device in the same run, in the same precision.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from sagan_cli.device import synchronize


def count_flops(work: Callable[[], Any]) -> int:
    """FLOPs of ``work()`` (matmuls, convolutions, attention; elementwise work is free here)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


def matmul_rate(
    device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10
) -> float:
    """Median FLOP/s of an n x n by n x n matmul: the dense-compute limit of this device."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)
