"""Checkpoints: atomic writes (temp + fsync + rename), the last K kept, checked loads.

Loads use ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
containers only, so opening one never runs code from the file. A checkpoint is
never written with non-finite weights: the last one on disk is always good.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sagan_cli.errors import CheckpointError, ResultsError, describe_exception
from sagan_cli.fileio import atomic_write
from sagan_cli.results import STEP_FILE

FORMAT = 1
REQUIRED = ("format", "run_id", "step", "generator", "discriminator", "ema", "opt_g", "opt_d")
WEIGHTS = ("generator", "discriminator", "ema")


class NonFiniteWeights(Exception):
    """The weights hold NaN or infinity: the run diverged; nothing was written."""

    def __init__(self, where: str) -> None:
        super().__init__(f"non-finite weights in {where}")
        self.where = where


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Step checkpoints, oldest first (best.pt is not among them)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if STEP_FILE.match(p.name))


def first_non_finite(state: dict[str, Any]) -> str | None:
    """``part.tensor`` of the first weight or buffer that is not finite, else None."""
    for part in WEIGHTS:
        for name, tensor in state.get(part, {}).items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{part}.{name}"
    return None


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write one checkpoint atomically, stamped with the format version; refuse NaN weights."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteWeights(bad)
    try:
        atomic_write(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = (
                "The disk is full: free space (older runs' checkpoints, results/bench), or train "
                "under another --results"
            )
        elif exc.errno == errno.EFBIG:
            fix = "A file-size limit was reached: raise it (ulimit -f) or ask for one"
        else:
            fix = "Check that the run folder is writable"
        raise ResultsError(
            f"Cannot write the checkpoint {path}: {exc.strerror or exc}. {fix}, then re-run the "
            f"same command to resume from the last good checkpoint, which was kept."
        ) from None


def save_checkpoint(state: dict[str, Any], folder: Path, keep: int) -> Path:
    """Write ``step-XXXXXXXX.pt`` and delete all but the newest ``keep`` step checkpoints."""
    path = step_path(folder, state["step"])
    write_checkpoint(state, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, device: torch.device, run_id: str, run_dir: Path) -> dict[str, Any]:
    """Load a checkpoint of run ``run_id`` and check it: a corrupt one, or one of another run,
    is a clear error offering another checkpoint of the run."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from None
    except Exception as exc:  # truncated zip, bad pickle, disallowed type: all mean "corrupt"
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({describe_exception(exc)})."
            f"{_offer_other(path, run_dir)}"
        ) from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is not a sagan-cli training checkpoint (missing "
            f"{', '.join(missing)}).{_offer_other(path, run_dir)}"
        )
    if state["format"] != FORMAT:
        raise CheckpointError(
            f"Checkpoint {path} has format {state['format']}; this sagan-cli reads format {FORMAT}."
        )
    if state["run_id"] != run_id:
        raise CheckpointError(
            f"Checkpoint {path} belongs to run {state['run_id']}, not {run_id}; it cannot "
            f"resume or describe this run.{_offer_other(path, run_dir)}"
        )
    return state


def _offer_other(path: Path, run_dir: Path) -> str:
    """The fix: another valid checkpoint of the same run, wherever ``path`` lies."""
    folder = run_dir / "checkpoints"
    candidates = [p for p in list_checkpoints(folder) if p.resolve() != path.resolve()]
    if path.parent.resolve() == folder.resolve():
        candidates = [p for p in candidates if p.name < path.name] or candidates
    if not candidates:
        return (
            f" {folder} holds no other step checkpoint; delete the run folder to start that "
            f"run over."
        )
    chosen = candidates[-1]
    return (
        f" Nothing was changed. {chosen} is another checkpoint of the run: resume from it with "
        f"`sagan train --resume {run_dir} --checkpoint {chosen.name}` (newer checkpoints are "
        f"then moved aside, not deleted), or pass it to --checkpoint."
    )


def load_generator_weights(
    generator: nn.Module, state: dict[str, Any], path: Path, recipe_path: Path
) -> None:
    """Load a checkpoint's EMA generator weights, or say why they do not fit."""
    try:
        generator.load_state_dict(state["ema"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path} does not fit the generator of {recipe_path}: {str(exc).splitlines()[0]}"
        ) from None
