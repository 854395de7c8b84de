"""The pace against the estimate: after the first iterations, a CPU run far slower than its
estimate says why (other work on the cores, usually) and what to do about it.

The estimate assumes half of the matmul rate measured before training; ``sagan bench
train`` measured 36-89% on quiet CPUs, so beyond ``SLOWER`` times the estimate the
cores are shared with other work (or threads wait on each other), and fewer threads
is the fix that was measured to work (8x faster at load 5-16 on 2 cores).
"""

from __future__ import annotations

import time

import torch

from sagan_cli.cores import read_cores
from sagan_cli.train.callbacks import Callback, Loop
from sagan_cli.train.estimate import duration

SLOWER = 3.0  # measured seconds per iteration over the estimate's before it is said
MEASURED_STEPS = 5  # iterations timed (after the first, which includes warm-up)
MEASURED_S = 20.0  # or this long, whichever comes first


class PaceCheck(Callback):
    main_only = True

    def __init__(self, estimated_s: float) -> None:
        self.estimated_s = estimated_s  # per iteration
        self.began: tuple[float, int] | None = None
        self.judged = False

    def due(self, step: int, last: bool) -> bool:
        return not self.judged and not last

    def on_step(self, loop: Loop) -> None:
        step = loop.session.step
        if self.began is None:  # timed from the end of the first iteration: warm-up excluded
            self.began = (time.monotonic(), step)
            return
        began, first = self.began
        elapsed = time.monotonic() - began
        if step - first < MEASURED_STEPS and elapsed < MEASURED_S:
            return
        self.judged = True
        measured = elapsed / (step - first)
        if measured < SLOWER * self.estimated_s:
            return
        left = loop.session.recipe.train.steps - step
        text = (
            f"training runs at {measured:.3g} s per iteration, {measured / self.estimated_s:.0f}x "
            f"slower than estimated (the rest will take {duration(measured * left)})."
        )
        cores = read_cores()
        threads = torch.get_num_threads()
        if threads > 1 and cores.free < threads:
            text += (
                f" Other work keeps this CPU busy ({cores.describe()}) and the {threads} threads "
                f"wait on each other: stop this run (Ctrl-C saves a checkpoint) and resume it "
                f"with --threads {cores.free}."
            )
        elif threads > 1:
            text += (
                f" If other work shares this CPU, fewer threads can be faster: resume with "
                f"--threads {max(1, threads // 2)} (Ctrl-C saves a checkpoint first)."
            )
        loop.observer.message(text)
        loop.status(pace_warning=text)
