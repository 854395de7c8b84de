"""Rendering for the command line: consoles, progress bars and plain progress lines."""

from __future__ import annotations

import sys
import time
from typing import Any

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

from sagan_cli.results import RunDir
from sagan_cli.train.loop import Observer

# Off a terminal (pipes, CI logs, files) tables get room instead of wrapping at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
PLAIN_EVERY_S = 10.0  # how often plain (non-terminal) progress lines appear at most


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


def describe_record(record: dict[str, Any]) -> str:
    """One short line for a metrics record."""
    kind = record.get("kind")
    if kind == "train":
        return (
            f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}  {record['img_per_s']:.1f} img/s"
        )
    if kind == "structure":
        return f"structure {record['structure']:.3f} (asym {record['asymmetry']:.3f})"
    if kind == "eval":
        parts = [
            f"{name.upper()} {record[name]:.2f}"
            for name in ("fid",)
            if record.get(name) is not None
        ]
        if record.get("is_mean") is not None:
            parts.append(f"IS {record['is_mean']:.2f}")
        if record.get("kid_mean") is not None:
            parts.append(f"KID {record['kid_mean']:.4f}")
        return "  ".join(parts) or "evaluated"
    return str(record)


class TrainProgress(Observer):
    """One run's progress: a live bar on a terminal, else a plain line every log interval."""

    def __init__(
        self, quiet: bool = False, progress: Progress | None = None, label: str = "train"
    ) -> None:
        self.quiet = quiet
        self.progress = progress
        self.label = label
        self.task: TaskID | None = None
        self.total = 0
        self.info: dict[str, str] = {}
        self.last_plain = 0.0

    @property
    def live(self) -> bool:
        return self.progress is not None and not self.progress.disable

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None:
        self.total = total
        if self.progress is not None:
            self.task = self.progress.add_task(
                self.label, total=total, completed=start_step, info=""
            )
        if not self.quiet:
            self.print(f"{self.label}: {run.path} on {device}, step {start_step}/{total}")

    def advanced(self, step: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=step)

    def logged(self, record: dict[str, Any]) -> None:
        self.info[record.get("kind", "")] = describe_record(record)
        text = "  |  ".join(self.info[k] for k in ("train", "structure", "eval") if k in self.info)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, info=text)
        if self.quiet or self.live:
            if record.get("kind") == "eval" and not self.quiet:
                self.print(f"step {record['step']}: {describe_record(record)}")
            return
        now = time.monotonic()
        if (
            record.get("kind") != "train"
            or now - self.last_plain >= PLAIN_EVERY_S
            or record["step"] == self.total
        ):
            self.last_plain = now
            self.print(
                f"{self.label} step {record['step']}/{self.total}  {describe_record(record)}"
            )

    def message(self, text: str) -> None:
        if not self.quiet:
            self.print(text)

    def print(self, text: str) -> None:
        target = self.progress.console if self.progress is not None and self.live else err_console
        target.print(escape(text))
