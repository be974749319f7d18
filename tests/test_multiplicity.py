"""Holm and Benjamini-Hochberg equal statsmodels' multipletests; NaNs stay out of the family."""
import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from asemble_jax.evaluation.multiplicity import benjamini_hochberg, holm


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [1, 2, 7, 35, 200])
def test_equal_statsmodels(seed, size):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, size) ** 3  # many small ones, so the adjustments bite
    p[rng.uniform(size=size) < 0.2] = p[0]  # ties
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=0, atol=1e-15)


def test_nan_is_left_out_of_the_family():
    p = np.array([0.01, np.nan, 0.04, 0.03])
    finite = p[np.isfinite(p)]
    assert np.isnan(holm(p)[1]) and np.isnan(benjamini_hochberg(p)[1])
    np.testing.assert_allclose(holm(p)[[0, 2, 3]], multipletests(finite, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p)[[0, 2, 3]], multipletests(finite, method="fdr_bh")[1])
    assert holm([]).shape == (0,)


def test_known_values():
    # Holm: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.06 (monotone); BH: 0.03, 0.04, 0.04.
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(benjamini_hochberg([0.04, 0.01, 0.03]), [0.04, 0.03, 0.04])


def test_out_of_range_is_refused():
    with pytest.raises(ValueError, match="must lie in"):
        holm([0.5, 1.2])
