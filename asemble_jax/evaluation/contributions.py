"""Exact Shapley contributions of the components of a factorial grid, their pairwise Shapley interaction
indices, and the paired patient bootstrap of both.

A game assigns a value v(S) (a metric) to every coalition S of n players (components). Coalitions are indexed
by bitmask: bit i of the index is set when player i is in S, so `values[mask]` is v(S) and values has 2**n rows
(any further axes, e.g. bootstrap resamples, are carried along).

Shapley value (exact, every coalition enumerated):
    phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)).
It is the average, over all orders in which components could be added, of what component i adds when it comes;
the phi_i sum to v(all) - v(none) (efficiency).

Pairwise interaction: the Shapley interaction index (Grabisch & Roubens 1999, Int. J. Game Theory 28:547),
    I_ij = sum over S holding neither of |S|! (n - |S| - 2)! / (n - 1)! * (v(S+i+j) - v(S+i) - v(S+j) + v(S)),
chosen over the 2^k factorial interaction (which weights every context S equally) because it weights contexts
as the Shapley value does, so contributions and interactions are read on one footing: for a game whose
interactions are pairwise only, phi_i = a_i + sum_j I_ij / 2 (each interaction is shared equally by its two
components) and I_ij is exactly the interaction; I_ij > 0 means i and j together add more than apart.

Both are linear in v, so they are computed as one weight matrix times the value table.

A coalition of no model branch is no model: the grids value it at chance (CHANCE), the metric of a classifier that
flips a fair coin for every slice: AUC 0.5, and sensitivity, specificity and accuracy 0.5 whatever the prevalence.
(F1 and precision of a coin depend on the prevalence, so they have no contributions.) The contributions of the
branches then include what it takes to get from chance to their own models; a component that is not a branch
(SE) adds nothing to a coalition without branches.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from asemble_jax.evaluation.bootstrap import (check_level, patient_resample_counts, percentile_interval,
                                              two_sided_p_value)

CHANCE = {"auc": 0.5, "recall": 0.5, "specificity": 0.5, "accuracy": 0.5}


def _check_players(n_players: int) -> None:
    if not 1 <= n_players <= 16:
        raise ValueError(f"a game needs 1 to 16 players (2**n coalitions are enumerated), got {n_players}")


def shapley_weights(n_players: int) -> np.ndarray:
    """(n_players, 2**n_players): phi = weights @ values."""
    _check_players(n_players)
    weights = np.zeros((n_players, 2 ** n_players))
    for i in range(n_players):
        for mask in range(2 ** n_players):
            if mask >> i & 1:
                continue
            size = bin(mask).count("1")
            w = math.factorial(size) * math.factorial(n_players - size - 1) / math.factorial(n_players)
            weights[i, mask | 1 << i] += w
            weights[i, mask] -= w
    return weights


def interaction_weights(n_players: int) -> np.ndarray:
    """(n_players, n_players, 2**n_players): I = weights @ values (Shapley interaction index; zero diagonal)."""
    _check_players(n_players)
    weights = np.zeros((n_players, n_players, 2 ** n_players))
    for i, j in itertools.combinations(range(n_players), 2):
        pair = 1 << i | 1 << j
        for mask in range(2 ** n_players):
            if mask & pair:
                continue
            size = bin(mask).count("1")
            w = math.factorial(size) * math.factorial(n_players - size - 2) / math.factorial(n_players - 1)
            for member, sign in ((mask | pair, 1), (mask | 1 << i, -1), (mask | 1 << j, -1), (mask, 1)):
                weights[i, j, member] += sign * w
        weights[j, i] = weights[i, j]
    return weights


def _table(values: np.ndarray) -> tuple[np.ndarray, int]:
    values = np.asarray(values, np.float64)
    n_players = int(round(math.log2(values.shape[0]))) if values.ndim and values.shape[0] else -1
    if n_players < 1 or values.shape[0] != 2 ** n_players:
        raise ValueError(f"a value table has one row per coalition, 2**n rows; got shape {values.shape}")
    return values, n_players


def shapley_values(values: np.ndarray) -> np.ndarray:
    """phi (n_players, ...) of the value table values (2**n_players, ...)."""
    values, n_players = _table(values)
    return np.tensordot(shapley_weights(n_players), values, axes=1)


def interaction_indices(values: np.ndarray) -> np.ndarray:
    """I (n_players, n_players, ...) of the value table values (2**n_players, ...)."""
    values, n_players = _table(values)
    return np.tensordot(interaction_weights(n_players), values, axes=1)


def coalition_mask(members: Sequence[bool]) -> int:
    """The index of the coalition whose player i is in it when members[i]."""
    return sum(1 << i for i, member in enumerate(members) if member)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A statistic on all the data with its patient-bootstrap percentile interval and two-sided p-value of 0."""
    estimate: float
    low: float
    high: float
    p_value: float
    bootstrap_variance: float  # variance of the statistic over the resamples (for power.py)
    n_valid: int


@dataclasses.dataclass(frozen=True)
class Contributions:
    players: tuple[str, ...]
    shapley: dict[str, Estimate]  # player -> phi
    interactions: dict[tuple[str, str], Estimate]  # (i, j), i before j in players -> I_ij
    level: float
    n_resamples: int
    n_patients: int


def _estimate(point: float, resampled: np.ndarray, level: float) -> Estimate:
    low, high, n_valid = percentile_interval(resampled, level)
    finite = resampled[np.isfinite(resampled)]
    variance = float(np.var(finite, ddof=1)) if finite.size > 1 else math.nan
    return Estimate(float(point), low, high, two_sided_p_value(resampled), variance, n_valid)


def paired_contributions(value_tables: Callable[[np.ndarray], Mapping[str, np.ndarray]], players: Sequence[str],
                         n_patients: int, *, n_resamples: int = 2000, level: float = 0.95,
                         seed: int = 0) -> dict[str, Contributions]:
    """Per statistic (metric), the Shapley values and interaction indices of the games
    value_tables(weights) -> {statistic: (2**n, rows)}, where weights is (rows, n_patients), each row how often
    each test patient is drawn (all ones: the data as they are).

    The pairing: every resample draws the test patients once (evaluation.bootstrap.patient_resample_counts, the
    project's one resampler) and the whole value table, every variant's metric, is recomputed on that one draw
    before the contributions are; so a patient who is hard for every variant moves every v(S) together and
    cancels in the differences.
    """
    check_level(level, n_resamples)
    players = tuple(players)
    point = value_tables(np.ones((1, n_patients)))
    (weights,) = patient_resample_counts(n_patients, n_resamples, seed, chunk_rows=n_resamples)
    resampled = value_tables(weights)
    results = {}
    for statistic in point:
        at_point = np.asarray(point[statistic], np.float64)
        again = np.asarray(resampled[statistic], np.float64)
        expected = (2 ** len(players),)
        if at_point.shape != expected + (1,) or again.shape != expected + (n_resamples,):
            raise ValueError(f"value_tables must return ({expected[0]}, rows) for {len(players)} players; got "
                             f"{at_point.shape} and {again.shape} for {statistic}")
        phi, phi_resampled = shapley_values(at_point)[:, 0], shapley_values(again)
        inter, inter_resampled = interaction_indices(at_point)[..., 0], interaction_indices(again)
        results[statistic] = Contributions(
            players, {p: _estimate(phi[i], phi_resampled[i], level) for i, p in enumerate(players)},
            {(players[i], players[j]): _estimate(inter[i, j], inter_resampled[i, j], level)
             for i, j in itertools.combinations(range(len(players)), 2)}, level, n_resamples, n_patients)
    return results
