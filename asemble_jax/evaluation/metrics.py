"""Binary classification metrics from labels and positive-class probabilities."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC AUC and the confusion matrix.

    A ratio with an empty denominator is NaN rather than 0, and AUC is NaN when only one class is present:
    a number that cannot be estimated is not reported as if it had been.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = (probabilities >= threshold).astype(int)
    tp = int(np.sum((predictions == 1) & (labels == 1)))
    tn = int(np.sum((predictions == 0) & (labels == 0)))
    fp = int(np.sum((predictions == 1) & (labels == 0)))
    fn = int(np.sum((predictions == 0) & (labels == 1)))

    def ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "n": int(labels.size),
        "accuracy": ratio(tp + tn, labels.size),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "auc": float(roc_auc_score(labels, probabilities)) if len(np.unique(labels)) == 2 else float("nan"),
        "threshold": float(threshold),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
