"""Is a difference evidence? Deltas against a baseline row with intervals, tests and verdicts.

For each metric and each row of an ablation table against its baseline row, from
the per-seed values of finished runs:

* the delta of the means, with a 95% confidence interval: Welch's t interval,
  or a percentile bootstrap (``ci = "bootstrap"``, 9,999 resamples, fixed seed;
  none below ``BOOTSTRAP_MIN_N`` seeds per side, where it would not cover 95%);
* the two-sided p-value of Welch's t test, or of the paired t test when both
  rows ran the same seeds (a seed fixes initialisation and data order, so seed
  k of one row is the natural partner of seed k of the other);
* Holm's step-down correction over the rows of the table (per metric), and a
  verdict at ``alpha``: ``better``/``worse`` by the metric's direction, else
  ``inconclusive``; fewer than two seeds on either side is ``inconclusive
  (n<2)``, never a number;
* for inconclusive rows, the seeds per row a t test would need to detect the
  observed delta at the observed variance with 80% power.

All distributions come from scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from sagan_cli.errors import SaganError
from sagan_cli.metrics import metric as metric_row

CONFIDENCE = 0.95
POWER = 0.8
BOOTSTRAP_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0
# A percentile bootstrap of fewer values than this per row covers far less than its nominal
# 95% (with 2 values per side it is little more than their range): such rows get no interval.
BOOTSTRAP_MIN_N = 6
MAX_SEEDS = 1_000


@dataclass(frozen=True)
class StatsOptions:
    alpha: float = 0.05
    ci: str = "welch"  # or "bootstrap"
    paired: bool | None = None  # None: paired exactly when both rows ran the same seeds
    baseline: str | None = None  # "AXIS=VALUE"
    protocol: str | None = None  # only evaluations of this protocol (id or label) count

    def check(self) -> None:
        if not 0 < self.alpha < 1:
            raise SaganError(
                f"--alpha {self.alpha}: a significance level lies strictly between 0 and 1, e.g. 0.05."
            )
        if self.ci not in ("welch", "bootstrap"):
            raise SaganError(
                f"--ci '{self.ci}': choose welch (t interval) or bootstrap (percentile)."
            )
        if self.baseline is not None and "=" not in self.baseline:
            raise SaganError(
                f"--baseline '{self.baseline}' is not AXIS=VALUE, e.g. --baseline attention_layer=[]."
            )


@dataclass(frozen=True)
class Comparison:
    """One row against the baseline for one metric."""

    delta: float
    ci_low: float
    ci_high: float
    p: float
    paired: bool
    n: int
    n_baseline: int

    @property
    def testable(self) -> bool:
        return self.n >= 2 and self.n_baseline >= 2


def compare(
    row: dict[int, float], baseline: dict[int, float], ci: str, paired: bool | None
) -> Comparison:
    """``row`` and ``baseline``: seed -> value of finished runs."""
    same_seeds = set(row) == set(baseline)
    use_pairs = same_seeds if paired is None else paired
    if use_pairs and not same_seeds:
        raise SaganError(
            f"--paired needs both rows to have run the same seeds, but one ran {sorted(row)} and "
            f"the baseline {sorted(baseline)}. Drop --paired (Welch's test then compares them "
            f"unpaired) or run the missing seeds."
        )
    a = np.array([row[s] for s in sorted(row)], dtype=float)
    b = np.array([baseline[s] for s in sorted(baseline)], dtype=float)
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, math.nan, math.nan, math.nan, use_pairs, len(a), len(b))
    if use_pairs:
        spread = float((a - b).std(ddof=1))
    else:
        spread = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    scale = max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    if spread <= 1e-12 * scale:  # no variance (round-off aside): the delta is certain
        p = 1.0 if abs(delta) <= 1e-12 * scale else 0.0
        return Comparison(delta, delta, delta, p, use_pairs, len(a), len(b))
    if use_pairs:
        result = scipy_stats.ttest_rel(a, b)
    else:
        result = scipy_stats.ttest_ind(a, b, equal_var=False)
    if ci == "bootstrap" and min(len(a), len(b)) < BOOTSTRAP_MIN_N:
        low = high = math.nan
    elif ci == "bootstrap":
        boot = scipy_stats.bootstrap(
            (a, b),
            lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
            paired=use_pairs,
            vectorized=True,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    else:
        interval = result.confidence_interval(confidence_level=CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    return Comparison(delta, low, high, float(result.pvalue), use_pairs, len(a), len(b))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    tested = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def verdict(metric: str, comparison: Comparison, p_holm: float, alpha: float) -> str:
    """better, worse or inconclusive by the metric's direction (an unknown metric is refused)."""
    lower_better = metric_row(metric).lower_is_better
    if lower_better is None:
        raise ValueError(f"'{metric}' has no direction: it gets no verdict")
    if not comparison.testable:
        return "inconclusive (n<2)"
    if math.isnan(p_holm) or p_holm >= alpha or comparison.delta == 0:
        return "inconclusive"
    improved = comparison.delta < 0 if lower_better else comparison.delta > 0
    return "better" if improved else "worse"


def seeds_needed(
    row: dict[int, float], baseline: dict[int, float], paired: bool, alpha: float
) -> int | None:
    """Seeds per row for 80% power against the observed delta and variance; None if no delta
    was observed, the variance is zero, or more than ``MAX_SEEDS`` would be needed."""
    a = np.array(list(row.values()), dtype=float)
    b = np.array(list(baseline.values()), dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    if paired:
        differences = np.array([row[s] - baseline[s] for s in sorted(row)])
        effect, spread = abs(differences.mean()), differences.std(ddof=1)
    else:
        effect = abs(a.mean() - b.mean())
        spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if effect == 0 or spread == 0:
        return None
    for n in range(2, MAX_SEEDS + 1):
        df = n - 1 if paired else 2 * n - 2
        shift = effect / spread * (math.sqrt(n) if paired else math.sqrt(n / 2))
        critical = scipy_stats.t.ppf(1 - alpha / 2, df)
        power = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
        if power >= POWER:
            return n
    return None
