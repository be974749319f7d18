"""McNemar against statsmodels; DeLong against a plain O(n^2) computation of the same statistic and sklearn's AUC."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from asemble_jax.evaluation.comparisons import delong_test, mcnemar, mcnemar_table


def test_mcnemar_table_counts_correctness_pairs():
    labels = np.array([1, 1, 0, 0, 1, 0, 1])
    predictions_a = np.array([1, 1, 0, 1, 0, 0, 0])  # right, right, right, wrong, wrong, right, wrong
    predictions_b = np.array([1, 0, 1, 1, 1, 0, 0])  # right, wrong, wrong, wrong, right, right, wrong
    assert mcnemar_table(labels, predictions_a, predictions_b).tolist() == [[2, 2], [1, 2]]


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_exact_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    table = np.array([[rng.integers(0, 200), rng.integers(0, 13)], [rng.integers(0, 12), rng.integers(0, 200)]])
    result = mcnemar(table)
    reference = statsmodels_mcnemar(table, exact=True)
    assert result.method == "exact binomial"
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert (result.only_a_correct, result.only_b_correct) == (table[0, 1], table[1, 0])


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_chi_square_matches_statsmodels(seed):
    rng = np.random.default_rng(100 + seed)
    table = np.array([[rng.integers(0, 200), rng.integers(13, 80)], [rng.integers(12, 80), rng.integers(0, 200)]])
    result = mcnemar(table)
    reference = statsmodels_mcnemar(table, exact=False, correction=True)
    assert result.method == "chi-square with continuity correction"
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)


def test_mcnemar_switches_to_chi_square_at_the_stated_count():
    assert mcnemar(np.array([[5, 12], [12, 5]])).method == "exact binomial"  # 24 discordant pairs
    assert mcnemar(np.array([[5, 13], [12, 5]])).method == "chi-square with continuity correction"
    assert mcnemar(np.array([[5, 13], [12, 5]]), exact_below=100).method == "exact binomial"


def test_mcnemar_without_discordant_pairs_finds_no_difference():
    assert mcnemar(np.array([[40, 0], [0, 10]])).p_value == 1.0


def test_mcnemar_rejects_a_table_that_is_not_counts():
    with pytest.raises(ValueError, match="2x2 table"):
        mcnemar(np.array([[1, -2], [3, 4]]))


def _delong_brute_force(labels, scores_a, scores_b):
    """DeLong et al. 1988 written out: the Mann-Whitney kernel over every positive-negative pair."""
    labels = labels.astype(bool)
    components_10, components_01, aucs = [], [], []
    for scores in (scores_a, scores_b):
        x, y = scores[labels], scores[~labels]
        kernel = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(kernel.mean())
        components_10.append(kernel.mean(axis=1))
        components_01.append(kernel.mean(axis=0))
    m, n = len(components_10[0]), len(components_01[0])
    covariance = np.cov(np.array(components_10)) / m + np.cov(np.array(components_01)) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    z = (aucs[0] - aucs[1]) / np.sqrt(variance)
    return aucs, z, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_the_brute_force_statistic_and_sklearn_auc(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores_a = np.round(labels * 0.8 + rng.normal(0, 1, 150), 1)  # rounded: ties within and across classes
    scores_b = np.round(scores_a * 0.5 + labels * 0.2 + rng.normal(0, 1, 150), 1)
    result = delong_test(labels, scores_a, scores_b)
    (auc_a, auc_b), z, p_value = _delong_brute_force(labels, scores_a, scores_b)
    assert result.auc_a == pytest.approx(roc_auc_score(labels, scores_a))
    assert result.auc_b == pytest.approx(roc_auc_score(labels, scores_b))
    assert result.auc_a == pytest.approx(auc_a) and result.auc_b == pytest.approx(auc_b)
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(p_value)
    assert result.low < result.difference < result.high


def test_delong_of_identical_scorers_finds_no_difference():
    rng = np.random.default_rng(9)
    labels, scores = rng.integers(0, 2, 60), rng.uniform(size=60)
    result = delong_test(labels, scores, scores.copy())
    assert result.difference == 0.0 and result.p_value == 1.0


def test_delong_detects_a_clearly_better_scorer():
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 2, 400)
    result = delong_test(labels, labels + rng.normal(0, 0.5, 400), rng.uniform(size=400))
    assert result.difference > 0.3 and result.p_value < 1e-6 and result.low > 0


def test_delong_needs_both_classes():
    with pytest.raises(ValueError, match="2 positives and 2 negatives"):
        delong_test(np.array([1, 1, 1, 0]), np.arange(4.0), np.arange(4.0))
