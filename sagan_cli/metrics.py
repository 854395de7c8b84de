"""The metric table: every number a run or an ablation reports, stated once.

``Metric`` rows are read by evaluation (which keys a record holds), the summaries
(columns and legends), the statistics (direction of a verdict) and reports. A
name not in the table is refused (``metric``), never guessed.

``COMPUTATIONS`` are what ``--metrics`` / ``eval.metrics`` choose: each computes one
or more metrics from the features of one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["eval", "best", "structure", "attention"]


@dataclass(frozen=True)
class Metric:
    name: str  # the summary's column and the report's name
    record_key: str  # its key in an evaluation record (eval.json, metrics.jsonl)
    lower_is_better: bool | None  # None: a description, no better or worse
    compared: bool  # gets a delta, an interval, a p-value and a verdict against the baseline
    source: Source  # the final evaluation, the best.pt evaluation, the structural score, attention
    legend: str  # what it is, for summary.md's legend
    paper: str = ""  # its column head in a paper's table (LaTeX math allowed); default: name

    @property
    def heading(self) -> str:
        return self.paper or self.name

    @property
    def direction(self) -> str:
        if self.lower_is_better is None:
            return ""
        return "lower is better" if self.lower_is_better else "higher is better"


@dataclass(frozen=True)
class Computation:
    name: str  # the --metrics choice
    summary: str
    needs_reference: bool  # computed against a reference set of real images


COMPUTATIONS = (
    Computation("fid", "Fréchet distance of features (FID; fd_dinov2 in DINOv2 space)", True),
    Computation("is", "Inception Score (Inception's class probabilities)", False),
    Computation("kid", "Kernel Inception Distance", True),
    Computation("prc", "precision, recall and their F-score (k-NN balls)", True),
    Computation("dc", "density and coverage (k-NN balls)", True),
)
COMPUTATION_NAMES = tuple(c.name for c in COMPUTATIONS)
NEEDS_REFERENCE = tuple(c.name for c in COMPUTATIONS if c.needs_reference)

METRICS = (
    Metric(
        "fid",
        "fid",
        True,
        True,
        "eval",
        "FID of the final evaluation (Inception features)",
        paper="FID",
    ),
    Metric(
        "is", "is_mean", False, True, "eval", "Inception Score of the final evaluation", paper="IS"
    ),
    Metric("kid", "kid_mean", True, True, "eval", "KID of the final evaluation", paper="KID"),
    Metric(
        "precision",
        "precision",
        False,
        True,
        "eval",
        "share of samples on the real manifold",
        paper="Precision",
    ),
    Metric(
        "recall",
        "recall",
        False,
        True,
        "eval",
        "share of real images the samples cover",
        paper="Recall",
    ),
    Metric(
        "density",
        "density",
        False,
        True,
        "eval",
        "how densely samples sit among real images",
        paper="Density",
    ),
    Metric(
        "coverage",
        "coverage",
        False,
        True,
        "eval",
        "share of real neighbourhoods with a sample",
        paper="Coverage",
    ),
    Metric(
        "fd_dinov2",
        "fd_dinov2",
        True,
        True,
        "eval",
        "Fréchet distance in DINOv2 space",
        paper="FD$_{\\mathrm{DINOv2}}$",
    ),
    Metric(
        "fid_best",
        "fid",
        True,
        False,
        "best",
        "FID of best.pt (lowest in-training FID)",
        paper="FID (best.pt)",
    ),
    Metric("is_best", "is_mean", False, False, "best", "IS of best.pt", paper="IS (best.pt)"),
    Metric("kid_best", "kid_mean", True, False, "best", "KID of best.pt", paper="KID (best.pt)"),
    Metric(
        "structure",
        "structure",
        True,
        True,
        "structure",
        "the data's structural score of the final samples (0 = as real images)",
        paper="Structure",
    ),
    Metric(
        "structure_best",
        "structure",
        True,
        False,
        "structure",
        "the lowest structural score any sample grid of the run reached",
        paper="Structure (best)",
    ),
    Metric(
        "attn_distance",
        "distance_",
        None,
        False,
        "attention",
        "mean distance (image widths) from a query to where attention looks, final, mean over "
        "the run's layers",
        paper="Attn.\\ distance",
    ),
    Metric(
        "attn_partner",
        "partner_",
        False,
        False,
        "attention",
        "attention's share on the data's declared partner position, final, mean over the "
        "run's layers (uniform attention: 1 / positions)",
        paper="Attn.\\ on partner",
    ),
)
BY_NAME = {m.name: m for m in METRICS}
NAMES = tuple(BY_NAME)
COMPARED = tuple(m.name for m in METRICS if m.compared)
EVAL_METRICS = tuple(m for m in METRICS if m.source == "eval")


def metric(name: str) -> Metric:
    """The row of ``name``; an unknown name is a programming error, named."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"'{name}' is not a metric of sagan-cli; metrics: {', '.join(NAMES)}"
        ) from None


def legend(names: list[str]) -> list[str]:
    """One line per metric in ``names``: what it is and which way is better."""
    lines = []
    for name in names:
        row = metric(name)
        direction = f" ({row.direction})" if row.direction else ""
        lines.append(f"`{name}`: {row.legend}{direction}")
    return lines
