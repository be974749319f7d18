"""What the page says about the model: a card built from the workdir and its evaluation reports, and the
decision threshold those reports chose on validation.

Evaluation reports are the JSON files asemble_jax/evaluation/evaluate.py writes (DATASET_SPLIT.json, under the
workdir's eval/ or wherever --out put them, as `make demo` puts them in results/demo/eval/), and Grad-CAM
localisation reports the ones evaluation/localization_report.py writes (*_localization.json). A report of the
dataset the model was trained on is its test result; any other dataset is external. Every report holds the
threshold maximising Youden's J on the training run's validation split (the same for every report of one
checkpoint): that is the threshold the page decides with. A report made at another checkpoint step than the one
served is listed but flagged, and its threshold is not used; with no usable report the threshold is 0.5, and the
card says it was not chosen on validation."""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx

from asemble_jax.provenance import git_commit
from asemble_jax.workdir import Workdir

PHANTOM_DATASET = "synthetic_sij"
DEFAULT_THRESHOLD = 0.5
_HEADLINE = ("auc", "accuracy", "recall", "specificity")


def _reports(eval_dir: pathlib.Path) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(evaluation reports, localisation reports) in eval_dir, by file name; unreadable files are skipped."""
    evaluations, localizations = [], []
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and "thresholds" in report and "dataset" in report:
            evaluations.append((path.name, report))
        elif isinstance(report, dict) and path.stem.endswith("_localization") and "rows" in report:
            localizations.append((path.name, report))
    return evaluations, localizations


def _interval(block: dict) -> dict[str, float]:
    return {"estimate": block["estimate"], "ci_low": block["ci_low"], "ci_high": block["ci_high"]}


def _evaluation(name: str, report: dict, config: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
    at = {key: {"threshold": block["threshold"], **{m: _interval(block[m]) for m in _HEADLINE}}
          for key, block in report["thresholds"].items()}
    patient = report.get("patient_level") or None
    return {
        "file": name, "dataset": report["dataset"], "split": report["split"],
        "role": "test" if report["dataset"] == config.data.dataset else "external",
        "n_slices": report["n"], "n_patients": report["n_patients"], "step": report["step"],
        "same_checkpoint": report["step"] == step, "threshold_chosen_on": report.get("threshold_split"),
        "slice_level": at,
        "patient_level": None if patient is None else {"threshold": patient["threshold"],
                                                      "auc": _interval(patient["auc"])},
    }


def _localization(name: str, report: dict) -> dict[str, Any]:
    layer = report.get("headline_layer")
    trained = next((row for row in report["rows"] if row.get("heatmap") == "trained" and row.get("layer") == layer),
                   None)
    return {"file": name, "n_slices": report.get("n_examples"), "n_patients": report.get("n_patients"),
            "layer": layer,
            "trained": None if trained is None else {m: _interval(trained[m]) for m in
                                                     ("pointing_game", "heat_inside", "pixel_auc")},
            "differences": {key: {m: _interval(block[m]) for m in block}
                            for key, block in report.get("differences", {}).items()}}


def _split_sizes(config: ml_collections.ConfigDict) -> dict[str, int] | None:
    try:
        info = tfds.builder(config.data.dataset, data_dir=config.data.get("data_dir")).info
        return {name: int(split.num_examples) for name, split in info.splits.items()}
    except (tfds.core.DatasetNotFoundError, FileNotFoundError, KeyError, ValueError, AttributeError):
        return None


def _training_commit(workdir: str) -> str | None:
    """The commit a grid cell recorded when it trained (plain training workdirs record none)."""
    try:
        record = json.loads(pathlib.Path(Workdir(workdir).cell_record).read_text(encoding="utf-8"))
        return record.get("provenance", {}).get("git_commit")
    except (OSError, ValueError, AttributeError):
        return None


def model_card(workdir: str, config: ml_collections.ConfigDict, step: int, *, model, names: list[str],
               eval_dir: pathlib.Path) -> dict[str, Any]:
    evaluations, localizations = _reports(eval_dir)
    model_config = config.model
    parameters = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    card = {
        "architecture": {"model": model_config.name, "preset": model_config.preset, "variant": model_config.variant,
                         "parameters": parameters, "input": f"{config.data.image_size}x{config.data.image_size} grey",
                         "classes": names, "checkpoint_step": step},
        "training_data": {"dataset": config.data.dataset, "splits": _split_sizes(config),
                          "validation_split": config.data.val_split,
                          "synthetic_phantom": config.data.dataset.split("/")[0] == PHANTOM_DATASET},
        "evaluations": [_evaluation(name, report, config, step) for name, report in evaluations],
        "localization": [_localization(name, report) for name, report in localizations],
        "commit": {"serving_code": git_commit(), "training": _training_commit(workdir)},
        "eval_dir": str(eval_dir),
    }
    card["threshold"] = decision_threshold(card)
    return card


def decision_threshold(card: dict[str, Any]) -> dict[str, Any]:
    """The Youden threshold of the first report of the served checkpoint, test reports first."""
    usable = sorted((e for e in card["evaluations"] if e["same_checkpoint"] and "youden" in e["slice_level"]),
                    key=lambda e: e["role"] != "test")
    if not usable:
        return {"value": DEFAULT_THRESHOLD, "chosen_on_validation": False,
                "how": f"no evaluation report of checkpoint step {card['architecture']['checkpoint_step']} in "
                       f"{card['eval_dir']}: the default 0.5, not chosen on validation"}
    report = usable[0]
    return {"value": report["slice_level"]["youden"]["threshold"], "chosen_on_validation": True,
            "how": f"maximises Youden's J (sensitivity + specificity - 1) on {report['threshold_chosen_on']}, "
                   f"as recorded in {report['file']}"}
