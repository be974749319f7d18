"""Expected calibration error on data with known calibration; reliability data against sklearn; atomic PNG."""
import os

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from asemble_jax.evaluation import calibration
from asemble_jax.evaluation.calibration import expected_calibration_error, plot_reliability_diagram, reliability_diagram


def test_perfectly_calibrated_data_has_ece_near_zero():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(size=100_000)
    labels = (rng.uniform(size=probabilities.size) < probabilities).astype(int)
    # Sampling noise alone: about sqrt(0.25 / 10_000) = 0.005 per bin.
    assert expected_calibration_error(labels, probabilities) < 0.01


def test_constant_overconfident_predictor_has_ece_equal_to_its_gap():
    labels = np.r_[np.ones(60, int), np.zeros(40, int)]
    assert expected_calibration_error(labels, np.full(100, 0.9)) == pytest.approx(0.9 - 0.6)


def test_reliability_data_matches_sklearn():
    rng = np.random.default_rng(1)
    probabilities = rng.beta(2, 3, size=2000)
    labels = (rng.uniform(size=2000) < probabilities**0.7).astype(int)
    diagram = reliability_diagram(labels, probabilities, n_bins=8)
    fraction_positive, mean_probability = calibration_curve(labels, probabilities, n_bins=8, strategy="uniform")
    filled = diagram.counts > 0
    np.testing.assert_allclose(diagram.fraction_positive[filled], fraction_positive)
    np.testing.assert_allclose(diagram.mean_probability[filled], mean_probability)
    assert diagram.counts.sum() == 2000


def test_bins_are_closed_below_and_the_last_includes_one():
    diagram = reliability_diagram(np.array([0, 1, 1, 0]), np.array([0.0, 0.5, 1.0, 0.25]), n_bins=4)
    assert diagram.counts.tolist() == [1, 1, 1, 1]
    assert np.isnan(reliability_diagram(np.array([1]), np.array([0.95]), n_bins=4).mean_probability[0])


def test_probabilities_outside_the_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_diagram(np.array([0, 1]), np.array([0.2, 1.3]))


def _png_written(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    rng = np.random.default_rng(2)
    diagram = reliability_diagram(rng.integers(0, 2, 200), rng.uniform(size=200))
    plot_reliability_diagram(diagram, tmp_path / "reliability.png", title="test")
    assert _png_written(tmp_path / "reliability.png")
    assert os.listdir(tmp_path) == ["reliability.png"]


def test_failed_plot_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "reliability.png"
    diagram = reliability_diagram(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.9]))
    plot_reliability_diagram(diagram, target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(calibration.Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        plot_reliability_diagram(diagram, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["reliability.png"]
