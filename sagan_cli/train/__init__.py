"""Training: a session (networks, optimisers, data), its loop and callbacks, and one run's
life in its folder. Importing this package loads nothing: the CLI asks it questions before
torch is loaded."""

from __future__ import annotations

import os


def launched_by_torchrun() -> bool:
    """This process is a rank of a data-parallel run (torchrun or SLURM set the variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
