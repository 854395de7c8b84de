"""Rendering for the command line: consoles, progress bars and plain progress lines."""

from __future__ import annotations

import collections
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sagan_cli.train.observer import LogLines, Observer, describe_record

if TYPE_CHECKING:
    from sagan_cli.results import RunDir

# Off a terminal (pipes, CI logs, files) tables get room instead of wrapping at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
RATE_WINDOW_S = 10.0  # the bar's img/s: over about this many seconds of iterations
PLAIN_EVERY_S = 10.0  # plain (non-terminal) progress lines: about this often while training


def progress_bar() -> Progress:
    """A rich progress bar on a terminal; disabled (nothing animated) on pipes and CI logs."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        disable=not err_console.is_terminal,
    )


class TrainProgress(Observer):
    """One run's progress: a live bar on a terminal; off one (pipes, cluster logs), plain
    lines with step, iterations/s, losses and ETA at least every ``PLAIN_EVERY_S`` seconds."""

    def __init__(
        self,
        quiet: bool = False,
        progress: Progress | None = None,
        label: str = "train",
        assume_yes: bool = False,
    ) -> None:
        self.quiet = quiet
        self.assume_yes = assume_yes
        self.progress = progress
        self.label = label
        self.task: TaskID | None = None
        self.info: dict[str, str] = {}
        self.lines = LogLines(label, PLAIN_EVERY_S, self.print)
        self.images = 0  # per iteration
        self.recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, step)

    @property
    def live(self) -> bool:
        return self.progress is not None and not self.progress.disable

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(
                self.label, total=total, completed=start_step, info=""
            )
        if self.quiet:
            return
        if self.live:
            self.print(f"{self.label}: {run.path} on {device}, step {start_step}/{total}")
        else:
            self.lines.started(run, start_step, total, device)

    def images_per_step(self, images: int) -> None:
        self.images = images

    def live_rate(self, step: int) -> str | None:
        """img/s over the last ``RATE_WINDOW_S`` seconds of iterations (the log lines' rate is
        over a whole log interval, first one with warm-up: stale on a bar)."""
        now = time.monotonic()
        self.recent.append((now, step))
        while len(self.recent) > 2 and now - self.recent[1][0] >= RATE_WINDOW_S:
            self.recent.popleft()
        (began, first), (_, last) = self.recent[0], self.recent[-1]
        if not self.images or last == first or now <= began:
            return None
        return f"{(last - first) * self.images / (now - began):.1f} img/s"

    def info_text(self) -> str:
        return "  |  ".join(
            self.info[k] for k in ("rate", "train", "structure", "eval") if k in self.info
        )

    def advanced(self, step: int) -> None:
        rate = self.live_rate(step) if self.live else None
        if rate is not None:
            self.info["rate"] = rate
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=step, info=self.info_text())
        if not self.live and not self.quiet:
            self.lines.advanced(step)

    def logged(self, record: dict[str, Any]) -> None:
        kind = record.get("kind", "")
        # on the bar the rate is the live one; the record's is over its log interval
        self.info[kind] = describe_record(record, rate=kind != "train" or not self.live)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, info=self.info_text())
        if self.quiet:
            return
        if not self.live:
            self.lines.logged(record)
        elif record.get("kind") == "eval":
            self.print(f"step {record['step']}: {describe_record(record)}")

    def confirm(self, question: str) -> bool:
        """``--yes`` says yes; a person on a terminal is asked; anything else is a no."""
        if self.assume_yes:
            return True
        if not (sys.stdin.isatty() and err_console.is_terminal):
            return False
        from rich.prompt import Confirm

        if self.progress is not None:
            self.progress.stop()
        try:
            return Confirm.ask(escape(question), console=err_console, default=False)
        finally:
            if self.progress is not None:
                self.progress.start()

    def message(self, text: str) -> None:
        if not self.quiet:
            self.print(text)

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        if self.quiet:
            yield
        elif self.live:
            assert self.progress is not None
            task = self.progress.add_task(f"{self.label}: {text}", total=None, info="")
            try:
                yield
            finally:
                self.progress.remove_task(task)
        else:
            with self.lines.phase(text):
                yield

    def finished(self) -> None:
        self.lines.finished()
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def print(self, text: str) -> None:
        target = self.progress.console if self.progress is not None and self.live else err_console
        target.print(escape(text))
