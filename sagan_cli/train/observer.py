"""Progress callbacks of a training run (torch-free, so the CLI can import it cheaply)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagan_cli.results import RunDir


class Observer:
    """The CLI renders these with rich; tests and ablation workers use their own or none.

    ``advanced`` is called at iteration boundaries: raising ``KeyboardInterrupt``
    there stops the run as Ctrl-C would (a checkpoint of that step is saved).
    """

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None: ...

    def advanced(self, step: int) -> None: ...

    def logged(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def image(self, tag: str, step: int, image: Any) -> None:
        """A uint8 (3, H, W) picture of the run at ``step`` (sample grids, attention figures)."""


class Observers(Observer):
    """Several observers as one (the terminal and TensorBoard, say)."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None:
        for observer in self.observers:
            observer.started(run, start_step, total, device)

    def advanced(self, step: int) -> None:
        for observer in self.observers:
            observer.advanced(step)

    def logged(self, record: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.logged(record)

    def message(self, text: str) -> None:
        for observer in self.observers:
            observer.message(text)

    def image(self, tag: str, step: int, image: Any) -> None:
        for observer in self.observers:
            observer.image(tag, step, image)


def describe_record(record: dict[str, Any]) -> str:
    """One short line for a metrics record."""
    kind = record.get("kind")
    if kind == "train":
        return (
            f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}  {record['img_per_s']:.1f} img/s"
        )
    if kind == "structure":
        return f"structure {record['structure']:.3f} (asym {record['asymmetry']:.3f})"
    if kind == "attention":
        layers = sorted(k.removeprefix("distance_") for k in record if k.startswith("distance_"))
        return "attention " + "  ".join(
            f"{layer}: dist {record[f'distance_{layer}']:.2f} mirror {record[f'mirror_{layer}']:.3f}"
            for layer in layers
        )
    if kind == "diverged":
        return "diverged"
    if kind == "eval":
        parts = [f"FID {record['fid']:.2f}"] if record.get("fid") is not None else []
        if record.get("is_mean") is not None:
            parts.append(f"IS {record['is_mean']:.2f}")
        if record.get("kid_mean") is not None:
            parts.append(f"KID {record['kid_mean']:.4f}")
        return "  ".join(parts) or "evaluated"
    return str(record)


def eta(started_at: float, start_step: int, step: int, total: int) -> str:
    """``  ETA 0:12:34`` from the pace since ``started_at`` (monotonic seconds)."""
    done = step - start_step
    if done <= 0 or step >= total:
        return ""
    seconds = (time.monotonic() - started_at) / done * (total - step)
    return f"  ETA {int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


class LogLines(Observer):
    """Plain progress lines (for logs of cluster jobs and pipes): a start line, a line per
    ``every_s`` seconds of training records, every evaluation, and the last step."""

    def __init__(self, label: str = "train", every_s: float = 30.0, write: Any = None) -> None:
        self.label = label
        self.every_s = every_s
        self.write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.total = 0
        self.start_step = 0
        self.started_at = time.monotonic()
        self.last_line = 0.0

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None:
        self.total, self.start_step, self.started_at = total, start_step, time.monotonic()
        self.write(f"{self.label}: {run.path} on {device}, step {start_step}/{total}")

    def logged(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        due = now - self.last_line >= self.every_s or record.get("step") == self.total
        if record.get("kind") == "train" and not due:
            return
        self.last_line = now
        step = record.get("step", 0)
        self.write(
            f"{self.label} step {step}/{self.total}  {describe_record(record)}"
            f"{eta(self.started_at, self.start_step, step, self.total)}"
        )

    def message(self, text: str) -> None:
        self.write(f"{self.label}: {text}")
