"""Bootstrap confidence intervals resampled by patient, and the paired bootstrap of a difference between two models.

Slices of one patient are not independent: resampling slices would pretend there are as many independent
observations as slices and give intervals that are too narrow. Here each resample draws patients with
replacement and takes all the slices of every drawn patient. A resample is thus a weight per patient (how many
times they were drawn), and all resamples are scored at once by metrics.weighted_metrics with patients as its
clusters.

`patient_resample_counts` is the one source of those weights for every bootstrap of the project (these
intervals, localization_report's means via patient_bootstrap_mean, and grids.tables' pooled paired
differences), so that the same seed draws the same patients in every table.

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


def patient_resample_counts(n_patients: int, n_resamples: int, seed: int, *,
                            chunk_rows: int | None = None) -> Iterator[np.ndarray]:
    """The project's one patient resampler: yields (rows, n_patients) int counts, chunk_rows rows at a time
    (the last chunk shorter), n_resamples rows in all: per resample, how many times each patient was drawn in
    n_patients draws with replacement.

    Each row is a multinomial draw with equal probabilities, and numpy's Generator draws the rows of
    `multinomial(..., size=rows)` one after the other from the same stream, so the chunks concatenated are exactly
    `np.random.default_rng(seed).multinomial(n_patients, [1 / n_patients] * n_patients, size=n_resamples)`
    whatever chunk_rows is: chunking bounds memory and never changes a resample. chunk_rows=None: as many rows as
    keep a chunk within _CELLS_PER_CHUNK cells.
    """
    if n_patients < 1:
        raise ValueError(f"need at least one patient to resample, got {n_patients}")
    if chunk_rows is None:
        chunk_rows = max(1, _CELLS_PER_CHUNK // n_patients)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    rng = np.random.default_rng(seed)
    uniform = np.full(n_patients, 1 / n_patients)
    for start in range(0, n_resamples, chunk_rows):
        yield rng.multinomial(n_patients, uniform, size=min(chunk_rows, n_resamples - start))


def _chunk_rows(n_examples: int, n_patients: int) -> int:
    """Rows per chunk for weighted_metrics, whose largest matrices are (rows, distinct scores <= n_examples)."""
    return max(1, _CELLS_PER_CHUNK // max(n_examples, n_patients))


def check_level(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float, int]:
    """(low, high, n_valid): the percentile interval at `level` of the finite resampled values, and how many
    there were; NaNs and 0 when none is finite."""
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
    check_level(level, n_resamples)
    labels = np.asarray(labels)
    patient_index, n_patients = _patient_index(patient_ids, labels.size)
    estimate = weighted_metrics(labels, probabilities, np.ones((1, labels.size)), threshold)
    resampled = {name: [] for name in METRIC_NAMES}
    for counts in patient_resample_counts(n_patients, n_resamples, seed,
                                          chunk_rows=_chunk_rows(labels.size, n_patients)):
        scores = weighted_metrics(labels, probabilities, counts, threshold, clusters=patient_index)
        for name in METRIC_NAMES:
            resampled[name].append(scores[name])
    intervals = {}
    for name in METRIC_NAMES:
        low, high, n_valid = percentile_interval(np.concatenate(resampled[name]), level)
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
    check_level(level, n_resamples)
    labels = np.asarray(labels)
    patient_index, n_patients = _patient_index(patient_ids, labels.size)

    def difference(counts: np.ndarray) -> np.ndarray:
        return (weighted_metrics(labels, probabilities_a, counts, thresholds[0], clusters=patient_index)[metric]
                - weighted_metrics(labels, probabilities_b, counts, thresholds[1], clusters=patient_index)[metric])

    estimate = float(difference(np.ones((1, n_patients)))[0])
    resamples = patient_resample_counts(n_patients, n_resamples, seed, chunk_rows=_chunk_rows(labels.size, n_patients))
    differences = np.concatenate([difference(counts) for counts in resamples])
    low, high, n_valid = percentile_interval(differences, level)
    return PairedDifference(metric, estimate, low, high, two_sided_p_value(differences), level, n_valid, n_patients)


def patient_bootstrap_mean(values: np.ndarray, patient_ids: Sequence, *, n_resamples: int = 2000,
                           level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of the finite `values` with its percentile interval, resampling patients with replacement (each
    drawn patient brings all of its examples, so a resample's mean weights a patient by its examples)."""
    check_level(level, n_resamples)
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    patients, index = np.unique(np.asarray(patient_ids)[finite], return_inverse=True)
    if patients.size == 0:
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_patients": 0}
    sums = np.bincount(index, weights=values[finite], minlength=patients.size)
    counts = np.bincount(index, minlength=patients.size).astype(np.float64)
    means = np.concatenate([(times @ sums) / (times @ counts)
                            for times in patient_resample_counts(patients.size, n_resamples, seed)])
    low, high, _ = percentile_interval(means, level)
    return {"estimate": float(sums.sum() / counts.sum()), "ci_low": low, "ci_high": high,
            "n": int(counts.sum()), "n_patients": int(patients.size)}


def two_sided_p_value(differences: np.ndarray) -> float:
    """2 * min(P*(d <= 0), P*(d >= 0)) over the finite resampled differences, with one added to counts and total
    so that a p-value is never reported as exactly 0 from a finite number of resamples."""
    finite = differences[np.isfinite(differences)]
    if not finite.size:
        return float("nan")
    return float(min(1.0, 2 * (min(np.sum(finite <= 0), np.sum(finite >= 0)) + 1) / (finite.size + 1)))
