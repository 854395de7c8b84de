"""How a run executes, decided once: the device, the precision that runs there, torch.compile
or eager, and the tensor layout (``plan_execution``; the session, its evaluation and its
status all read the same plan).

``train.compile = "auto"`` compiles only runs long enough to repay the compile
time: the break-even step counts below were measured with ``sagan bench train``
(docs/benchmarks.md) and are deliberately on the safe side. A break-even measured
on this machine (``scripts/gpu_check.sh`` records one, ``record_break_even``)
takes precedence over them. Deterministic runs
(bit-exact resume) are never compiled automatically. None of this changes what
a run computes beyond floating-point rounding, so it is not part of run ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from sagan_cli.device import default_memory_format, effective_precision
from sagan_cli.fileio import atomic_write_json, cache_dir
from sagan_cli.recipe import Recipe

BREAK_EVEN_FILE = "compile-break-even.json"

# Compiling costs a fixed time up front and saves a share of every later step; below these
# step counts the saving does not repay it (measured on the smoke and sagan_cifar10 recipes).
# On CPU compiling never repaid itself: compiled steps were as slow or slower than eager ones
# (smoke and sagan_cifar10), so "auto" does not compile there. CUDA's value is an estimate:
# no GPU was available to measure it (docs/benchmarks.md).
COMPILE_BREAK_EVEN_STEPS: dict[str, int | None] = {"cpu": None, "cuda": 2_000}


@dataclass(frozen=True)
class ExecutionPlan:
    device: torch.device
    precision: str  # what runs: "fp32", "bf16" (autocast) or "fp64"
    compile: bool
    memory_format: str  # "contiguous" or "channels_last"
    reason: str  # why compiled or not

    def describe(self) -> dict[str, object]:
        """status.json's ``execution`` (the precision and device are recorded beside it)."""
        return {"compile": self.compile, "memory_format": self.memory_format, "reason": self.reason}


def plan_execution(recipe: Recipe, device: torch.device) -> ExecutionPlan:
    """The recipe's execution on ``device``: its precision where the device has it (bf16 on
    CPU only with train.bf16_on_cpu), its layout, and compile (auto: only runs long enough to
    repay compiling here, never deterministic ones)."""
    cfg = recipe.train
    precision = effective_precision(device, cfg.precision, on_cpu=cfg.bf16_on_cpu)
    memory_format = (
        default_memory_format(device) if cfg.memory_format == "auto" else cfg.memory_format
    )

    def plan(compiled: bool, reason: str) -> ExecutionPlan:
        return ExecutionPlan(device, precision, compiled, memory_format, reason)

    if cfg.compile != "auto":
        return plan(bool(cfg.compile), "train.compile as set")
    if cfg.deterministic:
        return plan(False, "auto: deterministic runs stay eager")
    break_even = measured_break_even(device)
    if break_even is None:
        return plan(False, f"auto: compiling does not pay on {device.type} (measured)")
    if cfg.steps < break_even:
        return plan(
            False,
            f"auto: {cfg.steps} steps are fewer than the {break_even} that repay compiling on "
            f"{device.type}",
        )
    return plan(True, f"auto: {cfg.steps} steps repay compiling on {device.type}")


def _device_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def measured_break_even(device: torch.device) -> int | None:
    """Steps that repay compiling on this device: measured here if recorded, else the table."""
    path = cache_dir() / BREAK_EVEN_FILE
    try:
        recorded = json.loads(path.read_text()).get(_device_key(device))
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, dict) and "steps" in recorded:
        steps = recorded["steps"]
        return steps if isinstance(steps, int) and steps > 0 else None
    return COMPILE_BREAK_EVEN_STEPS.get(device.type)


def record_break_even(device: torch.device, steps: int | None, note: str) -> Path:
    """Save a measured break-even for this device (None: compiling never repaid itself)."""
    path = cache_dir() / BREAK_EVEN_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded[_device_key(device)] = {"steps": steps, "note": note, "measured": str(date.today())}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, recorded)
    return path
