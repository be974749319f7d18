"""The power formulas: closed-form answers on synthetic variances, and a seeded simulation of the z-test."""
import math

import numpy as np
import pytest

from asemble_jax.evaluation import power

Z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.8


def test_closed_form():
    assert power.z_sum() == pytest.approx(Z)
    # seed variance 0.0009 over 3 seeds + patient variance 0.0001: SE = sqrt(0.0003 + 0.0001) = 0.02
    assert power.minimum_detectable(0.0009, 0.0001, 3) == pytest.approx(0.02 * Z)
    # delta 0.01: (0.01 / Z)^2 = 1.274e-5; with patient variance 2e-6 and seed variance 1e-4:
    room = (0.01 / Z) ** 2 - 2e-6
    assert power.seeds_needed(0.01, 1e-4, 2e-6) == math.ceil(1e-4 / room)
    assert power.minimum_detectable(1e-4, 2e-6, int(power.seeds_needed(0.01, 1e-4, 2e-6))) <= 0.01
    assert power.minimum_detectable(1e-4, 2e-6, int(power.seeds_needed(0.01, 1e-4, 2e-6)) - 1) > 0.01
    # the test set alone too noisy: no number of seeds helps
    assert power.seeds_needed(0.01, 1e-4, (0.01 / Z) ** 2 * 1.01) == math.inf
    assert power.seeds_needed(0.01, 0.0, 0.0) == 1


def test_minimum_detectable_difference_is_detected_with_the_stated_power_in_simulation():
    # The statistic: the mean of k seed effects N(0, s2) plus one shared test-set error N(0, p2); a z-test at
    # alpha 0.05 rejects at a true difference equal to the minimum detectable one in 80% of trials. 40,000
    # seeded trials: the binomial SD of the rate is 0.002, so +-0.01 is 5 SDs.
    s2, p2, k = 4e-4, 1e-4, 3
    delta = power.minimum_detectable(s2, p2, k)
    rng = np.random.default_rng(0)
    trials = 40_000
    estimates = delta + rng.normal(0, math.sqrt(s2), (trials, k)).mean(axis=1) + rng.normal(0, math.sqrt(p2), trials)
    rejected = np.abs(estimates / power.standard_error(s2, p2, k)) > 1.959963984540054
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    assert power.rejection_probability(delta, s2, p2, k) == pytest.approx(0.8, abs=1e-4)


def test_grid_power_from_per_seed_values():
    result = power.grid_power([0.01, 0.03, 0.02], patient_variance=1e-4)
    assert result.seed_variance == pytest.approx(1e-4)
    assert result.minimum_detectable == pytest.approx(Z * math.sqrt(1e-4 / 3 + 1e-4))
    assert result.seeds_needed == math.inf  # patient variance 1e-4 > (0.01 / Z)^2
    assert math.isnan(power.grid_power([0.02], 1e-4).minimum_detectable)  # one seed: no seed variance
