"""Youden's J on hand-made ROCs and against sklearn's ROC; patient-level aggregation."""
import numpy as np
import pytest
from sklearn.metrics import roc_curve

from asemble_jax.evaluation.thresholds import aggregate_by_patient, youden_threshold


def test_youden_on_a_hand_made_roc():
    # Positives 0.3, 0.5, 0.6, 0.7, 0.8; negatives 0.1, 0.2, 0.4. At t = 0.5: 4/5 positives and all negatives
    # correct, J = 0.8; the runner-up, t = 0.3, has J = 1 + 2/3 - 1.
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    result = youden_threshold(labels, scores)
    assert result.threshold == 0.5
    assert result.youden_j == pytest.approx(0.8)
    assert (result.sensitivity, result.specificity) == (pytest.approx(0.8), pytest.approx(1.0))


def test_youden_tie_takes_the_highest_threshold():
    # J = 0.5 at both t = 0.5 (sensitivity 3/4, specificity 3/4) and t = 0.3 (1, 2/4).
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    result = youden_threshold(labels, scores)
    assert result.threshold == 0.5 and result.youden_j == pytest.approx(0.5)


def test_youden_with_tied_scores_across_classes():
    # Both 0.6s are called positive together at t = 0.6: sensitivity 2/2, specificity 2/3.
    labels, scores = np.array([1, 0, 1, 0, 0]), np.array([0.6, 0.6, 0.9, 0.2, 0.1])
    result = youden_threshold(labels, scores)
    assert result.threshold == 0.6 and result.youden_j == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_youden_reaches_the_best_point_of_sklearns_roc(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(labels * 0.3 + rng.uniform(size=300), 2)
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    result = youden_threshold(labels, scores)
    assert result.youden_j == pytest.approx(np.max(true_positive_rate - false_positive_rate))
    predicted = scores >= result.threshold
    assert result.sensitivity == pytest.approx(predicted[labels == 1].mean())
    assert result.specificity == pytest.approx(1 - predicted[labels == 0].mean())


def test_youden_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(np.ones(4, int), np.linspace(0, 1, 4))


def test_patient_aggregate_is_the_mean_slice_probability():
    aggregate = aggregate_by_patient(np.array(["p2", "p1", "p2", "p1", "p3"]), np.array([1, 0, 1, 0, 1]),
                                     np.array([0.9, 0.2, 0.5, 0.4, 0.6]))
    assert aggregate.patient_ids.tolist() == ["p1", "p2", "p3"]
    assert aggregate.labels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(aggregate.probabilities, [0.3, 0.7, 0.6])
    assert aggregate.n_slices.tolist() == [2, 2, 1]


def test_patient_with_slices_of_both_labels_is_refused():
    with pytest.raises(ValueError, match="p1"):
        aggregate_by_patient(np.array(["p1", "p1", "p2"]), np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]))
