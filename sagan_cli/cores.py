"""How many CPU cores are free for us right now (standard library only).

torch takes every core by default. On a shared workstation or a login node other
work keeps some of them busy, and a training step split over more threads than
there are free cores waits on the slowest: 8x slower than one thread was measured
at load 5-16 on 2 cores. So the default is the cores this process may use minus
those other work keeps busy, at least one; ``--threads N`` always wins. "Busy" is
measured over a quarter of a second from ``/proc/stat`` (the cores this process may
use): the load average lags by a minute, so a run started right after another
would give up the cores the finished one used. Elsewhere the load average is used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.25  # how long the cores are watched


@dataclass(frozen=True)
class Cores:
    usable: int  # the cores this process may run on (its affinity)
    load: float  # how many of them other work keeps busy (measured, or the load average)

    @property
    def free(self) -> int:
        return max(1, min(self.usable, round(self.usable - self.load)))

    @property
    def busy(self) -> bool:
        return self.free < self.usable

    def describe(self) -> str:
        return f"{self.load:.1f} of {self.usable} core(s) busy"

    def to_use(self, deterministic: bool = False) -> int:
        """The cores a run may take: the free ones, or every one for a deterministic run
        (its bits depend on its thread count, which a busy moment must not change)."""
        return self.usable if deterministic else self.free


def _jiffies(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) time of ``cpus`` since boot, from /proc/stat (None: not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        times = [int(v) for v in values[:8]]
        idle = times[3] + times[4]  # idle and iowait
        busy, total = busy + sum(times) - idle, total + sum(times)
    return (busy, total) if total else None


def busy_cores(cpus: set[int]) -> float | None:
    """How many of ``cpus`` are busy now, watched for ``SAMPLE_S`` (None: cannot be told)."""
    before = _jiffies(cpus)
    if before is None:
        return None
    time.sleep(SAMPLE_S)
    after = _jiffies(cpus)
    if after is None or after[1] <= before[1]:
        return None
    return len(cpus) * (after[0] - before[0]) / (after[1] - before[1])


def read_cores() -> Cores:
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        cpus = set(range(os.cpu_count() or 1))
    busy = busy_cores(cpus)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows: nothing to go by, so none is assumed
            busy = 0.0
    return Cores(len(cpus), busy)


def default_threads(
    cores: Cores | None = None, *, share: int = 1, deterministic: bool = False
) -> tuple[int, str | None]:
    """Threads for torch in each of ``share`` processes when ``--threads`` is not given, and a
    line saying why when fewer than every core (None: every core is free).

    ``deterministic`` (train.deterministic = true): every core, whatever the load. A run's
    bits depend on its thread count (reductions split differently), so a deterministic run
    and its resume must not take what a busy moment leaves free."""
    cores = cores or read_cores()
    threads = max(1, cores.to_use(deterministic) // share)
    if not cores.busy:
        return threads, None
    busy = (
        f"{cores.usable - cores.free} of {cores.usable} cores are busy with other work "
        f"({cores.describe()} right now)"
    )
    if deterministic:
        return threads, (
            f"{busy}, but train.deterministic = true keeps {threads} thread(s): its results "
            f"depend on the thread count; --threads N sets it"
        )
    return threads, f"{busy}: using {threads} thread(s); --threads N sets it"
