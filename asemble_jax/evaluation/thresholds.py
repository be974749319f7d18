"""Decision thresholds chosen on validation data, and patient-level aggregation of slice probabilities.

A threshold is chosen once, on the validation split, and applied unchanged to test: choosing it on test would
report an optimistic score that no deployment could reproduce.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class YoudenThreshold:
    threshold: float  # predict positive when probability >= threshold
    youden_j: float  # sensitivity + specificity - 1 at that threshold
    sensitivity: float
    specificity: float


@dataclasses.dataclass(frozen=True)
class PatientAggregate:
    patient_ids: np.ndarray  # sorted unique ids
    labels: np.ndarray
    probabilities: np.ndarray  # mean slice probability per patient
    n_slices: np.ndarray


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> YoudenThreshold:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 over the ROC's operating points.

    Candidates are the observed probabilities (every distinct operating point of `probability >= t`). Among
    thresholds with equal J the highest is taken, i.e. the one calling fewest examples positive.
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != probabilities.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probabilities.shape} must be the same (n,)")
    n_positive, n_negative = int(labels.sum()), int((~labels).sum())
    if n_positive == 0 or n_negative == 0:
        raise ValueError(f"Youden's J needs both classes, got {n_positive} positives and {n_negative} negatives")
    candidates, index = np.unique(probabilities, return_inverse=True)
    # Examples at or above each candidate: suffix sums of the per-candidate counts.
    positives_at_or_above = np.cumsum(np.bincount(index, weights=labels, minlength=candidates.size)[::-1])[::-1]
    negatives_at_or_above = np.cumsum(np.bincount(index, weights=~labels, minlength=candidates.size)[::-1])[::-1]
    sensitivity = positives_at_or_above / n_positive
    specificity = 1.0 - negatives_at_or_above / n_negative
    youden_j = sensitivity + specificity - 1.0
    best = candidates.size - 1 - int(np.argmax(youden_j[::-1]))
    return YoudenThreshold(float(candidates[best]), float(youden_j[best]), float(sensitivity[best]),
                           float(specificity[best]))


def aggregate_by_patient(patient_ids: Sequence, labels: np.ndarray, probabilities: np.ndarray) -> PatientAggregate:
    """One example per patient: the mean of their slices' probabilities, with the label all their slices share.

    Raises ValueError when a patient's slices carry different labels: a slice-level target (e.g. "this slice shows
    inflammation") has no patient-level mean, and silently picking one label would invent a diagnosis.
    """
    patient_ids, labels = np.asarray(patient_ids), np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not labels.ndim == 1 or not patient_ids.shape == labels.shape == probabilities.shape:
        raise ValueError(f"patient_ids {patient_ids.shape}, labels {labels.shape} and probabilities "
                         f"{probabilities.shape} must all be (n,)")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {np.unique(labels).tolist()}")
    unique, index = np.unique(patient_ids, return_inverse=True)
    n_slices = np.bincount(index, minlength=unique.size)
    positive_slices = np.bincount(index, weights=labels, minlength=unique.size)
    mixed = (positive_slices > 0) & (positive_slices < n_slices)
    if mixed.any():
        raise ValueError(f"patients with slices of both labels cannot be aggregated: {unique[mixed][:5].tolist()}"
                         f"{' ...' if mixed.sum() > 5 else ''}")
    mean_probability = np.bincount(index, weights=probabilities, minlength=unique.size) / n_slices
    return PatientAggregate(unique, (positive_slices > 0).astype(int), mean_probability, n_slices)
