"""How many CPU cores are free for us right now (standard library only).

torch takes every core by default. On a shared workstation or a login node other
work keeps some of them busy, and a training step split over more threads than
there are free cores waits on the slowest: 8x slower than one thread was measured
at load 5-16 on 2 cores. So the default is the cores this process may use minus
the load average (what other work keeps running), at least one; ``--threads N``
always wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Cores:
    usable: int  # the cores this process may run on (its affinity)
    load: float  # the 1-minute load average: runnable processes, ours not yet among them

    @property
    def free(self) -> int:
        return max(1, min(self.usable, round(self.usable - self.load)))

    @property
    def busy(self) -> bool:
        return self.free < self.usable

    def describe(self) -> str:
        return f"load average {self.load:.1f} on {self.usable} core(s)"


def read_cores() -> Cores:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average, so none is assumed
        load = 0.0
    return Cores(usable, load)


def default_threads(cores: Cores | None = None) -> tuple[int, str | None]:
    """Threads for torch when ``--threads`` is not given, and a line saying why when fewer
    than every core (None: every core is free)."""
    cores = cores or read_cores()
    if not cores.busy:
        return cores.usable, None
    return cores.free, (
        f"{cores.usable - cores.free} of {cores.usable} cores are busy with other work "
        f"({cores.describe()}): using {cores.free} thread(s); --threads N sets it"
    )
