"""Built-in experiment trackers: ``mlflow``, ``wandb`` and ``tensorboard`` (each an optional
extra, registered always: chosen without its package, it names the ``pip install``)."""

from __future__ import annotations

from sagan_cli.api import NoParams, Register, TrackContext, Tracker, TrackerPlugin, hookimpl
from sagan_cli.trackers.mlflow import MlflowParams
from sagan_cli.trackers.wandb import WandbParams


def build_mlflow(params: MlflowParams, context: TrackContext) -> Tracker:
    from sagan_cli.trackers.mlflow import MlflowTracker

    return MlflowTracker(params, context)


def build_wandb(params: WandbParams, context: TrackContext) -> Tracker:
    from sagan_cli.trackers.wandb import WandbTracker

    return WandbTracker(params, context)


def build_tensorboard(params: NoParams, context: TrackContext) -> Tracker:
    from sagan_cli.trackers.tensorboard import TensorBoardTracker

    return TensorBoardTracker(params, context)


PLUGINS = (
    TrackerPlugin(
        api_version=1,
        name="mlflow",
        summary="MLflow runs (a SQLite store in the results folder, or a tracking server)",
        factory=build_mlflow,
        params=MlflowParams,
        extra="mlflow",
    ),
    TrackerPlugin(
        api_version=1,
        name="wandb",
        summary="Weights & Biases runs (offline files by default), grouped by ablation",
        factory=build_wandb,
        params=WandbParams,
        extra="wandb",
    ),
    TrackerPlugin(
        api_version=1,
        name="tensorboard",
        summary="TensorBoard events in each run folder (logging.tensorboard, --tensorboard)",
        factory=build_tensorboard,
        extra="tensorboard",
    ),
)


@hookimpl
def sagan_register_tracker(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
