"""Run statuses and exit codes: the one table of each.

A run folder's ``status.json`` holds one ``RunStatus``; a command's exit code comes
from ``ExitCode`` (and ``signal_exit`` for runs stopped by a signal). The README's
exit-code table is ``exit_code_table()`` verbatim (a test compares them).
"""

from __future__ import annotations

import re
import signal
from enum import Enum, IntEnum


class RunStatus(str, Enum):
    """Where a run stands; the value is what status.json says."""

    QUEUED = "queued"  # its folder exists; no process has trained it yet
    RUNNING = "running"  # a process holds its lock and trains it
    DONE = "done"
    FAILED = "failed"  # an error stopped it (the reason in status.json, error.log for crashes)
    DIVERGED = "diverged"  # non-finite or unbounded losses or weights
    INTERRUPTED = "interrupted"  # a signal, a time limit or a lost worker: resumable
    SKIPPED = "skipped"  # an ablation point whose attention plugin declines the placement

    def __str__(self) -> str:
        return self.value

    @classmethod
    def read(cls, status: dict[str, object]) -> RunStatus:
        """The status a status.json object records (a fresh folder's is ``queued``)."""
        try:
            return cls(status.get("status", cls.QUEUED))
        except ValueError:
            return cls.QUEUED

    @property
    def finished(self) -> bool:
        """Nothing is left to train: done, or skipped for good."""
        return self in (RunStatus.DONE, RunStatus.SKIPPED)

    @property
    def retryable(self) -> bool:
        """Re-run only on request (``--retry-failed``)."""
        return self in (RunStatus.FAILED, RunStatus.DIVERGED)

    @property
    def settled(self) -> bool:
        """Final once written (an interrupted run may still be requeued)."""
        return self in (RunStatus.DONE, RunStatus.FAILED, RunStatus.DIVERGED)

    @property
    def open(self) -> bool:
        """No outcome recorded yet."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


class ExitCode(IntEnum):
    DONE = 0
    CRASH = 1  # an error that is not the user's input: a bug, a crash in training code
    BAD_INPUT = 2  # a recipe, plugin, data, weights, folder or environment to fix
    DIVERGED = 3
    MAX_UNFINISHED = 100  # an ablation counts its unfinished runs up to this


SIGNAL_BASE = 128


def signal_exit(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 Ctrl-C, 143 SIGTERM, ...)."""
    return SIGNAL_BASE + int(signum)


INTERRUPTED_BY_CTRL_C = signal_exit(signal.SIGINT)


def stop_signal(detail: str) -> int:
    """The signal an ``interrupted`` run's error names (``stopped by SIGTERM``); SIGINT if none."""
    match = re.search(r"\b(SIG[A-Z0-9]+)\b", detail)
    try:
        return int(signal.Signals[match.group(1)]) if match else int(signal.SIGINT)
    except KeyError:
        return int(signal.SIGINT)


# The README's table: (code, what it means for `sagan train` and other commands, for `sagan ablate`)
EXIT_CODES: tuple[tuple[str, str, str], ...] = (
    (
        f"`{ExitCode.DONE}`",
        "done",
        "every run of the grid is done (or skipped: its placement is not supported)",
    ),
    (
        f"`{ExitCode.CRASH}`",
        "a run failed on an error that is not your input: a crash in training code or a lost "
        "rank (status `failed`, traceback in the run's `error.log`), or an internal error "
        "(traceback in a crash log under `~/.cache/sagan-cli`)",
        "",
    ),
    (
        f"`{ExitCode.CRASH}`-`{ExitCode.MAX_UNFINISHED}`",
        "",
        "that many runs did not finish: failed, diverged, interrupted (a signal, a time limit, a "
        "worker or job that died) or never started; the table and the lines under it say which "
        "and why",
    ),
    (
        f"`{ExitCode.BAD_INPUT}`",
        "bad input or environment: one paragraph naming the file, key and fix (plugins: the "
        "plugin, its package, the recipe key and the place)",
        "the same, before any run starts; or a run failed on its configuration (a plugin "
        "refused or broke: the other runs still finish, the paragraph names the plugin)",
    ),
    (
        f"`{ExitCode.DIVERGED}`",
        "the run diverged: non-finite losses or weights, or mean losses beyond "
        "`train.max_loss` for 3 log lines in a row",
        "",
    ),
    (
        f"`{SIGNAL_BASE}+N`",
        "stopped by signal N after saving a checkpoint of the iteration in progress: "
        f"`{INTERRUPTED_BY_CTRL_C}` Ctrl-C, `{signal_exit(signal.SIGTERM)}` SIGTERM, "
        f"`{signal_exit(signal.SIGUSR1)}`/`{signal_exit(signal.SIGUSR2)}` SIGUSR1/SIGUSR2 (a "
        "scheduler's time-limit warning); a second Ctrl-C or SIGTERM stops at once, saying what "
        "was not saved",
        f"`{INTERRUPTED_BY_CTRL_C}`: Ctrl-C stopped the grid",
    ),
)


def exit_code_table() -> str:
    """The exit codes as the README's Markdown table."""
    from sagan_cli.markdown import table

    return table(["code", "`sagan train` and other commands", "`sagan ablate`"], list(EXIT_CODES))


if __name__ == "__main__":  # python -m sagan_cli.outcomes: the README's table, to paste
    print(exit_code_table())
