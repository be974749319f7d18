"""The main job (`make demo`): build the synthetic SIJ phantom, train ASembleNet-small on the coronal plane on this
machine, evaluate it on the held-out test patients and on the shifted stand-in external set, and write the
results folder (samples.png, training_curve.png, metrics.json, eval/). Rerunning resumes training where it
stopped (or skips it when finished) and rewrites the results."""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import time
from typing import Any

import jax
from matplotlib.figure import Figure

from asemble_jax import atomic_io
from asemble_jax.config import load_config
from asemble_jax.data.builders import build
from asemble_jax.data.figures import write_samples_figure
from asemble_jax.errors import UserError
from asemble_jax.evaluation.formatting import format_interval
from asemble_jax.evaluation.evaluate import evaluate_workdir
from asemble_jax.metrics_log import MetricsLog
from asemble_jax.provenance import cpu_description, git_commit
from asemble_jax.train.trainer import train_and_evaluate
from asemble_jax.workdir import Predictor, Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "ablations", "base.py") + ":model=asemblenet,preset=small,dataset=synthetic_sij/coronal"
DATASETS = ("synthetic_sij/axial", "synthetic_sij/coronal", "synthetic_sij/shifted")
TEST_SETS = ("synthetic_sij/coronal", "synthetic_sij/shifted")


def plot_training_curve(metrics_path: str, out_path: str) -> None:
    records = MetricsLog(metrics_path).read()
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] != "train"]
    figure = Figure(figsize=(8, 3.2))
    loss_axes, val_axes = figure.subplots(1, 2)
    loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    loss_axes.set(xlabel="step", ylabel="training loss (label smoothing 0.1)", title="training")
    val_axes.plot([r["step"] for r in val], [r["val_auc"] for r in val], "o-", label="AUC")
    val_axes.plot([r["step"] for r in val], [r["val_accuracy"] for r in val], "s-", label="accuracy")
    val_axes.set(xlabel="step", ylim=(0.4, 1.01), title="validation patients")
    val_axes.legend(loc="lower right")
    figure.tight_layout()
    atomic_io.save_figure(figure, out_path, dpi=120)


def _build(name: str, data_dir: str) -> str | None:
    """One build in a worker process; its user-facing error as text (InputError does not survive pickling)."""
    try:
        build(name, data_dir=data_dir)
    except UserError as error:
        return str(error)
    return None


def build_datasets(data_dir: str, names: tuple[str, ...] = DATASETS) -> None:
    """Builds `names`, as many at once as the host has cores: a build renders its phantom on one core, so on 2
    cores the two large ones run side by side (62 s one after the other, 45 s so, one pair of runs; see
    results/performance/demo.md). Workers are spawned, not forked: this process has JAX's threads running."""
    workers = min(len(names), os.cpu_count() or 1)
    if workers == 1:
        for name in names:
            build(name, data_dir=data_dir)
        return
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for error in pool.map(_build, names, [data_dir] * len(names)):
            if error:
                raise UserError(error)


def run_demo(data_dir: str, out: str, workdir: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Runs the demo; (the summary written to OUT/metrics.json, the evaluation report of each test set)."""
    timings = {}
    metrics_path = Workdir(workdir).metrics
    start = time.perf_counter()
    build_datasets(data_dir)
    timings["build_datasets_s"] = time.perf_counter() - start
    start = time.perf_counter()
    write_samples_figure(data_dir, os.path.join(out, "samples.png"))
    timings["samples_figure_s"] = time.perf_counter() - start

    config = load_config(CONFIG)
    config.data.data_dir = data_dir
    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    timings["train_s"] = time.perf_counter() - start
    plot_training_curve(metrics_path, os.path.join(out, "training_curve.png"))

    start = time.perf_counter()
    predictor = Predictor(workdir)
    reports = {name: evaluate_workdir(workdir, dataset=name, split="test", out_dir=os.path.join(out, "eval"),
                                      predictor=predictor)
               for name in TEST_SETS}
    timings["evaluate_s"] = time.perf_counter() - start

    summary = {
        "command": "make demo", "config": os.path.relpath(CONFIG, REPO), "git_commit": git_commit(),
        "machine": f"{platform.machine()}, {cpu_description()}, {os.cpu_count()} CPU cores, "
                   f"jax {jax.__version__} on {jax.devices()[0].platform}",
        "checkpoint_step": predictor.step,
        # Wall times of this invocation (a rerun of a finished demo trains nothing), and the training throughput
        # logged while it trained, which survives reruns.
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "train_images_per_second_median": statistics.median(
            r["images_per_second"] for r in MetricsLog(metrics_path).read() if r["split"] == "train"),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "test": {name: {"slice_level": {m: report["thresholds"]["0.5"][m]
                                        for m in ("auc", "accuracy", "recall", "specificity")},
                        "patient_level_auc": (report["patient_level"] or {}).get("auc")}
                 for name, report in reports.items()},
    }
    atomic_io.write_json(os.path.join(out, "metrics.json"), summary)
    return summary, reports


def summary_table(summary: dict[str, Any], reports: dict[str, dict[str, Any]], out: str) -> str:
    """What `make demo` prints: the patient-level AUC, the headline, with the slice-level metrics beside it."""
    lines = [f"\n{'test set':<24}{'patients':>9}{'patient AUC (95% CI)':>28}{'slices':>8}{'slice AUC (95% CI)':>28}"
             f"{'accuracy':>10}{'sensitivity':>13}{'specificity':>13}"]
    for name, report in reports.items():
        block = report["thresholds"]["0.5"]
        patient_auc = (report["patient_level"] or {}).get("auc")
        patient = format_interval(patient_auc) if patient_auc else "n/a"
        lines.append(f"{name:<24}{report['n_patients']:>9}{patient:>28}{report['n']:>8}"
                     f"{format_interval(block['auc']):>28}{block['accuracy']['estimate']:>10.3f}"
                     f"{block['recall']['estimate']:>13.3f}{block['specificity']['estimate']:>13.3f}")
    lines.append(f"\nwrote {out}/ (samples.png, training_curve.png, metrics.json, eval/); timings: "
                 f"{json.dumps(summary['timings_s'])}")
    return "\n".join(lines)
