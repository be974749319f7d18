"""No choice of a leave-one-patient-out cell ever reads its held-out patient: not the best checkpoint (chosen on
config.data.val_split during training), not the Youden threshold (chosen on the same split by the evaluation),
and there is no early stopping. Checked on every cell of every grid that runs bone_mri folds, against the patients
of a built dummy bone_mri, and end to end on one trained cell of the bone_mri grid."""
import json
import os
import pathlib

import pytest

from asemble_jax.grids import runner
from asemble_jax.grids.grid import LOCALIZATION, load_grid
from asemble_jax.grids.publish import write_tables
from asemble_jax.data import pipeline
from asemble_jax.data.builders import build
from asemble_jax.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parent.parent
DUMMY_BONE_MRI = REPO / "datasets" / "bone_mri" / "dummy_data"
FOLDS = 3  # the dummy data's labelled patients


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    build("bone_mri", data_dir=directory, manual_dir=DUMMY_BONE_MRI)
    return str(directory)


def _patients(data_dir: str, split: str) -> set[str]:
    source = pipeline.open_source("bone_mri/stir", split, data_dir)
    return {pipeline.text(source[i]["patient_id"]) for i in range(len(source))}


def chosen_on_held_out(config, evaluation_split: str, data_dir: str) -> set[str]:
    """Held-out patients that the run's choices would read: those of its train and validation splits that are also
    in the split it is scored on."""
    held_out = _patients(data_dir, evaluation_split)
    return held_out & (_patients(data_dir, config.data.train_split) | _patients(data_dir, config.data.val_split))


def lopo_grids(tmp_path) -> list:
    source = tmp_path / "phantom_grid"
    (source / "coronal").mkdir(parents=True)
    return [load_grid(f"{REPO}/ablations/bone_mri_lopo.py:folds={FOLDS}"),
            load_grid(f"{REPO}/ablations/components.py:dataset=bone_mri,folds={FOLDS},seeds=2"),
            load_grid(f"{REPO}/ablations/baselines.py:dataset=bone_mri,folds={FOLDS},seeds=1"),
            load_grid(f"{REPO}/ablations/pretraining.py:source={source},folds={FOLDS},seeds=1")]


def test_no_cell_of_any_lopo_grid_chooses_anything_on_its_held_out_patient(data_dir, tmp_path):
    checked = 0
    for grid in lopo_grids(tmp_path):
        for cell in grid.cells:
            config = cell.build_config()
            for evaluation in cell.evaluations:
                assert evaluation.dataset == config.data.dataset
                assert not chosen_on_held_out(config, evaluation.split, data_dir), (grid.name, cell.name)
                checked += 1
    assert checked > 4 * FOLDS


def test_the_check_fails_on_the_old_lopo_config(data_dir, tmp_path):
    """The config the bone_mri experiment had before it became a grid validated on the held-out patient."""
    cell = lopo_grids(tmp_path)[0].cells[0]
    config = cell.build_config()
    config.data.val_split = cell.evaluations[0].split  # the old ablations/bone_mri_lopo.py:fold=K
    assert chosen_on_held_out(config, cell.evaluations[0].split, data_dir)


@pytest.mark.slow
def test_a_trained_lopo_cell_records_its_choices_on_training_patients(data_dir, tmp_path):
    """One real cell (tiny, 2 steps): every validation record, the Youden threshold and the localisation read the
    training patients or the held-out split as documented; the report pools the localisation into tables.md."""
    grid = load_grid(f"{REPO}/ablations/bone_mri_lopo.py:folds={FOLDS},preset=tiny,steps=2").with_overrides(
        {"data.data_dir": data_dir, "eval_every": 1, "log_every": 1})
    workdir = str(tmp_path / "grid")
    summary = runner.run_grid(grid, workdir, only="full/seed0/fold0", in_process=True, report=lambda m: None)
    assert summary.failed == []
    cell = grid.select("full/seed0/fold0")[0]
    paths = Workdir(runner.cell_dir(workdir, cell))
    train_split = cell.build_config().data.train_split
    held_out = _patients(data_dir, cell.evaluations[0].split)
    with open(paths.metrics) as f:
        validation = [r for r in map(json.loads, f) if r["split"] != "train"]
    assert validation and {r["split"] for r in validation} == {train_split}
    with open(paths.eval_stem("bone_mri/stir", cell.evaluations[0].split) + ".json") as f:
        report = json.load(f)
    assert report["threshold_split"] == f"bone_mri/stir/{train_split}"
    assert not held_out & _patients(data_dir, train_split)
    record = json.load(open(paths.cell_record))
    localization = next(e for e in record["evaluations"] if e.get("kind") == LOCALIZATION)
    with open(paths.path(localization["scores"])) as f:
        assert set(json.load(f)["patient_ids"]) <= held_out  # Grad-CAM is scored on the held-out slices only

    # The other folds, then the report: its localisation section pools every fold's slices.
    runner.run_grid(grid, workdir, in_process=True, report=lambda m: None)
    out = str(tmp_path / "tables")
    write_tables(workdir, out, command="test", n_resamples=50)
    text = open(os.path.join(out, "tables.md")).read()
    assert "## Grad-CAM localisation: bone_mri/stir, localization, variant full, seed 0" in text
    summary = json.load(open(os.path.join(out, "bone_mri_stir_localization_full_seed0_localization.json")))
    pooled = set()
    for fold in range(FOLDS):
        pooled |= _patients(data_dir, f"fold{fold}_test")
    assert summary["n_patients"] <= len(pooled) and summary["n_examples"] > 0
