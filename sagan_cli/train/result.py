"""What a run ended with: its status, step, what to say about it, and the exit code."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from sagan_cli.outcomes import ExitCode, RunStatus, signal_exit
from sagan_cli.results import RunDir


@dataclass
class TrainResult:
    run: RunDir
    status: RunStatus
    step: int
    detail: str = ""  # what the command says about the outcome
    signal: int | None = None
    error: str | None = None  # what status.json records as the reason (default: the detail)
    failed_with: int | None = None  # a failed run's recorded code: 2 for input, 1 for a crash

    @property
    def exit_code(self) -> int:
        if self.status == RunStatus.INTERRUPTED:
            return signal_exit(self.signal or signal.SIGINT)
        if self.status == RunStatus.FAILED:
            return self.failed_with or ExitCode.CRASH
        return {RunStatus.DONE: ExitCode.DONE, RunStatus.DIVERGED: ExitCode.DIVERGED}.get(
            self.status, ExitCode.CRASH
        )

    def describe(self) -> str:
        return f"{self.status} at step {self.step}" + (f": {self.detail}" if self.detail else "")
