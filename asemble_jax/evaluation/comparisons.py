"""Paired tests of two models scored on the same examples: McNemar's test on their decisions, DeLong's test on
their ROC AUCs.

Both treat examples as independent. For slices of the same patients, prefer bootstrap.paired_bootstrap
(resampled by patient) or run these on patient-level aggregates (thresholds.aggregate_by_patient).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

# Below this many discordant pairs the chi-square approximation of McNemar's statistic is poor, so the exact
# binomial test is used (the common rule of thumb, b + c < 25).
EXACT_BELOW_DISCORDANT = 25


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    statistic: float  # exact: min(only_a_correct, only_b_correct); chi-square: the corrected chi-square value
    p_value: float
    method: str  # "exact binomial" or "chi-square with continuity correction"
    only_a_correct: int
    only_b_correct: int


@dataclasses.dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    standard_error: float
    z: float
    p_value: float  # two-sided
    low: float  # normal-approximation interval of the difference at `level`
    high: float
    level: float


def mcnemar_table(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray) -> np.ndarray:
    """2x2 table of correctness: [[both correct, only a correct], [only b correct, both wrong]]."""
    labels, predictions_a, predictions_b = (np.asarray(x).astype(int) for x in (labels, predictions_a, predictions_b))
    if not labels.ndim == 1 or not labels.shape == predictions_a.shape == predictions_b.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions_a.shape}, {predictions_b.shape} "
                         "must all be (n,)")
    a_correct, b_correct = predictions_a == labels, predictions_b == labels
    return np.array([[np.sum(a_correct & b_correct), np.sum(a_correct & ~b_correct)],
                     [np.sum(~a_correct & b_correct), np.sum(~a_correct & ~b_correct)]])


def mcnemar(table: np.ndarray, exact_below: int = EXACT_BELOW_DISCORDANT) -> McNemarResult:
    """McNemar's test of equal error rates from a 2x2 paired table (see mcnemar_table).

    Exact two-sided binomial test when the discordant pairs number fewer than `exact_below`, otherwise the
    chi-square test with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c), as statsmodels and R compute it.
    """
    table = np.asarray(table)
    if table.shape != (2, 2) or np.any(table < 0) or np.any(table != np.round(table)):
        raise ValueError(f"McNemar needs a 2x2 table of non-negative counts, got {table.tolist()}")
    only_a, only_b = int(table[0, 1]), int(table[1, 0])
    discordant = only_a + only_b
    if discordant < exact_below:
        statistic = float(min(only_a, only_b))
        p_value = min(1.0, 2 * float(stats.binom.cdf(statistic, discordant, 0.5)))
        method = "exact binomial"
    else:
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, df=1))
        method = "chi-square with continuity correction"
    return McNemarResult(float(statistic), p_value, method, only_a, only_b)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing the mean of their ranks (1-based)."""
    return stats.rankdata(x, method="average", axis=-1)


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> DeLongResult:
    """DeLong's test that two correlated ROC AUCs (same examples, two scorers) are equal.

    The fast O(n log n) algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389): the structural
    components V10 (per positive) and V01 (per negative) come from midranks within positives, within negatives
    and overall, instead of the O(n^2) pairwise kernel. When the variance of the difference is zero (e.g.
    identical scorers) z and p are 0 and 1 for a zero difference, else NaN: nothing can be inferred.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.stack([np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)])
    if labels.ndim != 1 or scores.shape != (2, labels.size):
        raise ValueError(f"labels {labels.shape} and scores {np.shape(scores_a)}, {np.shape(scores_b)} "
                         "must all be (n,)")
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 positives and 2 negatives, got {m} and {n}")

    overall = _midranks(np.concatenate([positives, negatives], axis=1))
    v10 = (overall[:, :m] - _midranks(positives)) / n
    v01 = 1.0 - (overall[:, m:] - _midranks(negatives)) / m
    aucs = v10.mean(axis=1)
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(aucs[0] - aucs[1])
    standard_error = float(np.sqrt(max(variance, 0.0)))
    if standard_error > 0:
        z = difference / standard_error
        p_value = float(2 * stats.norm.sf(abs(z)))
    else:
        z, p_value = (0.0, 1.0) if difference == 0 else (float("nan"), float("nan"))
    half_width = stats.norm.ppf(0.5 + level / 2) * standard_error
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, standard_error, float(z), p_value,
                        difference - half_width, difference + half_width, level)
