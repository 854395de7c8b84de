"""Progress callbacks of a training run (torch-free, so the CLI can import it cheaply)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
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

    def images_per_step(self, images: int) -> None:
        """Images one iteration trains on (the global batch): for a live img/s."""

    def logged(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def confirm(self, question: str) -> bool:
        """Go on with something long (a CPU run of days)? Yes unless a person says no."""
        return True

    def image(self, tag: str, step: int, image: Any) -> None:
        """A uint8 (3, H, W) picture of the run at ``step`` (sample grids, attention figures)."""

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        """Set-up work before the first step (``text``: "rendering 10,000 training images")."""
        yield

    def finished(self) -> None:
        """The run ended (done, stopped or failed): stop anything running on a timer."""


class Heartbeat:
    """Calls ``beat(seconds)`` from a daemon thread while work goes on: first after ``first_s``
    seconds, then every ``every_s``, until ``stop``. A line now and then tells a log reader
    (CI, a cluster job) that a long, silent piece of work is alive."""

    def __init__(self, beat: Callable[[float], None], first_s: float, every_s: float) -> None:
        self.beat, self.first_s, self.every_s = beat, first_s, every_s
        self.began = time.monotonic()
        self.quiet_since = self.began
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sagan-heartbeat")
        self.thread.start()

    def spoke(self) -> None:
        """Something else was just written: the next beat waits ``every_s`` from now."""
        self.quiet_since = time.monotonic()

    def _run(self) -> None:
        wait = self.first_s
        while not self.stopped.wait(min(1.0, wait)):
            now = time.monotonic()
            if now - self.quiet_since >= wait:
                self.beat(now - self.began)
                self.quiet_since, wait = now, self.every_s

    def stop(self) -> None:
        self.stopped.set()


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

    def images_per_step(self, images: int) -> None:
        for observer in self.observers:
            observer.images_per_step(images)

    def logged(self, record: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.logged(record)

    def message(self, text: str) -> None:
        for observer in self.observers:
            observer.message(text)

    def image(self, tag: str, step: int, image: Any) -> None:
        for observer in self.observers:
            observer.image(tag, step, image)

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer.phase(text))
            yield

    def finished(self) -> None:
        for observer in self.observers:
            observer.finished()


def describe_record(record: dict[str, Any], rate: bool = True) -> str:
    """One short line for a metrics record (``rate``: with a train record's img/s)."""
    kind = record.get("kind")
    if kind == "train":
        text = f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}"
        return text + (f"  {record['img_per_s']:.1f} img/s" if rate else "")
    if kind == "structure":
        terms = [
            f"{key} {value:.3f}"
            for key, value in record.items()
            if key not in ("kind", "step", "structure") and isinstance(value, float)
        ]
        return f"structure {record['structure']:.3f} ({', '.join(terms)})"
    if kind == "attention":
        layers = sorted(k.removeprefix("distance_") for k in record if k.startswith("distance_"))
        return "attention " + "  ".join(
            f"{layer}: dist {record[f'distance_{layer}']:.2f}"
            + (f" partner {record[f'partner_{layer}']:.3f}" if f"partner_{layer}" in record else "")
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
    """Plain progress lines (for logs of cluster jobs, CI and pipes): a start line; a line at
    least every ``every_s`` seconds of training (step, iterations/s, the latest losses, ETA),
    whatever ``log_every`` is; every evaluation and other record; the last step. An iteration
    or set-up phase that runs long is announced every ``HEARTBEAT_S`` seconds."""

    HEARTBEAT_S = 30.0
    PHASE_FIRST_S = 3.0  # set-up phases quicker than this print nothing

    def __init__(self, label: str = "train", every_s: float = 10.0, write: Any = None) -> None:
        self.label = label
        self.every_s = every_s
        self.writer = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.lock = threading.Lock()
        self.total = 0
        self.start_step = 0
        self.step = 0
        self.started_at = time.monotonic()
        self.last_line = 0.0  # any line: heartbeats wait for quiet
        self.last_progress = 0.0  # the last progress line: its pace is measured from there
        self.last_progress_step = 0
        self.losses = ""
        self.heartbeat: Heartbeat | None = None

    def write(self, text: str) -> None:
        with self.lock:
            self.last_line = time.monotonic()
            if self.heartbeat is not None:
                self.heartbeat.spoke()
            self.writer(text)

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None:
        self.total, self.start_step, self.started_at = total, start_step, time.monotonic()
        self.step = self.last_progress_step = start_step
        self.last_progress = self.started_at
        self.write(f"{self.label}: {run.path} on {device}, step {start_step}/{total}")
        self.heartbeat = Heartbeat(self._still_working, self.HEARTBEAT_S, self.HEARTBEAT_S)

    def _still_working(self, _seconds: float) -> None:
        quiet = time.monotonic() - self.last_line
        self.write(
            f"{self.label} step {self.step}/{self.total}: iteration {self.step + 1} still "
            f"running ({quiet:.0f} s since the last line)"
            f"{eta(self.started_at, self.start_step, self.step, self.total)}"
        )

    def advanced(self, step: int) -> None:
        self.step = step
        now = time.monotonic()
        if now - self.last_line < self.every_s or step >= self.total:
            return  # the last step's line comes with its losses (``logged``)
        rate = (step - self.last_progress_step) / max(now - self.last_progress, 1e-9)
        self.last_progress, self.last_progress_step = now, step
        losses = f"  {self.losses}" if self.losses else ""
        self.write(
            f"{self.label} step {step}/{self.total}  {rate:.3g} it/s{losses}"
            f"{eta(self.started_at, self.start_step, step, self.total)}"
        )

    def logged(self, record: dict[str, Any]) -> None:
        step = record.get("step", 0)
        if record.get("kind") == "train":
            self.losses = describe_record(record)
            if step != self.total:
                return
        self.write(
            f"{self.label} step {step}/{self.total}  {describe_record(record)}"
            f"{eta(self.started_at, self.start_step, step, self.total)}"
        )

    def message(self, text: str) -> None:
        self.write(f"{self.label}: {text}")

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        def beat(seconds: float) -> None:
            self.write(f"{self.label}: {text} ({seconds:.0f} s so far)")

        heartbeat = Heartbeat(beat, self.PHASE_FIRST_S, self.HEARTBEAT_S)
        try:
            yield
        finally:
            heartbeat.stop()

    def finished(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
