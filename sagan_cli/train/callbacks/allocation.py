"""Too short an allocation: under a scheduler's time limit, the steps that fit before its warning
signal, at the pace measured in the first iterations, against ``train.checkpoint_every``.

An allocation that ends before a few checkpoints repeats work (everything since the last
checkpoint is trained again after each requeue) or never reaches a checkpoint. The
launcher says when the allocation ends (``ALLOCATION_END``, seconds since the epoch) and
how long before it the warning comes (``WARNING_DELAY``); the run says once, in its log
and its status.json, when fewer than ``CHECKPOINTS`` checkpoints fit.
"""

from __future__ import annotations

import os
import time

from sagan_cli.train.callbacks import Callback, Loop

ALLOCATION_END = "SAGAN_ALLOCATION_END"
WARNING_DELAY = "SAGAN_WARNING_DELAY_S"
CHECKPOINTS = 3
MEASURED_STEPS = 5  # iterations timed before judging (the first one includes warm-up)


class AllocationCheck(Callback):
    def __init__(self, end: float, warning_delay_s: float, checkpoint_every: int) -> None:
        self.end, self.delay, self.checkpoint_every = end, warning_delay_s, checkpoint_every
        self.started: tuple[float, int] | None = None
        self.judged = False

    @classmethod
    def from_environment(cls, checkpoint_every: int) -> AllocationCheck | None:
        """The check when the launcher set the allocation's end (SLURM does); else None."""
        try:
            end = float(os.environ[ALLOCATION_END])
            delay = float(os.environ.get(WARNING_DELAY, "0"))
        except (KeyError, ValueError):
            return None
        return cls(end, delay, checkpoint_every)

    def due(self, step: int, last: bool) -> bool:
        return not self.judged

    def on_start(self, loop: Loop) -> None:
        self.started = (time.monotonic(), loop.session.step + 1)  # after the first iteration

    def on_step(self, loop: Loop) -> None:
        session = loop.session
        assert self.started is not None
        began, first = self.started
        if session.step == first:
            self.started = (time.monotonic(), first)  # the pace from here: warm-up excluded
            return
        if session.step < first + MEASURED_STEPS:
            return
        self.judged = True
        per_step = (time.monotonic() - began) / (session.step - first)
        usable = self.end - self.delay - time.time()
        fit = int(usable / per_step) if per_step > 0 else 0
        left = session.recipe.train.steps - session.step
        if fit >= min(left, CHECKPOINTS * self.checkpoint_every):
            return
        text = (
            f"this allocation's time-limit warning comes in about {max(usable, 0):.0f} s: about "
            f"{fit} more steps at {per_step:.2f} s per step, fewer than {CHECKPOINTS} checkpoints "
            f"(train.checkpoint_every = {self.checkpoint_every}), so each requeue repeats or "
            f"loses the steps since the last checkpoint. Raise launch.time_min (or lower "
            f"launch.signal_delay_s or train.checkpoint_every)."
        )
        loop.observer.message(text)
        loop.status(warning=text)
