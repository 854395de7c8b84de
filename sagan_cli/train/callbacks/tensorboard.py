"""TensorBoard events for a run (optional extra): every metrics record as scalars, sample grids
and attention figures as images, in ``<run>/tensorboard/`` so ``tensorboard --logdir results/``
shows a whole ablation, one run per folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sagan_cli.extras import TENSORBOARD, require
from sagan_cli.train.callbacks import Callback

SECTION = {"train": "train", "structure": "structure", "attention": "attention", "eval": "eval"}


class TensorBoard(Callback):
    main_only = True

    def __init__(self, folder: Path) -> None:
        require(*TENSORBOARD)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def on_record(self, record: dict[str, Any]) -> None:
        section = SECTION.get(record.get("kind", ""))
        if section is None:
            return
        for key, value in record.items():
            if key in ("kind", "step", "final", "wall_time") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{section}/{key}", value, record["step"])
        self.writer.flush()

    def on_image(self, tag: str, step: int, image: Any) -> None:
        self.writer.add_image(tag, image, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
