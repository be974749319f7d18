"""Does a leave-one-patient-out grid's pooled AUC reflect learning, or the training prior?

For every run (arm and seed, its folds pooled) of a grid workdir: the pooled AUC of its held-out predictions, and
the correlation between each fold's mean predicted probability and its held-out patient's prevalence of positive
slices. A model that predicts roughly the training prevalence scores a strongly negative correlation (leaving out
a patient with many positives lowers the training prevalence), and with it a pooled AUC below 0.5 that is an
artefact of pooling folds, not anti-learning. Read from the grid's own records (grid.json, each cell's cell.json).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from asemble_jax.grids import cell as cell_lib
from asemble_jax.grids.grid import CLASSIFICATION
from asemble_jax.grids.runner import read_grid_record
from asemble_jax.grids.tables import Predictions, TableError, read_predictions
from asemble_jax.workdir import GridWorkdir

ROLE = "test"


def prior_check(workdir: str) -> str:
    """The check as a Markdown table, one row per run, ordered by run name."""
    grid, _ = read_grid_record(workdir)
    spec, cells = grid.table, GridWorkdir(workdir)
    if not spec.pooled:
        raise TableError(f"{workdir}: grid {grid.name} pools no folds; the prior check is for leave-one-patient-out "
                         "grids")
    runs: dict[tuple[str, Any], list[Predictions]] = {}
    for cell in grid.cells:
        record = cell_lib.read_record(cells.cell(cell.name).root)
        if record is None or record["status"] != cell_lib.DONE:
            continue
        entry = next((e for e in record["evaluations"]
                      if e["role"] == ROLE and e.get("kind", CLASSIFICATION) == CLASSIFICATION), None)
        if entry is None:
            continue
        arm = "/".join([*(str(v) for k, v in spec.group_of(cell.factors) if k != "dataset"),
                        str(cell.factors[spec.arm])])
        runs.setdefault((arm, cell.factors[spec.replicate]), []).append(
            read_predictions(cells.cell(cell.name).path(entry["predictions"]), 0.5))
    if not runs:
        raise TableError(f"{workdir}: no finished cell with '{ROLE}' predictions yet")
    lines = [f"| arm | {spec.replicate} | folds | pooled AUC | corr(fold prevalence, fold mean p) |",
             "|---|---|---:|---:|---:|"]
    for (arm, replicate), folds in sorted(runs.items(), key=lambda item: str(item[0])):
        pooled = Predictions.concatenate(folds)
        prevalence = np.array([fold.labels.mean() for fold in folds])
        mean_p = np.array([fold.probabilities.mean() for fold in folds])
        auc = roc_auc_score(pooled.labels, pooled.probabilities) if len(set(pooled.labels)) == 2 else float("nan")
        corr = np.corrcoef(prevalence, mean_p)[0, 1] if len(folds) > 1 else float("nan")
        lines.append(f"| {arm} | {spec.replicate}{replicate} | {len(folds)} | {auc:.3f} | {corr:+.2f} |")
    return "\n".join(lines) + "\n"
