"""Checkpoints every ``train.checkpoint_every`` steps and at the last one (the last K kept)."""

from __future__ import annotations

from sagan_cli.train.callbacks import Callback, Loop, every


class Checkpoints(Callback):
    needs_finite = True
    main_only = True

    def __init__(self, every_steps: int) -> None:
        self.every_steps = every_steps

    def due(self, step: int, last: bool) -> bool:
        return every(self.every_steps, step, last)

    def on_step(self, loop: Loop) -> None:
        loop.save()
