"""Patient-level bootstrap: the weighted scoring it relies on, interval behaviour, and that it resamples patients."""
import numpy as np
import pytest
from sklearn import metrics as skm

from asemble_jax.evaluation import bootstrap
from asemble_jax.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap
from asemble_jax.evaluation.metrics import METRIC_NAMES, weighted_metrics


def _scored_patients(rng, n_patients, slices_per_patient=5, separation=0.3):
    patient_ids = np.repeat(np.arange(n_patients), slices_per_patient)
    labels = rng.integers(0, 2, patient_ids.size)
    probabilities = np.clip(labels * separation + rng.uniform(0, 1 - separation, patient_ids.size), 0, 1)
    return labels, probabilities, patient_ids


def _width(interval):
    return interval.high - interval.low


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_scoring_matches_sklearn_with_sample_weights(seed):
    rng = np.random.default_rng(seed)
    labels, probabilities, patient_ids = _scored_patients(rng, 30)
    probabilities = np.round(probabilities, 1)  # ties, which AUC must count as one half
    patient_weights = rng.integers(0, 4, size=(3, 30))
    scores = weighted_metrics(labels, probabilities, patient_weights, 0.5, clusters=patient_ids)
    predictions = (probabilities >= 0.5).astype(int)
    for row, weights in enumerate(patient_weights):
        w = weights[patient_ids]
        assert scores["accuracy"][row] == pytest.approx(skm.accuracy_score(labels, predictions, sample_weight=w))
        assert scores["precision"][row] == pytest.approx(skm.precision_score(labels, predictions, sample_weight=w))
        assert scores["recall"][row] == pytest.approx(skm.recall_score(labels, predictions, sample_weight=w))
        assert scores["specificity"][row] == pytest.approx(
            skm.recall_score(1 - labels, 1 - predictions, sample_weight=w))
        assert scores["f1"][row] == pytest.approx(skm.f1_score(labels, predictions, sample_weight=w))
        assert scores["auc"][row] == pytest.approx(skm.roc_auc_score(labels, probabilities, sample_weight=w))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_point_estimate(seed):
    labels, probabilities, patient_ids = _scored_patients(np.random.default_rng(seed), 40)
    intervals = bootstrap_metrics(labels, probabilities, patient_ids, n_resamples=500, seed=seed)
    assert set(intervals) == set(METRIC_NAMES)
    for name, interval in intervals.items():
        assert interval.low <= interval.estimate <= interval.high, name
        assert interval.low < interval.high, name
        assert interval.n_patients == 40


def test_intervals_narrow_as_patients_grow():
    rng = np.random.default_rng(3)
    few = bootstrap_metrics(*_scored_patients(rng, 20), n_resamples=500)
    many = bootstrap_metrics(*_scored_patients(rng, 320), n_resamples=500)
    for name in ("accuracy", "auc", "f1"):
        # 16x the patients: the width should shrink about 4x; 2x is a safe margin against sampling noise.
        assert _width(many[name]) < _width(few[name]) / 2, name


def test_replicated_slices_do_not_narrow_the_interval():
    rng = np.random.default_rng(4)
    labels, probabilities, patient_ids = _scored_patients(rng, 30, slices_per_patient=1)
    one_slice = bootstrap_metrics(labels, probabilities, patient_ids, n_resamples=400, seed=7)
    ten_slices = bootstrap_metrics(np.repeat(labels, 10), np.repeat(probabilities, 10), np.repeat(patient_ids, 10),
                                   n_resamples=400, seed=7)
    as_if_independent = bootstrap_metrics(np.repeat(labels, 10), np.repeat(probabilities, 10), np.arange(300),
                                          n_resamples=400, seed=7)
    for name in ("accuracy", "recall", "auc"):
        assert ten_slices[name].low == pytest.approx(one_slice[name].low)
        assert ten_slices[name].high == pytest.approx(one_slice[name].high)
        assert _width(as_if_independent[name]) < 0.6 * _width(ten_slices[name]), name


def test_a_patient_with_a_hundred_identical_slices_counts_once():
    # 20 one-slice patients, half classified correctly, plus one patient whose 100 identical slices are all right.
    labels = np.r_[np.ones(100, int), np.tile([0, 1], 10)]
    probabilities = np.r_[np.full(100, 0.9), np.tile([0.9, 0.1], 10)]
    patient_ids = np.r_[np.zeros(100, int), np.arange(1, 21)]
    by_patient = bootstrap_metrics(labels, probabilities, patient_ids, n_resamples=1000)["accuracy"]
    by_slice = bootstrap_metrics(labels, probabilities, np.arange(120), n_resamples=1000)["accuracy"]
    # Without the big patient in a resample (probability (20/21)^21 ~ 0.36) accuracy is about 0.5; with it, ~0.9.
    assert by_patient.low < 0.65 and by_patient.high > 0.9
    assert _width(by_patient) > 3 * _width(by_slice)


def test_width_matches_the_analytic_patient_level_spread():
    # Every slice of a patient is right or every slice is wrong, 10 slices each: accuracy over resampled patients
    # is a mean of 100 Bernoulli(0.5) draws, sd sqrt(0.25 / 100) = 0.05, so a 95% width near 2 * 1.96 * 0.05.
    correct = np.repeat(np.arange(100) % 2, 10)
    labels = np.ones(1000, int)
    probabilities = np.where(correct == 1, 0.9, 0.1)
    interval = bootstrap_metrics(labels, probabilities, np.repeat(np.arange(100), 10), n_resamples=2000)["accuracy"]
    assert _width(interval) == pytest.approx(2 * 1.96 * 0.05, rel=0.15)


def test_resamples_with_one_class_are_left_out_of_auc():
    # One positive and one negative patient: a resample holds both classes with probability 1/2.
    labels, probabilities, patient_ids = np.array([1, 1, 0, 0]), np.array([0.8, 0.7, 0.4, 0.2]), np.array([0, 0, 1, 1])
    auc = bootstrap_metrics(labels, probabilities, patient_ids, n_resamples=2000)["auc"]
    assert 900 < auc.n_valid < 1100
    assert auc.low == auc.high == 1.0


def test_same_seed_same_interval_other_seed_differs():
    data = _scored_patients(np.random.default_rng(5), 25)
    first = bootstrap_metrics(*data, n_resamples=300, seed=11)["auc"]
    assert bootstrap_metrics(*data, n_resamples=300, seed=11)["auc"] == first
    assert bootstrap_metrics(*data, n_resamples=300, seed=12)["auc"] != first


def test_paired_bootstrap_of_a_model_worse_by_a_fixed_amount():
    # Ten slices per patient; model a gets all ten right, model b eight: accuracy differs by 0.2 in every resample.
    n_patients = 30
    labels = np.ones(10 * n_patients, int)
    probabilities_a = np.full(labels.size, 0.9)
    probabilities_b = np.tile(np.r_[np.full(8, 0.9), 0.1, 0.1], n_patients)
    patient_ids = np.repeat(np.arange(n_patients), 10)
    result = paired_bootstrap(labels, probabilities_a, probabilities_b, patient_ids, metric="accuracy",
                              n_resamples=1000)
    assert result.difference == pytest.approx(0.2)
    assert result.low == pytest.approx(0.2) and result.high == pytest.approx(0.2)
    assert result.p_value < 0.01


def test_paired_bootstrap_of_identical_models_is_zero():
    labels, probabilities, patient_ids = _scored_patients(np.random.default_rng(6), 30)
    for metric in ("auc", "f1"):
        result = paired_bootstrap(labels, probabilities, probabilities.copy(), patient_ids, metric=metric,
                                  n_resamples=500)
        assert result.difference == 0.0
        assert result.low <= 0.0 <= result.high
        assert result.p_value == 1.0


def test_paired_bootstrap_detects_a_better_auc():
    rng = np.random.default_rng(7)
    labels, good, patient_ids = _scored_patients(rng, 60, separation=0.5)
    uninformative = rng.uniform(size=labels.size)
    result = paired_bootstrap(labels, good, uninformative, patient_ids, metric="auc", n_resamples=1000)
    expected = skm.roc_auc_score(labels, good) - skm.roc_auc_score(labels, uninformative)
    assert result.difference == pytest.approx(expected)
    assert result.low > 0 and result.p_value < 0.01


def test_patient_ids_must_match_the_examples():
    with pytest.raises(ValueError, match="one id per example"):
        bootstrap_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]), np.array([0, 1]))


# ---- the one patient resampler --------------------------------------------------------------------------------

@pytest.mark.parametrize("n_patients", [1, 2, 7, 61])
@pytest.mark.parametrize("chunk_rows", [1, 3, 64, 999, 1000, 5000, None])
def test_the_resampler_gives_the_same_counts_in_any_chunking(n_patients, chunk_rows):
    # The canonical draw is one multinomial call: the committed ablation tables were made from exactly it.
    expected = np.random.default_rng(3).multinomial(n_patients, np.full(n_patients, 1 / n_patients), size=1000)
    chunks = list(bootstrap.patient_resample_counts(n_patients, 1000, 3, chunk_rows=chunk_rows))
    if chunk_rows is not None:
        assert [len(c) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= chunk_rows
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    assert (expected.sum(axis=1) == n_patients).all()


def test_the_resampler_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="at least one patient"):
        next(bootstrap.patient_resample_counts(0, 10, 0))
    with pytest.raises(ValueError, match="chunk_rows"):
        next(bootstrap.patient_resample_counts(5, 10, 0, chunk_rows=0))


def test_every_bootstrap_draws_the_same_patients_for_the_same_seed():
    # One example per patient, so that each bootstrap's resampled statistic is a function of the same counts:
    # bootstrap_metrics' accuracy, patient_bootstrap_mean of the correctness and the accuracy computed by hand
    # from one multinomial call must give one interval.
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 37)
    probabilities = rng.uniform(size=37)
    correct = ((probabilities >= 0.5) == labels).astype(float)
    counts = np.random.default_rng(4).multinomial(37, np.full(37, 1 / 37), size=700)
    by_hand = np.percentile(counts @ correct / 37, [2.5, 97.5])
    accuracy = bootstrap_metrics(labels, probabilities, np.arange(37), n_resamples=700, seed=4)["accuracy"]
    mean = bootstrap.patient_bootstrap_mean(correct, np.arange(37), n_resamples=700, seed=4)
    assert (accuracy.low, accuracy.high) == pytest.approx(tuple(by_hand), abs=1e-12)
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx(tuple(by_hand), abs=1e-12)


def test_a_small_chunk_budget_does_not_change_an_interval(monkeypatch):
    data = _scored_patients(np.random.default_rng(9), 25)
    whole = bootstrap_metrics(*data, n_resamples=300, seed=2)
    paired = paired_bootstrap(data[0], data[1], data[1][::-1].copy(), data[2], n_resamples=300, seed=2)
    monkeypatch.setattr(bootstrap, "_CELLS_PER_CHUNK", 7 * data[0].size)  # 7 resamples a chunk
    chunked = bootstrap_metrics(*data, n_resamples=300, seed=2)
    for name in METRIC_NAMES:
        assert (chunked[name].low, chunked[name].high) == pytest.approx((whole[name].low, whole[name].high),
                                                                        abs=1e-12)
    again = paired_bootstrap(data[0], data[1], data[1][::-1].copy(), data[2], n_resamples=300, seed=2)
    assert (again.low, again.high, again.p_value) == pytest.approx((paired.low, paired.high, paired.p_value),
                                                                   abs=1e-12)


@pytest.mark.parametrize("level, n_resamples", [(0.0, 100), (1.0, 100), (95, 100), (0.95, 0)])
def test_patient_bootstrap_mean_refuses_a_bad_level(level, n_resamples):
    with pytest.raises(ValueError, match="level|n_resamples"):
        bootstrap.patient_bootstrap_mean(np.array([0.2, 0.4, 0.9]), np.array(["a", "b", "c"]), level=level,
                                         n_resamples=n_resamples)
