"""Tables from fabricated runs whose answers are known: a variant worse by a fixed amount shows exactly that
difference with an interval that excludes zero, identical variants an interval that contains it; means, SDs and
AUCs match sklearn; baseline tests pair runs of the same seed; folds are pooled; files say where they come from."""
import csv
import os

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from asemble_jax import atomic_io
from asemble_jax.workdir import Workdir
from asemble_jax.grids import runner, tables
from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec
from asemble_jax.grids.publish import write_tables

PATIENTS, SLICES = 20, 10
RESAMPLES = 400
SPEC = TableSpec(arm="variant", reference="full", metrics=("auc", "accuracy", "recall", "specificity", "f1"))


def _labels(patients=PATIENTS):
    return np.repeat(np.arange(patients) % 2, SLICES)


def _patient_ids(patients=PATIENTS, first=0):
    return np.repeat([f"patient{i:03d}" for i in range(first, first + patients)], SLICES)


def _confident(seed, patients=PATIENTS, first=0):
    """Every slice on the right side of 0.5: positives in (0.6, 1), negatives in (0, 0.4)."""
    labels = _labels(patients)
    rng = np.random.default_rng(seed)
    probabilities = np.where(labels == 1, rng.uniform(0.6, 1.0, labels.size), rng.uniform(0.0, 0.4, labels.size))
    return tables.Predictions(labels, probabilities, _patient_ids(patients, first), np.full(labels.size, 0.5))


def _one_wrong_slice_per_patient(predictions):
    """The first slice of every patient moved to the wrong side of 0.5: accuracy, sensitivity and specificity
    each drop by exactly 1/SLICES, in every patient and so in every bootstrap resample of patients."""
    probabilities = predictions.probabilities.copy()
    first = np.arange(0, probabilities.size, SLICES)
    probabilities[first] = 1.0 - probabilities[first]
    return tables.Predictions(predictions.labels, probabilities, predictions.patients, predictions.thresholds)


def _noisy(seed):
    """Overlapping scores (AUC well below 1) with a per-patient effect."""
    labels = _labels()
    rng = np.random.default_rng(seed)
    patient_effect = np.repeat(rng.normal(0, 0.7, PATIENTS), SLICES)
    scores = 1.2 * (labels - 0.5) + patient_effect + rng.normal(0, 1.0, labels.size)
    return tables.Predictions(labels, 1 / (1 + np.exp(-scores)), _patient_ids(), np.full(labels.size, 0.5))


def test_a_variant_worse_by_a_fixed_amount_shows_exactly_that_difference():
    reference = {s: _confident(s) for s in range(3)}
    worse = {s: _one_wrong_slice_per_patient(p) for s, p in reference.items()}
    differences = tables.paired_differences(worse, reference, ("accuracy", "recall", "specificity"),
                                            n_resamples=RESAMPLES)
    for metric in ("accuracy", "recall", "specificity"):
        d = differences[metric]
        assert d.difference == pytest.approx(-1 / SLICES)
        assert d.low == pytest.approx(-1 / SLICES) and d.high == pytest.approx(-1 / SLICES)
        assert d.high < 0  # the interval excludes zero
        assert d.p_value <= 2 / (d.n_valid + 1) + 1e-12
        assert d.n_patients == PATIENTS
    assert differences["accuracy"].n_valid == RESAMPLES


def test_identical_variants_differ_by_zero_with_an_interval_containing_zero():
    reference = {s: _noisy(s) for s in range(3)}
    copy = {s: tables.Predictions(*(np.copy(a) for a in (p.labels, p.probabilities, p.patients, p.thresholds)))
            for s, p in reference.items()}
    for metric, d in tables.paired_differences(copy, reference, SPEC.metrics, n_resamples=RESAMPLES).items():
        assert (d.difference, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0), metric


def test_equally_good_variants_from_other_seeds_have_an_interval_containing_zero():
    reference = {s: _noisy(s) for s in range(3)}
    other = {s: _noisy(100 + s) for s in range(3)}
    d = tables.paired_differences(other, reference, ("auc", "accuracy"), n_resamples=RESAMPLES)
    for metric in ("auc", "accuracy"):
        assert d[metric].low < 0 < d[metric].high, metric
        assert d[metric].p_value > 0.05


def test_rows_match_sklearn_means_sds_and_auc_differences():
    runs = {"full": {s: _noisy(s) for s in range(3)}, "no_se": {s: _noisy(50 + s) for s in range(3)}}
    rows = tables.compute_rows(runs, {}, SPEC, n_resamples=RESAMPLES)
    assert [row.arm for row in rows] == ["full", "no_se"]
    for row in rows:
        aucs = [roc_auc_score(p.labels, p.probabilities) for p in runs[row.arm].values()]
        accuracies = [accuracy_score(p.labels, p.probabilities >= 0.5) for p in runs[row.arm].values()]
        assert row.mean["auc"] == pytest.approx(np.mean(aucs)) and row.sd["auc"] == pytest.approx(np.std(aucs, ddof=1))
        assert row.mean["accuracy"] == pytest.approx(np.mean(accuracies))
    expected = np.mean([roc_auc_score(runs["no_se"][s].labels, runs["no_se"][s].probabilities)
                        - roc_auc_score(runs["full"][s].labels, runs["full"][s].probabilities) for s in range(3)])
    assert rows[1].difference["auc"].difference == pytest.approx(expected)
    assert rows[0].difference == {}


def test_only_seeds_both_arms_have_are_paired():
    reference = {0: _confident(0), 1: _confident(1)}
    arm = {1: _one_wrong_slice_per_patient(_confident(1)), 2: _confident(2)}
    d = tables.paired_differences(arm, reference, ("accuracy",), n_resamples=RESAMPLES)["accuracy"]
    assert d.difference == pytest.approx(-1 / SLICES)  # seed 1 only; seed 2 alone would give 0
    assert tables.paired_differences({5: _confident(5)}, reference, ("accuracy",)) == {}


def test_runs_on_different_test_examples_are_refused():
    moved = _confident(1, first=PATIENTS)
    with pytest.raises(tables.TableError, match="different test examples"):
        tables.paired_differences({0: moved}, {0: _confident(0)}, ("auc",), where="coronal, test")


def test_baseline_tests_pair_runs_of_the_same_seed_and_match_statsmodels():
    spec = TableSpec(arm="model", reference="asemblenet", tests=("paired_bootstrap", "mcnemar", "delong"))
    reference = {0: _noisy(0), 1: _noisy(1)}
    baseline = {0: _noisy(7), 1: reference[1]}  # seed 1: the very same run as the reference's seed 1
    rows = tables.compute_rows({"asemblenet": reference, "resnet50": baseline}, {}, spec, n_resamples=RESAMPLES)
    row = rows[1]
    a, b = baseline[0], reference[0]
    a_correct, b_correct = (a.probabilities >= 0.5) == a.labels, (b.probabilities >= 0.5) == b.labels
    table = [[np.sum(a_correct & b_correct), np.sum(a_correct & ~b_correct)],
             [np.sum(~a_correct & b_correct), np.sum(~a_correct & ~b_correct)]]
    exact = table[0][1] + table[1][0] < 25
    expected = statsmodels_mcnemar(table, exact=exact, correction=True).pvalue
    assert row.mcnemar[0].p_value == pytest.approx(expected)
    assert row.mcnemar[1].p_value == 1.0 and row.delong[1].p_value == 1.0
    assert row.delong[0].p_value < 1.0
    assert row.delong[0].difference == pytest.approx(roc_auc_score(a.labels, a.probabilities)
                                                     - roc_auc_score(b.labels, b.probabilities))


# ---- a fabricated grid workdir ----------------------------------------------------------------------------------

FOLDS, FOLD_PATIENTS = 3, 4


def _fold_grid():
    cells = tuple(
        Cell(name=f"{variant}/seed{seed}/fold{fold}",
             factors={"dataset": "bone_mri/stir", "fold": fold, "variant": variant, "seed": seed},
             config="ablations/base.py:preset=tiny", overrides={"total_steps": 10},
             evaluations=(Evaluation("test", "bone_mri/stir", f"fold{fold}_test"),))
        for seed in range(2) for variant in ("full", "no_se") for fold in range(FOLDS))
    return Grid("components", cells, TableSpec(arm="variant", reference="full", pooled=("fold",)),
                notes="bone_mri: leave-one-patient-out folds", spec="ablations/components.py:dataset=bone_mri")


def _write_cell(workdir, cell, predictions, youden, status="done"):
    directory = runner.cell_dir(workdir, cell)
    relative = os.path.join("eval", "predictions.csv")
    rows = ["example,patient_id,label,probability"]
    rows += [f"{i},{p},{y},{float(q)!r}" for i, (p, y, q) in enumerate(zip(predictions.patients, predictions.labels,
                                                                    predictions.probabilities))]
    atomic_io.write_text(os.path.join(directory, relative), "\n".join(rows) + "\n")
    atomic_io.write_json(Workdir(directory).cell_record, {
        "name": cell.name, "status": status, "error": None if status == "done" else "TrainingError: boom",
        "factors": dict(cell.factors), "wall_time_s": 60.0, "gflops": 0.25,
        "params": 1000 if cell.factors["variant"] == "full" else 900, "train_images_per_second": 100.0 + cell.factors["seed"],
        "provenance": {"git_commit": "abc1234", "machine": "test", "versions": {"jax": "0.10.2"}},
        "evaluations": [{"role": "test", "predictions": relative, "thresholds": {"0.5": 0.5, "youden": youden}}]})


@pytest.fixture
def fold_workdir(tmp_path):
    """Fold k holds patients 4k..4k+3; no_se is worse by one slice per patient. no_se's seed 1 lacks fold 2 (still
    running) and full's seed 1 fold 1 failed, so each arm has only seed 0 complete."""
    workdir = str(tmp_path / "grid")
    grid = _fold_grid()
    runner.write_grid_record(grid, workdir, "python scripts/run_ablations.py --grid=ablations/components.py:"
                                            "dataset=bone_mri --workdir=grid")
    for cell in grid.cells:
        fold, seed, variant = cell.factors["fold"], cell.factors["seed"], cell.factors["variant"]
        predictions = _confident(10 * seed + fold, FOLD_PATIENTS, first=FOLD_PATIENTS * fold)
        if variant == "no_se":
            predictions = _one_wrong_slice_per_patient(predictions)
        if (variant, seed, fold) == ("no_se", 1, 2):
            continue  # still running
        status = "failed" if (variant, seed, fold) == ("full", 1, 1) else "done"
        _write_cell(workdir, cell, predictions, youden=0.99, status=status)
    return workdir, grid


def test_folds_are_pooled_and_unfinished_seeds_left_out(fold_workdir):
    workdir, grid = fold_workdir
    collected = tables.collect(workdir, grid, n_resamples=RESAMPLES)
    (table,) = collected.tables
    assert table.pooled and "pools the held-out predictions" in tables.caption(table, grid.table, threshold="0.5",
                                                                              n_resamples=RESAMPLES)
    assert table.n_examples == FOLDS * FOLD_PATIENTS * SLICES and table.n_patients == FOLDS * FOLD_PATIENTS
    assert table.evaluated_on == "bone_mri/stir:fold0_test, bone_mri/stir:fold1_test, bone_mri/stir:fold2_test"
    full, no_se = table.rows
    assert full.seeds == (0,) and no_se.seeds == (0,)
    assert any("no_se seed=1 (2 of 3" in item for item in collected.incomplete)
    assert any("full seed=1 (2 of 3" in item for item in collected.incomplete)  # the failed fold
    assert no_se.difference["accuracy"].difference == pytest.approx(-1 / SLICES)
    assert no_se.difference["accuracy"].high < 0
    assert (full.costs["params"], no_se.costs["params"]) == (1000, 900)
    # Pooled in fold order: the patients of fold 0, then 1, then 2.
    assert list(dict.fromkeys(table.runs["full"][0].patients)) == [f"patient{i:03d}" for i in range(12)]


def test_youden_thresholds_come_from_each_runs_record(fold_workdir):
    workdir, grid = fold_workdir
    at_half = tables.collect(workdir, grid, n_resamples=50).tables[0].rows[0]
    at_youden = tables.collect(workdir, grid, threshold="youden", n_resamples=50).tables[0].rows[0]
    assert at_half.mean["recall"] == 1.0 and at_youden.mean["recall"] == 0.0  # every score is below 0.99
    assert at_half.mean["auc"] == at_youden.mean["auc"]
    with pytest.raises(tables.TableError, match="threshold"):
        tables.collect(workdir, grid, threshold="0.3")


def test_written_tables_name_their_grid_command_commit_versions_and_date(fold_workdir, tmp_path):
    workdir, _ = fold_workdir
    out = str(tmp_path / "results")
    write_tables(workdir, out, command="python scripts/make_tables.py --workdir=grid --out=results",
                 n_resamples=RESAMPLES)
    md = open(os.path.join(out, "tables.md")).read()
    for text in ("ablations/components.py:dataset=bone_mri", "python scripts/run_ablations.py",
                 "python scripts/make_tables.py", "abc1234", "jax 0.10.2", "leave-one-patient-out",
                 "paired bootstrap over test patients", "full/seed1/fold1: TrainingError: boom",
                 "−0.100 [−0.100, −0.100]"):
        assert text in md, text
    assert "Tables made with" in md and " on 20" in md  # the date
    with open(os.path.join(out, "tables.csv")) as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = {row["arm"]: row for row in csv.DictReader(lines)}
    assert float(rows["no_se"]["delta_accuracy"]) == pytest.approx(-0.1)
    assert float(rows["no_se"]["delta_accuracy_ci_high"]) < 0
    assert open(os.path.join(out, "tables.csv")).readline().startswith("# Grid `ablations/components.py")
    tex = open(os.path.join(out, "tables.tex")).read()
    assert r"\begin{tabular}" in tex and r"$\Delta$" in tex and "no\\_se" in tex and "% Grid" in tex
    for figure in ("bone_mri_stir_test_differences.png", "bone_mri_stir_test_roc.png"):
        with open(os.path.join(out, figure), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
