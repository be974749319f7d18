"""Multiplicity control over a family of p-values: Holm's step-down adjustment (controls the family-wise error
rate, the chance of any false positive in the family, under any dependence) and Benjamini-Hochberg q-values
(control the expected share of false positives among the comparisons called significant; valid for independent or
positively dependent tests, which differences against one shared reference on one test set are close to).

The family is whatever the caller passes: the tables pass every p-value of one table (all its comparisons and
metrics, on its one test set) and say so in the table's header. NaN p-values (a comparison that could not be
made) are left out of the family and stay NaN. Both equal statsmodels.stats.multitest.multipletests with
method="holm" and "fdr_bh" (tests/test_multiplicity.py).
"""
from __future__ import annotations

import numpy as np


def _adjusted(p_values, step) -> np.ndarray:
    """Each finite p-value replaced by step(sorted finite p-values, m)'s entry at its rank, capped at 1; NaNs kept."""
    p = np.asarray(p_values, np.float64).reshape(-1)
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite & ((p < 0) | (p > 1))][:3].tolist()}")
    adjusted = np.full(p.shape, np.nan)
    values = p[finite]
    if values.size:
        order = np.argsort(values, kind="stable")
        out = np.empty(values.size)
        out[order] = np.minimum(step(values[order], values.size), 1.0)
        adjusted[finite] = out
    return adjusted


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values: the k-th smallest of m becomes max over j <= k of min(1, (m - j + 1) p_(j))."""
    return _adjusted(p_values, lambda ordered, m: np.maximum.accumulate((m - np.arange(m)) * ordered))


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg q-values: the k-th smallest of m becomes min over j >= k of min(1, m p_(j) / j)."""
    return _adjusted(p_values,
                     lambda ordered, m: np.minimum.accumulate((ordered * m / np.arange(1, m + 1))[::-1])[::-1])
