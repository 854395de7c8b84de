"""Checkpoints: atomic writes (temp + fsync + rename), the last K kept, checked loads.

Loads use ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
containers only, so opening one never runs code from the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sagan_cli.errors import CheckpointError
from sagan_cli.fileio import atomic_write

FORMAT = 1
STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")
REQUIRED = ("format", "run_id", "step", "generator", "discriminator", "ema", "opt_g", "opt_d")


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Step checkpoints, oldest first (best.pt is not among them)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if STEP_FILE.match(p.name))


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write one checkpoint atomically, stamped with the format version."""
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


def save_checkpoint(state: dict[str, Any], folder: Path, keep: int) -> Path:
    """Write ``step-XXXXXXXX.pt`` and delete all but the newest ``keep`` step checkpoints."""
    path = step_path(folder, state["step"])
    write_checkpoint(state, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: Path, device: torch.device, run_dir: Path | None = None
) -> dict[str, Any]:
    """Load and check a checkpoint; a bad one is a clear error offering the one before it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from None
    except Exception as exc:  # truncated zip, bad pickle, disallowed type: all mean "corrupt"
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}).{_offer_previous(path, run_dir)}"
        ) from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is not a sagan-cli training checkpoint (missing "
            f"{', '.join(missing)}).{_offer_previous(path, run_dir)}"
        )
    if state["format"] != FORMAT:
        raise CheckpointError(
            f"Checkpoint {path} has format {state['format']}; this sagan-cli reads format {FORMAT}."
        )
    return state


def _offer_previous(path: Path, run_dir: Path | None) -> str:
    earlier = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    if not earlier:
        return " No earlier checkpoint exists; delete the run folder to start over."
    where = run_dir if run_dir is not None else path.parent.parent
    return (
        f" Nothing was changed. The previous checkpoint is {earlier[-1]}: resume from it with "
        f"`sagan train --resume {where} --checkpoint {earlier[-1].name}` (newer checkpoints are "
        f"then moved aside, not deleted)."
    )
