"""Weights & Biases (extra ``wandb``): offline by default (files under the run folder's
``wandb/``, ``wandb sync`` uploads them later); an ablation's runs share its name as group."""

from __future__ import annotations

import os
import secrets
from typing import Any, Literal

from pydantic import Field

from sagan_cli.api import PluginError, PluginParams, TrackContext, TrackedRun, Tracker
from sagan_cli.extras import optional


class WandbParams(PluginParams):
    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline writes local files (wandb sync uploads them)"
    )
    project: str | None = Field(None, description="W&B project (default: the experiment)")
    entity: str | None = Field(None, description="W&B entity (team or user)")


class WandbTracker(Tracker):
    def __init__(self, params: WandbParams, context: TrackContext) -> None:
        self.params = params
        self.project = params.project or context.experiment
        self.run: Any = None

    def module(self) -> Any:
        return optional("wandb", "wandb", "wandb", "[track] backends = wandb (--track wandb)")

    def check(self) -> None:
        wandb = self.module()
        if self.params.mode == "online" and not (
            os.environ.get("WANDB_API_KEY") or getattr(wandb.api, "api_key", None)
        ):
            raise PluginError(
                "W&B online mode needs a login, and none is here: run `wandb login` (or set "
                "WANDB_API_KEY), or log offline (--set track.wandb_mode=offline; `wandb sync` "
                "uploads the files later)"
            )

    def start(self, run: TrackedRun) -> str:
        wandb = self.module()
        run_id = run.resume_id or f"{run.run_id}-{secrets.token_hex(3)}"
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.params.entity,
            name=run.name,
            id=run_id,
            resume="allow",
            group=run.group,
            dir=run.folder,
            mode=self.params.mode,
            config=run.params,
            reinit="finish_previous",
            settings=settings,
        )
        return run_id

    def log_metrics(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        self.run.log(dict(metrics), step=step)
        for key, value in tags.items():
            self.run.summary[f"sagan.{key}"] = value

    def log_image(self, tag: str, step: int, image: Any) -> None:
        wandb = self.module()
        self.run.log({tag: wandb.Image(image.transpose(1, 2, 0))}, step=step)

    def log_file(self, path: str) -> None:
        self.run.save(path, base_path=os.path.dirname(path), policy="now")

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "done" else 1)
            self.run = None
