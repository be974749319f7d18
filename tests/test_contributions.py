"""Exact Shapley contributions and Shapley interaction indices recover known games, and the paired patient
bootstrap of them resamples patients once for the whole value table."""
import itertools
import math

import numpy as np
import pytest

from asemble_jax.evaluation import contributions
from asemble_jax.evaluation.bootstrap import patient_resample_counts


def game(n, main, pairs=None, constant=0.0):
    """v(S) = constant + sum of main effects in S + sum of pairwise interactions of pairs both in S."""
    pairs = pairs or {}
    values = np.full(2 ** n, constant, np.float64)
    for mask in range(2 ** n):
        members = [i for i in range(n) if mask >> i & 1]
        values[mask] += sum(main[i] for i in members)
        values[mask] += sum(b for (i, j), b in pairs.items() if i in members and j in members)
    return values


def brute_force_shapley(values, n):
    """Average marginal contribution over all n! orders: the definition, independent of the weight matrix."""
    phi = np.zeros(n)
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        mask = 0
        for player in order:
            phi[player] += values[mask | 1 << player] - values[mask]
            mask |= 1 << player
    return phi / len(orders)


def test_additive_game_gives_each_player_its_own_effect():
    main = [0.3, -0.05, 0.02, 0.0]
    phi = contributions.shapley_values(game(4, main, constant=0.5))
    np.testing.assert_allclose(phi, main, atol=1e-12)
    np.testing.assert_allclose(contributions.interaction_indices(game(4, main)), np.zeros((4, 4)), atol=1e-12)


def test_pairwise_interaction_is_recovered_and_shared_equally():
    main, pairs = [0.3, 0.1, 0.05, 0.0], {(0, 1): -0.08, (1, 3): 0.04}
    values = game(4, main, pairs, constant=0.5)
    phi = contributions.shapley_values(values)
    expected = np.array(main, float)
    for (i, j), b in pairs.items():
        expected[i] += b / 2
        expected[j] += b / 2
    np.testing.assert_allclose(phi, expected, atol=1e-12)
    interactions = contributions.interaction_indices(values)
    truth = np.zeros((4, 4))
    for (i, j), b in pairs.items():
        truth[i, j] = truth[j, i] = b
    np.testing.assert_allclose(interactions, truth, atol=1e-12)


def test_efficiency_symmetry_and_dummy_on_a_random_game():
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, 16)
    values[0] = 0.5
    phi = contributions.shapley_values(values)
    np.testing.assert_allclose(phi.sum(), values[15] - values[0], atol=1e-12)
    np.testing.assert_allclose(phi, brute_force_shapley(values, 4), atol=1e-12)
    # Players 1 and 2 symmetric: v(S + 1) = v(S + 2) for every S holding neither; player 3 a dummy.
    sym = np.empty(16)
    for mask in range(16):
        core = mask & 0b0111
        swapped = (core & 1) | ((core >> 1 & 1) << 2) | ((core >> 2 & 1) << 1)
        sym[mask] = values[min(core, swapped)] + (values[core] + values[swapped])
    phi = contributions.shapley_values(sym)
    assert phi[1] == pytest.approx(phi[2], abs=1e-12)
    assert phi[3] == pytest.approx(0.0, abs=1e-12)
    assert phi[1] != pytest.approx(phi[0], abs=1e-6)  # the game is not trivially symmetric in every player


def test_interaction_index_against_its_definition_on_a_three_way_game():
    # A three-way term: the Shapley interaction index gives each of its pairs a third of it (Grabisch & Roubens:
    # I_ij = sum over T holding i and j of the Harsanyi dividend of T / (|T| - 1)).
    values = game(4, [0, 0, 0, 0])
    for mask in range(16):
        if mask & 0b0111 == 0b0111:
            values[mask] += 0.09
    interactions = contributions.interaction_indices(values)
    for i, j in itertools.combinations(range(3), 2):
        assert interactions[i, j] == pytest.approx(0.09 / 2, abs=1e-12)
    assert interactions[0, 3] == pytest.approx(0.0, abs=1e-12)


def test_weights_of_a_value_table_with_resample_axis():
    values = np.stack([game(3, [0.1, 0.2, 0.3]), game(3, [0.0, 0.5, -0.1])], axis=1)
    phi = contributions.shapley_values(values)
    np.testing.assert_allclose(phi, [[0.1, 0.0], [0.2, 0.5], [0.3, -0.1]], atol=1e-12)
    with pytest.raises(ValueError, match="2\\*\\*n rows"):
        contributions.shapley_values(np.zeros(6))


def test_coalition_mask():
    assert contributions.coalition_mask([True, False, True, False]) == 0b0101


def test_paired_bootstrap_resamples_patients_once_for_the_whole_table():
    # Each patient carries a value per coalition; the game on a resample is the weighted mean over patients.
    rng = np.random.default_rng(0)
    n_patients = 30
    per_patient = np.stack([game(3, [0.2, 0.05, 0.0], {(0, 1): 0.03}) for _ in range(n_patients)], axis=1)
    per_patient += rng.normal(0, 0.05, per_patient.shape)  # patient-specific noise
    seen = []

    def value_table(weights):
        seen.append(weights)
        return {"auc": per_patient @ weights.T / weights.sum(axis=1)}

    (result,) = contributions.paired_contributions(value_table, ("a", "b", "c"), n_patients, n_resamples=500,
                                                   seed=7).values()
    (expected,) = patient_resample_counts(n_patients, 500, 7, chunk_rows=500)
    np.testing.assert_array_equal(seen[1], expected)
    point = contributions.shapley_values(per_patient.mean(axis=1))
    for i, name in enumerate("abc"):
        estimate = result.shapley[name]
        assert estimate.estimate == pytest.approx(point[i])
        assert estimate.low <= estimate.estimate <= estimate.high
        assert estimate.bootstrap_variance > 0
    assert result.shapley["a"].p_value < 0.01  # 0.215 with patient noise 0.05/sqrt(30): far from 0
    assert result.shapley["c"].low < 0 < result.shapley["c"].high  # c is a dummy up to noise
    assert result.interactions[("a", "b")].estimate == pytest.approx(
        contributions.interaction_indices(per_patient.mean(axis=1))[0, 1])
    assert set(result.interactions) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_value_table_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="value_tables must return"):
        contributions.paired_contributions(lambda w: {"auc": np.zeros((4, w.shape[0]))}, ("a", "b", "c"), 5,
                                           n_resamples=10)


def test_chance_is_a_fair_coin():
    assert contributions.CHANCE["auc"] == 0.5 and math.isclose(contributions.CHANCE["recall"], 0.5)
    assert "f1" not in contributions.CHANCE
