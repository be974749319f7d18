"""Bootstrap confidence intervals resampled by patient, and the paired bootstrap of a difference between two models.

Slices of one patient are not independent: resampling slices would pretend there are as many independent
observations as slices and give intervals that are too narrow. Here each resample draws patients with
replacement and takes all the slices of every drawn patient. A resample is thus a weight per patient (how many
times they were drawn), and all resamples are scored at once by metrics.weighted_metrics with patients as its
clusters.

Intervals are percentile intervals of the resampled metric. Resamples in which a metric is undefined (for
example AUC when the drawn patients hold one class only) are left out of that metric's interval, and
`n_valid` says how many were kept.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from asemble_jax.evaluation.metrics import METRIC_NAMES, weighted_metrics

# Resamples per chunk x examples: bounds the memory of a bootstrap over a large test set (~16 MiB per float64
# (resamples, distinct scores) matrix) while keeping each chunk big enough for vectorisation to pay.
_CELLS_PER_CHUNK = 2**21


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate on all the data with its bootstrap percentile interval [low, high]."""
    estimate: float
    low: float
    high: float
    level: float
    n_valid: int  # resamples in which the metric was defined
    n_patients: int


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """metric(model a) - metric(model b) on the same examples, with its interval and a two-sided p-value."""
    metric: str
    difference: float
    low: float
    high: float
    p_value: float
    level: float
    n_valid: int
    n_patients: int


def _patient_index(patient_ids: Sequence, n_examples: int) -> tuple[np.ndarray, int]:
    patient_ids = np.asarray(patient_ids)
    if patient_ids.shape != (n_examples,):
        raise ValueError(f"patient_ids has shape {patient_ids.shape}; expected one id per example ({n_examples},)")
    unique, index = np.unique(patient_ids, return_inverse=True)
    return index.reshape(-1), unique.size


def _resampled_patient_counts(n_examples: int, n_patients: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yields (rows, n_patients) weights, in chunks: per resample, how many times each patient was drawn."""
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CELLS_PER_CHUNK // max(n_examples, n_patients))
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        draws = rng.integers(0, n_patients, size=(rows, n_patients))
        offsets = np.arange(rows)[:, None] * n_patients
        times_drawn = np.bincount((draws + offsets).ravel(), minlength=rows * n_patients).reshape(rows, n_patients)
        yield times_drawn


def _check_level(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high), int(finite.size)


def bootstrap_metrics(labels: np.ndarray, probabilities: np.ndarray, patient_ids: Sequence, *,
                      threshold: float = 0.5, n_resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, Interval]:
    """Interval for every metric of metrics.METRIC_NAMES, resampling patients with replacement.

    For a patient-level analysis pass thresholds.aggregate_by_patient's output (one example per patient).
    """
    _check_level(level, n_resamples)
    labels = np.asarray(labels)
    patient_index, n_patients = _patient_index(patient_ids, labels.size)
    estimate = weighted_metrics(labels, probabilities, np.ones((1, labels.size)), threshold)
    resampled = {name: [] for name in METRIC_NAMES}
    for counts in _resampled_patient_counts(labels.size, n_patients, n_resamples, seed):
        scores = weighted_metrics(labels, probabilities, counts, threshold, clusters=patient_index)
        for name in METRIC_NAMES:
            resampled[name].append(scores[name])
    intervals = {}
    for name in METRIC_NAMES:
        low, high, n_valid = _percentiles(np.concatenate(resampled[name]), level)
        intervals[name] = Interval(float(estimate[name][0]), low, high, level, n_valid, n_patients)
    return intervals


def paired_bootstrap(labels: np.ndarray, probabilities_a: np.ndarray, probabilities_b: np.ndarray,
                     patient_ids: Sequence, *, metric: str = "auc",
                     thresholds: tuple[float, float] = (0.5, 0.5), n_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> PairedDifference:
    """Difference metric(a) - metric(b) of two models scored on the same examples, each resample drawing the
    same patients for both models (the pairing is what makes the interval narrow where the models agree).

    thresholds: each model's decision threshold (chosen on validation, e.g. by Youden's J); unused for AUC.
    p_value: two-sided, the smallest 1 - level at which the percentile interval would exclude zero,
    2 * min(P*(d <= 0), P*(d >= 0)) with one added to counts and total so that it is never reported as exactly 0
    from a finite number of resamples; 1 when every resample gives a difference of 0.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {METRIC_NAMES}, got {metric!r}")
    _check_level(level, n_resamples)
    labels = np.asarray(labels)
    patient_index, n_patients = _patient_index(patient_ids, labels.size)

    def difference(counts: np.ndarray) -> np.ndarray:
        return (weighted_metrics(labels, probabilities_a, counts, thresholds[0], clusters=patient_index)[metric]
                - weighted_metrics(labels, probabilities_b, counts, thresholds[1], clusters=patient_index)[metric])

    estimate = float(difference(np.ones((1, n_patients)))[0])
    resamples = _resampled_patient_counts(labels.size, n_patients, n_resamples, seed)
    differences = np.concatenate([difference(counts) for counts in resamples])
    low, high, n_valid = _percentiles(differences, level)
    return PairedDifference(metric, estimate, low, high, two_sided_p_value(differences), level, n_valid, n_patients)


def two_sided_p_value(differences: np.ndarray) -> float:
    """2 * min(P*(d <= 0), P*(d >= 0)) over the finite resampled differences, with one added to counts and total
    so that a p-value is never reported as exactly 0 from a finite number of resamples."""
    finite = differences[np.isfinite(differences)]
    if not finite.size:
        return float("nan")
    return float(min(1.0, 2 * (min(np.sum(finite <= 0), np.sum(finite >= 0)) + 1) / (finite.size + 1)))
