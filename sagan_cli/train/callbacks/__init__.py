"""Work a training run does beside its iterations, one callback per job, each on its schedule.

The loop (``sagan_cli.train.loop.Loop``) calls, for each callback in order:

* ``on_start(loop)`` once, before the first iteration (inside the loop's signal handling);
* after every iteration, ``on_step(loop)`` on those whose ``due(step, last)`` holds. When a
  due callback ``needs_finite`` losses, the loop first checks the losses since the last
  log line are finite (a run never samples, evaluates or saves after a NaN); when one
  ``syncs``, the loop waits for the device before it times the iteration;
* ``on_record(record)`` and ``on_image(tag, step, image)`` for every metrics record and
  picture the run emits (``loop.record``, ``loop.image``);
* ``on_end(loop, result)`` once the run ended with an outcome (done, diverged, stopped);
* ``close()`` always, last.

Every rank runs the same callbacks on the same schedule (their checks of the losses are
collectives of a data-parallel run); the loop calls a ``main_only`` callback's ``on_start``,
``on_step`` and ``on_end`` on the rank that writes (rank 0) alone.
"""

from __future__ import annotations

from typing import Any, Protocol

from sagan_cli.results import RunDir
from sagan_cli.signals import StopRequests
from sagan_cli.train.observer import Observer
from sagan_cli.train.result import TrainResult
from sagan_cli.train.session import TrainingSession


class Loop(Protocol):
    """What a callback sees of the loop (``sagan_cli.train.loop.Loop``)."""

    session: TrainingSession
    run: RunDir
    stop: StopRequests
    observer: Observer

    def status(self, **fields: Any) -> None:
        """Fields for the run's status.json (written by rank 0)."""

    def record(self, record: dict[str, Any], evaluation: bool = False) -> None:
        """Append a metrics record (and to eval.json when ``evaluation``); callbacks hear it."""

    def image(self, tag: str, step: int, image: Any) -> None:
        """A uint8 (3, H, W) picture of the run at ``step`` for every callback."""

    def save(self) -> None:
        """A checkpoint of the session as it is (rank 0)."""


class Callback:
    needs_finite = False
    syncs = False
    main_only = False

    def due(self, step: int, last: bool) -> bool:
        return False

    def on_start(self, loop: Loop) -> None: ...

    def on_step(self, loop: Loop) -> None: ...

    def on_record(self, record: dict[str, Any]) -> None: ...

    def on_image(self, tag: str, step: int, image: Any) -> None: ...

    def on_end(self, loop: Loop, result: TrainResult) -> None: ...

    def close(self) -> None: ...


def every(steps: int, step: int, last: bool) -> bool:
    """The common schedule: every ``steps`` iterations and at the last one."""
    return last or step % steps == 0
