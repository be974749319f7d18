"""Binary classification metrics from labels and positive-class probabilities.

The core, `weighted_metrics`, scores many weightings of the same examples at once (one row of weights per
weighting); a weight is how many times an example counts. Bootstrap resamples are such weightings, so the
metrics of thousands of resamples cost a few matrix products and one sort instead of a Python loop.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def weighted_metrics(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray,
                     threshold: float = 0.5, clusters: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric of METRIC_NAMES, plus tp/tn/fp/fn, for each row of `weights`.

    weights: (R, k), one row per weighting. clusters: (n,) ints in [0, k), the column of `weights` that each
    example takes its weight from (a bootstrap draws patients, so k = patients); by default every example is
    its own cluster (k = n).
    A prediction is positive when probability >= threshold. AUC is the Mann-Whitney probability that a positive
    outranks a negative, ties counting one half (the same number as sklearn's roc_auc_score). A ratio with an
    empty denominator, and AUC where a row weights only one class, is NaN: a number that cannot be estimated is
    not reported as if it had been.
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    clusters = np.arange(labels.size) if clusters is None else np.asarray(clusters)
    if not labels.ndim == 1 or not labels.shape == probabilities.shape == clusters.shape:
        raise ValueError(f"labels {labels.shape}, probabilities {probabilities.shape} and clusters "
                         f"{clusters.shape} must all be (n,)")
    if weights.ndim != 2 or clusters.size and not 0 <= clusters.min() <= clusters.max() < weights.shape[1]:
        raise ValueError(f"weights {weights.shape} must be (R, k) with every cluster index in [0, k)")
    k = weights.shape[1]
    predicted = probabilities >= threshold

    def per_row(selected: np.ndarray) -> np.ndarray:
        return weights @ np.bincount(clusters, weights=selected, minlength=k)

    tp, tn = per_row(predicted & labels), per_row(~predicted & ~labels)
    fp, fn = per_row(predicted & ~labels), per_row(~predicted & labels)

    # Weight of positives and of negatives at each distinct score, per row: a sparse (k, distinct scores)
    # incidence matrix keeps this O(R * n) whatever the number of clusters.
    distinct_scores, score_rank = np.unique(probabilities, return_inverse=True)
    shape = (k, distinct_scores.size)
    positives = weights @ sparse.csr_array((labels.astype(np.float64), (clusters, score_rank)), shape=shape)
    negatives = weights @ sparse.csr_array(((~labels).astype(np.float64), (clusters, score_rank)), shape=shape)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    wins = np.sum(positives * (negatives_below + 0.5 * negatives), axis=1)

    return {
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": _ratio(wins, positives.sum(axis=1) * negatives.sum(axis=1)),
    }


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC AUC and the confusion matrix
    [[tn, fp], [fn, tp]].

    NaN where a metric is undefined (see weighted_metrics).
    """
    labels = np.asarray(labels)
    scores = weighted_metrics(labels, probabilities, np.ones((1, labels.size)), threshold)
    tn, fp, fn, tp = (int(round(scores[k][0])) for k in ("tn", "fp", "fn", "tp"))
    return {
        "n": int(labels.size),
        **{name: float(scores[name][0]) for name in METRIC_NAMES},
        "threshold": float(threshold),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
