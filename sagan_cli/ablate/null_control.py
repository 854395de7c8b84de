"""The null control (A/A): how often do the ablation's statistics call a difference where none is?

From a pool of finished runs of one configuration (one row, many seeds), each
A/A experiment draws two disjoint groups of ``group`` runs and compares them
with exactly the test and verdict an ablation table uses
(``sagan_cli.ablate.stats``), in the two ways a table can:

* ``welch``: the groups ran different seeds, so the default is Welch's test;
* ``paired``: the groups are relabelled to share seeds 0..group-1, so the
  default pairs them by seed (the paired t test) as it does for two rows of one
  grid. Runs of the pool are independent, so this asks whether pairing itself
  inflates false verdicts.

A verdict other than ``inconclusive`` is a false positive; the rate comes with
its exact (Clopper-Pearson) 95% interval from scipy. Experiments reuse runs
(that is what makes them cheap), so they are not independent and the interval
is narrower than the truth; ``disjoint`` says how many experiments the pool
could give without sharing a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from sagan_cli.ablate.stats import CONFIDENCE, compare, verdict
from sagan_cli.errors import SaganError

SPLIT_SEED = 0  # the experiments drawn are a function of the pool and this seed


@dataclass(frozen=True)
class FalsePositives:
    """One way of testing (welch or paired) over all A/A experiments."""

    test: str
    positives: int
    experiments: int

    @property
    def rate(self) -> float:
        return self.positives / self.experiments

    @property
    def interval(self) -> tuple[float, float]:
        found = scipy_stats.binomtest(self.positives, self.experiments).proportion_ci(
            confidence_level=CONFIDENCE, method="exact"
        )
        return float(found.low), float(found.high)


@dataclass(frozen=True)
class NullControl:
    metric: str
    pool: int  # runs in the pool
    group: int  # runs per side of one experiment
    alpha: float
    results: tuple[FalsePositives, ...]

    @property
    def disjoint(self) -> int:
        return self.pool // (2 * self.group)

    def rows(self) -> list[dict[str, object]]:
        return [
            {
                "metric": self.metric,
                "test": found.test,
                "experiments": found.experiments,
                "runs_per_side": self.group,
                "pool": self.pool,
                "false_positives": found.positives,
                "rate": found.rate,
                "ci_low": found.interval[0],
                "ci_high": found.interval[1],
                "alpha": self.alpha,
            }
            for found in self.results
        ]


def distinct_splits(pool: int, group: int) -> int:
    """Unordered pairs of disjoint ``group``-sized subsets of ``pool`` runs."""
    return math.comb(pool, group) * math.comb(pool - group, group) // 2


def null_control(
    values: dict[int, float], metric: str, group: int, experiments: int, alpha: float
) -> NullControl:
    """``values``: seed -> the metric of one configuration's finished runs."""
    seeds = sorted(values)
    if group < 2:
        raise SaganError(f"A/A groups of {group} run: a t test needs at least 2 per side.")
    if len(seeds) < 2 * group:
        raise SaganError(
            f"The A/A pool has {len(seeds)} finished runs of {metric}; two groups of {group} "
            f"need {2 * group}. Run more seeds of the baseline configuration."
        )
    if experiments > distinct_splits(len(seeds), group):
        raise SaganError(
            f"{experiments} A/A experiments: {len(seeds)} runs split into two groups of "
            f"{group} give only {distinct_splits(len(seeds), group)} distinct experiments. "
            f"Ask for fewer or run more seeds."
        )
    rng = np.random.default_rng(SPLIT_SEED)
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    positives = {"welch": 0, "paired": 0}
    while len(seen) < experiments:
        order = [int(s) for s in rng.permutation(seeds)]
        first, second = sorted(order[:group]), sorted(order[group : 2 * group])
        key = (tuple(first), tuple(second)) if first < second else (tuple(second), tuple(first))
        if key in seen:
            continue
        seen.add(key)
        welch = compare(
            {s: values[s] for s in first}, {s: values[s] for s in second}, "welch", None
        )
        # the same runs relabelled to shared seeds: the default then pairs them
        paired = compare(
            dict(enumerate(values[s] for s in first)),
            dict(enumerate(values[s] for s in second)),
            "welch",
            None,
        )
        assert not welch.paired and paired.paired
        for test, found in (("welch", welch), ("paired", paired)):
            # one comparison per experiment: Holm's adjustment leaves its p as it is
            if verdict(metric, found, found.p, alpha) in ("better", "worse"):
                positives[test] += 1
    return NullControl(
        metric,
        len(seeds),
        group,
        alpha,
        tuple(FalsePositives(test, count, experiments) for test, count in positives.items()),
    )
