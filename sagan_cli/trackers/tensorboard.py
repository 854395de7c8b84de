"""TensorBoard (extra ``tensorboard``): every metric as a scalar, sample grids and attention
figures as images, in ``<run>/tensorboard/`` so ``tensorboard --logdir results/`` shows a
whole ablation, one run per folder. ``logging.tensorboard = true`` (``--tensorboard``) turns it
on as ``[track] backends = ["tensorboard"]`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sagan_cli.api import NoParams, TrackContext, TrackedRun, Tracker
from sagan_cli.extras import TENSORBOARD, require


class TensorBoardTracker(Tracker):
    def __init__(self, params: NoParams, context: TrackContext) -> None:
        self.writer: Any = None

    def check(self) -> None:
        require(*TENSORBOARD)

    def start(self, run: TrackedRun) -> str:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run.folder) / "tensorboard"))
        return ""

    def log_metrics(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_image(self, tag: str, step: int, image: Any) -> None:
        self.writer.add_image(tag, image, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
