"""Power of a grid's paired comparisons: the smallest difference it could detect, and the seeds a given
difference would need.

A grid's difference (a Δ between two variants, or a Shapley contribution) is averaged over k seeds and scored on
one fixed test set. Its variance has two parts: training randomness, which averages out over seeds
(seed_variance / k, seed_variance being the sample variance over seeds of the per-seed statistic on the whole
test set), and the sampling of test patients, which every seed shares and which more seeds cannot remove
(patient_variance, the variance of the seed-averaged statistic over the patient-bootstrap resamples):

    SE(k)^2 = seed_variance / k + patient_variance.

With a two-sided test at level alpha and power 1 - beta, in the normal approximation, the minimum detectable
difference is (z_(1 - alpha/2) + z_(1 - beta)) SE(k), and a difference delta needs the smallest k with
(z_(1 - alpha/2) + z_(1 - beta)) SE(k) <= delta: k = ceil(seed_variance / ((delta / z)^2 - patient_variance)),
none at all (infinity) when the patient variance alone is too large, that is when the test set, not the seeds,
is what limits. The normal approximation ignores that the variances are themselves estimated (from 3 seeds the
seed variance is uncertain by a factor of several), so read these as orders of magnitude.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA, POWER = 0.05, 0.8


@dataclasses.dataclass(frozen=True)
class Power:
    seeds: int  # seeds the grid has
    seed_variance: float
    patient_variance: float
    minimum_detectable: float  # at `seeds` seeds
    target: float  # the difference asked about
    seeds_needed: float  # for `target`; math.inf when no number of seeds suffices


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def standard_error(seed_variance: float, patient_variance: float, seeds: int) -> float:
    return math.sqrt(seed_variance / seeds + patient_variance)


def minimum_detectable(seed_variance: float, patient_variance: float, seeds: int, *, alpha: float = ALPHA,
                       power: float = POWER) -> float:
    return z_sum(alpha, power) * standard_error(seed_variance, patient_variance, seeds)


def seeds_needed(delta: float, seed_variance: float, patient_variance: float, *, alpha: float = ALPHA,
                 power: float = POWER) -> float:
    """The fewest seeds (>= 1) at which |delta| is detectable; math.inf when the patient variance alone is too large."""
    room = (abs(delta) / z_sum(alpha, power)) ** 2 - patient_variance
    if room <= 0:
        return math.inf
    return float(max(1, math.ceil(seed_variance / room - 1e-12)))


def rejection_probability(delta: float, seed_variance: float, patient_variance: float, seeds: int, *,
                          alpha: float = ALPHA) -> float:
    """The two-sided z-test's power at a true difference delta (both tails)."""
    se, z = standard_error(seed_variance, patient_variance, seeds), stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.sf(z - delta / se) + stats.norm.cdf(-z - delta / se))


def grid_power(per_seed: Sequence[float], patient_variance: float, *, target: float = 0.01, alpha: float = ALPHA,
               power: float = POWER) -> Power:
    """Power of a statistic from its per-seed values (whole test set) and its patient-bootstrap variance."""
    values = np.asarray(per_seed, np.float64)
    if values.size < 2 or not np.all(np.isfinite(values)) or not math.isfinite(patient_variance):
        return Power(int(values.size), math.nan, patient_variance, math.nan, target, math.nan)
    seed_variance = float(np.var(values, ddof=1))
    return Power(int(values.size), seed_variance, patient_variance,
                 minimum_detectable(seed_variance, patient_variance, values.size, alpha=alpha, power=power), target,
                 seeds_needed(target, seed_variance, patient_variance, alpha=alpha, power=power))
