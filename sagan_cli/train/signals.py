"""Stop signals of a training run: taken at iteration boundaries, never mid-step.

Ctrl-C, SIGTERM (scancel, Kubernetes, preemption) and SIGUSR1/SIGUSR2 (SLURM's warning
before a time limit) each stop the run at the next iteration boundary with a checkpoint;
the exit code is 128 + N. A second Ctrl-C stops at once without saving.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # sent ahead of a kill: never fatal here
_held: list[int] = []  # warning signals that arrived before a training loop could take them


def hold_warning_signals() -> None:
    """From now on SIGUSR1/SIGUSR2 (a scheduler's warning before a time limit or preemption)
    are noted instead of killing the process or reaching a launcher's own handler (submitit
    raises on them); the next training loop stops at its first boundary when one arrived.
    Ctrl-C and SIGTERM keep their meaning: during set-up they stop at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    for warning in WARNING_SIGNALS:
        signal.signal(warning, lambda signum, frame: _held.append(signum))


class StopRequests:
    """Stop signals become a flag read at iteration boundaries (main thread only).

    ``announce(signum)`` is called at once when the first one arrives, so the
    user knows the signal was taken; a second Ctrl-C stops at once.
    """

    def __init__(self, announce: Callable[[int], None] = lambda signum: None) -> None:
        self.signal: int | None = None
        self.announce = announce

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            self.announce(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self.request(signum)

        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        if _held:
            self.request(_held.pop())
            _held.clear()
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)
