"""Options several commands share, each defined once, and the choices options offer (Enums,
so ``--help`` lists them and a typo is refused with the valid values)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sagan_cli.api import KINDS


class Choice(str, Enum):
    """An option's fixed choices; the value is what the user types."""

    def __str__(self) -> str:
        return self.value


PluginKind = Choice("PluginKind", {kind: kind for kind in KINDS})  # type: ignore[call-overload]


class Network(Choice):
    g = "g"
    d = "d"


class MapFormat(Choice):
    png = "png"
    npz = "npz"


class ReportFormat(Choice):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"
    latex = "latex"
    html = "html"


class Interval(Choice):
    welch = "welch"
    bootstrap = "bootstrap"


class Both(Choice):
    """off, on, or both (time with and without)."""

    off = "off"
    on = "on"
    both = "both"


class Layout(Choice):
    auto = "auto"
    off = "off"
    on = "on"
    both = "both"


class TrainPrecision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    both = "both"


class CheckPrecision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class AttentionPrecision(Choice):
    bf16 = "bf16"
    fp32 = "fp32"


DEFAULT_RESULTS = Path("results")

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe key, e.g. --set train.steps=200 (value parsed as TOML). Repeatable.",
        rich_help_panel="Recipe",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
]
ResultsOption = Annotated[Path, typer.Option(help="Results root folder.", rich_help_panel="Output")]
OutOption = Annotated[Path, typer.Option(help="Output folder.")]
InceptionOption = Annotated[
    Path | None,
    typer.Option(
        help="Local Inception weights (.pth) for FID/IS/KID; else $SAGAN_INCEPTION_WEIGHTS, else "
        "torch-fidelity's download cache.",
        rich_help_panel="Evaluation",
    ),
]
DinoV2Option = Annotated[
    Path | None,
    typer.Option(
        help="Local DINOv2 weights (the official *_pretrain.pth); else $SAGAN_DINOV2_WEIGHTS, "
        "else torch hub's cache or a download.",
        rich_help_panel="Evaluation",
    ),
]
TensorBoardOption = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        help="Also write TensorBoard events into each run folder (logging.tensorboard = true).",
        rich_help_panel="Output",
    ),
]
TrackOption = Annotated[
    str | None,
    typer.Option(
        "--track",
        help="Also log to these experiment trackers, e.g. mlflow,wandb (the recipe's "
        "track.backends; `sagan plugins --kind tracker` lists them).",
        rich_help_panel="Output",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=4096,
        envvar="SAGAN_THREADS",
        help="Torch CPU threads per process (default: $SAGAN_THREADS, else the cores other "
        "work leaves free right now). Always kept when given.",
        rich_help_panel="Execution",
    ),
]
RetryOption = Annotated[
    bool, typer.Option("--retry-failed", help="Also re-run failed and diverged runs.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Start a CPU run estimated past a day without asking (off a terminal it is "
        "refused without this).",
    ),
]
NprocOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Processes for one run (one GPU each on CUDA): data-parallel through torchrun. "
        "train.batch_size stays the global batch.",
        rich_help_panel="Execution",
    ),
]
CheckpointOption = Annotated[
    str, typer.Option(help="last, best, or a checkpoint path (or a file in checkpoints/).")
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="Replace what an earlier export wrote at --out (other files are kept)."
    ),
]
AlphaOption = Annotated[
    float, typer.Option(help="Significance level of the verdicts.", rich_help_panel="Statistics")
]
CiOption = Annotated[
    Interval,
    typer.Option(
        "--ci", help="welch (t interval) or bootstrap (percentile).", rich_help_panel="Statistics"
    ),
]
PairedOption = Annotated[
    bool | None,
    typer.Option(
        "--paired/--unpaired",
        help="Pair runs by seed (default: paired when both rows ran the same seeds).",
        rich_help_panel="Statistics",
    ),
]
BaselineOption = Annotated[
    str | None,
    typer.Option(
        help="The row deltas are taken against, AXIS=VALUE (default: the none/[] row, else the first).",
        rich_help_panel="Statistics",
    ),
]
NumClassesOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Classes for conditional recipes (default: the data source's count; needed when "
        "its files are not here, e.g. 1000 for ImageNet).",
    ),
]
