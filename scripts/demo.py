"""The main job (`make demo`): builds the synthetic SIJ phantom, trains ASembleNet-small on the coronal plane on
this machine's CPU, evaluates it on the held-out test patients and on the shifted stand-in external set, and
writes results/demo/.

    python scripts/demo.py --data_dir=data/tfds --out=results/demo [--workdir=workdirs/demo]

Rerunning resumes training where it stopped (or skips it when finished) and rewrites the results.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
from matplotlib.figure import Figure

from asemble_jax import atomic_io
from asemble_jax.provenance import git_commit
from asemble_jax.data.builders import build
from asemble_jax.errors import InputError, UserError
from asemble_jax.data.figures import write_samples_figure
from asemble_jax.evaluation.report import evaluate_workdir
from asemble_jax.config import load_config
from asemble_jax.train.metrics_log import MetricsLog
from asemble_jax.train.trainer import train_and_evaluate
from asemble_jax.workdir import Predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "ablations", "base.py") + ":model=asemblenet,preset=small,dataset=synthetic_sij/coronal"
DATASETS = ("synthetic_sij/axial", "synthetic_sij/coronal", "synthetic_sij/shifted")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/tfds")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--workdir", default="workdirs/demo")
    args = parser.parse_args(argv)
    timings = {}

    start = time.perf_counter()
    for name in DATASETS:
        build(name, data_dir=args.data_dir)
    timings["build_datasets_s"] = time.perf_counter() - start
    write_samples_figure(args.data_dir, os.path.join(args.out, "samples.png"))

    config = load_config(CONFIG)
    config.data.data_dir = args.data_dir
    start = time.perf_counter()
    try:
        train_and_evaluate(config, args.workdir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    timings["train_s"] = time.perf_counter() - start
    plot_training_curve(os.path.join(args.workdir, "metrics.jsonl"), os.path.join(args.out, "training_curve.png"))

    start = time.perf_counter()
    predictor = Predictor(args.workdir)
    eval_dir = os.path.join(args.out, "eval")
    reports = {name: evaluate_workdir(args.workdir, dataset=name, split="test", out_dir=eval_dir,
                                      predictor=predictor)
               for name in ("synthetic_sij/coronal", "synthetic_sij/shifted")}
    timings["evaluate_s"] = time.perf_counter() - start

    summary = {
        "command": "make demo", "config": os.path.relpath(CONFIG, REPO), "git_commit": git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} on "
                   f"{jax.devices()[0].platform}",
        "checkpoint_step": predictor.step,
        # Wall times of this invocation (a rerun of a finished demo trains nothing), and the training throughput
        # logged while it trained, which survives reruns.
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "train_images_per_second_median": statistics.median(
            r["images_per_second"] for r in MetricsLog(os.path.join(args.workdir, "metrics.jsonl")).read()
            if r["split"] == "train"),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "test": {name: {"slice_level": {m: report["thresholds"]["0.5"][m]
                                        for m in ("auc", "accuracy", "recall", "specificity")},
                        "patient_level_auc": (report["patient_level"] or {}).get("auc")}
                 for name, report in reports.items()},
    }
    atomic_io.write_json(os.path.join(args.out, "metrics.json"), summary)

    print(f"\n{'test set':<24}{'slices':>7}{'slice AUC (95% CI)':>26}{'accuracy':>10}{'sensitivity':>13}"
          f"{'specificity':>13}{'patient AUC (95% CI)':>28}")
    for name, report in reports.items():
        block = report["thresholds"]["0.5"]
        auc, patient_auc = block["auc"], (report["patient_level"] or {}).get("auc")
        patient = (f"{patient_auc['estimate']:.3f} ({patient_auc['ci_low']:.3f}-{patient_auc['ci_high']:.3f})"
                   if patient_auc else "n/a")
        print(f"{name:<24}{report['n']:>7}{auc['estimate']:>11.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
              f"{block['accuracy']['estimate']:>10.3f}{block['recall']['estimate']:>13.3f}"
              f"{block['specificity']['estimate']:>13.3f}{patient:>28}")
    print(f"\nwrote {args.out}/ (samples.png, training_curve.png, metrics.json, eval/); timings: "
          f"{json.dumps(summary['timings_s'])}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
