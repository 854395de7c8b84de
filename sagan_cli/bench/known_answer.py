"""The known-answer benchmark: can the ablation machinery see a real effect, and does it stay
quiet where there is none?

Two ablations, each through the same service ``sagan ablate`` runs (in this process):

1. the grid of ``recipes/attention_known_answer.toml`` (no attention, a residual block,
   SAGAN, and the ``oracle`` of sagan-extra-attention, the positive control) over
   ``seeds`` seeds, with its table and verdicts;
2. the null pool: the baseline configuration (``attention_layer = []``) over
   ``null_seeds`` seeds, from which ``sagan_cli.ablate.null_control`` draws A/A
   experiments.

The known answer: the oracle row is ``better`` than no attention and the residual row is
not. ``quick`` shrinks everything to seconds: it checks the machinery, not the effect.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sagan_cli.ablate.null_control import NullControl, null_control
from sagan_cli.ablate.runner import PlainGrid
from sagan_cli.ablate.service import (
    AblationRequest,
    Report,
    build_report,
    plan_ablation,
    run_ablation,
)
from sagan_cli.ablate.stats import StatsOptions
from sagan_cli.ablate.summary import collect_runs
from sagan_cli.errors import SaganError
from sagan_cli.outcomes import INTERRUPTED_BY_CTRL_C, ExitCode, RunStatus
from sagan_cli.plugins import get_registry

RECIPE = "attention_known_answer"
METRIC = "structure"
QUICK = (
    "train.steps=4",
    "train.batch_size=4",
    "train.log_every=2",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.structure_samples=8",
    "data.num_images=32",
    "data.test_images=16",
    "logging.attention_images=2",
)
ROWS = ("oracle", "residual", "sagan")  # the variants the answer speaks about, by their labels


@dataclass(frozen=True)
class Phase:
    name: str
    folder: Path
    seconds: float


@dataclass(frozen=True)
class KnownAnswer:
    grid: Report
    null: NullControl
    phases: tuple[Phase, ...]
    quick: bool

    def verdict_of(self, variant: str) -> str | None:
        """The structure verdict of the row whose label names ``variant`` (None: no such row)."""
        table, keys = self.grid.table, self.grid.keys
        for _, row in table.iterrows():
            label = " ".join(str(row[k]) for k in keys)
            if f"variant={variant}" in label.replace(" = ", "="):
                return str(row[f"{METRIC}_verdict"])
        return None

    @property
    def answered(self) -> bool:
        """Oracle better than no attention, residual not better."""
        return self.verdict_of("oracle") == "better" and self.verdict_of("residual") != "better"


def machine() -> str:
    """The CPU model and core count, for the record."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def _ablate(
    recipe: str,
    name: str,
    seeds: int,
    results: Path,
    jobs: str,
    overrides: list[str],
    varies: tuple[str, ...] = (),
) -> Phase:
    """One ablation, as ``sagan ablate`` runs it, with plain progress lines."""
    request = AblationRequest(
        recipe=recipe,
        overrides=tuple(overrides),
        varies=varies,
        seeds=str(seeds),
        name=name,
        results_root=results,
        jobs=jobs,
    )
    started = time.perf_counter()
    outcome = run_ablation(plan_ablation(request, get_registry()), PlainGrid())
    seconds = time.perf_counter() - started
    if outcome.exit_code == INTERRUPTED_BY_CTRL_C:
        raise KeyboardInterrupt
    if outcome.exit_code != ExitCode.DONE:
        raise SaganError(
            f"The ablation {name} ended with exit code {outcome.exit_code} ("
            + " ".join(outcome.notes())
            + "): not every run finished, so the benchmark has no table to read. Re-run the "
            "same command: finished runs are kept and the rest resume."
        )
    return Phase(name, results / name, seconds)


def run_known_answer(
    recipe: str,
    seeds: int,
    null_seeds: int,
    null_group: int,
    null_experiments: int,
    jobs: str,
    results: Path,
    alpha: float,
    quick: bool,
) -> KnownAnswer:
    if null_seeds < 2 * null_group:
        raise SaganError(
            f"--null-seeds {null_seeds}: A/A experiments of {null_group} runs per side need at "
            f"least {2 * null_group} runs of the baseline."
        )
    overrides = list(QUICK) if quick else []
    stem = Path(recipe).stem + ("-quick" if quick else "")
    grid = _ablate(recipe, stem, seeds, results, jobs, overrides)
    null = _ablate(
        recipe, f"{stem}-null", null_seeds, results, jobs, overrides, ("attention_layer=[]",)
    )
    options = StatsOptions(alpha=alpha)
    report = build_report(grid.folder, None, options)
    runs = collect_runs([null.folder])
    done = runs[(runs["status"] == RunStatus.DONE) & runs[METRIC].notna()]
    values = {int(s): float(v) for s, v in zip(done["seed"], done[METRIC], strict=True)}
    control = null_control(values, METRIC, null_group, null_experiments, alpha)
    return KnownAnswer(report, control, (grid, null), quick)


def null_frame(result: KnownAnswer) -> pd.DataFrame:
    return pd.DataFrame(result.null.rows())
