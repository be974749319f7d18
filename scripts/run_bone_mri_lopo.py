r"""The real-data experiment: ASembleNet trained on bone_mri (Hepburn et al.; semi-coronal SIJ STIR of axSpA
patients, expert bone-marrow-oedema masks) with leave-one-patient-out folds, then the held-out predictions of
every fold pooled.

    python scripts/build_dataset.py --dataset=bone_mri --manual_dir=../shared/data/bone_mri --data_dir=data/tfds
    python scripts/run_bone_mri_lopo.py --data_dir=data/tfds --workdir=workdirs/bone_mri_lopo --out=results/bone_mri

Per fold (ablations/bone_mri_lopo.py:fold=K): train on the other patients, then on the held-out patient
- classify every labelled slice (inflammation vs none; the last checkpoint, nothing selected on that patient);
- Grad-CAM of the inflammation class on every slice whose expert mask (>= 2 of 4 readings) is not empty, scored
  against the mask, against the same architecture with randomised weights and against a centre prior
  (asemble_jax/evaluation/localization_report.py).
Pooled over folds: ROC AUC and the threshold-0.5 metrics with 95% bootstrap CIs resampled by patient, and the
localisation table with patient-bootstrap CIs. Writes under --out: README.md (every table, the command, machine,
seeds and wall times), classification.json, predictions.csv, localization.{md,json}, probabilities.png and
roc.png. The figure of best and worst Grad-CAM cases shows the scans themselves, which are published without a
licence (../shared/data/README.md: research use, not to be committed), so it goes to
<workdir>/localization_cases.png for local inspection only. Rerunning resumes or skips finished training and
rewrites the results.
"""
import argparse
import csv
import io
import json
import os
import platform
import sys
import time

import jax
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from asemble_jax import atomic_io
from asemble_jax.provenance import command_line, git_commit
from asemble_jax.data.builders import get_builder
from asemble_jax.errors import InputError
from asemble_jax.data.pipeline import open_source
from asemble_jax.evaluation import localization_report
from asemble_jax.evaluation.bootstrap import bootstrap_metrics
from asemble_jax.evaluation.metrics import METRIC_NAMES, classification_metrics
from asemble_jax.evaluation.report import Predictor
from asemble_jax.train.config_file import load_config_file
from asemble_jax.train.metrics_log import MetricsLog
from asemble_jax.train.trainer import TrainingError, load_trained_model, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "ablations", "bone_mri_lopo.py")
DATASET = "bone_mri"
TRAIN_SECONDS_FILE = "train_seconds.json"


def fold_count(data_dir: str) -> int:
    splits = get_builder(DATASET, data_dir=data_dir).info.splits
    folds = sum(1 for name in splits if name.startswith("fold") and name.endswith("_test"))
    if folds == 0:
        raise InputError(os.path.join(data_dir, DATASET), "no fold{K}_test splits: build bone_mri first "
                         "(scripts/build_dataset.py --dataset=bone_mri --manual_dir=...)")
    return folds


def labelled_data(data_dir: str, folds: int) -> dict[str, int]:
    """Patients, slices and inflamed slices of the whole labelled set: the union of the folds' held-out sets."""
    labels = []
    for fold in range(folds):
        source = open_source(DATASET, f"fold{fold}_test", data_dir)
        labels += [int(source[i]["label"]) for i in range(len(source))]
    return {"patients": folds, "slices": len(labels), "inflamed": int(sum(labels))}


def _finished(workdir: str, config) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    return os.path.exists(path) and any(
        record["step"] == config.total_steps and record["split"] == config.data.val_split
        for record in MetricsLog(path).read())


def train_fold(config, workdir: str) -> float:
    """Trains or resumes one fold; the training wall time in seconds, summed over the runs that trained it
    (kept in the workdir, so that a rerun that only rewrites the results still reports it)."""
    timing_path = os.path.join(workdir, TRAIN_SECONDS_FILE)
    seconds = 0.0
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            seconds = json.load(f)["train_s"]
    if _finished(workdir, config):
        return seconds
    start = time.perf_counter()
    train_and_evaluate(config, workdir, progress=False)
    seconds += time.perf_counter() - start
    atomic_io.write_json(timing_path, {"train_s": seconds})
    return seconds


def run_fold(fold: int, args) -> dict:
    """Trains (or resumes) one fold and scores its held-out patient."""
    config = load_config_file(f"{CONFIG}:fold={fold},preset={args.preset},seed={args.seed}")
    config.data.data_dir = args.data_dir
    if args.steps:
        config.total_steps = config.eval_every = config.checkpoint_every = args.steps
    workdir = os.path.join(args.workdir, f"fold{fold}")
    train_s = train_fold(config, workdir)

    start = time.perf_counter()
    source = open_source(DATASET, config.data.test_split, args.data_dir)
    probabilities, labels, patients = Predictor(workdir, which="latest").predict(DATASET, config.data.test_split,
                                                                                args.data_dir)
    model, _, step = load_trained_model(workdir, which="latest")
    localization = localization_report.evaluate_localization(
        model, localization_report.randomised_model(config), source, image_size=config.data.image_size)
    return {
        "fold": fold, "config": config, "step": step, "train_s": train_s,
        "evaluate_s": time.perf_counter() - start, "probabilities": probabilities, "labels": labels,
        "patients": patients, "slice_index": np.array([int(source[i]["slice_index"]) for i in range(len(source))]),
        "localization": localization,
    }


def _interval(interval) -> str:
    return f"{interval.estimate:.3f} ({interval.low:.3f} to {interval.high:.3f})"


def _cell(block: dict) -> str:
    return f"{block['estimate']:.3f} ({block['ci_low']:.3f} to {block['ci_high']:.3f})"


def fold_rows(folds: list[dict]) -> list[dict]:
    """Per held-out patient: slice-level classification and the fused map's localisation vs the references."""
    rows = []
    for fold in folds:
        labels, probabilities = fold["labels"], fold["probabilities"]
        metrics = classification_metrics(labels, probabilities)
        result = fold["localization"]
        layer = result.headline_layer
        localization = {}
        for name, row in ((localization_report.TRAINED, result.row(localization_report.TRAINED, layer)),
                          (localization_report.RANDOMISED, result.row(localization_report.RANDOMISED, layer)),
                          (localization_report.CENTRE_PRIOR, result.row(localization_report.CENTRE_PRIOR))):
            summary = row.scores.summary()
            localization[name] = {"pointing_game": summary["pointing_game"], "heat_inside": summary["heat_inside"]}
        rows.append({
            "fold": fold["fold"], "patient": str(fold["patients"][0]), "slices": int(labels.size),
            "inflamed": int(labels.sum()), "auc": metrics["auc"], "accuracy": metrics["accuracy"],
            "mean_p_inflamed": float(probabilities[labels == 1].mean()) if labels.any() else float("nan"),
            "mean_p_clear": float(probabilities[labels == 0].mean()) if (labels == 0).any() else float("nan"),
            "lesion_slices": int(result.slices.masks.shape[0]), "localization": localization,
            "train_s": fold["train_s"], "evaluate_s": fold["evaluate_s"], "step": fold["step"],
        })
    return rows


def plot_probabilities(folds: list[dict], path: str) -> None:
    figure = Figure(figsize=(3 * len(folds), 2.8))
    axes = figure.subplots(1, len(folds), sharey=True, squeeze=False)[0]
    for ax, fold in zip(axes, folds):
        order = np.argsort(fold["slice_index"])
        x, p, y = fold["slice_index"][order], fold["probabilities"][order], fold["labels"][order]
        ax.plot(x, p, color="grey", linewidth=0.8)
        ax.scatter(x[y == 1], p[y == 1], color="tab:red", s=14, label="inflammation (expert)")
        ax.scatter(x[y == 0], p[y == 0], color="tab:blue", s=14, label="none")
        ax.axhline(0.5, color="black", linestyle=":", linewidth=0.8)
        ax.set(title=f"fold {fold['fold']}: {fold['patients'][0]}", xlabel="slice", ylim=(-0.02, 1.02))
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("P(inflammation)")
    axes[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=110)


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, auc_text: str, path: str) -> None:
    figure = Figure(figsize=(4, 4))
    ax = figure.add_subplot()
    fpr, tpr, _ = roc_curve(labels, probabilities)
    ax.plot(fpr, tpr, color="tab:blue", label=f"pooled held-out slices\nAUC {auc_text}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1),
           title="bone_mri, leave-one-patient-out")
    ax.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=120)


def predictions_csv(folds: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["fold", "patient_id", "slice_index", "label", "probability"])
    for fold in folds:
        for patient, index, label, p in zip(fold["patients"], fold["slice_index"], fold["labels"],
                                            fold["probabilities"]):
            writer.writerow([fold["fold"], patient, int(index), int(label), f"{float(p):.6f}"])
    return buffer.getvalue()


def readme(context: dict, classification: dict, rows: list[dict], localization: dict) -> str:
    config, data = context["config"], context["data"]
    n_slices, n_inflamed = classification["n"], classification["n_inflamed"]
    within = [r["auc"] for r in rows if np.isfinite(r["auc"])]
    lines = [
        "# ASembleNet on real SIJ MRI: bone_mri, leave-one-patient-out", "",
        f"**How small this is.** {data['patients']} labelled patients, {data['slices']} slices "
        f"({data['inflamed']} with inflammation), all from one public supplement (Hepburn et al., PLOS ONE 2023, doi:10.1371/journal.pone.0284508; data at "
        "github.com/c-hepburn/Bone_MRI, commit 3338c88f; cite it, not redistributed here). Every patient has "
        "axSpA: the task is *slice shows active inflammation (>= 2 of 4 expert readings) vs not*, not AS vs "
        f"healthy. Each fold trains on {data['patients'] - 1} patients and tests on the remaining one. Confidence "
        f"intervals resample {data['patients']} patients; with so few clusters they are wide, and a percentile bootstrap over 5 patients tends "
        "to be too narrow rather than too wide: read every number here as a smoke test on real anatomy, not as an "
        "estimate of clinical performance. Inflamed slices tend to lie in the middle of each volume, where the "
        "joints are, so a model can score by recognising mid-joint anatomy rather than oedema: "
        "probabilities.png shows P(inflammation) against slice position for each held-out patient.", "",
        f"**What ran.** `{context['command']}` (code at commit `{context['commit']}`), after "
        "`python scripts/build_dataset.py --dataset=bone_mri --manual_dir=../shared/data/bone_mri "
        f"--data_dir={context['data_dir']}`. Model: ASembleNet `{config.model.preset}` at "
        f"{config.data.image_size}x{config.data.image_size}, trained from scratch (no phantom pretraining: the "
        f"trainer has no initialise-from option), {config.total_steps} steps of {config.global_batch_size} "
        f"slices, AdamW lr {config.learning_rate:g}, label smoothing {config.label_smoothing:g}, augmentation "
        f"{'on' if config.data.augment else 'off'}; the last checkpoint of each fold (nothing selected on the "
        f"held-out patient). Config: `ablations/bone_mri_lopo.py:fold=K`. Seeds: training {config.seed} (model "
        f"init, data order, augmentation), randomised-weights reference {config.seed} + "
        f"{localization_report.RANDOMISED_SEED_OFFSET}, bootstrap {context['bootstrap_seed']} "
        f"({context['n_resamples']} resamples).", "",
        f"**Machine.** {context['machine']}. Training {sum(r['train_s'] for r in rows) / 60:.1f} min for all "
        f"folds (per fold below; the first includes compilation); evaluation and Grad-CAM "
        f"{sum(r['evaluate_s'] for r in rows) / 60:.1f} min; the run that wrote this file took "
        f"{context['wall_s'] / 60:.1f} min. The CPU was shared with other jobs (load average "
        f"{context['load_average']} when this run started), so times are upper bounds.", "",
        "## Classification of the held-out slices, pooled over folds", "",
        f"{n_slices} slices ({n_inflamed} with inflammation) from {classification['n_patients']} held-out "
        "patients, each scored by the model that did not see them. Threshold 0.5 (no validation patient to tune "
        "one on). 95% CIs: percentile bootstrap over patients. The pooled AUC also ranks slices of different "
        "patients against each other, each scored by a different fold's model, so differences in calibration "
        "between folds count in it; the within-patient AUCs below do not have that problem (their mean: "
        f"{np.mean(within) if within else float('nan'):.3f} over {len(within)} patients).", "",
        "| metric | estimate (95% CI) |", "|---|---|",
    ]
    lines += [f"| {name} | {_cell(classification['metrics'][name])} |" for name in METRIC_NAMES]
    lines += ["", "Per held-out patient (AUC within one patient's slices; '-' where all slices share a label):", "",
              "| fold | patient | slices | inflamed | AUC | accuracy at 0.5 | mean p, inflamed slices | "
              "mean p, other slices | train (s) |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        auc = "-" if not np.isfinite(r["auc"]) else f"{r['auc']:.3f}"
        lines.append(f"| {r['fold']} | {r['patient']} | {r['slices']} | {r['inflamed']} | {auc} | "
                     f"{r['accuracy']:.3f} | {r['mean_p_inflamed']:.3f} | {r['mean_p_clear']:.3f} | "
                     f"{r['train_s']:.0f} |")
    headline = localization["headline_layer"]
    lines += [
        "", "![P(inflammation) per slice](probabilities.png) ![ROC](roc.png)", "",
        "## Does Grad-CAM point at the expert masks?", "",
        f"Every held-out slice with a non-empty mask ({localization['n_examples']} slices, "
        f"{localization['n_patients']} patients), Grad-CAM of the inflammation class, scored at 256x256 against "
        f"the >= 2-of-4 vote mask; readers themselves agree only moderately (published inter-reader Dice about "
        f"0.55). Pointing game tolerance {localization['tolerance_px']:g} px of the stored slices (at most "
        f"{localization['tolerance_px'] * 0.595 * 336 / 256:.0f} mm: a stored pixel spans at most 336/256 of a "
        f"0.595 mm voxel, less after the body crop); a uniform map would put {localization['mean_mask_fraction']:.3f} of its heat inside the mask. "
        f"Full table: [localization.md](localization.md).", "",
        "| heatmap | pointing game | heat inside | pixel AUC |", "|---|---|---|---|"]
    for row in localization["rows"]:
        if row["layer"] in (headline, ""):
            label = row["heatmap"] + (f" ({row['layer']})" if row["layer"] else "")
            lines.append(f"| {label} | " + " | ".join(_cell(row[m]) for m in localization_report.METRICS) + " |")
    for name, block in localization["differences"].items():
        lines.append(f"| difference: {name} | " + " | ".join(_cell(block[m]) for m in localization_report.METRICS)
                     + " |")
    lines += ["", f"Per held-out patient ({headline} map; means over that patient's lesion slices):", "",
              "| fold | lesion slices | pointing: trained | randomised | centre prior | heat inside: trained | "
              "randomised | centre prior |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        loc = r["localization"]
        names = (localization_report.TRAINED, localization_report.RANDOMISED, localization_report.CENTRE_PRIOR)
        lines.append(f"| {r['fold']} | {r['lesion_slices']} | "
                     + " | ".join(f"{loc[n]['pointing_game']:.3f}" for n in names) + " | "
                     + " | ".join(f"{loc[n]['heat_inside']:.3f}" for n in names) + " |")
    lines += ["", "The figure of the best and worst cases shows the scans, which carry no licence, so it is not "
              "committed: rerunning the command writes it to `<workdir>/localization_cases.png`.", "",
              "Files: `classification.json` (the pooled metrics), `predictions.csv` (every held-out slice), "
              "`localization.json` / `localization.md` (all layers of both models), the figures above."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/tfds")
    parser.add_argument("--workdir", default="workdirs/bone_mri_lopo", help="one subfolder per fold")
    parser.add_argument("--out", default="results/bone_mri")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every fold")
    parser.add_argument("--steps", type=int, help="override the config's training steps (quick checks)")
    parser.add_argument("--folds", help="comma-separated fold numbers (quick checks); default: every fold")
    parser.add_argument("--n_resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        available = fold_count(args.data_dir)
        chosen = [int(k) for k in args.folds.split(",")] if args.folds else list(range(available))
        if any(not 0 <= k < available for k in chosen):
            parser.error(f"--folds must be in 0..{available - 1}, got {args.folds}")
        data = labelled_data(args.data_dir, available)
        folds = [run_fold(fold, args) for fold in chosen]
    except (InputError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    labels = np.concatenate([f["labels"] for f in folds])
    probabilities = np.concatenate([f["probabilities"] for f in folds])
    patients = np.concatenate([f["patients"] for f in folds])
    intervals = bootstrap_metrics(labels, probabilities, patients, n_resamples=args.n_resamples, seed=0)
    classification = {
        "n": int(labels.size), "n_inflamed": int(labels.sum()), "n_patients": int(np.unique(patients).size),
        "threshold": 0.5, "n_resamples": args.n_resamples, "bootstrap_seed": 0,
        "metrics": {name: {"estimate": i.estimate, "ci_low": i.low, "ci_high": i.high, "n_valid": i.n_valid}
                    for name, i in intervals.items()},
    }
    rows = fold_rows(folds)
    classification["folds"] = rows
    os.makedirs(args.out, exist_ok=True)
    atomic_io.write_json(os.path.join(args.out, "classification.json"), classification)
    atomic_io.write_text(os.path.join(args.out, "predictions.csv"), predictions_csv(folds))
    localization = localization_report.write_report(
        localization_report.pool([f["localization"] for f in folds]), os.path.join(args.out, "localization"),
        title="Grad-CAM localisation on bone_mri held-out patients (leave-one-patient-out, pooled)",
        n_resamples=args.n_resamples, seed=0, cases_figure=os.path.join(args.workdir, "localization_cases.png"))
    plot_probabilities(folds, os.path.join(args.out, "probabilities.png"))
    plot_roc(labels, probabilities, _interval(intervals["auc"]), os.path.join(args.out, "roc.png"))

    context = {
        "command": command_line(__file__, argv),
        "commit": git_commit(), "data_dir": args.data_dir, "config": folds[0]["config"], "data": data,
        "n_resamples": args.n_resamples, "bootstrap_seed": 0, "load_average": load_average,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, {platform.system()}, JAX "
                   f"{jax.__version__} on {jax.default_backend()}",
        "wall_s": time.perf_counter() - start,
    }
    atomic_io.write_text(os.path.join(args.out, "README.md"), readme(context, classification, rows, localization))
    print(json.dumps({"auc": classification["metrics"]["auc"], "wall_min": context["wall_s"] / 60,
                      "localization": {f"{r['heatmap']} {r['layer']}": r["pointing_game"]["estimate"]
                                       for r in localization["rows"]}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
