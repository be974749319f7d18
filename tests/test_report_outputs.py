"""What the reports share: one patient resampler (ablation tables and evaluation bootstraps draw the same patients
for a seed), one way to write an interval, and one ROC figure whose curves are the ones asked for."""
import numpy as np
import pytest

from asemble_jax.grids import figures as ablation_figures
from asemble_jax.grids import tables
from asemble_jax.evaluation.bootstrap import paired_bootstrap
from asemble_jax.evaluation.figures import CHANCE, RocCurve, plot_roc
from asemble_jax.evaluation.formatting import format_interval
from asemble_jax.evaluation.evaluate import _markdown


def _predictions(rng, labels, patients, separation):
    probabilities = np.clip(labels * separation + rng.uniform(0, 1 - separation, labels.size), 0, 1)
    return tables.Predictions(labels, probabilities, patients, np.full(labels.size, 0.5))


def test_ablation_tables_and_the_paired_bootstrap_draw_the_same_patients():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i:02d}" for i in range(30)], 4)
    labels = rng.integers(0, 2, patients.size)
    arm, reference = _predictions(rng, labels, patients, 0.4), _predictions(rng, labels, patients, 0.1)
    table = tables.paired_differences({0: arm}, {0: reference}, ("auc",), n_resamples=500, seed=6)["auc"]
    evaluation = paired_bootstrap(labels, arm.probabilities, reference.probabilities, patients, metric="auc",
                                  n_resamples=500, seed=6)
    assert (table.difference, table.low, table.high, table.p_value) == pytest.approx(
        (evaluation.difference, evaluation.low, evaluation.high, evaluation.p_value), abs=1e-12)


def test_ablation_tables_refuse_a_bad_level():
    rng = np.random.default_rng(1)
    run = _predictions(rng, np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), 0.3)
    with pytest.raises(ValueError, match="level"):
        tables.paired_differences({0: run}, {0: run}, ("auc",), level=1.5)


def test_an_interval_reads_estimate_low_to_high_even_when_negative():
    assert format_interval({"estimate": 0.7254, "ci_low": 0.6218, "ci_high": 0.822}) == "0.725 (0.622 to 0.822)"
    assert format_interval({"estimate": -0.1, "ci_low": -0.25, "ci_high": 0.05}) == "-0.100 (-0.250 to 0.050)"
    assert format_interval({"estimate": 0.5, "ci_low": float("nan"), "ci_high": 1.0}, digits=1) == "0.5 (nan to 1.0)"


def test_the_evaluation_markdown_uses_the_shared_interval():
    block = {"estimate": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    metrics = {name: block for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc")}
    report = {"dataset": "d", "split": "test", "workdir": "w", "step": 1, "model": "m", "n": 10, "n_patients": 5,
              "n_resamples": 100, "seed": 0, "threshold_split": "d/val", "expected_calibration_error": 0.01,
              "thresholds": {"0.5": {"threshold": 0.5, **metrics}},
              "patient_level": {"n": 5, **metrics}}
    text = _markdown(report)
    assert text.count("0.800 (0.700 to 0.900)") == 7  # six metric cells and the patient-level AUC
    assert "0.700-0.900" not in text


def _curves(axes):
    return [line for line in axes.lines if line.get_gid() != CHANCE]


def test_roc_plot_draws_one_line_per_curve_and_one_legend_entry_per_label(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.tile([0, 1], 20)
    curves = [RocCurve(labels, labels * 0.5 + rng.uniform(0, 0.5, 40), "arm a", "C0"),
              RocCurve(labels, labels * 0.3 + rng.uniform(0, 0.7, 40), "arm a", "C0"),  # a second seed
              RocCurve(labels, rng.uniform(size=40), "arm b", "C1"),
              RocCurve(np.ones(40, int), rng.uniform(size=40), "one class", "C2")]  # no ROC: left out
    path = tmp_path / "roc.png"
    figure = plot_roc(curves, str(path), "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (axes,) = figure.axes
    lines = _curves(axes)
    assert len(lines) == 3
    assert [line.get_color() for line in lines] == ["C0", "C0", "C1"]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["arm a", "arm b"]
    assert len([line for line in axes.lines if line.get_gid() == CHANCE]) == 1
    perfect = plot_roc([RocCurve(labels, labels.astype(float))], str(tmp_path / "perfect.png"), "t")
    (line,) = _curves(perfect.axes[0])
    assert list(line.get_xdata()) == [0, 0, 1] and list(line.get_ydata()) == [0, 1, 1]
    assert perfect.axes[0].get_legend() is None  # nothing labelled


def test_the_ablation_roc_figure_has_a_curve_per_run_and_an_entry_per_arm(tmp_path):
    rng = np.random.default_rng(3)
    labels, patients = np.tile([0, 1], 10), np.repeat([f"p{i}" for i in range(5)], 4)
    runs = {arm: {seed: _predictions(rng, labels, patients, 0.3) for seed in range(n_seeds)}
            for arm, n_seeds in (("full", 3), ("no_se", 2))}
    rows = [tables.ArmRow(arm, tuple(runs[arm]), {"auc": 0.75}, {}, {}, {}, {}, {}) for arm in runs]
    table = tables.Table((), "test", "d:test", labels.size, 5, rows, runs)
    figure = ablation_figures.plot_roc(table, str(tmp_path / "roc.png"), "grid")
    axes = figure.axes[0]
    assert [line.get_color() for line in _curves(axes)] == ["C0"] * 3 + ["C1"] * 2
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["full (mean AUC 0.750)",
                                                                   "no_se (mean AUC 0.750)"]
