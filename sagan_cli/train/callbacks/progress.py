"""Progress: the loop's events for an ``Observer`` (the terminal's bar, plain log lines, tests)."""

from __future__ import annotations

import signal
from typing import Any

from sagan_cli.device import describe
from sagan_cli.train.callbacks import Callback, Loop
from sagan_cli.train.observer import Observer


class Progress(Callback):
    """Tells ``observer`` every iteration, record and picture. An observer that raises
    ``KeyboardInterrupt`` from ``advanced`` stops the run as Ctrl-C does (a checkpoint)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def due(self, step: int, last: bool) -> bool:
        return True

    def on_start(self, loop: Loop) -> None:
        session = loop.session
        total = session.recipe.train.steps
        if loop.run is not None:
            self.observer.started(loop.run, session.step, total, describe(session.device))
        self.observer.images_per_step(session.recipe.train.batch_size)

    def on_step(self, loop: Loop) -> None:
        try:
            self.observer.advanced(loop.session.step)
        except KeyboardInterrupt:  # an observer's stop: at a boundary, like a signal
            loop.stop.request(signal.SIGINT)

    def on_record(self, record: dict[str, Any]) -> None:
        self.observer.logged(record)

    def on_image(self, tag: str, step: int, image: Any) -> None:
        self.observer.image(tag, step, image)

    def close(self) -> None:
        self.observer.finished()
