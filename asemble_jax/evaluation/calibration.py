"""Calibration of the positive-class probability: expected calibration error and the reliability diagram.

Bins are equal-width on [0, 1], each [lower, upper) except the last, which includes 1. In each bin the mean
predicted probability is compared with the observed fraction of positives (the convention of
sklearn.calibration.calibration_curve with strategy="uniform"). ECE is the example-weighted mean gap.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asemble_jax.atomic_io import save_figure

DEFAULT_BINS = 10


@dataclasses.dataclass(frozen=True)
class ReliabilityDiagram:
    bin_edges: np.ndarray  # (n_bins + 1,)
    counts: np.ndarray  # (n_bins,) examples per bin
    mean_probability: np.ndarray  # (n_bins,), NaN for an empty bin
    fraction_positive: np.ndarray  # (n_bins,), NaN for an empty bin
    expected_calibration_error: float


def reliability_diagram(labels: np.ndarray, probabilities: np.ndarray,
                        n_bins: int = DEFAULT_BINS) -> ReliabilityDiagram:
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != probabilities.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and probabilities {probabilities.shape} must be the same (n,), n > 0")
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], probabilities, side="right")
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_probability = np.bincount(bins, weights=probabilities, minlength=n_bins) / counts
        fraction_positive = np.bincount(bins, weights=labels, minlength=n_bins) / counts
    gaps = np.abs(fraction_positive - mean_probability)
    ece = float(np.sum(counts[counts > 0] * gaps[counts > 0]) / labels.size)
    return ReliabilityDiagram(edges, counts, mean_probability, fraction_positive, ece)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    return reliability_diagram(labels, probabilities, n_bins).expected_calibration_error


def plot_reliability_diagram(diagram: ReliabilityDiagram, path: str | os.PathLike, title: str = "") -> None:
    """Observed fraction of positives per bin against the diagonal of perfect calibration, with the examples per
    bin underneath; written to `path` as a PNG atomically (a crash leaves the old file or none, never half a one)."""
    figure = Figure(figsize=(4.5, 5.5))
    FigureCanvasAgg(figure)
    curve, histogram = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = diagram.counts > 0
    centres = (diagram.bin_edges[:-1] + diagram.bin_edges[1:]) / 2
    widths = np.diff(diagram.bin_edges)
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    curve.bar(centres[filled], diagram.fraction_positive[filled], width=widths[filled], edgecolor="black",
              alpha=0.7, label="fraction positive per bin")
    curve.plot(diagram.mean_probability[filled], diagram.fraction_positive[filled], "o-", color="tab:red",
               label="at the bin's mean probability")
    curve.set(ylim=(0, 1), ylabel="fraction positive",
              title=f"{title + ': ' if title else ''}ECE = {diagram.expected_calibration_error:.3f}")
    curve.legend(loc="upper left", fontsize="small")
    histogram.bar(centres, diagram.counts, width=widths, edgecolor="black", color="tab:grey")
    histogram.set(xlim=(0, 1), xlabel="predicted probability of the positive class", ylabel="examples")
    figure.tight_layout()

    save_figure(figure, path, dpi=120)
