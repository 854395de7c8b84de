"""How the process takes stop signals (standard library only: installed before anything loads).

In a training loop, Ctrl-C, SIGTERM (scancel, Kubernetes, preemption) and
SIGUSR1/SIGUSR2 (SLURM's warning before a time limit) each stop the run at the next
iteration boundary with a checkpoint; the exit code is 128 + N. A second Ctrl-C or
SIGTERM ends the process within a second, even inside a long computation, saying
what was not saved. Outside a training loop (start-up, set-up, data loading,
evaluation) Ctrl-C ends the process at once with one line: never an exception
inside a half-finished import, and nothing is lost (every file is written
atomically; the last checkpoint stays).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

INTERRUPTED = (
    "Interrupted (Ctrl-C). Whatever was already saved is kept; re-run the same command to continue."
)

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


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Linux: this process gets ``signum`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
    even by SIGKILL. Elsewhere nothing happens. The kernel sends it once for every thread of
    the parent that exits, so only for a process that takes repeats as one (torchrun): a
    training run would count the second as "stop now, without saving"."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signum)


def exit_now(code: int, text: str) -> None:
    """Say ``text`` on stderr and end the process with ``code`` at once (from any thread)."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode())
    os._exit(code)


class StopRequests:
    """Stop signals become a flag read at iteration boundaries (main thread only).

    ``announce(signum)`` is called at once when the first one arrives, so the user
    knows the signal was taken; ``abort(signum)`` on a second Ctrl-C or SIGTERM
    records and says what was not saved, and ends the process.
    """

    def __init__(
        self,
        announce: Callable[[int], None] = lambda signum: None,
        abort: Callable[[int], None] | None = None,
    ) -> None:
        self.signal: int | None = None
        self.announce = announce
        self.abort = abort or (lambda signum: exit_now(128 + signum, INTERRUPTED))

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            self.announce(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        global _active
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        outer = _active

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum in (signal.SIGINT, signal.SIGTERM):
                self.abort(signum)  # a second one: now, without saving
            self.request(signum)

        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        _active = self
        if _held:
            self.request(_held.pop())
            _held.clear()
        try:
            yield
        finally:
            _active = outer
            for s, old in previous.items():
                signal.signal(s, old)


_active: StopRequests | None = None  # the training loop taking stop signals right now


def exit_promptly() -> None:
    """Call first thing in the process (the console script does). Ctrl-C outside a training
    loop ends the process at once with one line; a second stop signal inside one ends it
    within a second. A thread hears every signal as it arrives (``signal.set_wakeup_fd``), so
    this holds while the main thread is inside a long computation that takes no signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, lambda signum, frame: exit_now(130, INTERRUPTED))
    try:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (OSError, ValueError):  # no wakeup file here: the handlers above still work
        return
    threading.Thread(target=_watch, args=(read_fd,), daemon=True, name="sagan-signals").start()


def _watch(fd: int) -> None:
    """Every signal the process receives, as it arrives: outside a training loop Ctrl-C ends
    the process; inside one, the second stop signal aborts it."""
    heard: dict[int, int] = {}  # training loop (id) -> stop signals heard during it
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for signum in data:
            if signum not in STOP_SIGNALS:
                continue
            active = _active
            if active is None:
                if signum == signal.SIGINT:
                    exit_now(130, INTERRUPTED)
                continue
            heard[id(active)] = heard.get(id(active), 0) + 1
            if heard[id(active)] >= 2 and signum in (signal.SIGINT, signal.SIGTERM):
                active.abort(signum)
