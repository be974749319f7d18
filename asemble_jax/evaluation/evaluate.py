"""Evaluation of a trained workdir on a dataset split: metrics with patient-level bootstrap CIs at the threshold
chosen on validation, calibration, per-example predictions, and the figures a paper needs.

The decision threshold is never tuned on the split being reported: 0.5 and Youden's J, the latter chosen on the
training run's validation split, are both applied unchanged to the evaluated split.
"""
from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from asemble_jax import atomic_io
from asemble_jax.evaluation.bootstrap import bootstrap_metrics
from asemble_jax.evaluation.calibration import plot_reliability_diagram, reliability_diagram
from asemble_jax.evaluation.figures import RocCurve, plot_roc
from asemble_jax.evaluation.formatting import format_interval
from asemble_jax.evaluation.metrics import METRIC_NAMES, classification_metrics
from asemble_jax.evaluation.thresholds import aggregate_by_patient, youden_threshold
from asemble_jax.workdir import Predictor, Workdir


def _with_intervals(labels, probs, patients, threshold: float, n_resamples: int, seed: int) -> dict[str, Any]:
    point = classification_metrics(labels, probs, threshold)
    intervals = bootstrap_metrics(labels, probs, patients, threshold=threshold, n_resamples=n_resamples, seed=seed)
    return {
        "threshold": threshold,
        "n": point["n"],
        "n_patients": int(len(set(patients))),
        "confusion_matrix": point["confusion_matrix"],
        **{name: {"estimate": point[name], "ci_low": intervals[name].low, "ci_high": intervals[name].high}
           for name in METRIC_NAMES},
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['dataset']} / {report['split']}", "",
             f"Model: `{report['workdir']}` at step {report['step']} ({report['model']}). "
             f"{report['n']} examples from {report['n_patients']} patients. 95% CIs: percentile bootstrap, "
             f"{report['n_resamples']} resamples of patients (seed {report['seed']}). Thresholds chosen on "
             f"`{report['threshold_split']}`, applied unchanged here.", "",
             "| threshold | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---|" * len(METRIC_NAMES)]
    for name, block in report["thresholds"].items():
        cells = [format_interval(block[m]) for m in METRIC_NAMES]
        lines.append(f"| {name} = {block['threshold']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Expected calibration error: {report['expected_calibration_error']:.3f}."]
    if report.get("patient_level"):
        block = report["patient_level"]
        lines.append(f"Patient level (mean probability per patient, threshold 0.5): AUC "
                     f"{format_interval(block['auc'])}, accuracy {block['accuracy']['estimate']:.3f}, "
                     f"n = {block['n']} patients.")
    return "\n".join(lines) + "\n"


def _plot_confusion(matrix, class_names, path: str, title: str) -> None:
    figure = Figure(figsize=(3.6, 3.2))
    axes = figure.add_subplot()
    matrix = np.asarray(matrix)
    axes.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=class_names, yticklabels=class_names,
             xlabel="predicted", ylabel="true", title=title)
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=120)


def _predictions_csv(probs, labels, patients) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["example", "patient_id", "label", "probability"])
    for i, (p, y, patient) in enumerate(zip(probs, labels, patients)):
        writer.writerow([i, patient, int(y), f"{float(p):.9g}"])  # round-trips float32
    return buffer.getvalue()


def evaluate_workdir(workdir: str, *, dataset: str | None = None, split: str = "test", out_dir: str | None = None,
                     data_dir: str | None = None, n_resamples: int = 2000, seed: int = 0,
                     predictor: Predictor | None = None) -> dict[str, Any]:
    """Writes eval/<dataset>_<split>.{json,md,_predictions.csv,_roc.png,_confusion.png,_calibration.png}."""
    predictor = predictor or Predictor(workdir)
    config = predictor.config
    dataset = dataset or config.data.dataset
    stem = Workdir(workdir).eval_stem(dataset, split, out_dir)

    val_probs, val_labels, _ = predictor.predict(config.data.dataset, config.data.val_split, data_dir)
    youden = youden_threshold(val_labels, val_probs)
    probs, labels, patients = predictor.predict(dataset, split, data_dir)

    report: dict[str, Any] = {
        "workdir": workdir, "step": predictor.step, "dataset": dataset, "split": split,
        "model": f"{config.model.name}/{config.model.preset}/{config.model.variant}",
        "n": int(labels.size), "n_patients": int(len(set(patients))), "n_resamples": n_resamples, "seed": seed,
        "threshold_split": f"{config.data.dataset}/{config.data.val_split}",
        "thresholds": {name: _with_intervals(labels, probs, patients, t, n_resamples, seed)
                       for name, t in (("0.5", 0.5), ("youden", youden.threshold))},
    }
    diagram = reliability_diagram(labels, probs)
    report["expected_calibration_error"] = diagram.expected_calibration_error
    try:
        by_patient = aggregate_by_patient(patients, labels, probs)
        report["patient_level"] = _with_intervals(by_patient.labels, by_patient.probabilities,
                                                  by_patient.patient_ids, 0.5, n_resamples, seed)
    except ValueError as error:  # labels that vary within a patient (per-slice targets) have no patient label
        report["patient_level"] = None
        report["patient_level_note"] = str(error)

    atomic_io.write_json(stem + ".json", report)
    atomic_io.write_text(stem + ".md", _markdown(report))
    atomic_io.write_text(stem + "_predictions.csv", _predictions_csv(probs, labels, patients))
    title = f"{dataset} {split}"
    auc = report["thresholds"]["0.5"]["auc"]["estimate"]
    plot_roc([RocCurve(labels, probs, f"AUC {auc:.3f}", "tab:blue")], stem + "_roc.png", title, size=4)
    _plot_confusion(report["thresholds"]["0.5"]["confusion_matrix"], ("negative", "positive"),
                    stem + "_confusion.png", f"{title}, threshold 0.5")
    plot_reliability_diagram(diagram, stem + "_calibration.png", title=title)
    return report
